//! The model service (feature `service`): an OpenAI-compatible HTTP API over a [`Gateway`],
//! on isa's HTTP edge (error envelope, health, request ids, limits), with every `/api/v1`
//! route behind [`isa_auth`] and every request metered.
//!
//! | Route | |
//! |---|---|
//! | `POST /api/v1/chat/completions` | chat, streamed (SSE) or not, with tools |
//! | `POST /api/v1/messages` | the same chat in Anthropic's Messages shapes |
//! | `POST /api/v1/embeddings` | embeddings, as floats or base64 |
//! | `POST /api/v1/images/generations` | images |
//! | `GET /api/v1/models` | model names |
//! | `GET /health`, `GET /api/v1/health` | readiness |
//! | `GET /metrics` | Prometheus metrics per provider and model |
//! | `GET /openapi.json`, `GET /docs` | the OpenAPI description, and Swagger UI over it (built in) |

pub mod anthropic_wire;
mod metering;
pub mod openai_wire;
mod openapi;

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use isa_auth::{Authenticator, require_auth};
use isa_core::{
    ChatEvent, EmbeddingRequest, Error, GeneratedImage, Identity, ImageRequest, Usage,
    http::{
        ApiJson, ApiResult, Health, RequestId, limit_body, limit_concurrency, name_service,
        no_route, with_request_ids,
    },
};
use serde_json::{Value, json};
use tokio::time::Instant;

pub use metering::{Metering, Use};

use crate::gateway::{Deployment, Gateway, ModelKind, Price, Route, TokenCounter};

/// Limits of the service's edge.
#[derive(Debug, Clone, Copy)]
pub struct ServiceLimits {
    /// Requests served at once; more are refused with 503.
    pub max_concurrent_requests: usize,
    /// The largest request body (images in data URLs make chat bodies large).
    pub max_body_bytes: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            max_concurrent_requests: isa_core::http::DEFAULT_CONCURRENCY,
            max_body_bytes: 20 * 1024 * 1024,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Service {
    gateway: Arc<Gateway>,
    metering: Metering,
}

/// The service's router: the API behind `auth`, health from `health`, metrics, the OpenAPI
/// description (naming `port` as its server) and the common envelope for every error.
pub fn router(
    gateway: Arc<Gateway>,
    metering: Metering,
    auth: Authenticator,
    health: Health,
    limits: ServiceLimits,
    port: u16,
) -> Router {
    let service = Service { gateway, metering };
    let api = Router::new()
        .route("/api/v1/chat/completions", post(chat))
        .route("/api/v1/messages", post(messages))
        .route("/api/v1/embeddings", post(embeddings))
        .route("/api/v1/images/generations", post(images))
        .route("/api/v1/models", get(models))
        .route_layer(axum::middleware::from_fn_with_state(auth, require_auth));
    let app = api
        .route("/metrics", get(metrics))
        .with_state(service)
        .merge(health.router(&["/health", "/api/v1/health"]))
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .external_url_unchecked("/openapi.json", openapi::description(port)),
        )
        .fallback(no_route);
    let app = limit_body(app, limits.max_body_bytes);
    let app = limit_concurrency(app, limits.max_concurrent_requests);
    with_request_ids(name_service(app, "model"))
}

async fn metrics(State(service): State<Service>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.gateway.metrics(),
    )
}

