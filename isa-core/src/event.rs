//! Events: what happened, to whom, when.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{Error, Result, UserId};

/// Something that happened: a tool call, a login, a file upload, a model request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (UUIDv7, so ids sort by time); lets sinks drop duplicates of a retried write.
    pub id: Uuid,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The user it concerns, when there is one.
    pub user: Option<UserId>,
    /// A dotted kind such as `tool.called` or `file.uploaded`.
    pub kind: String,
    /// Kind-specific details.
    pub payload: Value,
}

impl Event {
    /// A new event happening now.
    ///
    /// ```
    /// use isa_core::Event;
    /// let e = Event::now("tool.called", None, serde_json::json!({"tool": "web_search"}));
    /// assert_eq!(e.kind, "tool.called");
    /// ```
    pub fn now(kind: impl Into<String>, user: Option<UserId>, payload: Value) -> Self {
        Event {
            id: Uuid::now_v7(),
            // Microseconds: what PostgreSQL keeps, so a stored event reads back equal.
            time: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
            user,
            kind: kind.into(),
            payload,
        }
    }
}

/// A query over recorded events; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only this user's events.
    pub user: Option<UserId>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// Continue after this event id (from the previous page): later events, or earlier ones
    /// when `newest_first`.
    pub after: Option<Uuid>,
    /// Newest events first instead of oldest first.
    #[serde(default)]
    pub newest_first: bool,
    /// Page size.
    pub limit: usize,
}

/// Where events go: PostgreSQL, SQLite or the log.
///
/// [`EventSink::record`] accepts events into a bounded buffer and returns quickly; when the buffer
/// is full it answers [`Error::Overloaded`] rather than growing. Accepted events are written before
/// [`EventSink::flush`] returns. Sinks that can answer queries override [`EventSink::query`].
///
/// ```
/// use std::sync::Mutex;
/// use isa_core::*;
///
/// #[derive(Default)]
/// struct InMemory(Mutex<Vec<Event>>);
///
/// #[async_trait]
/// impl EventSink for InMemory {
///     async fn record(&self, events: Vec<Event>) -> Result<()> {
///         self.0.lock().unwrap().extend(events);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let sink = InMemory::default();
/// sink.record(vec![Event::now("login", None, serde_json::Value::Null)]).await.unwrap();
/// assert_eq!(sink.0.lock().unwrap().len(), 1);
/// assert!(sink.query(&EventQuery::default()).await.is_err());
/// # });
/// ```
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Accepts events for writing.
    async fn record(&self, events: Vec<Event>) -> Result<()>;

    /// Waits until every accepted event is written.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Refuses new events, then returns once every accepted event is written. Call it once,
    /// when nothing will record any more (after the services have stopped).
    async fn close(&self) -> Result<()> {
        self.flush().await
    }

    /// Records one event about work that is done, without failing that work: an event the
    /// sink refuses (a full buffer, say) is logged and dropped.
    async fn emit(&self, event: Event) {
        let kind = event.kind.clone();
        if let Err(error) = self.record(vec![event]).await {
            tracing::warn!(%error, kind, "an event was not recorded");
        }
    }

    /// Events matching `query`, oldest first (newest first if asked). Default: unsupported (the log sink cannot query).
    async fn query(&self, _query: &EventQuery) -> Result<Vec<Event>> {
        Err(Error::Unsupported(
            "this event sink cannot be queried".into(),
        ))
    }
}
