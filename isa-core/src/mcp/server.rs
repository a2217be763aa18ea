//! [`McpServer`]: the registry, the selector and the call path, independent of any transport.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    McpConfig, ServerMode,
    input::Sealer,
    registry::{ListChanged, Registry, ToolEntry, ToolLimits},
    stats::Stats,
    tasks::{MemoryTaskStore, Tasks},
};
use crate::{
    CallContext, ClientCapability, Confirmation, Embedder, Error, Event, EventSink, HealthCheck,
    IndexItem, ItemKind, JsonObject, Prompt, PromptMessage, Resource, ResourceContent, Result,
    SelectionQuery, TaskStore, Tool, ToolOutput, ToolSelector, ToolSpec, http::Health,
};

/// Name of the meta-tool that finds tools for a request.
pub const DISCOVER_TOOLS: &str = "discover_tools";
/// Name of the meta-tool that calls any tool by name (listed in `discover` mode).
pub const CALL_TOOL: &str = "call_tool";

/// The smart MCP server: tools, prompts and resources, selection over them, and the call path
/// with validation, limits and statistics. Cheap to clone; clones share everything.
///
/// Mount it with [`McpServer::router`], or call it in process with [`McpServer::call_tool`]
/// and [`McpServer::discover`].
///
/// ```
/// use isa_core::{mcp::{McpConfig, McpServer}, tool_fn, CallContext, ToolOutput, ToolSpec};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let server = McpServer::builder(McpConfig::default()).build();
/// server.add_tool(tool_fn(ToolSpec::new("ping", "Answers pong"), |_, _| async {
///     Ok(ToolOutput::text("pong"))
/// })).await.unwrap();
/// let out = server.call_tool("ping", None, &CallContext::default()).await.unwrap();
/// assert_eq!(out, ToolOutput::text("pong"));
/// let app: axum::Router = server.router();
/// # drop(app);
/// # });
/// ```
#[derive(Clone)]
pub struct McpServer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: McpConfig,
    pub registry: Registry,
    pub selector: Option<Arc<dyn ToolSelector>>,
    pub embedder: Option<Arc<dyn Embedder>>,
    pub events: Option<Arc<dyn EventSink>>,
    pub health: Health,
    pub stats: Stats,
    /// Calls running as tasks, and where they are stored.
    pub tasks: Tasks,
    /// Seals the request state of calls that ask their client (2026-07-28).
    pub sealer: Sealer,
    /// Serialises registry changes so the selector and the registry change in the same order.
    writes: tokio::sync::Mutex<()>,
    pub shutdown: CancellationToken,
    /// MCP requests being answered (tool calls among them), for [`McpServer::drain`].
    in_flight: AtomicUsize,
    drained: Notify,
    calls_running: AtomicUsize,
}

/// Builds an [`McpServer`].
pub struct McpServerBuilder {
    config: McpConfig,
    selector: Option<Arc<dyn ToolSelector>>,
    embedder: Option<Arc<dyn Embedder>>,
    events: Option<Arc<dyn EventSink>>,
    health: Vec<Arc<dyn HealthCheck>>,
    tasks: Option<Arc<dyn TaskStore>>,
}

impl McpServerBuilder {
    /// The selector behind `discover_tools`, `/discover` and `/search`. Without one, discovery
    /// answers that it is not configured.
    pub fn selector(mut self, selector: Arc<dyn ToolSelector>) -> Self {
        self.selector = Some(selector);
        self
    }

    /// The embedder whose cache statistics `/stats` and `/metrics` report.
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Where a `tool.called` event goes after every tool call (tool, outcome, duration, user).
    pub fn events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// A readiness check reported by `/health` (embedder, database, object store, upstreams).
    pub fn health_check(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.health.push(check);
        self
    }

    /// Where calls running as tasks are kept: a database's store lets every instance behind
    /// a load balancer answer for every task. In memory when not set.
    pub fn tasks(mut self, store: Arc<dyn TaskStore>) -> Self {
        self.tasks = Some(store);
        self
    }

