//! A provider that answers OpenAI chat completions at once, streamed or not: the far end of
//! the model gateway load runs (`deploy/dev/load/model-gateway.sh`), so that what is measured
//! is the gateway. The model `agent-slow` plays an agent's model for the agent service's load
//! run (`deploy/dev/load/agent-sessions.sh`): it asks for `current_time` until the conversation
//! holds its result, then streams its answer in 20 pieces over a second, so that many runs
//! stream at once.
//!
//! Usage: `mock-openai ADDRESS` (such as `127.0.0.1:18090`).

use axum::{
    Json, Router,
    body::Body,
    http::header,
    response::{IntoResponse, Response},
    routing::post,
};
use futures::StreamExt;
use serde_json::{Value, json};

const CHUNKS: [&str; 4] = [
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"content":", world"},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
];
const USAGE: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;

/// One SSE frame of a chunk with `delta` and `finish`.
fn frame(delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
        "model": "agent-slow", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

/// `agent-slow`: a tool call, or the answer streamed over a second.
fn agent_slow(body: &Value) -> Response {
    let answered = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let frames: Vec<String> = if answered {
        let mut frames: Vec<String> = (0..20)
            .map(|i| {
                frame(
                    json!({"content": format!("piece {i} of the answer; ")}),
                    None,
                )
            })
            .collect();
        frames.push(frame(json!({}), Some("stop")));
        frames
    } else {
        vec![
            frame(
                json!({"tool_calls": [{"index": 0, "id": "call_t", "type": "function",
                    "function": {"name": "current_time", "arguments": "{}"}}]}),
                None,
            ),
            frame(json!({}), Some("tool_calls")),
        ]
    };
    let tail = [format!("data: {USAGE}\n\n"), "data: [DONE]\n\n".to_owned()];
    let gap = std::time::Duration::from_millis(if answered { 50 } else { 0 });
    let pieces =
        futures::stream::iter(frames.into_iter().chain(tail)).then(move |frame| async move {
            tokio::time::sleep(gap).await;
            Ok::<_, std::convert::Infallible>(frame)
        });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(pieces),
    )
        .into_response()
}

async fn chat(Json(body): Json<Value>) -> Response {
    if body["model"] == "agent-slow" {
        return agent_slow(&body);
    }
    if body["stream"] == true {
        let mut text = String::new();
        for chunk in CHUNKS {
            text.push_str("data: ");
            text.push_str(chunk);
            text.push_str("\n\n");
        }
        if body["stream_options"]["include_usage"] == true {
            text.push_str(&format!("data: {USAGE}\n\n"));
        }
        text.push_str("data: [DONE]\n\n");
        return (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from(text),
        )
            .into_response();
    }
    Json(json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }))
    .into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat));
    axum::serve(listener, app).await
}
