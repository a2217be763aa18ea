//! Every setting of `isa-mcp serve` in one place: each a flag with an environment variable
//! (the original deployment's names where it had one: `DATABASE_URL`, `AWS_S3_BUCKET`, …).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};
use isa_core::{Confirmation, http::DEFAULT_CONCURRENCY};
use isa_tools::{
    gateway::UpstreamConfig,
    select::{DEFAULT_DENSE_WEIGHT, DEFAULT_MIN_RELEVANCE},
};

/// What `tools/list` shows.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// tools/list returns every tool.
    Full,
    /// tools/list returns discover_tools and call_tool; every tool stays callable.
    Discover,
}

/// Where the tool index lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IndexBackend {
    /// In this process: hybrid (dense + BM25) selection, built at every start.
    Memory,
    /// In PostgreSQL with pgvector (`DATABASE_URL`), shared by every server on that database:
    /// dense selection; a server embeds only the tools the index does not hold yet.
    Pgvector,
}

/// When `/mcp` and the discovery endpoints ask for a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RequireAuth {
    /// When listening beyond loopback.
    Auto,
    /// Always.
    Always,
    /// Never (the server runs open).
    Never,
}

/// Where a side service listens, or `off`.
#[derive(Clone, Copy, Debug)]
pub struct ServiceBind(pub Option<SocketAddr>);

impl std::str::FromStr for ServiceBind {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "off" {
            Ok(ServiceBind(None))
        } else {
            s.parse().map(|a| ServiceBind(Some(a)))
        }
    }
}

/// Every setting of `isa-mcp serve`, each a flag with an environment variable.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Address of the MCP server.
    #[arg(long, env = "ISA_MCP_BIND", default_value = "127.0.0.1:8081")]
    pub bind: SocketAddr,
    /// What tools/list shows.
    #[arg(long, env = "ISA_MCP_MODE", value_enum, default_value = "full")]
    pub mode: Mode,
    /// Host names accepted in the Host header (comma-separated), besides loopback names. Add
    /// the load balancer's name in production; `*` accepts any host.
    #[arg(long, env = "ISA_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Serve 2025-11-25 clients without sessions too, for load balancers without stickiness.
    #[arg(long, env = "ISA_MCP_STATELESS")]
    pub stateless: bool,
    /// Secret that seals the request state of tool calls waiting for the client's answers
    /// (2026-07-28). Every instance behind one load balancer needs the same one; without it a
    /// random key is made at start, so answers pending at a restart must be given again.
    #[arg(long, env = "ISA_MCP_STATE_SECRET", hide_env_values = true)]
    pub state_secret: Option<String>,
    /// Directory of the server's data; catalogs imported with `isa-mcp tools import` live in
    /// its `catalog/` folder and are loaded at start.
    #[arg(long, env = "ISA_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// More catalog files to load for discovery (comma-separated).
    #[arg(long, env = "ISA_MCP_CATALOG", value_delimiter = ',')]
    pub catalog: Vec<PathBuf>,
    /// Upstream MCP servers whose tools this server offers as `name/tool` (comma-separated
    /// `name=http://host:port/mcp`).
    #[arg(long = "upstream", env = "ISA_MCP_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<UpstreamConfig>,
    /// Tools whose calls the user confirms, or no longer confirms, over what each tool says
    /// (comma-separated `name`, `name=when-possible` to run unconfirmed where the client
    /// cannot ask, `name=never`): `--confirm-tools shop/purchase`.
    #[arg(long, env = "ISA_MCP_CONFIRM_TOOLS", value_delimiter = ',', value_parser = parse_confirmation)]
    pub confirm_tools: Vec<(String, Option<Confirmation>)>,
    /// Where the tool index lives.
    #[arg(long, env = "ISA_MCP_INDEX", value_enum, default_value = "memory")]
    pub index: IndexBackend,
    /// Table of the shared pgvector index.
    #[arg(long, env = "ISA_MCP_INDEX_TABLE", default_value = "isa_tool_index")]
    pub index_table: String,
    /// Weight of the dense score in hybrid selection.
    #[arg(long, env = "ISA_MCP_DENSE_WEIGHT", default_value_t = DEFAULT_DENSE_WEIGHT)]
    pub dense_weight: f32,
    /// Discovery answers that no tool fits a request whose cosine similarity with every tool
    /// is below this; 0 turns it off. The default is calibrated for the default embedding
    /// model: with another (`ISA_EMBEDDING_MODEL_DIR`), choose one with `isa-mcp tools eval
    /// --irrelevant`. Not applied when the model did not load (selection is then lexical).
    #[arg(long, env = "ISA_MCP_MIN_RELEVANCE", default_value_t = DEFAULT_MIN_RELEVANCE)]
    pub min_relevance: f32,
    /// Seconds a tool call may run before it is answered with a timeout error.
    #[arg(long, env = "ISA_MCP_TOOL_TIMEOUT", default_value_t = 60)]
    pub tool_timeout: u64,
    /// Calls of one tool that may run at once; more are refused at once as busy.
    #[arg(long, env = "ISA_MCP_TOOL_CONCURRENCY", default_value_t = 64)]
    pub tool_concurrency: usize,
    /// Address ranges web_fetch and the browser may reach although they are not public
    /// (comma-separated CIDRs such as 10.0.0.0/8). Loopback, private, link-local and
    /// unique-local addresses are refused otherwise.
    #[arg(long, env = "ISA_NET_ALLOW", value_delimiter = ',')]
    pub net_allow: Vec<String>,
    /// Chromium for the browser tools; they are offered when this file exists.
    #[arg(long, env = "ISA_CHROMIUM", default_value = "/usr/bin/chromium")]
    pub chromium: PathBuf,
    /// Require a bearer credential on /mcp, /discover, /search, /stats and /capabilities:
    /// `auto` requires one whenever the server listens beyond loopback.
    #[arg(long, env = "ISA_MCP_REQUIRE_AUTH", value_enum, default_value = "auto")]
    pub require_auth: RequireAuth,
    /// The URL clients use for this server's MCP endpoint (the OAuth resource, and the
    /// audience of its tokens); `http://{bind}/mcp` when not set.
    #[arg(long, env = "ISA_MCP_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Token issuers (Supabase, Auth0).
    #[command(flatten)]
    pub issuers: isa_auth::IssuerSettings,
    /// Address of the user service (users, API keys, files, credits), or `off`.
    #[arg(long, env = "ISA_USERS_BIND", default_value = "127.0.0.1:8100")]
    pub users_bind: ServiceBind,
    /// Address of the event service, or `off`.
    #[arg(long, env = "ISA_EVENTS_BIND", default_value = "127.0.0.1:8101")]
    pub events_bind: ServiceBind,
    /// The database: `postgres://…` (Supabase-compatible) or `sqlite://…`; a SQLite file in
    /// the data directory when not set.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Base URL of presigned links to files on local disk, which the user service serves;
    /// `http://{users-bind}/files` when not set.
    #[arg(long, env = "ISA_FILES_URL")]
    pub files_url: Option<String>,
    /// Largest user file, in bytes.
    #[arg(long, env = "ISA_FILE_MAX_SIZE", default_value_t = isa_core::DEFAULT_MAX_FILE_SIZE)]
    pub file_max_size: u64,
    /// Seconds a presigned file URL stays valid (at most 7 days).
    #[arg(long, env = "ISA_FILE_URL_TTL", default_value_t = 3600)]
    pub file_url_ttl: u64,
    /// Credits a user starts with.
    #[arg(long, env = "ISA_INITIAL_CREDITS", default_value_t = 0)]
    pub initial_credits: i64,
    /// Requests each listener (MCP, users, events) works on at once; more are refused with 503.
    #[arg(long, env = "ISA_API_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub api_concurrency: usize,
    /// S3 bucket of user files; files live on local disk under the data directory when unset.
    /// Credentials come from the environment or the instance role.
    #[arg(long, env = "AWS_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Region of the S3 bucket.
    #[arg(long, env = "AWS_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Endpoint of an S3-compatible server (Garage, MinIO); path-style addressing then.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// Events handed to the agent service.
    #[command(flatten)]
    pub agent: crate::api::agent_handoff::HandoffSettings,
    /// Seconds to let running calls finish after a shutdown signal.
    #[arg(long, env = "ISA_MCP_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
}

