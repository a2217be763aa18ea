//! [`EventSink`]s: PostgreSQL and SQLite (through one batching writer), and the log.
//!
//! [`BatchingSink`] accepts events into a bounded channel and writes them in batches from one
//! task. When the channel is full, [`EventSink::record`] fails at once with
//! [`Error::Overloaded`] and accepts none of that call's events: the caller keeps them, retries
//! later or drops them knowingly; memory never grows without bound. Every event accepted
//! before [`EventSink::close`] is written before it returns, unless the store stays
//! unreachable for [`BatchingConfig::close_wait`]; an event the store refuses for good is set
//! aside (in `events_set_aside`) rather than holding up the rest.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use isa_core::{
    Error, Event, EventQuery, EventSink, EventStore, KindCount, MAX_EVENT_PAGE, Result, SinkStats,
    UserId, async_trait,
};
use sqlx::{QueryBuilder, Row};

use crate::db::{Database, db_error, on_pool};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

#[async_trait]
impl EventStore for Database {
    async fn write(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        match self {
            Database::Postgres(pool) => {
                let mut insert =
                    QueryBuilder::new("insert into events (id, time, user_id, kind, payload) ");
                insert.push_values(events, |mut row, e| {
                    row.push_bind(e.id)
                        .push_bind(e.time)
                        .push_bind(e.user.as_ref().map(|u| u.as_str().to_owned()))
                        .push_bind(e.kind.clone())
                        .push_bind(sqlx::types::Json(e.payload.clone()));
                });
                insert.push(" on conflict (id) do nothing");
                insert.build().execute(pool).await.map_err(db_error)?;
            }
            Database::Sqlite(pool) => {
                // SQLite allows 32766 bound parameters; 5 per event.
                for chunk in events.chunks(1000) {
                    let mut insert = QueryBuilder::new(
                        "insert or ignore into events (id, time, user_id, kind, payload) ",
                    );
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.id.to_string())
                            .push_bind(e.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                            .push_bind(e.user.as_ref().map(|u| u.as_str().to_owned()))
                            .push_bind(e.kind.clone())
                            .push_bind(e.payload.to_string());
                    });
                    insert.build().execute(pool).await.map_err(db_error)?;
                }
            }
        }
        Ok(())
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let postgres = matches!(self, Database::Postgres(_));
        let mut sql =
            String::from("select id, time, user_id, kind, payload from events where true");
        let mut binds: Vec<Bind> = Vec::new();
        let mut condition = |sql: &mut String, column_op: &str, value: Bind| {
            binds.push(value);
            let placeholder = if postgres {
                format!("${}", binds.len())
            } else {
                "?".to_owned()
            };
            sql.push_str(&format!(" and {column_op} {placeholder}"));
        };
        if let Some(user) = &query.user {
            condition(&mut sql, "user_id =", Bind::Text(user.as_str().to_owned()));
        }
        if let Some(kind) = &query.kind {
            condition(&mut sql, "kind =", Bind::Text(kind.clone()));
        }
        // Ids are UUIDv7, ordered by creation time, so a time range is an id range and pages
        // stay on the index.
        if let Some(since) = query.since {
            condition(&mut sql, "id >=", Bind::Id(time_bound(since, false)));
        }
        if let Some(until) = query.until {
            condition(&mut sql, "id <=", Bind::Id(time_bound(until, true)));
        }
        if let Some(after) = query.after {
            let op = if query.newest_first { "id <" } else { "id >" };
            condition(&mut sql, op, Bind::Id(after));
        }
        let limit = query.limit.clamp(1, MAX_EVENT_PAGE);
        // The statement is made of fixed fragments, placeholders and this integer: values only
        // ever travel as binds, which is what makes AssertSqlSafe below true.
        let order = if query.newest_first { "desc" } else { "asc" };
        sql.push_str(&format!(" order by id {order} limit {limit}"));
        match self {
            Database::Postgres(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for bind in binds {
                    q = match bind {
                        Bind::Text(t) => q.bind(t),
                        Bind::Id(id) => q.bind(id),
                    };
                }
                let rows = q.fetch_all(pool).await.map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(Event {
                            id: row.try_get("id").map_err(db_error)?,
                            time: row.try_get("time").map_err(db_error)?,
                            user: user_of(row.try_get("user_id").map_err(db_error)?)?,
                            kind: row.try_get("kind").map_err(db_error)?,
                            payload: row
                                .try_get::<sqlx::types::Json<serde_json::Value>, _>("payload")
                                .map_err(db_error)?
                                .0,
                        })
                    })
                    .collect()
            }
            Database::Sqlite(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for bind in binds {
                    q = match bind {
                        Bind::Text(t) => q.bind(t),
                        Bind::Id(id) => q.bind(id.to_string()),
                    };
                }
                let rows = q.fetch_all(pool).await.map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        let id: String = row.try_get("id").map_err(db_error)?;
                        let time: String = row.try_get("time").map_err(db_error)?;
                        let payload: String = row.try_get("payload").map_err(db_error)?;
                        let stored = |what: &str, e: &dyn std::fmt::Display| {
                            Error::internal(format!("stored {what}: {e}"))
                        };
                        Ok(Event {
                            id: id.parse().map_err(|e| stored("id", &e))?,
                            time: DateTime::parse_from_rfc3339(&time)
                                .map_err(|e| stored("time", &e))?
                                .with_timezone(&Utc),
                            user: user_of(row.try_get("user_id").map_err(db_error)?)?,
                            kind: row.try_get("kind").map_err(db_error)?,
                            payload: serde_json::from_str(&payload)
                                .map_err(|e| stored("payload", &e))?,
                        })
                    })
                    .collect()
            }
        }
    }

    async fn count_by_kind(
        &self,
        user: Option<&UserId>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<KindCount>> {
        const SQL: &str = "select kind, count(*) as count from events \
            where ($1 is null or user_id = $1) and id >= $2 and id <= $3 group by kind order by kind";
        let user = user.map(UserId::as_str);
        let (low, high) = (time_bound(since, false), time_bound(until, true));
        let rows: Vec<(String, i64)> = match self {
            Database::Postgres(pool) => sqlx::query_as(SQL)
                .bind(user)
                .bind(low)
                .bind(high)
                .fetch_all(pool)
                .await
                .map_err(db_error)?,
            Database::Sqlite(pool) => sqlx::query_as(SQL)
                .bind(user)
                .bind(low.to_string())
                .bind(high.to_string())
                .fetch_all(pool)
                .await
                .map_err(db_error)?,
        };
        Ok(rows
            .into_iter()
            .map(|(kind, count)| KindCount { kind, count })
            .collect())
    }
}

