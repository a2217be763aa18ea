//! [`EventSink`]s: PostgreSQL and SQLite (through one batching writer), and the log.
//!
//! [`BatchingSink`] accepts events into a bounded channel and writes them in batches from one
//! task. When the channel is full, [`EventSink::record`] fails at once with
//! [`Error::Overloaded`] and accepts none of that call's events: the caller keeps them, retries
//! later or drops them knowingly; memory never grows without bound. Every event accepted
//! before [`EventSink::close`] is written before it returns.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use isa_core::{
    Error, Event, EventQuery, EventSink, EventStore, KindCount, MAX_EVENT_PAGE, Result, UserId,
    async_trait,
};
use sqlx::{QueryBuilder, Row};

use crate::db::{Database, db_error};
use tokio::sync::{mpsc, oneshot};
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
    /// How long an event may wait for its batch to fill.
    pub linger: Duration,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            capacity: 10_000,
            batch_size: 500,
            linger: Duration::from_millis(200),
        }
    }
}

/// Batches events through a bounded channel into another sink (usually a [`Database`]).
pub struct BatchingSink {
    sender: mpsc::Sender<Message>,
    /// Whether the sink is closed. `record` holds it for reading from its check until its
    /// events are queued, so no event can be queued behind the flush of [`EventSink::close`].
    closed: std::sync::RwLock<bool>,
}

impl BatchingSink {
    /// Starts the writer task.
    pub fn spawn(target: Arc<dyn EventSink>, config: BatchingConfig) -> Self {
        let (sender, receiver) = mpsc::channel(config.capacity.max(1));
        tokio::spawn(write_loop(target, receiver, config));
        BatchingSink {
            sender,
            closed: std::sync::RwLock::new(false),
        }
    }
}

async fn write_loop(
    target: Arc<dyn EventSink>,
    mut receiver: mpsc::Receiver<Message>,
    config: BatchingConfig,
) {
    let mut batch = Vec::with_capacity(config.batch_size);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = receiver.recv().await;
        let Some(first) = first else { break };
        let deadline = tokio::time::Instant::now() + config.linger;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(event) => batch.push(event),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() >= config.batch_size || !waiting.is_empty() {
                break;
            }
            next = tokio::time::timeout_at(deadline, receiver.recv())
                .await
                .ok()
                .flatten();
        }
        write_with_retry(target.as_ref(), &mut batch).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    write_with_retry(target.as_ref(), &mut batch).await;
}

/// Writes until it succeeds: accepted events are not dropped because the database blinked.
async fn write_with_retry(target: &dyn EventSink, batch: &mut Vec<Event>) {
    let mut backoff = Duration::from_millis(50);
    while !batch.is_empty() {
        match target.record(batch.clone()).await {
            Ok(()) => batch.clear(),
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "writing events failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
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
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        *self
            .closed
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        self.flush().await
    }

    async fn flush(&self) -> Result<()> {
        let (done, written) = oneshot::channel();
        self.sender
            .send(Message::Flush(done))
            .await
            .map_err(|_| Error::Unavailable("the event writer stopped".into()))?;
        written
            .await
            .map_err(|_| Error::Unavailable("the event writer stopped".into()))
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
