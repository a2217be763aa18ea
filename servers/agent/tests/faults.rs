//! The agent service when things go wrong: tools that fail or do not exist, the turn limit,
//! the run deadline, a model service that is down, a client that goes away, overload.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::House;
use futures::StreamExt;
use isa_core::{EventQuery, EventStore};
use serde_json::{Value, json};

fn of_type<'a>(items: &'a [Value], kind: &str) -> Vec<&'a Value> {
    items.iter().filter(|i| i["type"] == kind).collect()
}

fn run_id(items: &[Value]) -> String {
    items[0]["data"]["run_id"].as_str().unwrap().to_owned()
}

/// The end of a failed run: an error with `code`, the billing, the end, `[DONE]`.
fn assert_failed_with(items: &[Value], code: &str) -> Value {
    let n = items.len();
    assert!(n >= 4, "{items:?}");
    assert_eq!(items[n - 4]["type"], "error", "{items:?}");
    assert_eq!(items[n - 4]["data"]["code"], code, "{items:?}");
    assert_eq!(items[n - 3]["type"], "billing", "{items:?}");
    assert_eq!(items[n - 2]["type"], "end", "{items:?}");
    assert_eq!(items[n - 1], "[DONE]");
    let billing = items[n - 3]["data"].clone();
    assert_eq!(billing["success"], false, "{billing}");
    assert!(billing["error_message"].as_str().is_some(), "{billing}");
    billing
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_and_missing_tools_are_results_the_model_reads_and_are_not_charged() {
    let house = House::start(&["--model", "bad-calls"]).await;
    let (status, items) = house
        .chat(
            &house.alice,
            "",
            json!({"message": "Get the download URL of my file no-such-file"}),
        )
        .await;
    assert_eq!(status, 200, "{items:?}");
    let lines: Vec<&str> = of_type(&items, "custom_stream")
        .iter()
        .filter_map(|i| i["content"]["data"].as_str())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[file_download_url] Failed")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("[get_weather] Failed")),
        "{lines:?}"
    );
    let end = of_type(&items, "end")[0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(end.contains("there is no tool \"get_weather\""), "{end}");
    assert!(
        end.contains("not_found") || end.contains("not found"),
        "{end}"
    );
    let billing = &of_type(&items, "billing")[0]["data"];
    assert_eq!(
        (billing["success"].as_bool(), billing["tool_calls"].as_u64()),
        (Some(true), Some(2))
    );
    // Two model calls; the tool calls that failed cost nothing.
    assert_eq!(billing["total_credits"], 44, "{billing}");
    assert_eq!(house.charged(&house.alice.user, &run_id(&items)).await, 44);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_turn_limit_ends_a_run_with_an_error_and_keeps_only_the_question() {
    // The `free` model asks for a tool after every answer.
    let house = House::start(&["--model", "free", "--max-turns", "2"]).await;
    let (status, items) = house
        .chat(
            &house.alice,
            "",
            json!({"message": "weather?", "session_id": "looping"}),
        )
        .await;
    assert_eq!(status, 200);
    let billing = assert_failed_with(&items, "invalid_input");
    assert!(
        of_type(&items, "error")[0]["content"]
            .as_str()
            .unwrap()
            .contains("turn limit (2)"),
        "{items:?}"
    );
    assert_eq!(billing["model_calls"], 2);
    assert_eq!(house.model.mock.attempts("tool"), 2);
    let (_, session) = house.get(&house.alice, "/api/chat/sessions/looping").await;
    assert_eq!(
        session["messages"].as_array().unwrap().len(),
        1,
        "{session}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_deadline_ends_a_run_and_its_model_request() {
    let house = House::start(&["--model", "endless", "--run-seconds", "1"]).await;
    let (status, items) = house
        .chat(&house.alice, "", json!({"message": "talk"}))
        .await;
    assert_eq!(status, 200);
    assert_failed_with(&items, "timeout");
    assert!(
        !of_type(&items, "custom_stream").is_empty(),
        "it streamed until the deadline"
    );
    for _ in 0..100 {
        if house.model.mock.cancelled.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the model's stream was not dropped at the deadline");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_service_that_is_down_ends_the_run_with_an_error_and_charges_nothing() {
    let house = House::start(&[]).await;
    // Port 9 (discard) is closed on loopback: nothing answers there.
    let agent = House::agent_on("http://127.0.0.1:9/api/v1", &house.mcp, &house.db_url, &[]).await;
    let before = house.balance(&house.alice.user).await;
    let (status, items) = house
        .chat_at(
            &agent,
            &house.alice,
            "",
            json!({"message": "Save a note to my files"}),
        )
        .await;
    assert_eq!(status, 200);
    let billing = assert_failed_with(&items, "upstream");
    assert_eq!(
        of_type(&items, "error")[0]["content"],
        "model service failed"
    );
    assert_eq!(
        (
            billing["model_calls"].as_u64(),
            billing["total_credits"].as_i64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(house.charged(&house.alice.user, &run_id(&items)).await, 0);
    assert_eq!(house.balance(&house.alice.user).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_stops_the_run_and_its_model_request() {
    let house = House::start(&["--model", "endless"]).await;
    let response = house
        .start_chat(&house.alice, "", json!({"message": "talk"}))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("custom_llm_chunk") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    let mut stopped = false;
    for _ in 0..100 {
        if house.model.mock.cancelled.load(Ordering::SeqCst) {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stopped,
        "the model's stream was not dropped when the client left"
    );
    for _ in 0..100 {
        let finished = house
            .db
            .query(&EventQuery {
                user: Some(house.alice.user.clone()),
                kind: Some("agent.run.finished".into()),
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if let Some(event) = finished.first() {
            assert_eq!(event.payload["outcome"], "abandoned", "{:?}", event.payload);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no agent.run.finished event for the abandoned run");
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_beyond_the_services_capacity_are_refused_at_once() {
    let house = House::start(&["--model", "endless", "--max-concurrent-runs", "1"]).await;
    let first = house
        .start_chat(&house.alice, "", json!({"message": "talk"}))
        .await;
    assert_eq!(first.status(), 200);
    let second = house
        .start_chat(&house.bob, "", json!({"message": "talk too"}))
        .await;
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    let answer: Value = second.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "overloaded");
    // Once the first run's client leaves, its place is free again.
    drop(first);
    for _ in 0..100 {
        let (status, _) = house.get(&house.bob, "/api/agents").await;
        assert_eq!(status, 200);
        let third = house
            .start_chat(&house.bob, "?protocol=ai-sdk", json!({"message": "talk"}))
            .await;
        if third.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the run's place was not freed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_past_its_deadline_is_a_result_the_model_reads() {
    let house = House::start(&[]).await;
    // isa-mcp allowed to fetch from this machine, and a page here that never answers.
    let dir = tempfile::tempdir().unwrap();
    let app = common::mcp_app(&house.db_url, dir.path(), &["--net-allow", "127.0.0.1/32"]).await;
    let mcp = format!("{}/mcp", common::mock::serve(app.mcp_router).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page = format!("http://{}/slow", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let model_url = format!("{}/api/v1", house.model.base);
    let flags = [
        "--model",
        "fetch-agent",
        "--tool-seconds",
        "1",
        "--tools-offered",
        "10",
    ];
    let agent = House::agent_on(&model_url, &mcp, &house.db_url, &flags).await;
    let started = std::time::Instant::now();
    let (status, items) = house
        .chat_at(&agent, &house.alice, "", json!({"message": page}))
        .await;
    assert_eq!(status, 200, "{items:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let lines: Vec<&str> = of_type(&items, "custom_stream")
        .iter()
        .filter_map(|i| i["content"]["data"].as_str())
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("[web_fetch] Failed")),
        "{lines:?}"
    );
    let end = of_type(&items, "end")[0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(end.contains("web_fetch did not answer within 1s"), "{end}");
    let billing = &of_type(&items, "billing")[0]["data"];
    assert_eq!(
        (
            billing["success"].as_bool(),
            billing["total_credits"].as_i64()
        ),
        (Some(true), Some(0)),
        "{billing}"
    );
}
