//! The event service through HTTP with real tokens, on SQLite and on PostgreSQL: recording,
//! queries per user, and every accepted event written by a graceful stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use common::*;
use isa_core::{EventSink, EventStore, UserId};
use isa_storage::events::BatchingConfig;
use reqwest::{Client, Method};
use serde_json::{Value, json};

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn events_are_recorded_and_queried_per_user() {
    for (name, db, _dir) in databases().await {
        let events = event_service(&db, BatchingConfig::default()).await;
        let base = &events.base;
        let http = Client::new();
        let (alice, bob) = (unique("alice"), unique("bob"));
        let (a, b) = (token_with(&alice, None), token_with(&bob, None));
        let one = http
            .post(format!("{base}/api/events"))
            .bearer_auth(&a)
            .json(&json!({"kind": "file.uploaded", "payload": {"size": 3}}))
            .send()
            .await
            .unwrap();
        assert_eq!(one.status(), 202, "{name}");
        let batch: Value = http
            .post(format!("{base}/api/events"))
            .bearer_auth(&a)
            .json(&json!({"events": [
                {"kind": "tool.called", "payload": {"tool": "web_fetch"}},
                {"kind": "tool.called", "payload": {"tool": "current_time"}},
            ]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(batch["accepted"], 2);
        let forged = http
            .post(format!("{base}/api/events"))
            .bearer_auth(&b)
            .json(&json!({"kind": "login", "user_id": alice}))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403, "bob cannot record events as alice");
        for bad in [
            json!({"kind": "no spaces"}),
            json!({"events": []}),
            json!({"payload": {}}),
            // What PostgreSQL's jsonb cannot hold is refused at the door.
            json!({"kind": "x", "payload": "\u{0}"}),
            json!({"kind": "x", "payload": {"deep": ["fine", {"a\u{0}": 1}]}}),
        ] {
            let r = http
                .post(format!("{base}/api/events"))
                .bearer_auth(&a)
                .json(&bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
        events.sink.close().await.unwrap();
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("isa_events_written_total 3\n")
                && metrics.contains("isa_events_set_aside_total 0\n")
                && metrics.contains("isa_events_queued 0\n"),
            "{name}: {metrics}"
        );

        let get = |path: String, bearer: String| {
            let http = http.clone();
            async move {
                let r = send_as(&http, Method::GET, format!("{base}{path}"), &bearer).await;
                (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (_, mine) = get("/api/events".into(), a.clone()).await;
        let kinds: Vec<&str> = mine["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["file.uploaded", "tool.called", "tool.called"],
            "{name}"
        );
        let (_, recent) = get("/api/events/recent?limit=1".into(), a.clone()).await;
        assert_eq!(
            recent["events"][0]["payload"]["tool"], "current_time",
            "newest first"
        );
        let (_, calls) = get("/api/events?kind=tool.called&limit=1".into(), a.clone()).await;
        assert_eq!(calls["events"].as_array().unwrap().len(), 1);
        let (_, page2) = get(
            format!(
                "/api/events?kind=tool.called&limit=1&after={}",
                calls["next"].as_str().unwrap()
            ),
            a.clone(),
        )
        .await;
        assert_eq!(page2["events"][0]["payload"]["tool"], "current_time");
        let (_, counts) = get("/api/events/counts".into(), a.clone()).await;
        assert_eq!(
            counts["counts"],
            json!([{"kind": "file.uploaded", "count": 1}, {"kind": "tool.called", "count": 2}])
        );
        let (_, his) = get("/api/events".into(), b.clone()).await;
        assert!(his["events"].as_array().unwrap().is_empty());
        let (status, _) = get(format!("/api/events?user_id={alice}"), b.clone()).await;
        assert_eq!(status, 403);
        let (status, _) = get("/api/events?since=yesterday".into(), a.clone()).await;
        assert_eq!(status, 400);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_accepted_before_a_graceful_stop_is_written() {
    for (name, db, _dir) in databases().await {
        // Events linger in the buffer, so the stop catches many of them unwritten.
        let config = BatchingConfig {
            capacity: 10_000,
            batch_size: 500,
            linger: Duration::from_millis(300),
            ..BatchingConfig::default()
        };
        let events = event_service(&db, config).await;
        let user = unique("streamer");
        let bearer = token_with(&user, None);
        let http = Client::new();
        let accepted = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let senders: Vec<_> = (0..8)
            .map(|_| {
                let (http, url, bearer, accepted) = (
                    http.clone(),
                    format!("{}/api/events", events.base),
                    bearer.clone(),
                    accepted.clone(),
                );
                tokio::spawn(async move {
                    for i in 0.. {
                        let sent = http
                            .post(&url)
                            .bearer_auth(&bearer)
                            .json(&json!({"kind": "stream.tick", "payload": {"i": i}}))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 202 => {
                                let body: Value = r.json().await.unwrap();
                                accepted
                                    .lock()
                                    .push(body["ids"][0].as_str().unwrap().to_owned());
                            }
                            Ok(r) => assert!(r.status().is_server_error(), "{}", r.status()),
                            Err(_) => return, // the service has stopped listening
                        }
                    }
                })
            })
            .collect();
        while accepted.lock().len() < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        events.stop.send(()).unwrap();
        events.served.await.unwrap().unwrap();
        events.sink.close().await.unwrap();
        for sender in senders {
            sender.await.unwrap();
        }
        let accepted = accepted.lock().clone();
        let mut stored = std::collections::HashSet::new();
        let mut after = None;
        loop {
            let page = db
                .query(&isa_core::EventQuery {
                    user: Some(UserId::new(user.clone()).unwrap()),
                    after,
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            after = page.last().map(|e| e.id);
            stored.extend(page.iter().map(|e| e.id.to_string()));
            if page.len() < 1000 {
                break;
            }
        }
        let missing = accepted.iter().filter(|id| !stored.contains(*id)).count();
        assert_eq!(
            missing,
            0,
            "{name}: {missing} of {} accepted events were lost",
            accepted.len()
        );
        eprintln!(
            "{name}: {} events accepted before the stop, all written",
            accepted.len()
        );
    }
}
