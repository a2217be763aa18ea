//! The gateway: tools of other Streamable HTTP MCP servers ("upstreams") join this server's
//! registry as `upstream/tool`, become searchable, and are called through here.
//!
//! Each upstream has a task that connects (a 2025-11-25 session, so the upstream can announce
//! `tools/list_changed`), imports its tools, refreshes them on every announcement, and
//! reconnects with backoff when the connection is lost. An upstream that is down never fails
//! this server: its tools answer with an error result, and `/health` shows the detail.

use std::{
    collections::BTreeSet,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use isa_core::{
    CallContext, Content, Error, HealthCheck, JsonObject, Result, Tool, ToolAnnotations,
    ToolOutput, ToolSpec, async_trait, mcp::McpServer,
};
use parking_lot::Mutex;
use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{CallToolRequestParams, ClientConfig, ContentBlock, ProtocolVersion},
    service::{NotificationContext, Peer},
    transport::StreamableHttpClientTransport,
};
use tokio::sync::mpsc;

/// One upstream MCP server: `name=url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Prefix of its tools' ids (`name/tool`); letters, digits, `-` and `_`.
    pub name: String,
    /// Its Streamable HTTP endpoint.
    pub url: String,
}

impl FromStr for UpstreamConfig {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, url) = s.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "upstream {s:?} must look like name=http://host:port/mcp"
            ))
        })?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Config(format!(
                "upstream name {name:?}: use letters, digits, - and _"
            )));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "upstream {name}: {url:?} is not an http(s) URL"
            )));
        }
        Ok(UpstreamConfig {
            name: name.to_owned(),
            url: url.to_owned(),
        })
    }
}

#[derive(Default)]
struct LinkState {
    peer: Option<Peer<RoleClient>>,
    tools: BTreeSet<String>,
    last_error: Option<String>,
}

/// The connection to one upstream, shared by its task, its tools and its health check.
struct Link {
    config: UpstreamConfig,
    state: Mutex<LinkState>,
    /// Asks the link's task to reconnect (after a failed call).
    reconnect: mpsc::Sender<()>,
}

/// Receives the upstream's notifications.
struct Listener {
    refresh: mpsc::Sender<()>,
}

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // A refresh already pending covers this one too.
        let _ = self.refresh.try_send(());
    }
}

/// The configured upstreams. Create it before the server (its health checks go into the
/// server's builder), then [`Gateway::start`] it.
pub struct Gateway {
    links: Vec<(Arc<Link>, mpsc::Receiver<()>)>,
    checks: Vec<Arc<dyn HealthCheck>>,
}

impl Gateway {
    /// A gateway for `upstreams`; nothing connects until [`Gateway::start`].
    pub fn new(upstreams: Vec<UpstreamConfig>) -> Self {
        let mut links = Vec::new();
        let mut checks: Vec<Arc<dyn HealthCheck>> = Vec::new();
        for config in upstreams {
            let (reconnect, requests) = mpsc::channel(1);
            let link = Arc::new(Link {
                config,
                state: Mutex::default(),
                reconnect,
            });
            checks.push(Arc::new(UpstreamHealth(link.clone())));
            links.push((link, requests));
        }
        Gateway { links, checks }
    }

    /// One health check per upstream, reported by `/health` without making the server unready.
    pub fn health_checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        self.checks.clone()
    }

    /// Starts every upstream's task and waits up to `first_wait` for their first import, so a
    /// server starting with reachable upstreams offers their tools from its first request.
    pub async fn start(self, server: &McpServer, first_wait: Duration) {
        let mut first_imports = Vec::new();
        for (link, reconnects) in self.links {
            let (imported, first) = tokio::sync::oneshot::channel();
            first_imports.push(first);
            tokio::spawn(run_link(link, server.clone(), reconnects, imported));
        }
        let deadline = Instant::now() + first_wait;
        for first in first_imports {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left, first).await;
        }
    }
}

