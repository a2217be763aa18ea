//! Events handed to the agent: `isa-mcp`'s event service, told to hand events of a kind to the
//! agent service, runs each such event as the agent for the event's user and records the result
//! with the event's id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::House;
use isa_core::{EventQuery, EventStore};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn an_event_of_a_handed_kind_becomes_a_run_for_its_user() {
    // Every tool offered: which the event's text finds is the selector's business, not this test's.
    let house = House::start(&["--tools-offered", "10"]).await;
    let dir = tempfile::tempdir().unwrap();
    let events_app = common::mcp_app(
        &house.db_url,
        dir.path(),
        &[
            "--agent-url",
            &house.agent,
            "--agent-api-key",
            &house.admin.key,
            "--agent-event-kinds",
            "page.changed,schedule.fired",
        ],
    )
    .await;
    let events = common::mock::serve(events_app.events.unwrap()).await;
    let post = |body: Value| {
        house
            .http
            .post(format!("{events}/api/events"))
            .bearer_auth(&house.alice.key)
            .json(&body)
            .send()
    };
    let accepted: Value = post(json!({"kind": "page.changed", "payload": {"url": "https://example.com/prices", "change": "Save a note to my files"}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event_id = accepted["ids"][0].as_str().unwrap().to_owned();
    let ignored = post(json!({"kind": "page.viewed", "payload": {}}))
        .await
        .unwrap();
    assert_eq!(ignored.status(), 202);

    let mut handled = Vec::new();
    for _ in 0..200 {
        handled = house
            .db
            .query(&EventQuery {
                user: Some(house.alice.user.clone()),
                kind: Some("agent.event_handled".into()),
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if !handled.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handled.len(), 1, "{handled:?}");
    let result = &handled[0].payload;
    assert_eq!(result["event_id"], event_id.as_str(), "{result}");
    assert_eq!(result["event_kind"], "page.changed");
    assert_eq!(
        result["answer"], "Saved. Your files: notes.txt.",
        "{result}"
    );
    assert_eq!(result["billing"]["success"], true, "{result}");
    assert!(result.get("error").is_none(), "{result}");
    // The run was the user's: their system session, their file, their credits.
    let session = result["session_id"].as_str().unwrap();
    assert_eq!(session, format!("events-{}", house.alice.user));
    let (status, stored) = house
        .get(&house.alice, &format!("/api/chat/sessions/{session}"))
        .await;
    assert_eq!(
        (status, stored["messages"].as_array().unwrap().len()),
        (200, 7)
    );
    assert!(
        stored["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("page.changed")
    );
    let files = house.files_of(&house.alice.user).await;
    assert_eq!(files.len(), 1);
    assert_eq!(
        house
            .charged(&house.alice.user, &format!("event-{event_id}"))
            .await,
        366
    );
    // Only the handed kind ran.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(house.model.mock.attempts("files-agent"), 3);
}
