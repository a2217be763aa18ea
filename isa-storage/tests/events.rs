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

#[tokio::test]
async fn an_unknown_database_url_is_a_clear_error() {
    let error = Database::connect("mysql://nope").await.unwrap_err();
    assert!(
        error.to_string().contains("postgres:// or sqlite://"),
        "{error}"
    );
}
