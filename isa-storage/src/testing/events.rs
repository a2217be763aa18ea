//! Behaviour every [`EventStore`] must have.

use std::time::Duration;

use isa_core::{Event, EventQuery, EventStore, KindCount};
use serde_json::json;

use super::fresh_user;

/// Events read back exactly, oldest first, filtered by user, kind and time, in pages that
/// cover each once, newest first when asked; a batch written twice is stored once; counts
/// per kind cover one user or everyone.
pub async fn events_are_stored_once_and_queried_by_user_kind_time_and_page(
    name: &str,
    store: &dyn EventStore,
) {
    let (alice, bob) = (fresh_user("events"), fresh_user("events"));
    let mut events = Vec::new();
    for i in 0..7 {
        events.push(Event::now(
            if i % 2 == 0 { "tool.call" } else { "login" },
            Some(alice.clone()),
            json!({"i": i, "note": "ünïcode ✓"}),
        ));
        // Distinct milliseconds, so time windows have edges between events.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    events.push(Event::now("tool.call", Some(bob.clone()), json!({"i": 99})));
    store.write(&events).await.unwrap();
    store.write(&events[..3]).await.unwrap();
    store.write(&[]).await.unwrap();

    let alice_all = EventQuery {
        user: Some(alice.clone()),
        limit: 100,
        ..Default::default()
    };
    let got = store.query(&alice_all).await.unwrap();
    assert_eq!(
        got,
        events[..7].to_vec(),
        "{name}: stored once, exactly, oldest first"
    );
    let newest_first = EventQuery {
        newest_first: true,
        ..alice_all.clone()
    };
    let mut reversed = events[..7].to_vec();
    reversed.reverse();
    assert_eq!(
        store.query(&newest_first).await.unwrap(),
        reversed,
        "{name}"
    );

    let calls = EventQuery {
        kind: Some("tool.call".into()),
        ..alice_all.clone()
    };
    assert_eq!(store.query(&calls).await.unwrap().len(), 4, "{name}");

    let window = EventQuery {
        since: Some(events[2].time),
        until: Some(events[4].time),
        ..alice_all.clone()
    };
    let got = store.query(&window).await.unwrap();
    assert!(
        got.len() >= 3
            && got
                .iter()
                .all(|e| e.time >= events[1].time && e.time <= events[5].time),
        "{name}: {got:?}"
    );

    for query in [alice_all.clone(), newest_first] {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .query(&EventQuery {
                    after,
                    limit: 3,
                    ..query.clone()
                })
                .await
                .unwrap();
            assert!(page.len() <= 3, "{name}");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|e| e.id);
            paged.extend(page);
        }
        assert_eq!(
            paged,
            store.query(&query).await.unwrap(),
            "{name}: pages cover everything once"
        );
    }

    let (since, until) = (events[0].time, events[7].time);
    assert_eq!(
        store
            .count_by_kind(Some(&alice), since, until)
            .await
            .unwrap(),
        vec![
            KindCount {
                kind: "login".into(),
                count: 3
            },
            KindCount {
                kind: "tool.call".into(),
                count: 4
            },
        ],
        "{name}: in kind order"
    );
    let everyone = store.count_by_kind(None, since, until).await.unwrap();
    let calls = everyone.iter().find(|c| c.kind == "tool.call").unwrap();
    assert!(calls.count >= 5, "{name}: bob's call counts too");
}
