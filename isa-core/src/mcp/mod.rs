//! The smart MCP service: registries of tools, prompts and resources, discovery through a
//! [`ToolSelector`](crate::ToolSelector), and an axum [`Router`](axum::Router) that serves MCP's
//! Streamable HTTP transport (protocol 2026-07-28 statelessly and 2025-11-25 with sessions, from
//! one endpoint) beside HTTP endpoints for discovery, statistics, health and metrics.
//!
//! Authentication is not done here: put a layer in front of [`McpServer::router`] that checks
//! credentials and inserts an [`Identity`](crate::Identity) into the request's extensions
//! (`isa-auth`'s `require_auth` does). Every MCP request and discovery call then sees that
//! caller, and tools requiring a scope the caller lacks are hidden and refused.

mod convert;
mod handler;
mod http;
mod input;
mod registry;
mod server;
mod stats;
mod tasks;

use std::{collections::BTreeMap, time::Duration};

use crate::Confirmation;

pub use http::RESTRICTED_TOOLS_LABEL;
pub use input::StateKey;
pub use registry::{ListChanged, ToolLimits};
pub use server::{CALL_TOOL, DISCOVER_TOOLS, Discovered, McpServer, McpServerBuilder};
pub use tasks::MemoryTaskStore;

/// What `tools/list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerMode {
    /// Every tool the caller may use (plus `discover_tools` when a selector is configured).
    #[default]
    Full,
    /// Only the meta-tools `discover_tools` and `call_tool`; the model finds tools by asking.
    /// Every tool stays callable by name.
    Discover,
}

impl std::str::FromStr for ServerMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(ServerMode::Full),
            "discover" => Ok(ServerMode::Discover),
            other => Err(format!(
                "unknown mode {other:?}; expected `full` or `discover`"
            )),
        }
    }
}

/// How the MCP service behaves.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// Server name reported to clients.
    pub name: String,
    /// Server version reported to clients.
    pub version: String,
    /// Instructions for the model, sent at initialisation.
    pub instructions: Option<String>,
    /// What `tools/list` shows.
    pub mode: ServerMode,
    /// Items per page of `tools/list`, `prompts/list` and `resources/list`.
    pub page_size: usize,
    /// Host names (or `host:port`) accepted in the `Host` header, against DNS rebinding.
    /// Loopback names by default; behind a load balancer add its host name. Empty accepts any.
    pub allowed_hosts: Vec<String>,
    /// Keep per-client sessions for 2025-11-25 clients. Sessions live in one process, so behind
    /// a load balancer without stickiness turn this off: every request is then served
    /// statelessly. 2026-07-28 requests are always stateless.
    pub sessions: bool,
    /// Interval of SSE keep-alive comments while a call runs, so idle timeouts of load
    /// balancers (60 s on AWS) never cut a long call.
    pub sse_keep_alive: Duration,
    /// Limits applied to tools added without their own.
    pub default_limits: ToolLimits,
    /// Largest `top_k` discovery returns.
    pub max_discover: usize,
    /// Discovery answers nothing for a request whose relevance to every tool is below this
    /// ([`crate::SelectionQuery::min_relevance`]): an agent told that no tool fits does better
    /// than one handed the least bad. Its scale is the selector's (and the embedding model's),
    /// so it is off by default; `isa-mcp serve` sets one calibrated for its default model.
    pub min_relevance: Option<f32>,
    /// Largest request body accepted on `/mcp`, in bytes.
    pub max_request_bytes: usize,
    /// Requests worked on at once (MCP and the endpoints beside it, until each answer starts);
    /// more are refused at once with 503 and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Seals the request state of input-required results (2026-07-28 calls that ask the
    /// client). Random by default; every instance behind one load balancer needs the same.
    pub state_key: StateKey,
    /// How long a client has to answer a call's questions before its request state expires.
    pub input_ttl: Duration,
    /// How long a task (a call that continued as one) is kept after it was created.
    pub task_ttl: Duration,
    /// Confirmation of tools by name, over what each tool's spec says: `Some` makes the user
    /// confirm every call (an upstream server's purchase tool, say), `None` never asks.
    pub confirmations: BTreeMap<String, Option<Confirmation>>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            name: "isa".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            instructions: None,
            mode: ServerMode::Full,
            page_size: 100,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            sessions: true,
            sse_keep_alive: Duration::from_secs(15),
            default_limits: ToolLimits::default(),
            max_discover: 50,
            min_relevance: None,
            max_request_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: crate::http::DEFAULT_CONCURRENCY,
            state_key: StateKey::random(),
            input_ttl: Duration::from_secs(15 * 60),
            task_ttl: Duration::from_secs(60 * 60),
            confirmations: BTreeMap::new(),
        }
    }
}
