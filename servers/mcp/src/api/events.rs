//! The event service (port 8101): record events, one or a batch, and query them. Events go
//! through the process's event sink (`isa_storage::events::BatchingSink` in `isa-mcp`): a full
//! buffer answers 503 with `Retry-After` and accepts none of that request's events; an answer
//! of 202 means the events will be written, even if the service is stopped right after (the
//! sink is closed, and so flushed, once every service has stopped).

use std::sync::Arc;

use axum::{
    Json, Router, extract::State, http::StatusCode, middleware::from_fn_with_state,
    response::IntoResponse, routing::get,
};
use chrono::{DateTime, Utc};
use isa_auth::{Authenticator, require_auth};
use isa_core::{
    Error, Event, EventQuery, EventSink, EventStore, HealthCheck, Identity, MAX_EVENT_PAGE, UserId,
    http::{ApiJson, ApiQuery, ApiResult, Health, limit_body, limit_concurrency, no_route},
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::agent_handoff::AgentHandoff;

/// Most events in one request.
pub const MAX_BATCH: usize = 1000;
/// Largest payload of one event, in bytes of JSON.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest request body, in bytes: a full batch of small events, or a hundred of the largest.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the event service works with.
#[derive(Clone)]
pub struct EventsService {
    /// Where events are read back from.
    pub store: Arc<dyn EventStore>,
    /// Where events are recorded (a `BatchingSink` over `store`, say). Whoever made it closes
    /// it once the service has stopped, so every event answered 202 is written.
    pub sink: Arc<dyn EventSink>,
    /// What `/health` checks (the database).
    pub checks: Vec<Arc<dyn HealthCheck>>,
    /// Requests served at once; more are refused with 503.
    pub concurrency: usize,
    /// Where events of chosen kinds are handed to the agent service, if anywhere.
    pub handoff: Option<Arc<AgentHandoff>>,
}

impl EventsService {
    /// The service's routes; `auth` checks the credentials of `/api/events/*`.
    pub fn router(self, auth: Authenticator) -> Router {
        let concurrency = self.concurrency;
        let health = Health::new(self.checks.clone());
        let protected = Router::new()
            .route("/api/events", get(query).post(record))
            .route("/api/events/recent", get(recent))
            .route("/api/events/counts", get(counts))
            .layer(from_fn_with_state(auth, require_auth));
        let app = Router::new()
            .merge(protected)
            // Also under the service's own prefix, where a load balancer sends it.
            .route(
                "/openapi.json",
                get(|| async { Json(super::openapi::events()) }),
            )
            .route(
                "/api/events/openapi.json",
                get(|| async { Json(super::openapi::events()) }),
            )
            .route("/metrics", get(metrics))
            .with_state(self)
            .merge(health.router(&["/health"]))
            .fallback(no_route);
        limit_concurrency(limit_body(app, MAX_BODY), concurrency)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEvent {
    kind: String,
    #[serde(default)]
    payload: Value,
    user_id: Option<UserId>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Recording {
    Batch { events: Vec<NewEvent> },
    One(NewEvent),
}

/// Whether any string or key in `value` holds U+0000.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// `GET /metrics` (Prometheus): what the event sink holds, wrote, set aside and lost.
async fn metrics(State(service): State<EventsService>) -> impl IntoResponse {
    let stats = service.sink.stats().unwrap_or_default();
    let text = format!(
        "# HELP isa_events_queued Events accepted and not yet written.\n\
         # TYPE isa_events_queued gauge\nisa_events_queued {}\n\
         # HELP isa_events_written_total Events written.\n\
         # TYPE isa_events_written_total counter\nisa_events_written_total {}\n\
         # HELP isa_events_set_aside_total Events the store refused for good, kept in events_set_aside.\n\
         # TYPE isa_events_set_aside_total counter\nisa_events_set_aside_total {}\n\
         # HELP isa_events_lost_total Events logged instead of stored because the store stayed unreachable at shutdown.\n\
         # TYPE isa_events_lost_total counter\nisa_events_lost_total {}\n\
         # HELP isa_agent_handoffs_dropped_total Events of a handed-over kind not handed to the agent because its queue was full.\n\
         # TYPE isa_agent_handoffs_dropped_total counter\nisa_agent_handoffs_dropped_total {}\n",
        stats.queued,
        stats.written,
        stats.set_aside,
        stats.lost,
        service.handoff.as_ref().map_or(0, |h| h.dropped())
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

fn check_kind(kind: &str) -> ApiResult<()> {
    let valid = !kind.is_empty()
        && kind.len() <= 100
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "event kind {kind:?}: 1 to 100 letters, digits, '.', '_' or '-'"
        ))
        .into())
    }
}

async fn record(
    State(service): State<EventsService>,
    identity: Identity,
    ApiJson(recording): ApiJson<Recording>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new = match recording {
        Recording::Batch { events } => events,
        Recording::One(event) => vec![event],
    };
    if new.is_empty() || new.len() > MAX_BATCH {
        return Err(Error::invalid(format!("send 1 to {MAX_BATCH} events")).into());
    }
    let mut events = Vec::with_capacity(new.len());
    for e in new {
        check_kind(&e.kind)?;
        if serde_json::to_vec(&e.payload).map_or(0, |b| b.len()) > MAX_PAYLOAD {
            return Err(Error::TooLarge {
                limit: MAX_PAYLOAD as u64,
            }
            .into());
        }
        if holds_nul(&e.payload) {
            return Err(Error::invalid(
                "payloads cannot hold the character U+0000 (PostgreSQL's jsonb refuses it)",
            )
            .into());
        }
        events.push(Event::now(
            e.kind,
            acting_for(&identity, e.user_id)?,
            e.payload,
        ));
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let handed = service
        .handoff
        .as_ref()
        .map(|h| (h.clone(), events.clone()));
    service.sink.record(events).await?;
    if let Some((handoff, events)) = handed {
        handoff.offer(&events);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": ids.len(), "ids": ids})),
    ))
}

#[derive(Deserialize)]
struct Filter {
    user_id: Option<UserId>,
    kind: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after: Option<Uuid>,
    limit: Option<usize>,
}

/// Whose events the caller may record or read: their own, or as an administrator anyone's
/// (or, naming no one, system events when recording and everyone's when reading).
fn acting_for(identity: &Identity, named: Option<UserId>) -> ApiResult<Option<UserId>> {
    match named {
        Some(user) => {
            identity.authorize_user(&user)?;
            Ok(Some(user))
        }
        None if identity.is_admin() => Ok(None),
        None => Ok(Some(identity.user_id.clone())),
    }
}

async fn run_query(service: &EventsService, query: EventQuery) -> ApiResult<Json<Value>> {
    let events = service.store.query(&query).await?;
    let next = (events.len() == query.limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({"events": events, "next": next})))
}

impl Filter {
    fn into_query(
        self,
        identity: &Identity,
        default_limit: usize,
        newest_first: bool,
    ) -> ApiResult<EventQuery> {
        Ok(EventQuery {
            user: acting_for(identity, self.user_id)?,
            kind: self.kind,
            since: self.since,
            until: self.until,
            after: self.after,
            limit: self.limit.unwrap_or(default_limit).clamp(1, MAX_EVENT_PAGE),
            newest_first,
        })
    }
}

async fn query(
    State(service): State<EventsService>,
    identity: Identity,
    ApiQuery(filter): ApiQuery<Filter>,
) -> ApiResult<Json<Value>> {
    run_query(&service, filter.into_query(&identity, 100, false)?).await
}

/// The newest events first.
async fn recent(
    State(service): State<EventsService>,
    identity: Identity,
    ApiQuery(filter): ApiQuery<Filter>,
) -> ApiResult<Json<Value>> {
    run_query(&service, filter.into_query(&identity, 50, true)?).await
}

async fn counts(
    State(service): State<EventsService>,
    identity: Identity,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<Value>> {
    let user = acting_for(&identity, f.user_id)?;
    let (since, until) = super::period(f.since, f.until, chrono::Duration::days(1))?;
    let counts = service
        .store
        .count_by_kind(user.as_ref(), since, until)
        .await?;
    Ok(Json(
        json!({"since": since, "until": until, "counts": counts}),
    ))
}