enum Bind {
    Text(String),
    Id(Uuid),
}

/// The smallest (or largest) UUIDv7 of the millisecond `t`.
fn time_bound(t: DateTime<Utc>, upper: bool) -> Uuid {
    let ms = t.timestamp_millis().max(0) as u128;
    let rest = if upper { (1u128 << 80) - 1 } else { 0 };
    Uuid::from_u128((ms << 80) | rest)
}

fn user_of(stored: Option<String>) -> Result<Option<UserId>> {
    stored.map(UserId::new).transpose()
}

/// Writing directly, without batching (the batching sink uses this).
#[async_trait]
impl EventSink for Database {
    async fn record(&self, events: Vec<Event>) -> Result<()> {
        self.write(&events).await
    }

    /// Into `events_set_aside`, the payload as JSON text (which holds what `jsonb` cannot).
    async fn set_aside(&self, event: &Event, reason: &str) -> Result<()> {
        let payload = event.payload.to_string();
        let user = event.user.as_ref().map(UserId::as_str);
        let time = event
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        on_pool!(self, pool => sqlx::query(
            "insert into events_set_aside (id, time, user_id, kind, payload, reason) \
             values ($1, $2, $3, $4, $5, $6) on conflict (id) do nothing",
        )
        .bind(event.id.to_string())
        .bind(&time)
        .bind(user)
        .bind(&event.kind)
        .bind(&payload)
        .bind(reason)
        .execute(pool)
        .await
        .map_err(db_error)?
            .rows_affected());
        Ok(())
    }
}

