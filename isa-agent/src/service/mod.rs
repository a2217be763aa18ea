//! The agent service (feature `service`): chat runs streamed over HTTP, with sessions, credits
//! and events, on isa's HTTP edge.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/chat` | a run over the caller's session, streamed as isa's envelope, or as the Vercel AI SDK's UI message stream with `?protocol=ai-sdk` |
//! | `GET /api/chat/sessions` | the caller's sessions, newest first |
//! | `GET /api/chat/sessions/{id}` | a session and its messages |
//! | `DELETE /api/chat/sessions/{id}` | deletes a session |
//! | `GET /api/agents` | the agent served: model, system prompt, limits |
//! | `POST /api/agent/test-mcp` | whether the MCP server answers the caller |
//! | `/health`, `/api/agent/health` | the one health shape |
//!
//! Every route but health needs a credential. A run acts for the caller: its model calls reach
//! the model service, and its tool calls the MCP server, with the caller's own credential, so
//! the model service charges the caller and per-user tools (files) act for them alone. An
//! administrator may name another user in `user_id`; anyone else naming another user is
//! refused with 403.

mod history;
mod wire;

use std::{convert::Infallible, sync::Arc, time::Instant};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Path, State},
    http::{StatusCode, header},
    response::Response,
    routing::{get, post},
};
use bytes::Bytes;
use futures::StreamExt;
use isa_auth::{Authenticator, Credential, require_auth};
use isa_core::{
    ChatMessage, CreditLedger, Error, Event, EventSink, Identity, JsonObject, ModelProvider,
    Result, Role, SessionStore, UserId, UserStore,
    http::{
        ApiJson, ApiQuery, ApiResult, Health, RequestId, limit_body, limit_concurrency,
        name_service, no_route, with_request_ids,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

pub use wire::{Billing, Memory};

use crate::{Agent, AgentEvent, AgentRun, Limits, McpConnector, RunSummary};
use wire::{AiSdk, DONE, Envelope, Wire, frame};

/// Characters of a chat message at most.
pub const MAX_MESSAGE_CHARS: usize = 32_000;

/// The agent a service runs.
#[derive(Debug, Clone)]
pub struct AgentProfile {
    /// Its name, as `GET /api/agents` lists it.
    pub name: String,
    /// The model it asks, by the model service's name or alias.
    pub model: String,
    /// What it tells the model first.
    pub system_prompt: Option<String>,
    /// What stops its runs.
    pub limits: Limits,
    /// Characters of a session's earlier messages shown to the model at most (see the rule in
    /// `history`): the newest whole exchanges that fit.
    pub context_chars: usize,
}

/// Gives the model provider that acts for a caller holding a credential (such as the model
/// service reached with that credential), and, for an administrator acting as another user,
/// as that user ([`ACT_FOR_HEADER`](isa_core::ACT_FOR_HEADER)).
pub type ModelForCaller =
    Arc<dyn Fn(&str, Option<&UserId>) -> Result<Arc<dyn ModelProvider>> + Send + Sync>;

/// Everything the service is built from.
#[derive(Clone)]
pub struct Components {
    /// The agent.
    pub profile: AgentProfile,
    /// The model, per caller.
    pub model_for: ModelForCaller,
    /// The MCP server (`http://host:8081/mcp`).
    pub mcp: McpConnector,
    /// Users, made on first sight.
    pub users: Arc<dyn UserStore>,
    /// Where tool calls are charged.
    pub ledger: Arc<dyn CreditLedger>,
    /// The sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Where run events go.
    pub events: Arc<dyn EventSink>,
    /// Credits a user starts with.
    pub initial_credits: i64,
    /// Credits charged for each tool call that answers (0: tool calls are free).
    pub tool_call_credits: i64,
    /// Runs at once; more are refused with 503 at once.
    pub max_concurrent_runs: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
}

#[derive(Clone)]
struct Service {
    components: Arc<Components>,
    runs: Arc<Semaphore>,
}

/// The service's router: the routes above, behind `auth`, with `health` on both health paths.
pub fn router(components: Components, auth: Authenticator, health: Health) -> Router {
    let max_body_bytes = components.max_body_bytes;
    let service = Service {
        runs: Arc::new(Semaphore::new(components.max_concurrent_runs)),
        components: Arc::new(components),
    };
    let app = Router::new()
        .route("/api/chat", post(chat))
        .route("/api/chat/sessions", get(sessions))
        .route(
            "/api/chat/sessions/{id}",
            get(session).delete(delete_session),
        )
        .route("/api/agents", get(agents))
        .route("/api/agent/test-mcp", post(test_mcp))
        .route_layer(axum::middleware::from_fn_with_state(auth, require_auth))
        .with_state(service)
        .merge(health.router(&["/health", "/api/agent/health"]))
        .fallback(no_route);
    // Runs are bounded by their own semaphore; the rest of the routes share a wider bound.
    let app = limit_concurrency(limit_body(app, max_body_bytes), 4096);
    with_request_ids(name_service(app, "agent"))
}

/// A chat request: isa's fields, or the body the AI SDK's `useChat` sends (`id` and
/// `messages`), whose last user message is the one acted on.
#[derive(Debug, Deserialize)]
struct ChatBody {
    message: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    prompt_name: Option<String>,
    prompt_args: Option<serde_json::Map<String, Value>>,
    id: Option<String>,
    messages: Option<Vec<UiMessage>>,
}

#[derive(Debug, Deserialize)]
struct UiMessage {
    role: String,
    #[serde(default)]
    parts: Vec<Value>,
}

impl ChatBody {
    /// The user's message to act on.
    fn message(&self) -> Result<String> {
        let text = match (&self.message, &self.messages) {
            (Some(message), _) => message.clone(),
            (None, Some(messages)) => messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| {
                    m.parts
                        .iter()
                        .filter(|p| p["type"] == "text")
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default(),
            (None, None) => String::new(),
        };
        if text.trim().is_empty() {
            return Err(Error::invalid(
                "message is required: a non-empty text (or, from the AI SDK, a last user message with text)",
            ));
        }
        if text.chars().count() > MAX_MESSAGE_CHARS {
            return Err(Error::invalid(format!(
                "message may have at most {MAX_MESSAGE_CHARS} characters"
            )));
        }
        Ok(text)
    }
}

#[derive(Debug, Deserialize)]
struct ChatQuery {
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UserQuery {
    user_id: Option<String>,
    limit: Option<usize>,
}

/// The user a request acts for: the one named, if the caller may act for them, else the caller.
fn acting_user(identity: &Identity, named: Option<&str>) -> Result<UserId> {
    match named {
        Some(named) => {
            let user = UserId::new(named.to_owned())?;
            identity.authorize_user(&user)?;
            Ok(user)
        }
        None => Ok(identity.user_id.clone()),
    }
}

async fn chat(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    RequestId(request_id): RequestId,
    ApiQuery(query): ApiQuery<ChatQuery>,
    Extension(credential): Extension<Credential>,
    ApiJson(body): ApiJson<ChatBody>,
) -> ApiResult<Response> {
    let ai_sdk = match query.protocol.as_deref() {
        None | Some("isa") => false,
        Some("ai-sdk") => true,
        Some(other) => {
            return Err(Error::invalid(format!(
                "protocol {other:?} is not served: use ai-sdk, or none for isa's envelope"
            ))
            .into());
        }
    };
    let message = body.message()?;
    let user = acting_user(&identity, body.user_id.as_deref())?;
    let session_id = match body.session_id.as_ref().or(body.id.as_ref()) {
        Some(id) => id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    isa_core::check_session_id(&session_id)?;
    let permit = service
        .runs
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded {
            retry_after: std::time::Duration::from_secs(1),
        })?;
    let c = &service.components;

    let email = (user == identity.user_id)
        .then_some(identity.email.as_deref())
        .flatten();
    let account = c.users.ensure_user(&user, email, c.initial_credits).await?;
    if account.credits <= 0 {
        return Err(Error::InsufficientCredits {
            needed: 1,
            balance: account.credits,
        }
        .into());
    }

    // An administrator running a chat for another user acts as that user everywhere, so the
    // user's files are used and the user is charged.
    let acting_as = (user != identity.user_id).then_some(&user);
    let tools = c
        .mcp
        .connect(Some(credential.secret()), acting_as)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "the MCP server could not be reached for a run");
            Error::Unavailable("the MCP server cannot be reached".into())
        })?;
    let prompt = match &body.prompt_name {
        Some(name) => {
            let arguments: JsonObject = body.prompt_args.clone().unwrap_or_default();
            Some(tools.prompt(name, arguments).await?)
        }
        None => None,
    };
    c.sessions.open(&user, &session_id, &message).await?;
    let (_, stored) = c.sessions.session(&user, &session_id).await?;
    let budget = c
        .profile
        .context_chars
        .saturating_sub(message.chars().count());
    let earlier =
        history::recent_exchanges(stored.into_iter().map(|m| m.message).collect(), budget);
    let mut conversation = Vec::with_capacity(earlier.len() + 2);
    conversation.extend(prompt.map(|p| ChatMessage::text(Role::System, p)));
    conversation.extend(earlier);
    let question = ChatMessage::text(Role::User, message);
    conversation.push(question.clone());
    c.sessions
        .append(&user, &session_id, std::slice::from_ref(&question))
        .await?;

    // The caller's request id names the run, and through it each model call and tool call
    // charged, so a request sent again is not charged again; one too long to extend is replaced.
    let run_id = if request_id.len() <= 96 {
        request_id
    } else {
        uuid::Uuid::now_v7().to_string()
    };
    let mut agent = Agent::new(
        (c.model_for)(credential.secret(), acting_as)?,
        c.profile.model.clone(),
    )
    .with_limits(c.profile.limits);
    if let Some(prompt) = &c.profile.system_prompt {
        agent = agent.with_system_prompt(prompt.clone());
    }
    let run = agent.run_with_id(&run_id, conversation, Arc::new(tools));
    c.events
        .emit(Event::now(
            "agent.run.started",
            Some(user.clone()),
            json!({"run_id": run_id, "session_id": session_id, "model": c.profile.model, "by": identity.user_id}),
        ))
        .await;

    let wire: Box<dyn Wire> = if ai_sdk {
        Box::new(AiSdk::new(&session_id))
    } else {
        Box::new(Envelope::new(&session_id))
    };
    let extra_header = wire.header();
    let (frames, mut body_frames) = mpsc::channel::<Bytes>(64);
    let driven = Driven {
        components: service.components.clone(),
        user,
        session_id,
        run_id,
        _permit: permit,
        started: Instant::now(),
        started_at: isa_core::now_to_the_microsecond(),
    };
    tokio::spawn(driven.drive(run, wire, frames));
    let stream =
        futures::stream::poll_fn(move |cx| body_frames.poll_recv(cx)).map(Ok::<_, Infallible>);
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache");
    if let Some((name, value)) = extra_header {
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(stream))
        .map_err(|e| Error::internal(format!("building a response: {e}")).into())
}

/// A run being streamed to its caller.
struct Driven {
    components: Arc<Components>,
    user: UserId,
    session_id: String,
    run_id: String,
    /// Held while the run lasts: the run counts against the service's capacity.
    _permit: OwnedSemaphorePermit,
    started: Instant,
    /// When the run began: a model call charged before then was charged for an earlier run
    /// under the same request id, which this one repeats.
    started_at: chrono::DateTime<chrono::Utc>,
}

impl Driven {
    /// Streams the run's items to `frames` until it ends or the caller goes away; charges its
    /// tool calls as they answer, and stores its messages in the session when it answers.
    async fn drive(self, mut run: AgentRun, mut wire: Box<dyn Wire>, frames: mpsc::Sender<Bytes>) {
        let c = self.components.clone();
        let mut tool_credits = 0i64;
        let mut added: Vec<ChatMessage> = Vec::new();
        let mut out = wire.start(&c.profile.model, &self.run_id);
        loop {
            for item in out.drain(..) {
                if frames.send(Bytes::from(frame(&item))).await.is_err() {
                    return self.abandoned().await;
                }
            }
            let event = tokio::select! {
                _ = frames.closed() => return self.abandoned().await,
                event = run.next() => event,
            };
            let Some(event) = event else {
                break;
            };
            match &event {
                AgentEvent::Message(message) => added.push(message.clone()),
                AgentEvent::ToolCallFinished {
                    id,
                    name,
                    is_error,
                    chars,
                    elapsed,
                } => {
                    let credits = if *is_error {
                        0
                    } else {
                        self.charge_tool(id).await
                    };
                    tool_credits += credits;
                    c.events
                        .emit(Event::now(
                            "agent.tool.called",
                            Some(self.user.clone()),
                            json!({"run_id": self.run_id, "session_id": self.session_id, "tool": name,
                                   "call_id": id, "is_error": is_error, "chars": chars,
                                   "elapsed_ms": elapsed.as_millis() as u64, "credits": credits}),
                        ))
                        .await;
                }
                AgentEvent::Finished(summary) => {
                    let stored = c
                        .sessions
                        .append(&self.user, &self.session_id, &added)
                        .await;
                    let billing = self.billing(summary, tool_credits, None).await;
                    match stored {
                        Ok(()) => {
                            let session_messages = c
                                .sessions
                                .session(&self.user, &self.session_id)
                                .await
                                .map(|(s, _)| s.messages)
                                .unwrap_or_default();
                            let memory = Memory {
                                messages_stored: added.len() + 1,
                                session_messages,
                            };
                            out = wire.finished(summary, memory, &billing);
                        }
                        Err(error) => {
                            tracing::error!(%error, run_id = %self.run_id, "a run's messages were not stored");
                            out = wire.failed(&error, &billing);
                        }
                    }
                    self.finished("ok", &billing).await;
                    continue;
                }
                AgentEvent::Failed { error, summary } => {
                    let billing = self.billing(summary, tool_credits, Some(error)).await;
                    out = wire.failed(error, &billing);
                    self.finished(error.code(), &billing).await;
                    continue;
                }
                _ => {}
            }
            out = wire.event(&event);
        }
        let _ = frames.send(Bytes::from_static(DONE.as_bytes())).await;
    }

    /// Charges one tool call that answered; the credits taken. A balance that no longer covers
    /// it gives what is left; a call id charged before (a run sent again) is not charged again.
    async fn charge_tool(&self, call_id: &str) -> i64 {
        let c = &self.components;
        let amount = c.tool_call_credits;
        if amount <= 0 {
            return 0;
        }
        let request_id = format!("{}:tool:{call_id}", self.run_id);
        let charge = |amount| {
            c.ledger
                .charge(&self.user, &request_id, amount, "agent.tool_call", Some(1))
        };
        match charge(amount).await {
            Ok(charged) if charged.replayed => 0,
            Ok(_) => amount,
            Err(Error::InsufficientCredits { balance, .. }) if balance > 0 => {
                match charge(balance).await {
                    Ok(charged) if !charged.replayed => balance,
                    _ => 0,
                }
            }
            Err(error) => {
                tracing::error!(%error, %request_id, "charging a tool call failed");
                0
            }
        }
    }

    /// What the run cost. The model service reports a call's credits whether or not its request
    /// id was charged before; those charged before this run began (a run sent again under the
    /// same request id) are not counted. It charges a streamed answer just after its end, so
    /// credits it reported that the ledger does not hold yet are taken from the balance read
    /// here.
    async fn billing(
        &self,
        summary: &RunSummary,
        tool_credits: i64,
        error: Option<&Error>,
    ) -> Billing {
        let c = &self.components;
        let model_credits = summary.model_credits as i64;
        // The balance is read between two reads of the run's model charges; when both agree,
        // no charge of the run landed in between, and the balance holds exactly those recorded.
        let mut settled = self.model_charges().await;
        let mut balance = 0;
        for _ in 0..3 {
            balance = match c.users.user(&self.user).await {
                Ok(Some(user)) => user.credits,
                _ => 0,
            };
            let again = self.model_charges().await;
            if again == settled {
                break;
            }
            settled = again;
        }
        let (recorded, repeated) = settled;
        let model_credits = (model_credits - repeated).max(0);
        Billing {
            success: error.is_none(),
            model_calls: summary.model_calls,
            tool_calls: summary.tool_calls,
            total_credits: model_credits + tool_credits,
            credits_remaining: (balance - (model_credits - recorded).max(0)).max(0),
            error_message: error.map(Error::public_message),
        }
    }

    /// Credits the ledger holds for this run's model calls: charged since the run began, and
    /// charged before it (for an earlier run under the same request id).
    async fn model_charges(&self) -> (i64, i64) {
        let model_prefix = format!("{}:model:", self.run_id);
        let (mut recorded, mut repeated) = (0, 0);
        if let Ok(recent) = self.components.ledger.history(&self.user, None, 100).await {
            for t in recent
                .iter()
                .filter(|t| t.request_id.starts_with(&model_prefix))
            {
                if t.created_at < self.started_at {
                    repeated -= t.amount;
                } else {
                    recorded -= t.amount;
                }
            }
        }
        (recorded, repeated)
    }

    async fn finished(&self, outcome: &str, billing: &Billing) {
        let mut payload = json!(billing);
        payload["run_id"] = json!(self.run_id);
        payload["session_id"] = json!(self.session_id);
        payload["outcome"] = json!(outcome);
        payload["elapsed_ms"] = json!(self.started.elapsed().as_millis() as u64);
        self.components
            .events
            .emit(Event::now(
                "agent.run.finished",
                Some(self.user.clone()),
                payload,
            ))
            .await;
    }

    /// The caller went away: the run is dropped with its model request and tool calls.
    async fn abandoned(&self) {
        let payload = json!({"run_id": self.run_id, "session_id": self.session_id, "outcome": "abandoned",
                             "elapsed_ms": self.started.elapsed().as_millis() as u64});
        self.components
            .events
            .emit(Event::now(
                "agent.run.finished",
                Some(self.user.clone()),
                payload,
            ))
            .await;
    }
}

async fn sessions(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> ApiResult<Json<Value>> {
    let user = acting_user(&identity, query.user_id.as_deref())?;
    let limit = query.limit.unwrap_or(50);
    let sessions = service.components.sessions.sessions(&user, limit).await?;
    Ok(Json(json!({"sessions": sessions})))
}

async fn session(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> ApiResult<Json<Value>> {
    let user = acting_user(&identity, query.user_id.as_deref())?;
    let (session, messages) = service.components.sessions.session(&user, &id).await?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut shown = wire::message_json(&m.message);
            shown["id"] = json!(m.id);
            shown["created_at"] = json!(m.created_at);
            shown
        })
        .collect();
    Ok(Json(json!({"session": session, "messages": messages})))
}

async fn delete_session(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> ApiResult<StatusCode> {
    let user = acting_user(&identity, query.user_id.as_deref())?;
    if service.components.sessions.delete(&user, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("session {id:?}")).into())
    }
}