/// Connects, imports, refreshes on announcements, reconnects with backoff, forever.
async fn run_link(
    link: Arc<Link>,
    server: McpServer,
    mut reconnects: mpsc::Receiver<()>,
    imported: tokio::sync::oneshot::Sender<()>,
) {
    let mut imported = Some(imported);
    let mut backoff = Duration::from_millis(250);
    loop {
        let (refresh, mut refreshes) = mpsc::channel(1);
        let transport = StreamableHttpClientTransport::from_uri(link.config.url.clone());
        match (Listener { refresh }).serve(transport).await {
            Ok(running) => {
                let peer = running.peer().clone();
                link.state.lock().peer = Some(peer.clone());
                let mut outcome = import(&link, &server, &peer).await;
                if let Some(done) = imported.take() {
                    let _ = done.send(());
                }
                let mut closed = Box::pin(running.waiting());
                while outcome.is_ok() {
                    tokio::select! {
                        _ = &mut closed => { outcome = Err(Error::Unavailable("connection closed".into())); }
                        _ = reconnects.recv() => { outcome = Err(Error::Unavailable("a call failed".into())); }
                        _ = refreshes.recv() => { outcome = import(&link, &server, &peer).await; }
                    }
                }
                if let Err(e) = outcome {
                    record_down(&link, e.to_string());
                }
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                record_down(&link, format!("cannot connect: {e}"));
                if let Some(done) = imported.take() {
                    let _ = done.send(());
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn record_down(link: &Link, why: String) {
    tracing::warn!(upstream = %link.config.name, %why, "upstream unavailable");
    let mut state = link.state.lock();
    state.peer = None;
    state.last_error = Some(why);
}

/// Lists the upstream's tools and makes the registry match: new and changed tools are added,
/// vanished ones removed.
async fn import(link: &Arc<Link>, server: &McpServer, peer: &Peer<RoleClient>) -> Result<()> {
    let tools = peer
        .list_all_tools()
        .await
        .map_err(|e| Error::Unavailable(format!("tools/list failed: {e}")))?;
    let mut names = BTreeSet::new();
    let mut proxies: Vec<Arc<dyn Tool>> = Vec::new();
    for tool in tools {
        let annotations = tool
            .annotations
            .as_ref()
            .and_then(|a| serde_json::to_value(a).ok())
            .and_then(|v| serde_json::from_value::<ToolAnnotations>(v).ok())
            .unwrap_or_default();
        let mut spec = ToolSpec::new(
            format!("{}/{}", link.config.name, tool.name),
            tool.description.as_deref().unwrap_or_default(),
        )
        .with_annotations(annotations)
        .with_tags(["upstream".to_owned(), link.config.name.clone()]);
        spec.input_schema = (*tool.input_schema).clone();
        spec.output_schema = tool.output_schema.as_deref().cloned();
        names.insert(spec.name.clone());
        proxies.push(Arc::new(ProxyTool {
            spec,
            remote: tool.name.to_string(),
            link: link.clone(),
        }));
    }
    let count = proxies.len();
    server.add_tools(proxies).await?;
    let vanished: Vec<String> = {
        let mut state = link.state.lock();
        let vanished = state.tools.difference(&names).cloned().collect();
        state.tools = names;
        state.last_error = None;
        vanished
    };
    for name in vanished {
        server.remove_tool(&name).await?;
    }
    tracing::info!(upstream = %link.config.name, tools = count, "upstream tools imported");
    Ok(())
}

/// A tool of an upstream, called through the link.
struct ProxyTool {
    spec: ToolSpec,
    remote: String,
    link: Arc<Link>,
}

#[async_trait]
impl Tool for ProxyTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: JsonObject, _ctx: &CallContext) -> Result<ToolOutput> {
        let upstream = &self.link.config.name;
        let Some(peer) = self.link.state.lock().peer.clone() else {
            return Ok(ToolOutput::error(format!(
                "upstream {upstream} is unreachable; try again later"
            )));
        };
        let params = CallToolRequestParams::new(self.remote.clone()).with_arguments(args);
        match peer.call_tool(params).await {
            Ok(result) => Ok(ToolOutput {
                content: result.content.iter().filter_map(content).collect(),
                structured_content: result.structured_content,
                is_error: result.is_error.unwrap_or(false),
            }),
            Err(e) => {
                let _ = self.link.reconnect.try_send(());
                Ok(ToolOutput::error(format!(
                    "upstream {upstream} failed: {e}"
                )))
            }
        }
    }
}

fn content(block: &ContentBlock) -> Option<Content> {
    serde_json::to_value(block).ok().and_then(|v| {
        // Embedded resources nest their fields under `resource` on the wire.
        let flat = match v.get("resource") {
            Some(resource) if v["type"] == "resource" => {
                let mut flat = resource.clone();
                flat["type"] = "resource".into();
                flat
            }
            _ => v,
        };
        serde_json::from_value(flat).ok()
    })
}

/// `/health` detail for one upstream; never makes the server unready.
struct UpstreamHealth(Arc<Link>);

#[async_trait]
impl HealthCheck for UpstreamHealth {
    fn name(&self) -> &str {
        &self.0.config.name
    }

    fn required(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<()> {
        let state = self.0.state.lock();
        match (&state.peer, &state.last_error) {
            (Some(_), _) => Ok(()),
            (None, Some(why)) => Err(Error::Unavailable(format!(
                "upstream {}: {why}",
                self.0.config.url
            ))),
            (None, None) => Err(Error::Unavailable(format!(
                "upstream {}: connecting",
                self.0.config.url
            ))),
        }
    }
}