    /// Builds the server.
    pub fn build(self) -> McpServer {
        McpServer {
            inner: Arc::new(Inner {
                sealer: Sealer::new(&self.config.state_key, self.config.input_ttl),
                tasks: Tasks::new(
                    self.tasks
                        .unwrap_or_else(|| Arc::new(MemoryTaskStore::default())),
                ),
                config: self.config,
                registry: Registry::new(),
                selector: self.selector,
                embedder: self.embedder,
                events: self.events,
                health: Health::new(self.health),
                stats: Stats::default(),
                writes: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
                in_flight: AtomicUsize::new(0),
                drained: Notify::new(),
                calls_running: AtomicUsize::new(0),
            }),
        }
    }
}

/// One item found by [`McpServer::discover`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discovered {
    /// Tool, prompt or resource.
    pub kind: ItemKind,
    /// Its id: tool or prompt name, resource URI.
    pub id: String,
    /// Its score in `[0, 1]`.
    pub score: f32,
    /// Its full spec as clients see it in the corresponding list.
    pub spec: Value,
}

impl McpServer {
    /// Starts building a server with `config`.
    pub fn builder(config: McpConfig) -> McpServerBuilder {
        McpServerBuilder {
            config,
            selector: None,
            embedder: None,
            events: None,
            health: Vec::new(),
            tasks: None,
        }
    }

    /// The configuration the server was built with.
    pub fn config(&self) -> &McpConfig {
        &self.inner.config
    }

    /// Adds (or replaces) a tool with the default limits.
    pub async fn add_tool(&self, tool: Arc<dyn Tool>) -> Result<()> {
        self.add_tools(vec![tool]).await
    }

    /// Adds (or replaces) many tools at once with the default limits: one selector update,
    /// one `list_changed`.
    pub async fn add_tools(&self, tools: Vec<Arc<dyn Tool>>) -> Result<()> {
        let limits = self.inner.config.default_limits;
        self.add_tools_with_limits(tools.into_iter().map(|t| (t, limits)).collect())
            .await
    }

