//! The agent loop reaching its model through the model service over HTTP, as a deployment runs
//! it: `isa-agent` → the OpenAI-compatible provider → `isa-model` (auth, routing, metering) → a
//! local server playing the model's part; its tools on isa's MCP server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use futures::StreamExt;
use isa_agent::{Agent, AgentEvent, McpTools};
use isa_core::{
    ChatMessage, CreditLedger, Role, ToolOutput, ToolSpec,
    mcp::{McpConfig, McpServer},
    tool_fn,
};
use isa_models::providers::OpenAi;
use isa_tools::select::LocalSelector;
use serde_json::json;

/// An MCP server with weather and time tools among others; its `/mcp` URL.
async fn mcp_server() -> String {
    let server = McpServer::builder(McpConfig::default())
        .selector(Arc::new(LocalSelector::lexical()))
        .build();
    for (name, description) in [
        ("get_weather", "Current weather of a city"),
        ("get_time", "Current time in a time zone"),
        ("send_email", "Send an email"),
    ] {
        server
            .add_tool(tool_fn(ToolSpec::new(name, description), move |args, _| async move {
                Ok(ToolOutput::json(json!({"tool": name, "asked": args})))
            }))
            .await
            .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server.router()).await });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_reaches_its_model_through_the_model_service() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::serve(
        &format!("sqlite://{}", dir.path().join("isa.db").display()),
        1_000_000,
    )
    .await;
    let model =
        OpenAi::compatible("isa", &format!("{}/api/v1", s.base), Some(s.key.clone())).unwrap();
    let tools = McpTools::connect(&mcp_server().await, None).await.unwrap();
    let agent = Agent::new(Arc::new(model), "agent");
    let events: Vec<AgentEvent> = agent
        .run(
            vec![ChatMessage::text(
                Role::User,
                "What is the weather in Paris and the current time in Tokyo?",
            )],
            Arc::new(tools),
        )
        .collect()
        .await;

    let mut calls: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallFinished { name, is_error, .. } => Some((name.clone(), *is_error)),
            _ => None,
        })
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            ("get_time".to_owned(), false),
            ("get_weather".to_owned(), false)
        ],
        "{events:?}"
    );
    let Some(AgentEvent::Finished(summary)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(summary.answer, "Sunny in Paris; 09:00 in Tokyo.");
    assert_eq!((summary.model_calls, summary.tool_calls), (2, 2));

    // What the model was sent the second time: the calls, and the tools' results for them.
    let sent = s.mock.last_body.lock().clone();
    let messages = sent["messages"].as_array().unwrap();
    let results: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{sent}");
    assert!(
        results[0].contains("get_weather") && results[0].contains("Paris"),
        "{results:?}"
    );
    assert!(results[1].contains("Asia/Tokyo"), "{results:?}");

    // Both model calls went through the service's metering, each charged once. A streamed
    // answer is charged just after its end, so the last charge may land a moment later.
    for _ in 0..100 {
        let history = s.db.history(&s.user, None, 100).await.unwrap();
        if history
            .iter()
            .filter(|t| t.operation == "model.chat")
            .count()
            >= 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let history = s.db.history(&s.user, None, 100).await.unwrap();
    let charges = history
        .iter()
        .filter(|t| t.operation == "model.chat")
        .count();
    assert_eq!(charges, 2, "{history:?}");
}