enum Message {
    Event(Event),
    Flush(oneshot::Sender<()>),
}

/// Settings of a [`BatchingSink`].
#[derive(Debug, Clone, Copy)]
pub struct BatchingConfig {
    /// Events waiting to be written at most; beyond, `record` answers `Overloaded`.
    pub capacity: usize,
    /// Events per write at most.
    pub batch_size: usize,
    /// How long an event may wait for its batch to fill. Short by default (20 ms): every write
    /// briefly takes a core, and at 1,000 requests/s the batches of a 200 ms linger (200 events)
    /// paused enough requests to show in the model service's p99; batches of 20 do not.
    pub linger: Duration,
    /// How long [`EventSink::close`] waits for an unreachable store; then the events still
    /// waiting are logged instead of written, and counted as lost.
    pub close_wait: Duration,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            capacity: 10_000,
            batch_size: 500,
            linger: Duration::from_millis(20),
            close_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    set_aside: AtomicU64,
    lost: AtomicU64,
    /// Set when `close` stops waiting for the store.
    giving_up: AtomicBool,
}

/// Batches events through a bounded channel into another sink (usually a [`Database`]).
///
/// A batch the store refuses for a transient reason (it is down) is retried with backoff
/// until it is written; the channel fills meanwhile and callers are refused as overloaded.
/// A batch it refuses for good (a value it cannot hold) is split until the events it refuses
/// are alone, and those are set aside ([`EventSink::set_aside`]): one bad event never holds
/// up the others.
pub struct BatchingSink {
    sender: mpsc::Sender<Message>,
    /// Wakes the writer before its linger ends: a batch is full, or a flush waits.
    wake: Arc<Notify>,
    batch_size: usize,
    /// Whether the sink is closed. `record` holds it for reading from its check until its
    /// events are queued, so no event can be queued behind the flush of [`EventSink::close`].
    closed: std::sync::RwLock<bool>,
    counters: Arc<Counters>,
    capacity: usize,
    close_wait: Duration,
}

impl BatchingSink {
    /// Starts the writer task.
    pub fn spawn(target: Arc<dyn EventSink>, config: BatchingConfig) -> Self {
        let capacity = config.capacity.max(1);
        let (sender, receiver) = mpsc::channel(capacity);
        let counters = Arc::new(Counters::default());
        let wake = Arc::new(Notify::new());
        tokio::spawn(write_loop(
            target,
            receiver,
            config,
            counters.clone(),
            wake.clone(),
        ));
        BatchingSink {
            sender,
            wake,
            batch_size: config.batch_size.max(1),
            closed: std::sync::RwLock::new(false),
            counters,
            capacity,
            close_wait: config.close_wait,
        }
    }
}

