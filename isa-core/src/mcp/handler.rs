//! The rmcp `ServerHandler` over an [`McpServer`]: MCP requests in, registry calls out.

#![allow(deprecated)] // logging and resources/subscribe are deprecated in 2026-07-28 but still served to 2025-11-25 clients

use std::sync::Arc;

use async_trait::async_trait;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities,
        CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse,
        GetPromptResult, GetTaskParams, GetTaskResult, Implementation, InputRequiredResult,
        InputResponses, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
        ListToolsResult, LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams,
        ProgressNotificationParam, ProgressToken, ReadResourceRequestParams, ReadResourceResponse,
        ReadResourceResult, ServerCapabilities, ServerConfig, SetLevelRequestParams,
        SubscribeRequestParams, SubscriptionFilter, TASKS_EXTENSION_ID, UnsubscribeRequestParams,
        UpdateTaskParams,
    },
    service::{NotificationContext, Peer, RequestContext, SubscriptionContext},
};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{
    DISCOVER_TOOLS, ListChanged, McpServer, ServerMode, convert,
    input::{self, RoundTrip, SessionChannel, TaskPhase},
    registry::page,
};
use crate::{CallContext, Error, Identity, Reporter, TaskSupport};

/// One handler per session (or per stateless request); all share the server.
#[derive(Clone)]
pub(crate) struct Handler {
    pub server: McpServer,
}

impl Handler {
    fn call_context(&self, context: &RequestContext<RoleServer>) -> CallContext {
        CallContext {
            identity: identity(context),
            // Not the client's JSON-RPC id: every client numbers its requests from 1, and a
            // tool that charges once per request id must never take two clients' calls as one.
            request_id: Some(uuid::Uuid::now_v7().to_string()),
            ..Default::default()
        }
    }
}

/// What a request's answers are checked against once its call ends ([`crate::ask`]).
struct Asking {
    /// 2026-07-28: the answers this round brought, and what the request state is bound to.
    round_trip: Option<(Arc<RoundTrip>, Vec<u8>)>,
}

impl Handler {
    /// Gives `ctx` the channel for a request named `name` with `arguments` from a client that
    /// `declared` its capabilities: a session's own requests to its client (2025-11-25), or the
    /// answers that came with this round (2026-07-28): its `inputResponses` and, from its
    /// sealed `requestState`, those of the rounds before.
    /// `round` is what the client sent back: `inputResponses` and `requestState`.
    fn asking(
        &self,
        context: &RequestContext<RoleServer>,
        ctx: &mut CallContext,
        declared: ClientCapabilities,
        request: (&str, &str, &Value),
        round: (Option<InputResponses>, Option<&str>),
        phase: TaskPhase,
    ) -> Result<Asking, McpError> {
        let (responses, state) = round;
        if !per_request(context) {
            ctx.client = Some(Arc::new(SessionChannel {
                peer: context.peer.clone(),
                declared,
            }));
            return Ok(Asking { round_trip: None });
        }
        let (method, name, arguments) = request;
        let binding = input::binding(ctx.user().map(|u| u.as_str()), method, name, arguments);
        let mut answers = match state {
            Some(token) => self
                .server
                .inner
                .sealer
                .open(&binding, token)
                .map_err(protocol_error)?,
            None => Map::new(),
        };
        for (key, answer) in responses.unwrap_or_default() {
            if !answer.is_object() {
                return Err(McpError::invalid_params(
                    format!(
                        "inputResponses.{key} must be an object: the result of the request \
                         asked under that key"
                    ),
                    None,
                ));
            }
            answers.insert(key, answer);
        }
        let round_trip = Arc::new(RoundTrip::new(declared, answers, phase));
        ctx.client = Some(round_trip.clone());
        Ok(Asking {
            round_trip: Some((round_trip, binding)),
        })
    }
}

