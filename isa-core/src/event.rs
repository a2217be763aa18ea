//! Events: what happened, to whom, when.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{Result, UserId};

/// The time now, to the microsecond: what PostgreSQL keeps, so a stored time reads back
/// equal to the one written.
pub fn now_to_the_microsecond() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

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
            time: now_to_the_microsecond(),
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

/// Largest page of an event query.
pub const MAX_EVENT_PAGE: usize = 1000;

/// How many events of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    /// The kind.
    pub kind: String,
    /// Events of it.
    pub count: i64,
}

/// Counts of a sink that buffers events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    /// Accepted and not yet written.
    pub queued: u64,
    /// Written.
    pub written: u64,
    /// Refused for good by the store and set aside ([`EventSink::set_aside`]).
    pub set_aside: u64,
    /// Given up on at shutdown because the store stayed unreachable: logged, not stored.
    pub lost: u64,
}

/// Where events go: a database (directly or batched) or the log.
///
/// [`EventSink::record`] accepts events into a bounded buffer and returns quickly; when the buffer
/// is full it answers [`Error::Overloaded`](crate::Error::Overloaded) rather than growing. Accepted events are written before
/// [`EventSink::flush`] returns. Reading events back is [`EventStore`]'s part.
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

    /// Keeps an event this sink refused for good (a value its store cannot hold) where an
    /// operator can find it, so it never blocks the events behind it. Default: the log.
    async fn set_aside(&self, event: &Event, reason: &str) -> Result<()> {
        let json = serde_json::to_string(event).unwrap_or_default();
        tracing::error!(target: "isa::events", event = %json, reason, "event set aside");
        Ok(())
    }

    /// What the sink has done so far, when it keeps count (a batching sink does).
    fn stats(&self) -> Option<SinkStats> {
        None
    }

    /// Records one event about work that is done, without failing that work: an event the
    /// sink refuses (a full buffer, say) is logged and dropped.
    async fn emit(&self, event: Event) {
        let kind = event.kind.clone();
        if let Err(error) = self.record(vec![event]).await {
            tracing::warn!(%error, kind, "an event was not recorded");
        }
    }
}

/// Where events are kept and read back: PostgreSQL and SQLite in `isa-storage`, whose
/// `testing` feature holds the behaviour every store must have.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Writes a batch at once; ids already stored are skipped, so a retried batch never
    /// duplicates events.
    async fn write(&self, events: &[Event]) -> Result<()>;

    /// Events matching `query`, oldest first (newest first if asked), at most `query.limit`
    /// (1 to [`MAX_EVENT_PAGE`]); page on with `after` = the last id.
    async fn query(&self, query: &EventQuery) -> Result<Vec<Event>>;

    /// How many events of each kind, in kind order, between `since` and `until` (both
    /// included), of one user or of everyone.
    async fn count_by_kind(
        &self,
        user: Option<&UserId>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<KindCount>>;
}