/// Gathers batches and writes them. The writer is woken by the first event of a batch, then
/// sleeps out the linger unless a batch fills or a flush waits: it is not woken once per event,
/// which on a busy server would cost a thread wake-up per request.
async fn write_loop(
    target: Arc<dyn EventSink>,
    mut receiver: mpsc::Receiver<Message>,
    config: BatchingConfig,
    counters: Arc<Counters>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(config.batch_size);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    fn take(message: Message, batch: &mut Vec<Event>, waiting: &mut Vec<oneshot::Sender<()>>) {
        match message {
            Message::Event(event) => batch.push(event),
            Message::Flush(done) => waiting.push(done),
        }
    }
    loop {
        let Some(first) = receiver.recv().await else {
            break;
        };
        let deadline = tokio::time::Instant::now() + config.linger;
        take(first, &mut batch, &mut waiting);
        loop {
            while batch.len() < config.batch_size && waiting.is_empty() {
                match receiver.try_recv() {
                    Ok(message) => take(message, &mut batch, &mut waiting),
                    Err(_) => break,
                }
            }
            let due = batch.len() >= config.batch_size
                || !waiting.is_empty()
                || tokio::time::Instant::now() >= deadline;
            if due {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = wake.notified() => {}
            }
        }
        write_batch(target.as_ref(), std::mem::take(&mut batch), &counters).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    write_batch(target.as_ref(), batch, &counters).await;
}

/// Writes `batch`: retrying transient failures until they pass (or the sink gives up at
/// shutdown), splitting on a permanent one until the refused events are alone, and setting
/// those aside.
async fn write_batch(target: &dyn EventSink, batch: Vec<Event>, counters: &Counters) {
    let mut pending = vec![batch];
    let mut backoff = Duration::from_millis(50);
    while let Some(batch) = pending.pop() {
        if batch.is_empty() {
            continue;
        }
        if counters.giving_up.load(Ordering::SeqCst) {
            for event in &batch {
                let json = serde_json::to_string(event).unwrap_or_default();
                tracing::error!(target: "isa::events", event = %json, "event not stored: the store stayed unreachable at shutdown");
            }
            counters
                .lost
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        }
        match target.record(batch.clone()).await {
            Ok(()) => {
                counters
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, events = batch.len(), "writing events failed; retrying");
                pending.push(batch);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) if batch.len() == 1 => {
                let reason = error.to_string();
                if let Err(e) = target.set_aside(&batch[0], &reason).await {
                    tracing::error!(error = %e, "setting an event aside failed");
                }
                counters.set_aside.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                pending.push(second);
                pending.push(first);
            }
        }
    }
}

#[async_trait]
impl EventSink for BatchingSink {
    async fn record(&self, events: Vec<Event>) -> Result<()> {
        let closed = self
            .closed
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *closed {
            return Err(Error::Unavailable("the event sink is shutting down".into()));
        }
        if events.is_empty() {
            return Ok(());
        }
        // All or nothing: reserve room for the whole call first.
        let permits =
            self.sender
                .try_reserve_many(events.len())
                .map_err(|_| Error::Overloaded {
                    retry_after: Duration::from_millis(500),
                })?;
        for (permit, event) in permits.zip(events) {
            permit.send(Message::Event(event));
        }
        if self.capacity - self.sender.capacity() >= self.batch_size {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        *self
            .closed
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        if let Ok(flushed) = tokio::time::timeout(self.close_wait, self.flush()).await {
            return flushed;
        }
        self.counters.giving_up.store(true, Ordering::SeqCst);
        self.flush().await?;
        Err(Error::Unavailable(format!(
            "the event store stayed unreachable for {:?}; {} events were logged instead of stored",
            self.close_wait,
            self.counters.lost.load(Ordering::Relaxed)
        )))
    }

    async fn flush(&self) -> Result<()> {
        let (done, written) = oneshot::channel();
        self.sender
            .send(Message::Flush(done))
            .await
            .map_err(|_| Error::Unavailable("the event writer stopped".into()))?;
        self.wake.notify_one();
        written
            .await
            .map_err(|_| Error::Unavailable("the event writer stopped".into()))
    }

    fn stats(&self) -> Option<SinkStats> {
        Some(SinkStats {
            queued: (self.capacity - self.sender.capacity()) as u64,
            written: self.counters.written.load(Ordering::Relaxed),
            set_aside: self.counters.set_aside.load(Ordering::Relaxed),
            lost: self.counters.lost.load(Ordering::Relaxed),
        })
    }
}

/// Writes events to the log as JSON (target `isa::events`), for deployments without a
/// database or as a second copy.
#[derive(Debug, Default)]
pub struct LogSink;

#[async_trait]
impl EventSink for LogSink {
    async fn record(&self, events: Vec<Event>) -> Result<()> {
        for event in events {
            let json = serde_json::to_string(&event).map_err(|e| Error::internal(e.to_string()))?;
            tracing::info!(target: "isa::events", event = %json);
        }
        Ok(())
    }
}