fn parse_confirmation(text: &str) -> std::result::Result<(String, Option<Confirmation>), String> {
    let (name, policy) = text.split_once('=').unwrap_or((text, "required"));
    let policy = match policy {
        "required" => Some(Confirmation::Required),
        "when-possible" => Some(Confirmation::WhenPossible),
        "never" => None,
        other => {
            return Err(format!(
                "{other:?}: expected required, when-possible or never"
            ));
        }
    };
    if name.is_empty() {
        return Err("a tool name is needed".into());
    }
    Ok((name.to_owned(), policy))
}

impl Settings {
    /// Settings from `isa-mcp serve`'s arguments (without the program and command name) and
    /// the environment, exactly as the command line reads them.
    pub fn parse_from<I, T>(args: I) -> std::result::Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            settings: Settings,
        }
        let program = std::iter::once(std::ffi::OsString::from("serve"));
        let args = program.chain(args.into_iter().map(Into::into));
        <Serve as clap::Parser>::try_parse_from(args).map(|serve| serve.settings)
    }
}

pub use isa_storage::db::default_data_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_read_per_tool_and_a_wrong_policy_is_named() {
        let settings = Settings::parse_from([
            "--confirm-tools",
            "shop/purchase,notes/wipe=when-possible,file_delete=never",
        ])
        .unwrap();
        assert_eq!(
            settings.confirm_tools,
            vec![
                ("shop/purchase".to_owned(), Some(Confirmation::Required)),
                ("notes/wipe".to_owned(), Some(Confirmation::WhenPossible)),
                ("file_delete".to_owned(), None),
            ]
        );
        let wrong = Settings::parse_from(["--confirm-tools", "file_delete=sometimes"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            wrong.contains("\"sometimes\": expected required, when-possible or never"),
            "{wrong}"
        );
    }
}
