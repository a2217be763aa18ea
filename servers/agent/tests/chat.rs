//! The agent service end to end on real parts: the real model service in front of a scripted
//! model, `isa-mcp serve` with its built-in file tools, one database; its two stream protocols,
//! sessions, credits and events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Caller, House};
use isa_core::{EventQuery, EventStore};
use serde_json::{Value, json};

const ASK: &str = "Save a note to my files, then list my files";

fn kinds(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|i| i["type"].as_str().unwrap_or("[DONE]"))
        .collect()
}

fn progress(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .filter(|i| i["type"] == "custom_stream" && i["content"]["type"] == "progress")
        .map(|i| i["content"]["data"].as_str().unwrap())
        .collect()
}

fn unique_session(name: &str) -> String {
    format!("{name}-{}", common::model::uuid_like())
}

/// Events of `kind` for `caller`, once the event sink has written them.
async fn events_of(house: &House, caller: &Caller, kind: &str, at_least: usize) -> Vec<Value> {
    for _ in 0..100 {
        let found = house
            .db
            .query(&EventQuery {
                user: Some(caller.user.clone()),
                kind: Some(kind.into()),
                limit: 100,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if found.len() >= at_least {
            return found.into_iter().map(|e| e.payload).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {at_least} {kind} events")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_saves_and_lists_the_callers_files_streaming_every_envelope_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for db_url in common::model::database_urls(dir.path()) {
        let house = House::start_on(tempfile::tempdir().unwrap(), &db_url, &[]).await;
        files_chat(&house).await;
    }
}

/// The files chat on `house`, checked from its first envelope to the events it recorded.
async fn files_chat(house: &House) {
    let session = unique_session("files");
    let before = house.balance(&house.alice.user).await;
    let (status, items) = house
        .chat(
            &house.alice,
            "",
            json!({"message": ASK, "user_id": house.alice.user.as_str(), "session_id": session}),
        )
        .await;
    assert_eq!(status, 200, "{items:?}");
    let kinds = kinds(&items);
    assert_eq!(kinds.last(), Some(&"[DONE]"), "{kinds:?}");
    // Every envelope type, each first seen in the order of a run.
    let order = [
        "start",
        "custom_stream",
        "message_stream",
        "graph_update",
        "memory_update",
        "billing",
        "end",
    ];
    let first: Vec<usize> = order
        .iter()
        .map(|k| {
            kinds
                .iter()
                .position(|x| x == k)
                .unwrap_or_else(|| panic!("no {k}: {kinds:?}"))
        })
        .collect();
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{kinds:?}");
    assert_eq!(
        kinds[kinds.len() - 4..],
        ["memory_update", "billing", "end", "[DONE]"]
    );
    assert!(!kinds.contains(&"error"), "{items:?}");
    for item in &items[..items.len() - 1] {
        assert_eq!(item["session_id"], session.as_str(), "{item}");
        assert!(
            item["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{item}"
        );
    }

    // The model was guided by discovery, then asked for two calls at once, then answered.
    let lines = progress(&items);
    assert!(
        lines[0].starts_with("[discover_tools]") && lines[0].contains("file_upload"),
        "{lines:?}"
    );
    for expected in [
        "[file_upload] Starting execution (1/1)",
        "[file_list] Starting execution (1/2)",
        "[file_download_url] Starting execution (2/2)",
    ] {
        assert!(lines.contains(&expected), "{expected}: {lines:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[file_upload] Completed - ") && l.ends_with(" chars result")),
        "{lines:?}"
    );
    let next: Vec<&str> = items
        .iter()
        .filter(|i| i["type"] == "graph_update")
        .map(|i| i["data"]["reason_model"]["next_action"].as_str().unwrap())
        .collect();
    assert_eq!(next, ["call_tool", "call_tool", "end"]);
    let chunks: String = items
        .iter()
        .filter_map(|i| i["content"]["custom_llm_chunk"].as_str())
        .collect();
    assert_eq!(chunks, "Saving your note.Saved. Your files: notes.txt.");
    let end = &items[items.len() - 2];
    assert_eq!(end["content"], "Saved. Your files: notes.txt.");
    let messages: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "message_stream")
        .map(|i| &i["content"])
        .collect();
    assert_eq!(messages.len(), 6, "{messages:?}");
    assert_eq!(messages[0]["tool_calls"][0]["name"], "file_upload");
    assert_eq!(messages[1]["role"], "tool");
    assert!(
        messages[1]["content"]
            .as_str()
            .unwrap()
            .contains("notes.txt"),
        "{messages:?}"
    );

    // Credits: three model calls (22 credits each at the model service) and three tool calls
    // (100 each here), exactly what the ledger took under the run's request ids.
    let start = &items[0];
    let run_id = start["data"]["run_id"].as_str().unwrap();
    let billing = &items[items.len() - 3]["data"];
    assert_eq!(billing["success"], true, "{billing}");
    assert_eq!(
        (
            billing["model_calls"].as_u64(),
            billing["tool_calls"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(billing["total_credits"], 3 * 22 + 3 * 100, "{billing}");
    let charged = house.charged(&house.alice.user, run_id).await;
    assert_eq!(charged, 366);
    let after = house.balance(&house.alice.user).await;
    assert_eq!(before - after, 366);
    assert_eq!(billing["credits_remaining"], after, "{billing}");

    // The session holds the whole exchange, and the file is the caller's.
    let memory = &items[items.len() - 4]["data"];
    assert_eq!(
        (
            memory["messages_stored"].as_u64(),
            memory["session_messages"].as_u64()
        ),
        (Some(7), Some(7))
    );
    let (status, stored) = house
        .get(&house.alice, &format!("/api/chat/sessions/{session}"))
        .await;
    assert_eq!(status, 200, "{stored}");
    let roles: Vec<&str> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "tool",
            "assistant"
        ]
    );
    assert_eq!(stored["session"]["title"], ASK);
    let files = house.files_of(&house.alice.user).await;
    assert_eq!(
        files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["notes.txt"]
    );

    // Events: the run's start, each tool call, its end.
    let started = events_of(house, &house.alice, "agent.run.started", 1).await;
    assert_eq!(started[0]["session_id"], session.as_str());
    let calls = events_of(house, &house.alice, "agent.tool.called", 3).await;
    let mut tools: Vec<&str> = calls.iter().map(|c| c["tool"].as_str().unwrap()).collect();
    tools.sort();
    assert_eq!(tools, ["file_download_url", "file_list", "file_upload"]);
    assert!(calls.iter().all(|c| c["credits"] == 100), "{calls:?}");
    let finished = events_of(house, &house.alice, "agent.run.finished", 1).await;
    assert_eq!(
        (
            finished[0]["outcome"].as_str(),
            finished[0]["total_credits"].as_i64()
        ),
        (Some("ok"), Some(366))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_is_reloaded_on_its_next_message_and_belongs_to_its_user() {
    let house = House::start(&["--model", "priced"]).await;
    let session = unique_session("talk");
    let body = |text: &str| json!({"message": text, "session_id": session});
    let (status, _) = house.chat(&house.alice, "", body("first question")).await;
    assert_eq!(status, 200);
    let (status, items) = house.chat(&house.alice, "", body("second question")).await;
    assert_eq!(status, 200, "{items:?}");
    // The model saw the first exchange before the second question.
    let sent = house.model.mock.last_body.lock().clone();
    let texts: Vec<(&str, &str)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        texts[1..],
        [
            ("user", "first question"),
            ("assistant", "Hello, world"),
            ("user", "second question")
        ],
        "{sent}"
    );
    assert_eq!(texts[0].0, "system");

    let (status, listed) = house.get(&house.alice, "/api/chat/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(listed["sessions"][0]["id"], session.as_str());
    assert_eq!(listed["sessions"][0]["messages"], 4);

    // Bob can neither read, continue, list nor delete Alice's session.
    let path = format!("/api/chat/sessions/{session}");
    assert_eq!(house.get(&house.bob, &path).await.0, 404);
    assert_eq!(house.delete(&house.bob, &path).await, 404);
    let (status, listed) = house.get(&house.bob, "/api/chat/sessions").await;
    assert_eq!(
        (status, listed["sessions"].as_array().unwrap().len()),
        (200, 0)
    );
    let (status, answer) = house.chat(&house.bob, "", body("let me in")).await;
    assert_eq!(
        (status, answer[0]["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    // Nor act as Alice by naming her.
    let as_alice = json!({"message": "hi", "user_id": house.alice.user.as_str()});
    let (status, _) = house.chat(&house.bob, "", as_alice.clone()).await;
    assert_eq!(status, 403);
    let (status, _) = house
        .get(
            &house.bob,
            &format!("/api/chat/sessions?user_id={}", house.alice.user),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        house.get(&house.alice, &path).await.1["messages"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // An administrator may act for Alice.
    let (status, seen) = house
        .get(
            &house.admin,
            &format!("{path}?user_id={}", house.alice.user),
        )
        .await;
    assert_eq!(
        (status, seen["messages"].as_array().unwrap().len()),
        (200, 4)
    );

    assert_eq!(house.delete(&house.alice, &path).await, 204);
    assert_eq!(house.get(&house.alice, &path).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn bob_cannot_reach_alices_files_through_the_agent() {
    let house = House::start(&[]).await;
    let (status, _) = house.chat(&house.alice, "", json!({"message": ASK})).await;
    assert_eq!(status, 200);
    let (status, items) = house.chat(&house.bob, "", json!({"message": ASK})).await;
    assert_eq!(status, 200);
    // Bob's listing, made by the same script, holds his own note alone.
    assert_eq!(
        items[items.len() - 2]["content"],
        "Saved. Your files: notes.txt."
    );
    let alices = house.files_of(&house.alice.user).await;
    let bobs = house.files_of(&house.bob.user).await;
    assert_eq!((alices.len(), bobs.len()), (1, 1));
    assert_ne!(alices[0].id, bobs[0].id);
    // The URL the model asked for was of Bob's file: a download URL names its owner's key.
    let url_result = items
        .iter()
        .filter(|i| i["type"] == "message_stream" && i["content"]["role"] == "tool")
        .filter_map(|i| i["content"]["content"].as_str())
        .find(|c| c.contains("url"))
        .unwrap()
        .to_owned();
    assert!(url_result.contains(bobs[0].id.as_str()), "{url_result}");
    assert!(!url_result.contains(alices[0].id.as_str()), "{url_result}");
}

/// A key sent as `X-API-Key` rather than `Authorization: Bearer` is passed on to the model
/// service and the MCP server like any credential the auth layer accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_sent_as_x_api_key_is_passed_on_like_a_bearer_token() {
    let house = House::start(&[]).await;
    let response = house
        .http
        .post(format!("{}/api/chat", house.agent))
        .header("x-api-key", &house.alice.key)
        .json(&json!({"message": ASK}))
        .send()
        .await
        .unwrap();
    let (status, items) = House::read_chat(response).await;
    assert_eq!(status, 200, "{items:?}");
    assert_eq!(
        items[items.len() - 2]["content"],
        "Saved. Your files: notes.txt."
    );
    assert_eq!(house.files_of(&house.alice.user).await.len(), 1);

    let tested: Value = house
        .http
        .post(format!("{}/api/agent/test-mcp", house.agent))
        .header("x-api-key", &house.alice.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tested["reachable"], true, "{tested}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_before_a_run_starts() {
    let house = House::start(&[]).await;
    let cases = [
        (json!({}), 400, "invalid_input"),
        (json!({"message": "   "}), 400, "invalid_input"),
        (json!({"message": "x".repeat(32_001)}), 400, "invalid_input"),
        (
            json!({"message": "hi", "session_id": "has space"}),
            400,
            "invalid_input",
        ),
        (
            json!({"message": "hi", "user_id": ""}),
            400,
            "invalid_input",
        ),
        (json!({"message": 5}), 400, "invalid_input"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = house.chat(&house.alice, "", body.clone()).await;
        assert_eq!(
            (got, answer[0]["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer:?}"
        );
    }
    let (got, _) = house
        .chat(
            &house.alice,
            "?protocol=smoke-signals",
            json!({"message": "hi"}),
        )
        .await;
    assert_eq!(got, 400);
    let unauthenticated = house
        .http
        .post(format!("{}/api/chat", house.agent))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert!(unauthenticated.headers().contains_key("www-authenticate"));

    // A caller without credits is refused up front, and nothing is stored.
    let poor = common::caller(&house.db, "poor", 0, vec![]).await;
    let (status, answer) = house
        .chat(
            &poor,
            "",
            json!({"message": "hi", "session_id": "poor-session"}),
        )
        .await;
    assert_eq!(
        (status, answer[0]["error"]["code"].as_str()),
        (402, Some("insufficient_credits"))
    );
    assert_eq!(
        house.get(&poor, "/api/chat/sessions/poor-session").await.0,
        404
    );
    assert_eq!(house.model.mock.attempts("files-agent"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_route_test_mcp_and_health_answer() {
    let house = House::start(&["--max-turns", "4"]).await;
    let (status, agents) = house.get(&house.alice, "/api/agents").await;
    assert_eq!(status, 200);
    assert_eq!(agents["agents"][0]["model"], "files-agent");
    assert_eq!(agents["agents"][0]["limits"]["max_turns"], 4);
    assert!(agents["agents"][0]["system_prompt"].as_str().is_some());

    let tested: Value = house
        .http
        .post(format!("{}/api/agent/test-mcp", house.agent))
        .bearer_auth(&house.alice.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tested["reachable"], true, "{tested}");
    assert!(tested["tools"].as_u64().unwrap() >= 1, "{tested}");

    for path in ["/health", "/api/agent/health"] {
        let answer = house
            .http
            .get(format!("{}{path}", house.agent))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.headers()[isa_core::http::SERVICE_HEADER], "agent");
        let health: Value = answer.json().await.unwrap();
        assert_eq!(health["status"], "ok", "{health}");
        for check in ["database", "model_service", "mcp_server"] {
            assert_eq!(health["checks"][check]["ready"], true, "{check}: {health}");
        }
    }

    // With the MCP server gone, test-mcp says so and health names it, still ready.
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("x.db").display());
    let lonely = House::agent_on(
        "http://127.0.0.1:9/api/v1",
        "http://127.0.0.1:9/mcp",
        &db_url,
        &[],
    )
    .await;
    let health: Value = house
        .http
        .get(format!("{lonely}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["checks"]["mcp_server"]["ready"], false, "{health}");
    assert_eq!(
        health["checks"]["model_service"]["ready"], false,
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ai_sdks_own_reader_rebuilds_a_run_streamed_for_it() {
    let Some(ai) = ai_sdk_module() else { return };
    let house = House::start(&[]).await;
    let session = unique_session("ai-sdk");
    let script = format!(
        "{}/tests/clients/ai_sdk_chat.mjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let (agent, key) = (house.agent.clone(), house.alice.key.clone());
    let session_arg = session.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args([&script, &ai, &agent, &key, &session_arg, ASK])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let message: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(message["role"], "assistant", "{message}");
    let parts = message["parts"].as_array().unwrap();
    let texts: Vec<&str> = parts
        .iter()
        .filter(|p| p["type"] == "text")
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["Saving your note.", "Saved. Your files: notes.txt."],
        "{message}"
    );
    let tools: Vec<(&str, &str)> = parts
        .iter()
        .filter(|p| p["type"] == "dynamic-tool")
        .map(|p| {
            (
                p["toolName"].as_str().unwrap(),
                p["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tools,
        [
            ("file_upload", "output-available"),
            ("file_list", "output-available"),
            ("file_download_url", "output-available")
        ],
        "{message}"
    );
    let steps = parts.iter().filter(|p| p["type"] == "step-start").count();
    assert_eq!(steps, 3, "{message}");
    let billing = parts.iter().find(|p| p["type"] == "data-billing").unwrap();
    assert_eq!(billing["data"]["total_credits"], 366, "{message}");
    // The AI SDK's `id` was the session.
    let (status, stored) = house
        .get(&house.alice, &format!("/api/chat/sessions/{session}"))
        .await;
    assert_eq!(
        (status, stored["messages"].as_array().unwrap().len()),
        (200, 7)
    );
}

/// The `ai` package's entry module, installed by `deploy/dev/setup-services.sh`.
fn ai_sdk_module() -> Option<String> {
    let cache = std::env::var("ISA_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/isa", std::env::var("HOME").unwrap()));
    let module = format!("{cache}/node-tools/node_modules/ai/dist/index.js");
    let node = std::process::Command::new("node").arg("--version").output();
    let available =
        std::path::Path::new(&module).exists() && node.is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "the ai npm package and node are required (deploy/dev/setup-services.sh installs them)"
        );
        eprintln!("skipped: the ai npm package or node is not available");
        return None;
    }
    Some(module)
}

/// An MCP server (isa's, in this process) with one prompt and no tools; its `/mcp` URL.
async fn mcp_with_a_prompt() -> String {
    use isa_core::{
        PromptMessage, PromptSpec,
        mcp::{McpConfig, McpServer},
        prompt_fn,
    };
    let server = McpServer::builder(McpConfig::default())
        .selector(std::sync::Arc::new(
            isa_tools::select::LocalSelector::lexical(),
        ))
        .build();
    server
        .add_prompt(prompt_fn(
            PromptSpec::new("reviewer", "Review a text").with_argument(
                "tone",
                "How to speak",
                true,
            ),
            |args, _| async move {
                let tone = args
                    .get("tone")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                Ok(vec![PromptMessage::user(format!(
                    "You review texts in a {tone} tone."
                ))])
            },
        ))
        .await
        .unwrap();
    format!("{}/mcp", common::mock::serve(server.router()).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_mcp_prompt_becomes_the_runs_system_prompt() {
    let house = House::start(&[]).await;
    let mcp = mcp_with_a_prompt().await;
    let model_url = format!("{}/api/v1", house.model.base);
    let agent = House::agent_on(&model_url, &mcp, &house.db_url, &["--model", "priced"]).await;
    let body = json!({"message": "Is this good?", "prompt_name": "reviewer", "prompt_args": {"tone": "kind"}});
    let (status, items) = house.chat_at(&agent, &house.alice, "", body).await;
    assert_eq!(status, 200, "{items:?}");
    let sent = house.model.mock.last_body.lock().clone();
    let messages: Vec<(&str, &str)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        messages[1..],
        [
            ("system", "You review texts in a kind tone."),
            ("user", "Is this good?")
        ]
    );

    // A prompt the server does not have, or without its required argument, is refused up front.
    for body in [
        json!({"message": "hi", "prompt_name": "no-such-prompt"}),
        json!({"message": "hi", "prompt_name": "reviewer"}),
    ] {
        let (status, answer) = house.chat_at(&agent, &house.alice, "", body.clone()).await;
        assert_eq!(
            (status, answer[0]["error"]["code"].as_str()),
            (400, Some("invalid_input")),
            "{body}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_runs_a_chat_as_the_user_it_names() {
    let house = House::start(&[]).await;
    let before = house.balance(&house.alice.user).await;
    let (status, items) = house
        .chat(
            &house.admin,
            "",
            json!({"message": ASK, "user_id": house.alice.user.as_str()}),
        )
        .await;
    assert_eq!(status, 200, "{items:?}");
    assert_eq!(
        items[items.len() - 2]["content"],
        "Saved. Your files: notes.txt."
    );
    // The note is Alice's, and Alice paid: the model service and the MCP server saw Alice.
    let alices = house.files_of(&house.alice.user).await;
    let admins = house.files_of(&house.admin.user).await;
    assert_eq!((alices.len(), admins.len()), (1, 0));
    let run_id = items[0]["data"]["run_id"].as_str().unwrap();
    assert_eq!(house.charged(&house.alice.user, run_id).await, 366);
    assert_eq!(house.balance(&house.alice.user).await, before - 366);
    assert_eq!(house.charged(&house.admin.user, run_id).await, 0);
    let session = items[0]["session_id"].as_str().unwrap();
    let (status, _) = house
        .get(&house.alice, &format!("/api/chat/sessions/{session}"))
        .await;
    assert_eq!(status, 200);

    // Acting as another user is an administrator's alone, on every service.
    let routes = [
        format!("{}/api/agents", house.agent),
        format!("{}/api/v1/models", house.model.base),
    ];
    for route in routes {
        let refused = house
            .http
            .get(&route)
            .bearer_auth(&house.bob.key)
            .header(isa_core::ACT_FOR_HEADER, house.alice.user.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{route}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_sent_again_under_its_request_id_is_not_charged_again() {
    let house = House::start(&[]).await;
    let house = &house;
    let send = |session: &'static str| async move {
        let response = house
            .http
            .post(format!("{}/api/chat", house.agent))
            .bearer_auth(&house.alice.key)
            .header("x-request-id", "retried-chat-1")
            .json(&json!({"message": ASK, "session_id": session}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        common::sse_items(&response.text().await.unwrap())
    };
    let first = send("retry-a").await;
    assert_eq!(
        first[first.len() - 3]["data"]["total_credits"],
        366,
        "{first:?}"
    );
    let charged = house.charged(&house.alice.user, "retried-chat-1").await;
    assert_eq!(charged, 366);
    let balance = house.balance(&house.alice.user).await;

    let again = send("retry-b").await;
    let billing = &again[again.len() - 3]["data"];
    assert_eq!(billing["success"], true, "{again:?}");
    assert_eq!(billing["total_credits"], 0, "{billing}");
    assert_eq!(
        house.charged(&house.alice.user, "retried-chat-1").await,
        366
    );
    assert_eq!(house.balance(&house.alice.user).await, balance);
    assert_eq!(billing["credits_remaining"], balance, "{billing}");
}