async fn models(State(service): State<Service>) -> Json<Value> {
    let data: Vec<Value> = service
        .gateway
        .routes()
        .map(|route| {
            let owner = match route.deployments.as_slice() {
                [one] if one.id() == route.name => one.provider().to_owned(),
                _ => "isa".to_owned(),
            };
            json!({"id": route.name, "object": "model", "created": 0, "owned_by": owner, "kind": route.kind})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// What is settled when a request ends: its use is charged, recorded and counted, once,
/// whether the answer ended well, failed or was abandoned by the caller.
struct Settlement {
    metering: Metering,
    identity: Identity,
    request_id: String,
    operation: &'static str,
    model: String,
    deployment: Arc<Deployment>,
    started: Instant,
    first_event: Option<Duration>,
    counter: TokenCounter,
    images: u32,
    settled: bool,
}

impl Settlement {
    /// What a request that `deployment` answers will settle, counted from nothing yet.
    fn new(
        metering: &Metering,
        identity: Identity,
        request_id: String,
        operation: &'static str,
        model: String,
        deployment: Arc<Deployment>,
        started: Instant,
    ) -> Self {
        Settlement {
            metering: metering.clone(),
            identity,
            request_id,
            operation,
            model,
            deployment,
            started,
            first_event: None,
            counter: TokenCounter::default(),
            images: 0,
            settled: false,
        }
    }

    fn cost(&self) -> (Usage, f64) {
        let usage = self.counter.usage();
        (usage, self.deployment.price().cost(usage, self.images))
    }

    fn billing(&self) -> Value {
        let (usage, cost_usd) = self.cost();
        self.metering.billing(&self.used(usage, cost_usd, "ok"))
    }

    fn used(&self, usage: Usage, cost_usd: f64, outcome: &'static str) -> Use<'_> {
        Use {
            identity: &self.identity,
            request_id: &self.request_id,
            operation: self.operation,
            model: &self.model,
            deployment: self.deployment.id(),
            usage,
            images: self.images,
            cost_usd,
            outcome,
            latency_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// Charges and records now; the answer's billing.
    async fn settle(&mut self, outcome: &'static str) -> Value {
        self.settled = true;
        let (usage, cost_usd) = self.cost();
        let metrics = self.deployment.metrics();
        metrics.answered(self.started.elapsed(), self.first_event);
        metrics.used(usage.input_tokens, usage.output_tokens, cost_usd);
        self.metering
            .settle(self.used(usage, cost_usd, outcome))
            .await
    }

    /// Charges and records in the background (a stream's end must not wait for the ledger).
    fn settle_later(&mut self, outcome: &'static str) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut owned = Settlement::new(
            &self.metering,
            self.identity.clone(),
            self.request_id.clone(),
            self.operation,
            self.model.clone(),
            self.deployment.clone(),
            self.started,
        );
        owned.first_event = self.first_event;
        owned.counter = self.counter.clone();
        owned.images = self.images;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                owned.settle(outcome).await;
            });
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        // The caller went away mid-stream: what was produced is still paid for.
        self.settle_later("abandoned");
    }
}

/// How a front door writes a chat answer: whole, or as the frames of a stream.
pub(crate) trait ChatWire: Send + 'static {
    /// The whole answer from its events.
    fn whole(&self, events: &[ChatEvent], counted: Usage, billing: Value) -> Value;
    /// What a stream opens with; `counted` holds the prompt's tokens as estimated so far.
    fn opening(&mut self, counted: Usage) -> Bytes;
    /// The frames one event makes, if any.
    fn event(&mut self, event: &ChatEvent) -> Option<Bytes>;
    /// What a stream that ended well closes with.
    fn closing(&mut self, counted: Usage, billing: Value) -> Bytes;
    /// What a stream that failed after it began ends with: an error its clients raise.
    fn failure(&mut self, error: &Error) -> Bytes;
}

async fn chat(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let call = openai_wire::chat_call(body)?;
    let wire = openai_wire::Answer {
        chunks: openai_wire::ChunkWriter {
            id: format!("chatcmpl-{}", request_id_token(&request_id)),
            model: call.request.model.clone(),
            created: chrono::Utc::now().timestamp(),
        },
        include_usage: call.include_usage,
    };
    answer_chat(
        service,
        identity,
        request_id,
        call.request,
        call.stream,
        wire,
    )
    .await
}

async fn messages(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let call = anthropic_wire::messages_call(body)?;
    let wire = anthropic_wire::Answer::new(
        format!("msg_{}", request_id_token(&request_id)),
        call.request.model.clone(),
    );
    answer_chat(
        service,
        identity,
        request_id,
        call.request,
        call.stream,
        wire,
    )
    .await
}

/// Routes, admits, asks the gateway and answers in `wire`'s shapes, settling the request's use
/// once whatever becomes of the answer.
async fn answer_chat(
    service: Service,
    identity: Identity,
    request_id: String,
    request: isa_core::ChatRequest,
    stream: bool,
    wire: impl ChatWire,
) -> ApiResult<Response> {
    let route = service.gateway.route(&request.model, ModelKind::Chat)?;
    service.metering.admit(&identity, is_priced(&route)).await?;
    let model = request.model.clone();
    let counter = TokenCounter::new(&request.messages);
    let answer = service.gateway.chat(&route, request, stream).await?;
    let mut settlement = Settlement::new(
        &service.metering,
        identity,
        request_id,
        "model.chat",
        model,
        answer.deployment,
        answer.started,
    );
    settlement.first_event = stream.then_some(answer.first_event);
    settlement.counter = counter;
    if !stream {
        let events: Vec<ChatEvent> = answer
            .events
            .filter_map(|e| async move { e.ok() })
            .collect()
            .await;
        for event in &events {
            settlement.counter.observe(event);
        }
        let billing = settlement.settle("ok").await;
        let usage = settlement.counter.usage();
        return Ok(Json(wire.whole(&events, usage, billing)).into_response());
    }
    let frames = chat_frames(answer.events, wire, settlement);
    let mut response =
        Body::from_stream(frames.map(Ok::<Bytes, std::convert::Infallible>)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// A whole answer gathered from its events, for the front doors that answer at once.
struct Gathered {
    text: String,
    /// Tool calls in the order they started: id, name, argument text.
    calls: Vec<(String, String, String)>,
    finish: isa_core::FinishReason,
}

fn gather(events: &[ChatEvent]) -> Gathered {
    let mut gathered = Gathered {
        text: String::new(),
        calls: Vec::new(),
        finish: isa_core::FinishReason::Stop,
    };
    for event in events {
        match event {
            ChatEvent::TextDelta { text } => gathered.text.push_str(text),
            ChatEvent::ToolCallStart { id, name, .. } => {
                gathered
                    .calls
                    .push((id.clone(), name.clone(), String::new()))
            }
            ChatEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = gathered.calls.get_mut(*index as usize) {
                    call.2.push_str(arguments);
                }
            }
            ChatEvent::Finish { reason } => gathered.finish = reason.clone(),
            ChatEvent::Usage { .. } | ChatEvent::Charged { .. } => {}
        }
    }
    gathered
}

/// The id of a completion: the request id, kept to characters ids usually have.
fn request_id_token(request_id: &str) -> String {
    request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(40)
        .collect()
}

/// The SSE frames of a streamed answer: `wire`'s opening, its frames for each event and its
/// closing; or, when the provider fails midway, `wire`'s failure frame and nothing after.
fn chat_frames(
    events: isa_core::ChatStream,
    wire: impl ChatWire,
    settlement: Settlement,
) -> impl futures::Stream<Item = Bytes> + Send {
    struct State<W> {
        events: isa_core::ChatStream,
        wire: W,
        settlement: Settlement,
        started: bool,
        ended: bool,
    }
    let state = State {
        events,
        wire,
        settlement,
        started: false,
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        if !state.started {
            state.started = true;
            let opening = state.wire.opening(state.settlement.counter.usage());
            return Some((opening, state));
        }
        loop {
            match state.events.next().await {
                Some(Ok(event)) => {
                    state.settlement.counter.observe(&event);
                    if let Some(frames) = state.wire.event(&event) {
                        return Some((frames, state));
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(error = %error, deployment = %state.settlement.deployment.id(), "stream failed after it started");
                    state.settlement.deployment.metrics().failed(error.code());
                    state.settlement.settle_later("error");
                    state.ended = true;
                    return Some((state.wire.failure(&error), state));
                }
                None => {
                    let usage = state.settlement.counter.usage();
                    let closing = state.wire.closing(usage, state.settlement.billing());
                    state.settlement.settle_later("ok");
                    state.ended = true;
                    return Some((closing, state));
                }
            }
        }
    })
}

/// Reads the `input` of an embeddings request: a string or an array of strings.
fn embedding_input(value: Option<&Value>) -> Result<Vec<String>, Error> {
    let too_many = || Error::invalid("input may hold at most 2048 texts");
    match value {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(Error::invalid("input must not be empty"))
        }
        Some(Value::Array(items)) if items.len() > 2048 => Err(too_many()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Number(_) | Value::Array(_) => Err(Error::invalid(
                    "input as token ids is not accepted: send text",
                )),
                _ => Err(Error::invalid(
                    "input must be a string or an array of strings",
                )),
            })
            .collect(),
        _ => Err(Error::invalid(
            "input must be a string or an array of strings",
        )),
    }
}

async fn embeddings(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let model = required_model(&body)?;
    let input = embedding_input(body.get("input"))?;
    let base64 = match body["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(Error::invalid("encoding_format must be float or base64").into()),
    };
    let dimensions = match &body["dimensions"] {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .filter(|d| (1..=65_536).contains(d))
                .ok_or_else(|| Error::invalid("dimensions must be a positive integer"))?
                as u32,
        ),
    };
    let route = service.gateway.route(&model, ModelKind::Embeddings)?;
    service.metering.admit(&identity, is_priced(&route)).await?;
    let started = Instant::now();
    let request = EmbeddingRequest {
        model: model.clone(),
        input: input.clone(),
        dimensions,
    };
    let (deployment, answer) = service.gateway.embed(&route, request).await?;
    let usage = answer.usage.unwrap_or(Usage {
        input_tokens: input.iter().map(|t| crate::estimate_tokens(t)).sum(),
        output_tokens: 0,
    });
    let mut settlement = Settlement::new(
        &service.metering,
        identity,
        request_id,
        "model.embeddings",
        model.clone(),
        deployment,
        started,
    );
    settlement.counter.observe(&ChatEvent::Usage { usage });
    let billing = settlement.settle("ok").await;
    let data: Vec<Value> = answer
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                json!(encode_base64_floats(vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
        "billing": billing,
    })))
}

