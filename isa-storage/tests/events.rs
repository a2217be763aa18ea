//! Events on SQLite and on PostgreSQL: the event-store suite of `isa_storage::testing`, and the
//! batching sink in front of each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use isa_core::{Error, Event, EventQuery, EventSink, EventStore, UserId};
use isa_storage::{
    db::Database,
    events::{BatchingConfig, BatchingSink},
    testing,
};
use serde_json::json;

/// A user id no other test run shares, since the PostgreSQL database outlives runs.
fn fresh_user() -> UserId {
    UserId::new(format!("events-{}", uuid::Uuid::now_v7().simple())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_store_suite_passes_on_every_database() {
    for (name, db, _dir) in common::databases().await {
        testing::events_are_stored_once_and_queried_by_user_kind_time_and_page(name, &db).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_accepted_before_a_graceful_shutdown_is_written() {
    for (name, db, _dir) in common::databases().await {
        let db = Arc::new(db);
        let sink = Arc::new(BatchingSink::spawn(
            db.clone(),
            BatchingConfig {
                capacity: 2_000,
                batch_size: 100,
                linger: Duration::from_millis(20),
                ..BatchingConfig::default()
            },
        ));
        let user = fresh_user();
        let accepted = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let (sink, user, accepted) = (sink.clone(), user.clone(), accepted.clone());
                tokio::spawn(async move {
                    for round in 0.. {
                        let batch: Vec<Event> = (0..10)
                            .map(|i| {
                                Event::now(
                                    "stream",
                                    Some(user.clone()),
                                    json!({"p": p, "round": round, "i": i}),
                                )
                            })
                            .collect();
                        match sink.record(batch).await {
                            Ok(()) => accepted.fetch_add(10, Ordering::SeqCst),
                            Err(Error::Overloaded { .. }) => {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                0
                            }
                            Err(Error::Unavailable(_)) => break,
                            Err(other) => panic!("{other}"),
                        };
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        // Close while the producers are busy.
        while accepted.load(Ordering::SeqCst) < 200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sink.close().await.unwrap();
        for producer in producers {
            producer.await.unwrap();
        }
        let accepted = accepted.load(Ordering::SeqCst);
        assert!(accepted > 0, "{name}: the producers got events in");
        let mut stored = 0;
        let mut after = None;
        loop {
            let page = db
                .query(&EventQuery {
                    user: Some(user.clone()),
                    after,
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            stored += page.len();
            after = page.last().map(|e| e.id);
        }
        assert_eq!(
            stored, accepted,
            "{name}: every accepted event is in the database, and nothing else"
        );
        assert!(matches!(
            sink.record(vec![Event::now("late", None, json!({}))]).await,
            Err(Error::Unavailable(_))
        ));
    }
}

/// A database that answers slowly, so the channel fills up.
struct Slow(Database);

#[isa_core::async_trait]
impl EventSink for Slow {
    async fn record(&self, events: Vec<Event>) -> isa_core::Result<()> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.0.write(&events).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_channel_refuses_a_whole_call_at_once() {
    let (_, db, _dir) = common::databases().await.remove(0);
    let sink = BatchingSink::spawn(
        Arc::new(Slow(db.clone())),
        BatchingConfig {
            capacity: 20,
            batch_size: 5,
            linger: Duration::from_millis(1),
            ..BatchingConfig::default()
        },
    );
    let user = fresh_user();
    let event = || Event::now("burst", Some(user.clone()), json!({}));
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        match sink.record((0..4).map(|_| event()).collect()).await {
            Ok(()) => accepted += 4,
            Err(Error::Overloaded { retry_after }) => {
                assert!(retry_after > Duration::ZERO);
                assert!(
                    started.elapsed() < Duration::from_millis(50),
                    "refused without waiting"
                );
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused > 0, "the channel filled up");
    sink.close().await.unwrap();
    let stored = db
        .query(&EventQuery {
            user: Some(user.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        accepted,
        "refused calls left nothing behind, accepted ones are all there"
    );
}

/// A store that keeps the size of each write.
#[derive(Default)]
struct Writes(std::sync::Mutex<Vec<usize>>);

#[isa_core::async_trait]
impl EventSink for Writes {
    async fn record(&self, events: Vec<Event>) -> isa_core::Result<()> {
        self.0.lock().unwrap().push(events.len());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_written_in_batches_when_one_fills_or_a_flush_asks() {
    let writes = Arc::new(Writes::default());
    let sink = BatchingSink::spawn(
        writes.clone(),
        BatchingConfig {
            batch_size: 4,
            linger: Duration::from_secs(60),
            ..BatchingConfig::default()
        },
    );
    let event = || Event::now("batched", None, json!({}));
    for _ in 0..4 {
        sink.record(vec![event()]).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while writes.0.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a full batch is written before its linger ends"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink.record(vec![event(), event()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        *writes.0.lock().unwrap(),
        [4],
        "a batch not yet full lingers"
    );
    sink.flush().await.unwrap();
    assert_eq!(
        *writes.0.lock().unwrap(),
        [4, 2],
        "a flush writes what lingers, in one write"
    );
}

#[tokio::test]
async fn an_unknown_database_url_is_a_clear_error() {
    let error = Database::connect("mysql://nope").await.unwrap_err();
    assert!(
        error.to_string().contains("postgres:// or sqlite://"),
        "{error}"
    );
}

/// A payload PostgreSQL's `jsonb` refuses (U+0000) in the middle of a batch: the events around
/// it are written, it is set aside, and the writer goes on.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_the_store_refuses_is_set_aside_and_never_holds_up_the_rest() {
    for (name, db, _dir) in common::databases().await {
        let sink = BatchingSink::spawn(
            Arc::new(db.clone()),
            BatchingConfig {
                batch_size: 50,
                linger: Duration::from_millis(10),
                ..BatchingConfig::default()
            },
        );
        let user = fresh_user();
        let good = |i: usize| Event::now("fine", Some(user.clone()), json!({"i": i}));
        let mut events: Vec<Event> = (0..20).map(good).collect();
        let poison = Event::now("poison", Some(user.clone()), json!({"text": "a\u{0}b"}));
        events.insert(7, poison.clone());
        sink.record(events).await.unwrap();
        sink.record((20..30).map(good).collect()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), sink.flush())
            .await
            .unwrap_or_else(|_| panic!("{name}: the writer is stuck"))
            .unwrap();

        let stored = db
            .query(&EventQuery {
                user: Some(user.clone()),
                kind: Some("fine".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), 30, "{name}: every good event is written");
        let stats = sink.stats().unwrap();
        if name == "postgres" {
            assert_eq!((stats.set_aside, stats.written), (1, 30), "{name}");
            let Database::Postgres(pool) = &db else {
                unreachable!()
            };
            let (kind, payload): (String, String) =
                sqlx::query_as("select kind, payload from events_set_aside where id = $1")
                    .bind(poison.id.to_string())
                    .fetch_one(pool)
                    .await
                    .unwrap();
            assert_eq!(kind, "poison");
            assert!(payload.contains("\\u0000"), "{payload}");
        } else {
            // SQLite keeps the payload as text and takes it.
            assert_eq!((stats.set_aside, stats.written), (0, 31), "{name}");
        }
        sink.close().await.unwrap();
    }
}

/// A store that is down for good.
struct Down;

#[isa_core::async_trait]
impl EventSink for Down {
    async fn record(&self, _: Vec<Event>) -> isa_core::Result<()> {
        Err(Error::Unavailable("connection refused".into()))
    }
}

/// Shutting down while the store is unreachable ends after `close_wait`, saying how many
/// events were logged instead of stored.
#[tokio::test(flavor = "multi_thread")]
async fn closing_while_the_store_is_down_ends_after_close_wait() {
    let sink = BatchingSink::spawn(
        Arc::new(Down),
        BatchingConfig {
            linger: Duration::from_millis(1),
            close_wait: Duration::from_millis(300),
            ..BatchingConfig::default()
        },
    );
    sink.record(
        (0..5)
            .map(|i| Event::now("waiting", None, json!({"i": i})))
            .collect(),
    )
    .await
    .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), sink.close())
        .await
        .expect("close ends although the store is down");
    assert!(matches!(closed, Err(Error::Unavailable(_))), "{closed:?}");
    let stats = sink.stats().unwrap();
    assert_eq!((stats.lost, stats.written, stats.queued), (5, 0, 0));
}
