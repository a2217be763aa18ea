//! Event sinks on SQLite and on PostgreSQL: the same tests on both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use isa_core::{Error, Event, EventQuery, EventSink, UserId};
use isa_storage::{
    db::Database,
    events::{BatchingConfig, BatchingSink},
};
use serde_json::json;

/// A user id no other test run shares, since the PostgreSQL database outlives runs.
fn fresh_user() -> UserId {
    UserId::new(format!("events-{}", uuid::Uuid::now_v7().simple())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_queried_by_user_kind_time_and_page() {
    for (name, db, _dir) in common::databases().await {
        let sink = BatchingSink::spawn(Arc::new(db), BatchingConfig::default());
        let (alice, bob) = (fresh_user(), fresh_user());
        let mut events = Vec::new();
        for i in 0..7 {
            events.push(Event::now(
                if i % 2 == 0 { "tool.call" } else { "login" },
                Some(alice.clone()),
                json!({"i": i}),
            ));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        events.push(Event::now("tool.call", Some(bob.clone()), json!({"i": 99})));
        sink.record(events.clone()).await.unwrap();
        sink.flush().await.unwrap();

        let alice_all = EventQuery {
            user: Some(alice.clone()),
            limit: 100,
            ..Default::default()
        };
        let got = sink.query(&alice_all).await.unwrap();
        assert_eq!(got.len(), 7, "{name}");
        assert_eq!(
            got,
            events[..7].to_vec(),
            "{name}: stored exactly, oldest first"
        );

        let calls = EventQuery {
            kind: Some("tool.call".into()),
            ..alice_all.clone()
        };
        assert_eq!(sink.query(&calls).await.unwrap().len(), 4, "{name}");

        let window = EventQuery {
            since: Some(events[2].time),
            until: Some(events[4].time),
            ..alice_all.clone()
        };
        let got = sink.query(&window).await.unwrap();
        assert!(
            got.len() >= 3
                && got
                    .iter()
                    .all(|e| e.time >= events[1].time && e.time <= events[5].time),
            "{name}: {got:?}"
        );

        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = sink
                .query(&EventQuery {
                    after,
                    limit: 3,
                    ..alice_all.clone()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|e| e.id);
            paged.extend(page);
        }
        assert_eq!(
            paged,
            events[..7].to_vec(),
            "{name}: pages cover everything once"
        );
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
        tokio::time::sleep(Duration::from_millis(300)).await;
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