    /// Adds (or replaces) many tools, each with its own limits. Each tool's schemas are
    /// checked first; if any is invalid nothing is added.
    pub async fn add_tools_with_limits(
        &self,
        tools: Vec<(Arc<dyn Tool>, ToolLimits)>,
    ) -> Result<()> {
        let entries = tools
            .into_iter()
            .map(|(tool, limits)| ToolEntry::new(tool, limits).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        if entries.is_empty() {
            return Ok(());
        }
        let _writing = self.inner.writes.lock().await;
        let started = Instant::now();
        if let Some(selector) = &self.inner.selector {
            let items = entries
                .iter()
                .map(|e| IndexItem::from_tool(e.tool.spec()))
                .collect();
            selector.upsert(items).await?;
        }
        {
            let mut registry = self.inner.registry.tools.write();
            for entry in entries {
                registry.insert(entry.tool.spec().name.clone(), entry);
            }
        }
        self.record_index_build(started);
        self.inner.registry.announce(ListChanged::Tools);
        Ok(())
    }

    /// Removes a tool; returns whether it was there. It disappears from the list before the
    /// selector forgets it, so discovery never offers a tool that cannot be called.
    pub async fn remove_tool(&self, name: &str) -> Result<bool> {
        let _writing = self.inner.writes.lock().await;
        let removed = self.inner.registry.tools.write().remove(name).is_some();
        if removed {
            if let Some(selector) = &self.inner.selector {
                selector.remove(&[name.to_owned()]).await?;
            }
            self.inner.registry.announce(ListChanged::Tools);
        }
        Ok(removed)
    }

    /// Adds (or replaces) a prompt.
    pub async fn add_prompt(&self, prompt: Arc<dyn Prompt>) -> Result<()> {
        let _writing = self.inner.writes.lock().await;
        if let Some(selector) = &self.inner.selector {
            selector.upsert(vec![prompt.spec().index_item()]).await?;
        }
        let name = prompt.spec().name.clone();
        self.inner.registry.prompts.write().insert(name, prompt);
        self.inner.registry.announce(ListChanged::Prompts);
        Ok(())
    }

    /// Adds (or replaces) a resource or resource template, keyed by its URI.
    pub async fn add_resource(&self, resource: Arc<dyn Resource>) -> Result<()> {
        let _writing = self.inner.writes.lock().await;
        if let Some(selector) = &self.inner.selector {
            selector.upsert(vec![resource.spec().index_item()]).await?;
        }
        let uri = resource.spec().uri.clone();
        self.inner.registry.resources.write().insert(uri, resource);
        self.inner.registry.announce(ListChanged::Resources);
        Ok(())
    }

    fn record_index_build(&self, started: Instant) {
        let ms = started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.inner
            .stats
            .index_build_ms
            .fetch_add(ms, Ordering::Relaxed);
    }

    /// Names of the tools that need a scope `ctx` does not hold: nothing shows them to it.
    pub(crate) fn tools_hidden_from(&self, ctx: &CallContext) -> Vec<String> {
        self.inner
            .registry
            .tools
            .read()
            .values()
            .filter(|e| !ctx.may_use(e.tool.spec().required_scope.as_deref()))
            .map(|e| e.tool.spec().name.clone())
            .collect()
    }

    /// Specs of the tools `ctx` may use, in name order.
    pub fn tool_specs(&self, ctx: &CallContext) -> Vec<ToolSpec> {
        self.inner
            .registry
            .tools
            .read()
            .values()
            .filter(|e| ctx.may_use(e.tool.spec().required_scope.as_deref()))
            .map(|e| e.tool.spec().clone())
            .collect()
    }

    /// The meta-tools this server lists: `discover_tools` when a selector is configured, and
    /// `call_tool` in `discover` mode.
    pub(crate) fn meta_tools(&self) -> Vec<ToolSpec> {
        let mut tools = Vec::new();
        if self.inner.selector.is_some() {
            tools.push(discover_tools_spec(self.inner.config.max_discover));
        }
        if self.inner.config.mode == ServerMode::Discover {
            tools.push(call_tool_spec());
        }
        tools
    }

    /// Calls a tool as `ctx`.
    ///
    /// Returns `Err` only when the call cannot reach a tool: an unknown name, or a tool the
    /// caller may not use (both answered as if the tool did not exist). Everything that goes
    /// wrong once the tool is found (invalid arguments, a timeout, the tool's own failure or
    /// panic, output that contradicts its schema) is an error *result*, which the model reads.
    pub async fn call_tool(
        &self,
        name: &str,
        args: Option<JsonObject>,
        ctx: &CallContext,
    ) -> Result<ToolOutput> {
        if let Some(entry) = self.inner.registry.tool(name) {
            return self.call_entry(entry, args.unwrap_or_default(), ctx).await;
        }
        match name {
            DISCOVER_TOOLS if self.inner.selector.is_some() => Ok(self
                .discover_tools_call(args.unwrap_or_default(), ctx)
                .await),
            CALL_TOOL if self.inner.config.mode == ServerMode::Discover => {
                let mut args = args.unwrap_or_default();
                let Some(Value::String(target)) = args.remove("name") else {
                    return Ok(ToolOutput::error(
                        "call_tool needs `name`, the tool to call, as a string",
                    ));
                };
                let inner_args = match args.remove("arguments") {
                    None | Some(Value::Null) => JsonObject::new(),
                    Some(Value::Object(map)) => map,
                    Some(_) => {
                        return Ok(ToolOutput::error(
                            "call_tool: `arguments` must be an object",
                        ));
                    }
                };
                match self.inner.registry.tool(&target) {
                    Some(entry) => self.call_entry(entry, inner_args, ctx).await,
                    None => Ok(ToolOutput::error(format!(
                        "no tool named {target:?}; use discover_tools to find one"
                    ))),
                }
            }
            _ => Err(Error::NotFound(format!("tool {name:?}"))),
        }
    }

    async fn call_entry(
        &self,
        entry: Arc<ToolEntry>,
        args: JsonObject,
        ctx: &CallContext,
    ) -> Result<ToolOutput> {
        match self.run_entry(entry, args, ctx).await {
            Err(Error::Internal(message)) => Ok(ToolOutput::error(message)),
            outcome => outcome,
        }
    }

    /// A call of the tool `name` running as a task: as [`McpServer::call_tool`], except that a
    /// tool that panics fails the call ([`Error::Internal`]) instead of answering an error
    /// result, so the task is failed rather than completed.
    pub(crate) async fn call_tool_as_task(
        &self,
        name: &str,
        args: JsonObject,
        ctx: &CallContext,
    ) -> Result<ToolOutput> {
        let entry = self
            .inner
            .registry
            .tool(name)
            .ok_or_else(|| Error::NotFound(format!("tool {name:?}")))?;
        self.run_entry(entry, args, ctx).await
    }

    /// Runs a call, counts it and records it. A tool that panicked is [`Error::Internal`].
    async fn run_entry(
        &self,
        entry: Arc<ToolEntry>,
        args: JsonObject,
        ctx: &CallContext,
    ) -> Result<ToolOutput> {
        let spec = entry.tool.spec();
        if !ctx.may_use(spec.required_scope.as_deref()) {
            return Err(Error::NotFound(format!("tool {:?}", spec.name)));
        }
        let running = CallRunning::enter(self.inner.clone());
        let started = Instant::now();
        let outcome = self.run_checked(&entry, args, ctx).await;
        drop(running);
        // A call waiting for its client (its answers, or to poll its task) is not a call made
        // yet: it is neither counted nor recorded until the round that finishes it.
        if let Err(Error::Suspended) = outcome {
            return outcome;
        }
        let is_error = outcome.as_ref().map_or(true, |output| output.is_error);
        self.inner.stats.record_call(&spec.name, is_error);
        if let Some(events) = &self.inner.events {
            let payload = json!({
                "tool": spec.name,
                "is_error": is_error,
                "duration_ms": started.elapsed().as_secs_f64() * 1e3,
            });
            events
                .emit(Event::now("tool.called", ctx.user().cloned(), payload))
                .await;
        }
        outcome
    }

    /// Runs a tool after checking its arguments, its confirmation and its limits. Fails only
    /// with [`Error::Suspended`], or [`Error::Internal`] when the tool panicked: every other
    /// failure is an error result the model reads.
    async fn run_checked(
        &self,
        entry: &ToolEntry,
        args: JsonObject,
        ctx: &CallContext,
    ) -> Result<ToolOutput> {
        let spec = entry.tool.spec();
        let args_value = Value::Object(args);
        let problems: Vec<String> = entry
            .input_validator
            .iter_errors(&args_value)
            .take(5)
            .map(|e| describe_schema_error(&e))
            .collect();
        if !problems.is_empty() {
            return Ok(ToolOutput::error(format!(
                "invalid arguments for {}: {}",
                spec.name,
                problems.join("; ")
            )));
        }
        let confirmation = match self.inner.config.confirmations.get(&spec.name) {
            Some(configured) => *configured,
            None => spec.confirmation,
        };
        if let Some(confirmation) = confirmation
            && let Some(refusal) = confirm(spec, confirmation, &args_value, ctx).await?
        {
            return Ok(refusal);
        }
        let Value::Object(args) = args_value else {
            return Ok(ToolOutput::error("arguments must be an object"));
        };
        let Ok(permit) = entry.permits.clone().try_acquire_owned() else {
            return Ok(ToolOutput::error(format!(
                "{} is busy ({} calls running); try again shortly",
                spec.name, entry.limits.max_concurrent
            )));
        };
        // The call runs in its own task so that a panicking tool becomes an error result
        // instead of taking the request (or a session) down with it. The task holds the permit
        // until it ends, and is aborted when this call is dropped (the client went away), so a
        // tool never runs more often at once than its limit.
        let tool = entry.tool.clone();
        let call_ctx = ctx.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            let _permit = permit;
            tool.call(args, &call_ctx).await
        }));
        let output = match tokio::time::timeout(entry.limits.timeout, task).await {
            Err(_) => {
                return Ok(ToolOutput::error(format!(
                    "{} did not finish within {:?}",
                    spec.name, entry.limits.timeout
                )));
            }
            Ok(Err(join_error)) => {
                tracing::error!(tool = %spec.name, error = %join_error, "tool panicked");
                return Err(Error::internal(format!(
                    "{} failed unexpectedly",
                    spec.name
                )));
            }
            Ok(Ok(Err(Error::Suspended))) => return Err(Error::Suspended),
            Ok(Ok(Err(error))) => return Ok(tool_error_output(&spec.name, error)),
            Ok(Ok(Ok(output))) => output,
        };
        let Some(validator) = entry.output_validator.as_ref().filter(|_| !output.is_error) else {
            return Ok(output);
        };
        let problem = match &output.structured_content {
            None => Some(
                "returned no structured content although it declares an output schema".to_owned(),
            ),
            Some(structured) => validator.iter_errors(structured).next().map(|e| {
                format!(
                    "returned structured content that does not match its output schema: {}",
                    describe_schema_error(&e)
                )
            }),
        };
        Ok(match problem {
            Some(problem) => ToolOutput::error(format!("{} {problem}", spec.name)),
            None => output,
        })
    }

    async fn discover_tools_call(&self, args: JsonObject, ctx: &CallContext) -> ToolOutput {
        let Some(query) = args
            .get("query")
            .and_then(Value::as_str)
            .filter(|q| !q.trim().is_empty())
        else {
            return ToolOutput::error(
                "discover_tools needs `query`: what you want to do, in words",
            );
        };
        let top_k = match args.get("top_k") {
            None | Some(Value::Null) => 5,
            Some(v) => match v.as_u64() {
                Some(k) if k >= 1 => k as usize,
                _ => {
                    return ToolOutput::error("discover_tools: `top_k` must be a positive integer");
                }
            },
        };
        let min_relevance = match args.get("min_relevance") {
            None | Some(Value::Null) => self.inner.config.min_relevance,
            Some(v) => match v.as_f64() {
                Some(min) if (0.0..=1.0).contains(&min) => Some(min as f32),
                _ => {
                    return ToolOutput::error(
                        "discover_tools: `min_relevance` must be a number from 0 to 1",
                    );
                }
            },
        };
        let found = self
            .discover_at(query, top_k, &[ItemKind::Tool], min_relevance, ctx)
            .await;
        match found {
            Ok(found) => {
                let tools: Vec<Value> = found
                    .into_iter()
                    .map(|d| {
                        let mut spec = d.spec;
                        if let Value::Object(map) = &mut spec {
                            map.insert("score".into(), json!(d.score));
                        }
                        spec
                    })
                    .collect();
                if tools.is_empty() {
                    return ToolOutput::json(json!({
                        "tools": [],
                        "note": "no tool fits this request; rephrase it, or answer without a tool",
                    }));
                }
                ToolOutput::json(json!({ "tools": tools }))
            }
            Err(error) => tool_error_output(DISCOVER_TOOLS, error),
        }
    }

    /// Finds the tools, prompts and resources (restricted to `kinds`, all when empty) that best
    /// match `request`, best first, among those `ctx` may use. Never returns an item that is not
    /// registered. `top_k` is capped by [`McpConfig::max_discover`].
    pub async fn discover(
        &self,
        request: &str,
        top_k: usize,
        kinds: &[ItemKind],
        ctx: &CallContext,
    ) -> Result<Vec<Discovered>> {
        let min_relevance = self.inner.config.min_relevance;
        self.discover_at(request, top_k, kinds, min_relevance, ctx)
            .await
    }

    /// [`Self::discover`] with the caller's own minimum relevance (`None`: rank in full).
    async fn discover_at(
        &self,
        request: &str,
        top_k: usize,
        kinds: &[ItemKind],
        min_relevance: Option<f32>,
        ctx: &CallContext,
    ) -> Result<Vec<Discovered>> {
        let Some(selector) = &self.inner.selector else {
            return Err(Error::Unsupported(
                "this server has no tool selector configured".into(),
            ));
        };
        if request.trim().is_empty() {
            return Err(Error::invalid("the request is empty"));
        }
        let top_k = top_k.clamp(1, self.inner.config.max_discover);
        let hidden = self.tools_hidden_from(ctx);
        let mut query = SelectionQuery::new(request, top_k)
            .kinds(kinds.iter().copied())
            .exclude(hidden);
        query.min_relevance = min_relevance.filter(|&min| min > 0.0);
        let started = Instant::now();
        let scored = selector.select(&query).await?;
        let registry = &self.inner.registry;
        let found: Vec<Discovered> = scored
            .into_iter()
            .filter_map(|s| {
                let spec = match s.kind {
                    ItemKind::Tool => serde_json::to_value(registry.tool(&s.id)?.tool.spec()),
                    ItemKind::Prompt => {
                        serde_json::to_value(registry.prompts.read().get(&s.id)?.spec())
                    }
                    ItemKind::Resource => {
                        serde_json::to_value(registry.resources.read().get(&s.id)?.spec())
                    }
                }
                .ok()?;
                Some(Discovered {
                    kind: s.kind,
                    id: s.id,
                    score: s.score,
                    spec,
                })
            })
            .collect();
        self.inner
            .stats
            .record_selection(started.elapsed(), found.iter().map(|d| d.id.clone()));
        Ok(found)
    }

    /// Renders a prompt; `Err(NotFound)` for an unknown name, `Err(InvalidInput)` for a missing
    /// required argument.
    pub async fn get_prompt(
        &self,
        name: &str,
        args: JsonObject,
        ctx: &CallContext,
    ) -> Result<(String, Vec<PromptMessage>)> {
        let prompt = self
            .inner
            .registry
            .prompts
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("prompt {name:?}")))?;
        for argument in &prompt.spec().arguments {
            if argument.required && !args.contains_key(&argument.name) {
                return Err(Error::invalid(format!(
                    "prompt {name} needs the argument {:?}",
                    argument.name
                )));
            }
        }
        let messages = prompt.render(args, ctx).await?;
        Ok((prompt.spec().description.clone(), messages))
    }

    /// Reads a resource by URI (fixed, or matched by a template).
    pub async fn read_resource(
        &self,
        uri: &str,
        ctx: &CallContext,
    ) -> Result<Vec<ResourceContent>> {
        let (resource, vars) = self
            .inner
            .registry
            .resource_for(uri)
            .ok_or_else(|| Error::NotFound(format!("resource {uri:?}")))?;
        resource.read(uri.to_owned(), vars, ctx).await
    }

    /// Cancelled when the server shuts down; long-lived streams end when it fires.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Waits until no MCP request is being answered (or `grace` has passed), then cancels
    /// [`McpServer::shutdown_token`], which closes open streams. Call it after the listener
    /// stopped accepting connections.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.inner.drained.notified();
            if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    running = self.inner.in_flight.load(Ordering::Acquire),
                    "shutdown grace period over with requests still being answered"
                );
                break;
            }
        }
        self.inner.shutdown.cancel();
    }

    /// Serves `app` (usually [`McpServer::router`], perhaps inside a larger router) on
    /// `listener` until `signal` completes, then shuts down gracefully: no new connections,
    /// calls in flight run to completion (for at most `grace`), then open streams close.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        signal: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<()> {
        let draining = self.clone();
        crate::http::serve(listener, app, async move {
            signal.await;
            tracing::info!("shutting down: finishing calls in flight");
            tokio::spawn(async move { draining.drain(grace).await });
        })
        .await
    }

    /// The readiness checks `/health` reports.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// Number of tool calls running now.
    pub fn calls_in_flight(&self) -> usize {
        self.inner.calls_running.load(Ordering::Relaxed)
    }

    /// Counts one MCP request until the returned guard is dropped.
    pub(crate) fn enter_request(&self) -> RequestInFlight {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestInFlight(self.inner.clone())
    }
}