async fn agents(State(service): State<Service>) -> Json<Value> {
    let c = &service.components;
    let p = &c.profile;
    Json(json!({"agents": [{
        "name": p.name,
        "model": p.model,
        "system_prompt": p.system_prompt,
        "limits": {
            "max_turns": p.limits.max_turns,
            "run_deadline_seconds": p.limits.run_deadline.as_secs_f64(),
            "tool_deadline_seconds": p.limits.tool_deadline.as_secs_f64(),
            "max_tool_result_chars": p.limits.max_tool_result_chars,
            "tools_offered": p.limits.tools_offered,
            "context_chars": p.context_chars,
        },
        "tool_call_credits": c.tool_call_credits,
        "mcp_url": c.mcp.url(),
    }]}))
}

async fn test_mcp(
    State(service): State<Service>,
    Extension(credential): Extension<Credential>,
) -> ApiResult<Json<Value>> {
    let mcp = &service.components.mcp;
    let url = mcp.url();
    let started = Instant::now();
    let listed = async {
        mcp.connect(Some(credential.secret()), None)
            .await?
            .count_tools()
            .await
    }
    .await;
    let latency_ms = started.elapsed().as_millis() as u64;
    Ok(Json(match listed {
        Ok(tools) => {
            json!({"reachable": true, "url": url, "tools": tools, "latency_ms": latency_ms})
        }
        Err(error) => {
            tracing::warn!(%error, "test-mcp: the MCP server did not answer");
            json!({"reachable": false, "url": url, "error": error.code(), "latency_ms": latency_ms})
        }
    }))
}
