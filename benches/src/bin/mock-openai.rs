//! A provider that answers OpenAI chat completions at once, streamed or not: the far end of
//! the model gateway load runs (`deploy/dev/load/model-gateway.sh`), so that what is measured
//! is the gateway.
//!
//! Usage: `mock-openai ADDRESS` (such as `127.0.0.1:18090`).

use axum::{
    Json, Router,
    body::Body,
    http::header,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

const CHUNKS: [&str; 4] = [
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"content":", world"},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
];
const USAGE: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;

async fn chat(Json(body): Json<Value>) -> Response {
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