async fn images(
    State(service): State<Service>,
    Extension(identity): Extension<Identity>,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let model = required_model(&body)?;
    let prompt = body["prompt"]
        .as_str()
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| Error::invalid("prompt must be a non-empty string"))?
        .to_owned();
    let n = match &body["n"] {
        Value::Null => 1,
        v => v
            .as_u64()
            .filter(|n| (1..=10).contains(n))
            .ok_or_else(|| Error::invalid("n must be from 1 to 10"))? as u32,
    };
    let size = match &body["size"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err(Error::invalid("size must be a string such as 1024x1024").into()),
    };
    let route = service.gateway.route(&model, ModelKind::Images)?;
    service.metering.admit(&identity, is_priced(&route)).await?;
    let started = Instant::now();
    let request = ImageRequest {
        model: model.clone(),
        prompt,
        size,
        n,
        extra: None,
    };
    let (deployment, images) = service.gateway.generate_image(&route, request).await?;
    let mut settlement = Settlement::new(
        &service.metering,
        identity,
        request_id,
        "model.images",
        model,
        deployment,
        started,
    );
    settlement.images = images.len() as u32;
    let billing = settlement.settle("ok").await;
    let data: Vec<Value> = images
        .into_iter()
        .map(|image| match image {
            GeneratedImage::Url { url } => json!({"url": url}),
            GeneratedImage::Base64 { data, .. } => json!({"b64_json": data}),
        })
        .collect();
    Ok(Json(
        json!({"created": chrono::Utc::now().timestamp(), "data": data, "billing": billing}),
    ))
}

/// `f32`s as little-endian base64, as OpenAI sends embeddings with `encoding_format: base64`.
fn encode_base64_floats(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Whether any deployment of a route costs something: free models (the local embedder, say)
/// serve callers without credits.
fn is_priced(route: &Route) -> bool {
    route
        .deployments
        .iter()
        .any(|d| d.price() != Price::default())
}

/// A field of a request body; `None` when absent or null.
fn field<'a>(body: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

/// The string at `path` of a request body, or an error naming `path`.
fn string(value: &Value, path: &str) -> Result<String, Error> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid(format!("{path} must be a string")))
}

/// A boolean field of a request body, false when absent.
fn flag(body: &serde_json::Map<String, Value>, name: &str) -> Result<bool, Error> {
    match field(body, name) {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| Error::invalid(format!("{name} must be true or false"))),
    }
}

/// The request's `model`.
fn required_model(body: &Value) -> Result<String, Error> {
    body["model"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid("model is required"))
}