impl Asking {
    /// The input-required result of a request that failed with [`Error::Suspended`].
    fn input_required(&self, server: &McpServer) -> Result<InputRequiredResult, McpError> {
        let result = match &self.round_trip {
            Some((round_trip, binding)) => round_trip
                .input_required(&server.inner.sealer, binding)
                .map_err(protocol_error)?,
            None => None,
        };
        result.ok_or_else(|| {
            protocol_error(Error::internal(
                "input required, but nothing was asked of a 2026-07-28 client",
            ))
        })
    }
}

/// Whether a request carries its own protocol metadata (2026-07-28) rather than belonging to a
/// 2025-11-25 session.
fn per_request(context: &RequestContext<RoleServer>) -> bool {
    context.meta.protocol_version().is_some()
}

fn identity(context: &RequestContext<RoleServer>) -> Option<Identity> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Identity>())
        .cloned()
}

/// Maps a library error to the JSON-RPC error a client sees, without internal details.
fn protocol_error(error: Error) -> McpError {
    match error {
        Error::NotFound(what) => McpError::invalid_params(format!("unknown {what}"), None),
        Error::InvalidInput(message) => McpError::invalid_params(message, None),
        other => {
            tracing::error!(error = %other, "an MCP request failed");
            McpError::internal_error(other.public_message(), None)
        }
    }
}

fn cursor(request: &Option<PaginatedRequestParams>) -> Option<String> {
    request.as_ref().and_then(|r| r.cursor.clone())
}

/// Sends a call's progress and log messages to the client that made it.
struct PeerReporter {
    peer: Peer<RoleServer>,
    progress_token: Option<ProgressToken>,
    /// The least severe level the client wants, or `None` for no log messages at all. A
    /// 2026-07-28 request asks per request (`_meta.io.modelcontextprotocol/logLevel`); a
    /// 2025-11-25 session gets every message.
    min_log_level: Option<LoggingLevel>,
}

fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