/// A tool call running, counted by [`McpServer::calls_in_flight`] until it is dropped, whether
/// the call finished or was cancelled.
struct CallRunning(Arc<Inner>);

impl CallRunning {
    fn enter(inner: Arc<Inner>) -> Self {
        inner.calls_running.fetch_add(1, Ordering::Relaxed);
        CallRunning(inner)
    }
}

impl Drop for CallRunning {
    fn drop(&mut self) {
        self.0.calls_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An MCP request being answered; see [`McpServer::drain`].
pub(crate) struct RequestInFlight(Arc<Inner>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// A tool's `Err` as the result the model reads. Internal details stay in the log.
/// A tool's error as its result: what the model may read ([`Error::public_message`]); the
/// error itself goes to the log when it is ours rather than the caller's.
/// The key under which a confirmation is asked (one per call).
const CONFIRM_KEY: &str = "isa_confirm";

/// Asks the user to confirm a call of `spec`; `Some` is the result to answer instead of running
/// it (not confirmed, or no way to ask and the tool must not run unconfirmed).
async fn confirm(
    spec: &ToolSpec,
    confirmation: Confirmation,
    args: &Value,
    ctx: &CallContext,
) -> Result<Option<ToolOutput>> {
    if !ctx.client_supports(ClientCapability::Elicitation) {
        return Ok(match confirmation {
            Confirmation::WhenPossible => None,
            Confirmation::Required => Some(ToolOutput::error(format!(
                "{} was not run: it needs the user's confirmation, and this client cannot ask \
                 (it did not declare the elicitation capability)",
                spec.name
            ))),
        });
    }
    let message = format!(
        "Allow {} to run with {args}? {}",
        spec.name, spec.description
    );
    let schema = json!({
        "type": "object",
        "properties": {"confirm": {
            "type": "boolean",
            "title": format!("Run {}", spec.name),
            "description": "Whether to run it",
        }},
        "required": ["confirm"],
    });
    let answer = match ctx.elicit(CONFIRM_KEY, &message, schema).await {
        Ok(answer) => answer,
        Err(Error::Suspended) => return Err(Error::Suspended),
        Err(error) => return Ok(Some(tool_error_output(&spec.name, error))),
    };
    Ok(match answer.field("confirm") {
        Some(Value::Bool(true)) => None,
        _ => Some(ToolOutput::error(format!(
            "{} was not run: the user did not confirm it",
            spec.name
        ))),
    })
}

fn tool_error_output(tool: &str, error: Error) -> ToolOutput {
    let message = error.public_message();
    if message != error.to_string() {
        tracing::warn!(%tool, %error, "tool failed");
    }
    ToolOutput::error(format!("{tool}: {message}"))
}

fn describe_schema_error(error: &jsonschema::ValidationError<'_>) -> String {
    let path = error.instance_path().to_string();
    if path.is_empty() {
        error.to_string()
    } else {
        format!("{path}: {error}")
    }
}

fn discover_tools_spec(max: usize) -> ToolSpec {
    ToolSpec::new(
        DISCOVER_TOOLS,
        "Find the tools that fit a task. Describe what you want to do; returns the best matching \
         tools with their full input schemas and a relevance score, best first, or none when no \
         tool fits the task.",
    )
    .with_input_schema(json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "The task, in natural language", "minLength": 1},
            "top_k": {"type": "integer", "description": "How many tools to return", "minimum": 1, "maximum": max, "default": 5},
            "min_relevance": {"type": "number", "description": "Return no tool when none is at least this relevant (0 to 1; 0 always returns the best); the server's own setting by default", "minimum": 0, "maximum": 1}
        },
        "required": ["query"]
    }))
    .with_annotations(crate::ToolAnnotations {
        read_only_hint: Some(true),
        ..Default::default()
    })
}

fn call_tool_spec() -> ToolSpec {
    ToolSpec::new(
        CALL_TOOL,
        "Call a tool found with discover_tools, by name, with arguments matching its input schema.",
    )
    .with_input_schema(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "The tool's name, as discover_tools returned it"},
            "arguments": {"type": "object", "description": "The tool's arguments"}
        },
        "required": ["name"]
    }))
}