#[async_trait]
impl Reporter for PeerReporter {
    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        let Some(token) = &self.progress_token else {
            return;
        };
        let mut param = ProgressNotificationParam::new(token.clone(), progress);
        param.total = total;
        param.message = message.map(str::to_owned);
        if let Err(error) = self.peer.notify_progress(param).await {
            tracing::debug!(%error, "progress notification not delivered");
        }
    }

    async fn log(&self, level: &str, message: &str) {
        let level = match level {
            "debug" => LoggingLevel::Debug,
            "notice" => LoggingLevel::Notice,
            "warning" | "warn" => LoggingLevel::Warning,
            "error" => LoggingLevel::Error,
            "critical" => LoggingLevel::Critical,
            "alert" => LoggingLevel::Alert,
            "emergency" => LoggingLevel::Emergency,
            _ => LoggingLevel::Info,
        };
        if self
            .min_log_level
            .is_none_or(|min| severity(level) < severity(min))
        {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, json!(message));
        if let Err(error) = self.peer.notify_logging_message(param).await {
            tracing::debug!(%error, "log notification not delivered");
        }
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        let config = self.server.config();
        let capabilities: ServerCapabilities = serde_json::from_value(json!({
            "tools": {"listChanged": true},
            "prompts": {"listChanged": true},
            "resources": {"listChanged": true, "subscribe": true},
            "logging": {},
            "completions": {},
            "extensions": {TASKS_EXTENSION_ID: {}},
        }))
        .unwrap_or_default();
        let info = ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(&config.name, &config.version));
        match &config.instructions {
            Some(text) => info.with_instructions(text.clone()),
            None => info,
        }
    }

    /// The tool as clients see it: rmcp checks the `Mcp-Param-*` headers of a `tools/call`
    /// against the parameters its input schema marks with `x-mcp-header` (SEP-2243).
    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        let entry = self.server.inner.registry.tool(name)?;
        Some(convert::tool(entry.tool.spec()))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let ctx = self.call_context(&context);
        let mut tools: Vec<_> = self.server.meta_tools().iter().map(convert::tool).collect();
        if self.server.config().mode == ServerMode::Discover {
            return Ok(ListToolsResult::with_all_items(tools));
        }
        let cursor = cursor(&request);
        let (page_items, next) = page(
            &self.server.inner.registry.tools.read(),
            cursor.as_deref(),
            self.server.config().page_size,
            |e| ctx.may_use(e.tool.spec().required_scope.as_deref()),
        );
        if cursor.is_some() {
            tools.clear(); // meta-tools are on the first page only
        }
        tools.extend(page_items.iter().map(|e| convert::tool(e.tool.spec())));
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let mut ctx = self.call_context(&context);
        ctx.reporter = Some(Arc::new(PeerReporter {
            peer: context.peer.clone(),
            progress_token: context.meta.get_progress_token(),
            min_log_level: if context.meta.protocol_version().is_some() {
                context.meta.log_level()
            } else {
                Some(LoggingLevel::Debug)
            },
        }));
        let arguments = request.arguments.clone().unwrap_or_default();
        let declared = context.client_capabilities().unwrap_or_default();
        let mut phase = TaskPhase::Never;
        let mut registered = false;
        if let Some(entry) = self.server.inner.registry.tool(&request.name) {
            registered = true;
            let spec = entry.tool.spec();
            if let Some(missing) = input::missing(&declared, &spec.required_client_capabilities) {
                return Err(McpError::missing_required_client_capability(missing));
            }
            let tasks_accepted = declared.supports_tasks() && per_request(&context);
            match spec.task_support {
                TaskSupport::Required if !tasks_accepted => {
                    return Err(McpError::missing_required_client_capability(
                        ClientCapabilities::builder().enable_tasks().build(),
                    ));
                }
                TaskSupport::Optional | TaskSupport::Required if tasks_accepted => {
                    phase = TaskPhase::Request;
                }
                _ => {}
            }
        }
        let asking = self.asking(
            &context,
            &mut ctx,
            declared.clone(),
            (
                "tools/call",
                &request.name,
                &Value::Object(arguments.clone()),
            ),
            (request.input_responses, request.request_state.as_deref()),
            phase,
        )?;
        let call = self
            .server
            .call_tool(&request.name, request.arguments, &ctx);
        // Discovery changes nothing, so a caller that has gone (disconnected, or cancelled the
        // request) stops it: its request leaves the embedder's queue unembedded rather than
        // holding up the callers still waiting.
        let outcome = if request.name == DISCOVER_TOOLS && !registered {
            tokio::select! {
                outcome = call => outcome,
                _ = context.ct.cancelled() => {
                    return Err(McpError::internal_error("the request was cancelled", None));
                }
            }
        } else {
            call.await
        };
        match outcome {
            Ok(output) => Ok(convert::tool_result(output).into()),
            Err(Error::Suspended) => match &asking.round_trip {
                Some((round_trip, _)) if round_trip.escalated() => Ok(self
                    .server
                    .create_task(&ctx, &request.name, arguments, &declared, round_trip.used())
                    .await?
                    .into()),
                _ => Ok(asking.input_required(&self.server)?.into()),
            },
            Err(error) => Err(protocol_error(error)),
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        self.server
            .get_task(&request.task_id, identity(&context).as_ref())
            .await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let responses = request.input_responses.into_iter().collect();
        self.server
            .update_task(&request.task_id, identity(&context).as_ref(), responses)
            .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.server
            .cancel_task(&request.task_id, identity(&context).as_ref())
            .await
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let (items, next) = page(
            &self.server.inner.registry.prompts.read(),
            cursor(&request).as_deref(),
            self.server.config().page_size,
            |_| true,
        );
        let mut result = ListPromptsResult::with_all_items(
            items.iter().map(|p| convert::prompt(p.spec())).collect(),
        );
        result.next_cursor = next;
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let mut ctx = self.call_context(&context);
        let arguments = request.arguments.unwrap_or_default();
        let asking = self.asking(
            &context,
            &mut ctx,
            context.client_capabilities().unwrap_or_default(),
            (
                "prompts/get",
                &request.name,
                &Value::Object(arguments.clone()),
            ),
            (request.input_responses, request.request_state.as_deref()),
            TaskPhase::Never,
        )?;
        let (description, messages) =
            match self.server.get_prompt(&request.name, arguments, &ctx).await {
                Ok(prompt) => prompt,
                Err(Error::Suspended) => {
                    return Ok(asking.input_required(&self.server)?.into());
                }
                Err(error) => return Err(protocol_error(error)),
            };
        let mut result =
            GetPromptResult::new(messages.iter().map(convert::prompt_message).collect());
        if !description.is_empty() {
            result = result.with_description(description);
        }
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let (items, next) = page(
            &self.server.inner.registry.resources.read(),
            cursor(&request).as_deref(),
            self.server.config().page_size,
            |r| !r.spec().is_template(),
        );
        let mut result = ListResourcesResult::with_all_items(
            items.iter().map(|r| convert::resource(r.spec())).collect(),
        );
        result.next_cursor = next;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let (items, next) = page(
            &self.server.inner.registry.resources.read(),
            cursor(&request).as_deref(),
            self.server.config().page_size,
            |r| r.spec().is_template(),
        );
        let mut result = ListResourceTemplatesResult::with_all_items(
            items
                .iter()
                .map(|r| convert::resource_template(r.spec()))
                .collect(),
        );
        result.next_cursor = next;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let mut ctx = self.call_context(&context);
        let asking = self.asking(
            &context,
            &mut ctx,
            context.client_capabilities().unwrap_or_default(),
            ("resources/read", &request.uri, &Value::Null),
            (request.input_responses, request.request_state.as_deref()),
            TaskPhase::Never,
        )?;
        match self.server.read_resource(&request.uri, &ctx).await {
            Ok(contents) => Ok(ReadResourceResult::new(
                contents.iter().map(convert::resource_contents).collect(),
            )
            .into()),
            Err(Error::Suspended) => Ok(asking.input_required(&self.server)?.into()),
            Err(Error::NotFound(_)) => Err(McpError::resource_not_found(
                format!("no resource at {}", request.uri),
                Some(json!({"uri": request.uri})),
            )),
            Err(other) => Err(protocol_error(other)),
        }
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        Ok(CompleteResult::default())
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        match self.server.inner.registry.resource_for(&request.uri) {
            Some(_) => Ok(()),
            None => Err(McpError::resource_not_found(
                format!("no resource at {}", request.uri),
                None,
            )),
        }
    }

    async fn unsubscribe(
        &self,
        _request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    /// 2025-11-25 sessions: forward list changes on the session's stream until it closes.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut changes = self.server.inner.registry.subscribe();
        let shutdown = self.server.shutdown_token();
        let peer = context.peer;
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    change = changes.recv() => change,
                };
                let sent = match change {
                    Ok(ListChanged::Tools) | Err(RecvError::Lagged(_)) => {
                        peer.notify_tool_list_changed().await
                    }
                    Ok(ListChanged::Prompts) => peer.notify_prompt_list_changed().await,
                    Ok(ListChanged::Resources) => peer.notify_resource_list_changed().await,
                    Err(RecvError::Closed) => return,
                };
                if sent.is_err() {
                    return; // the session is gone
                }
            }
        });
    }

    /// 2026-07-28: `subscriptions/listen` may ask for the three list-changed notifications.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resources_list_changed = requested.resources_list_changed;
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let mut changes = self.server.inner.registry.subscribe();
        let shutdown = self.server.shutdown_token();
        loop {
            let change = tokio::select! {
                _ = context.cancelled() => return Ok(()),
                _ = shutdown.cancelled() => return Ok(()),
                change = changes.recv() => change,
            };
            let accepted = context.accepted();
            // A notification the client did not ask for is refused by the sink; that is fine.
            let _ = match change {
                Ok(ListChanged::Tools) | Err(RecvError::Lagged(_))
                    if accepted.tools_list_changed == Some(true) =>
                {
                    context.sink().notify_tool_list_changed().await
                }
                Ok(ListChanged::Prompts) if accepted.prompts_list_changed == Some(true) => {
                    context.sink().notify_prompt_list_changed().await
                }
                Ok(ListChanged::Resources) if accepted.resources_list_changed == Some(true) => {
                    context.sink().notify_resource_list_changed().await
                }
                Err(RecvError::Closed) => return Ok(()),
                _ => Ok(()),
            };
        }
    }
}
