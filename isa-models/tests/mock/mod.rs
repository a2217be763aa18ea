//! Local servers that speak the providers' wire formats as their documentation describes them
//! (OpenAI chat completions, Anthropic Messages, Gemini `streamGenerateContent?alt=sse`,
//! Replicate predictions, Hugging Face feature extraction), streaming included. The model name
//! picks a script:
//!
//! | model | answer |
//! |---|---|
//! | `plain` | "Hello, world", 12 tokens in, 5 out |
//! | `tool` | "Checking." then `get_weather({"city":"Paris","days":3})`, arguments in 3-byte pieces |
//! | `parallel` | "Checking." then `get_weather` (Paris) and `get_time` (Tokyo) |
//! | `long` | a text of 150 KiB in one event |
//! | `tool-result` | checks the translated tool call and result, then "ok" |
//! | `midstream-error` | "Hel", then the provider's error event |
//! | `rate-limited` | 429 with `Retry-After: 1` the first time, then `plain` |
//! | `broken` | 503 |
//! | `hang` | nothing, ever |
//! | `stall` | "Hel", then nothing |
//! | `endless` | a piece every 20 ms until the client goes away (then `cancelled` is set) |
//! | `agent` | `get_weather` and `get_time` at once, then an answer once the conversation holds results |
//! | `files-agent` | `file_upload` (if offered) of a note, then `file_list` and `file_download_url` at once, then the names listed |
//! | `fetch-agent` | `web_fetch` of the URL the user sent, then what the tool said |
//! | `bad-calls` | `file_download_url` of a file that is not there and `get_weather` at once, then what the tools said |

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const KEY: &str = "test-provider-key";
pub const LONG_TEXT_BYTES: usize = 150 * 1024;

/// The arguments of the scripted calls.
/// "hello from the agent\n", base64-encoded: the note the `files-agent` script saves.
pub const NOTE_BASE64: &str = "aGVsbG8gZnJvbSB0aGUgYWdlbnQK";

pub fn weather_args() -> Value {
    json!({"city": "Paris", "days": 3})
}
pub fn time_args() -> Value {
    json!({"zone": "Asia/Tokyo"})
}

/// What a mock saw.
#[derive(Clone, Default)]
pub struct Mock {
    /// Requests per model name.
    pub attempts: Arc<Mutex<HashMap<String, u32>>>,
    /// Set when an `endless` answer's client went away.
    pub cancelled: Arc<AtomicBool>,
    /// The last request body.
    pub last_body: Arc<Mutex<Value>>,
    /// When set, `broken` answers `plain` instead (a deployment that recovered).
    pub healed: Arc<AtomicBool>,
}

impl Mock {
    pub fn attempts(&self, model: &str) -> u32 {
        self.attempts.lock().get(model).copied().unwrap_or(0)
    }

    fn count(&self, model: &str, body: &Value) -> u32 {
        *self.last_body.lock() = body.clone();
        let mut attempts = self.attempts.lock();
        let n = attempts.entry(model.to_owned()).or_default();
        *n += 1;
        *n
    }
}

/// Starts a router on a free loopback port; its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// Splits text into pieces of at most `n` bytes (on character boundaries).
fn pieces(text: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > n {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// An SSE response from frames; `line_end` is `\n` or `\r\n`.
fn sse(frames: Vec<String>) -> Response {
    sse_then(frames, Tail::End)
}

enum Tail {
    End,
    Hang,
    Endless(Arc<AtomicBool>, String),
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn sse_then(frames: Vec<String>, tail: Tail) -> Response {
    let head = futures::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<Bytes, std::io::Error>(Bytes::from(f))),
    );
    let tail: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match tail {
        Tail::End => Box::pin(futures::stream::empty()),
        Tail::Hang => Box::pin(futures::stream::pending()),
        Tail::Endless(flag, frame) => {
            let guard = SetOnDrop(flag);
            Box::pin(futures::stream::unfold(
                (guard, frame),
                |(guard, frame)| async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((Ok(Bytes::from(frame.clone())), (guard, frame)))
                },
            ))
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures::StreamExt::chain(head, tail)))
        .unwrap()
}

fn data(value: Value) -> String {
    format!("data: {value}\n\n")
}

fn authorized(headers: &HeaderMap, name: &str, expected: &str) -> bool {
    headers.get(name).and_then(|v| v.to_str().ok()) == Some(expected)
}

fn error(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

/// The common failures, or `None` for scripts that answer.
async fn failure(
    mock: &Mock,
    model: &str,
    attempt: u32,
    rate_limited_body: Value,
) -> Option<Response> {
    match model {
        "rate-limited" if attempt == 1 => {
            let mut response = error(429, rate_limited_body);
            response
                .headers_mut()
                .insert("retry-after", "1".parse().unwrap());
            Some(response)
        }
        "broken" if !mock.healed.load(Ordering::SeqCst) => Some(error(
            503,
            json!({"error": {"message": "overloaded", "type": "server_error"}}),
        )),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI

pub fn openai(mock: Mock) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/v1/images/generations", post(openai_images))
        .with_state(mock)
}

fn openai_chunk(delta: Value, finish: Option<&str>) -> String {
    data(
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]}),
    )
}

fn openai_call_frames(index: u64, id: &str, name: &str, args: &Value) -> (String, Vec<String>) {
    let start = openai_chunk(
        json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
        None,
    );
    let rest = pieces(&args.to_string(), 3)
        .into_iter()
        .map(|p| {
            openai_chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": p}}]}),
                None,
            )
        })
        .collect();
    (start, rest)
}

async fn openai_chat(
    State(mock): State<Mock>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, "authorization", &format!("Bearer {KEY}")) {
        return error(
            401,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
        );
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let attempt = mock.count(&model, &body);
    if body["stream"] != true || body["stream_options"]["include_usage"] != true {
        return error(
            400,
            json!({"error": {"message": "the gateway must stream with usage", "type": "invalid_request_error"}}),
        );
    }
    if let Some(response) = failure(
        &mock,
        &model,
        attempt,
        json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
    )
    .await
    {
        return response;
    }
    let usage = data(
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}),
    );
    let role = openai_chunk(json!({"role": "assistant", "content": ""}), None);
    let done = "data: [DONE]\n\n".to_owned();
    let text = |t: &str| openai_chunk(json!({"content": t}), None);
    match model.as_str() {
        "tool" => {
            let (start, rest) = openai_call_frames(0, "call_w", "get_weather", &weather_args());
            let mut frames = vec![role, text("Checking."), start];
            frames.extend(rest);
            frames.extend([openai_chunk(json!({}), Some("tool_calls")), usage, done]);
            sse(frames)
        }
        // An agent's model: asks for the weather and the time at once, and answers once the
        // conversation holds tool results.
        "agent"
            if body["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "tool")) =>
        {
            sse(vec![
                role,
                text("Sunny in Paris; 09:00 in Tokyo."),
                openai_chunk(json!({}), Some("stop")),
                usage,
                done,
            ])
        }
        "parallel" | "agent" => {
            // Pieces of the two calls interleaved: only `index` says which call a piece is for.
            let (start_w, rest_w) = openai_call_frames(0, "call_w", "get_weather", &weather_args());
            let (start_t, rest_t) = openai_call_frames(1, "call_t", "get_time", &time_args());
            let mut frames = vec![role, text("Checking."), start_w, start_t];
            let mut rest_t = rest_t.into_iter();
            for w in rest_w {
                frames.push(w);
                frames.extend(rest_t.next());
            }
            frames.extend(rest_t);
            frames.extend([openai_chunk(json!({}), Some("tool_calls")), usage, done]);
            sse(frames)
        }
        "tool-result" => {
            let messages = &body["messages"];
            let ok = messages[2]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(|a| serde_json::from_str::<Value>(a).unwrap())
                == Some(weather_args())
                && messages[2]["tool_calls"][0]["id"] == "call_w"
                && messages[3]["role"] == "tool"
                && messages[3]["tool_call_id"] == "call_w"
                && messages[3]["content"] == "18 degrees";
            if !ok {
                return error(
                    400,
                    json!({"error": {"message": format!("unexpected messages {messages}")}}),
                );
            }
            sse(vec![
                role,
                text("ok"),
                openai_chunk(json!({}), Some("stop")),
                usage,
                done,
            ])
        }
        "long" => sse(vec![
            role,
            text(&"x".repeat(LONG_TEXT_BYTES)),
            openai_chunk(json!({}), Some("stop")),
            usage,
            done,
        ]),
        "midstream-error" => sse(vec![
            role,
            text("Hel"),
            data(
                json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}),
            ),
        ]),
        "stall" => sse_then(vec![role, text("Hel")], Tail::Hang),
        "endless" => sse_then(
            vec![role],
            Tail::Endless(mock.cancelled.clone(), text("la ")),
        ),
        // An agent's model over isa's file tools: saves a note with a tool it was offered, then
        // lists the files and asks for the note's URL at once, then answers from the listing.
        "files-agent" => {
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let offered: Vec<&str> = body["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["function"]["name"].as_str())
                .collect();
            let result_of = |call: &str| {
                messages
                    .iter()
                    .find(|m| m["role"] == "tool" && m["tool_call_id"] == call)
                    .and_then(|m| serde_json::from_str::<Value>(m["content"].as_str()?).ok())
            };
            let mut frames = vec![role];
            // A tool that failed ends the script, saying what the tool said.
            let failed = messages.iter().find(|m| {
                m["role"] == "tool"
                    && m["content"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("Error"))
            });
            if let Some(failed) = failed {
                let said = failed["content"].as_str().unwrap_or_default();
                frames.push(text(&format!("A tool failed: {said}")));
                frames.extend([openai_chunk(json!({}), Some("stop")), usage, done]);
                return sse(frames);
            }
            match (result_of("call_u"), result_of("call_l")) {
                (None, _) => {
                    if !offered.contains(&"file_upload") {
                        return error(
                            400,
                            json!({"error": {"message": format!("file_upload was not offered: {offered:?}")}}),
                        );
                    }
                    let args = json!({"name": "notes.txt", "content_base64": NOTE_BASE64, "content_type": "text/plain"});
                    let (start, rest) = openai_call_frames(0, "call_u", "file_upload", &args);
                    frames.extend([text("Saving your note."), start]);
                    frames.extend(rest);
                    frames.push(openai_chunk(json!({}), Some("tool_calls")));
                }
                (Some(saved), None) => {
                    let id = saved["id"].as_str().unwrap_or_default();
                    let (start_l, rest_l) =
                        openai_call_frames(0, "call_l", "file_list", &json!({}));
                    let (start_d, rest_d) = openai_call_frames(
                        1,
                        "call_d",
                        "file_download_url",
                        &json!({"file_id": id}),
                    );
                    frames.extend([start_l, start_d]);
                    frames.extend(rest_l);
                    frames.extend(rest_d);
                    frames.push(openai_chunk(json!({}), Some("tool_calls")));
                }
                (Some(_), Some(listed)) => {
                    let names: Vec<&str> = listed["files"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["name"].as_str())
                        .collect();
                    frames.push(text(&format!("Saved. Your files: {}.", names.join(", "))));
                    frames.push(openai_chunk(json!({}), Some("stop")));
                }
            }
            frames.extend([usage, done]);
            sse(frames)
        }
        // A model that fetches the page the user names (the last user message is the URL), then
        // answers with what the tool said.
        "fetch-agent" => {
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let mut frames = vec![role];
            match messages.iter().rev().find(|m| m["role"] == "tool") {
                None => {
                    let url = messages
                        .iter()
                        .rev()
                        .find(|m| m["role"] == "user")
                        .and_then(|m| m["content"].as_str())
                        .unwrap_or_default();
                    let (start, rest) =
                        openai_call_frames(0, "call_f", "web_fetch", &json!({"url": url}));
                    frames.push(start);
                    frames.extend(rest);
                    frames.push(openai_chunk(json!({}), Some("tool_calls")));
                }
                Some(result) => {
                    let said = result["content"].as_str().unwrap_or_default();
                    frames.push(text(&format!("The page: {said}")));
                    frames.push(openai_chunk(json!({}), Some("stop")));
                }
            }
            frames.extend([usage, done]);
            sse(frames)
        }
        // A model asking for a file that is not there and a tool that is not offered, at once,
        // then answering with what the tools said.
        "bad-calls" => {
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let results: Vec<&str> = messages
                .iter()
                .filter(|m| m["role"] == "tool")
                .filter_map(|m| m["content"].as_str())
                .collect();
            let mut frames = vec![role];
            if results.is_empty() {
                let (start_d, rest_d) = openai_call_frames(
                    0,
                    "call_d",
                    "file_download_url",
                    &json!({"file_id": "no-such-file"}),
                );
                let (start_w, rest_w) =
                    openai_call_frames(1, "call_w", "get_weather", &weather_args());
                frames.extend([start_d, start_w]);
                frames.extend(rest_d);
                frames.extend(rest_w);
                frames.push(openai_chunk(json!({}), Some("tool_calls")));
            } else {
                frames.push(text(&format!("The tools said: {}", results.join(" | "))));
                frames.push(openai_chunk(json!({}), Some("stop")));
            }
            frames.extend([usage, done]);
            sse(frames)
        }
        _ => sse(vec![
            role,
            text("Hello"),
            text(", world"),
            openai_chunk(json!({}), Some("stop")),
            usage,
            done,
        ]),
    }
}

/// A vector for a text that differs per text: `[len, first byte, 1.0]`.
pub fn fake_vector(text: &str) -> Vec<f32> {
    vec![
        text.len() as f32,
        f32::from(text.bytes().next().unwrap_or(0)),
        1.0,
    ]
}

async fn openai_embeddings(State(mock): State<Mock>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let attempt = mock.count(&model, &body);
    if let Some(response) = failure(
        &mock,
        &model,
        attempt,
        json!({"error": {"message": "Rate limit reached"}}),
    )
    .await
    {
        return response;
    }
    let inputs: Vec<String> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    // OpenAI answers in the encoding asked for; the index says which input a vector is for.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| {
            let vector = fake_vector(text);
            let embedding = if body["encoding_format"] == "base64" {
                use base64::Engine;
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Json(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 7, "total_tokens": 7}})).into_response()
}

async fn openai_images(State(mock): State<Mock>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    mock.count(&model, &body);
    let n = body["n"].as_u64().unwrap_or(1);
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"url": format!("https://images.example/{i}.png")}))
        .collect();
    Json(json!({"created": 1, "data": data})).into_response()
}

// ---------------------------------------------------------------------------------------------
// Anthropic

pub fn anthropic(mock: Mock) -> Router {
    Router::new()
        .route("/v1/messages", post(anthropic_messages))
        .with_state(mock)
}

fn event(name: &str, value: Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

fn anthropic_text_block(index: u64, text: &str) -> Vec<String> {
    let mut frames = vec![event(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
    )];
    for piece in pieces(text, 5) {
        frames.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})));
    }
    frames.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    frames
}

fn anthropic_tool_block(index: u64, id: &str, name: &str, args: &Value) -> Vec<String> {
    let mut frames = vec![event(
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    )];
    for piece in pieces(&args.to_string(), 3) {
        frames.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": piece}}),
        ));
    }
    frames.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    frames
}

async fn anthropic_messages(
    State(mock): State<Mock>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, "x-api-key", KEY) {
        return error(
            401,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        );
    }
    if !authorized(&headers, "anthropic-version", "2023-06-01")
        || body["max_tokens"].as_u64().is_none()
        || body["stream"] != true
    {
        return error(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version, max_tokens and stream are required"}}),
        );
    }
    if body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "system")
    {
        return error(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "system goes in the top-level field"}}),
        );
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let attempt = mock.count(&model, &body);
    if let Some(response) = failure(&mock, &model, attempt, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}})).await {
        return response;
    }
    let start = event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    );
    let ping = event("ping", json!({"type": "ping"}));
    let end = |reason: &str| {
        vec![
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": 5}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ]
    };
    let mut frames = vec![start, ping];
    match model.as_str() {
        "tool" => {
            frames.extend(anthropic_text_block(0, "Checking."));
            frames.extend(anthropic_tool_block(
                1,
                "toolu_w",
                "get_weather",
                &weather_args(),
            ));
            frames.extend(end("tool_use"));
        }
        "parallel" => {
            frames.extend(anthropic_text_block(0, "Checking."));
            frames.extend(anthropic_tool_block(
                1,
                "toolu_w",
                "get_weather",
                &weather_args(),
            ));
            frames.extend(anthropic_tool_block(2, "toolu_t", "get_time", &time_args()));
            frames.extend(end("tool_use"));
        }
        "tool-result" => {
            let m = &body["messages"];
            let ok = m[1]["role"] == "assistant"
                && m[1]["content"][0]["type"] == "tool_use"
                && m[1]["content"][0]["id"] == "call_w"
                && m[1]["content"][0]["input"] == weather_args()
                && m[2]["role"] == "user"
                && m[2]["content"][0]["type"] == "tool_result"
                && m[2]["content"][0]["tool_use_id"] == "call_w"
                && m[2]["content"][0]["content"] == "18 degrees"
                && body["system"] == "be brief";
            if !ok {
                return error(
                    400,
                    json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("unexpected {body}")}}),
                );
            }
            frames.extend(anthropic_text_block(0, "ok"));
            frames.extend(end("end_turn"));
        }
        "long" => {
            frames.push(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            frames.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x".repeat(LONG_TEXT_BYTES)}})));
            frames.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            frames.extend(end("end_turn"));
        }
        "midstream-error" => {
            frames.extend(anthropic_text_block(0, "Hel").into_iter().take(2));
            frames.push(event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
        }
        "stall" => {
            frames.extend(anthropic_text_block(0, "Hel").into_iter().take(2));
            return sse_then(frames, Tail::Hang);
        }
        "endless" => {
            frames.push(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            let piece = event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "la "}}),
            );
            return sse_then(frames, Tail::Endless(mock.cancelled.clone(), piece));
        }
        _ => {
            frames.extend(anthropic_text_block(0, "Hello, world"));
            frames.extend(end("end_turn"));
        }
    }
    sse(frames)
}

// ---------------------------------------------------------------------------------------------
// Gemini

pub fn gemini(mock: Mock) -> Router {
    Router::new()
        .route("/v1beta/models/{call}", post(gemini_call))
        .with_state(mock)
}

/// Google ends lines with `\r\n` and sends no `[DONE]`.
fn gdata(value: Value) -> String {
    format!("data: {value}\r\n\r\n")
}

fn gemini_frame(parts: Value, finish: Option<&str>) -> String {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(reason) = finish {
        candidate["finishReason"] = json!(reason);
    }
    let mut frame = json!({"candidates": [candidate], "modelVersion": "gemini-mock"});
    if finish.is_some() {
        frame["usageMetadata"] =
            json!({"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17});
    }
    gdata(frame)
}

async fn gemini_call(
    State(mock): State<Mock>,
    Path(call): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, "x-goog-api-key", KEY) {
        return error(
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}),
        );
    }
    let Some((model, method)) = call.split_once(':') else {
        return error(
            404,
            json!({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}),
        );
    };
    let model = model.to_owned();
    if method == "batchEmbedContents" {
        mock.count(&model, &body);
        let embeddings: Vec<Value> = body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| json!({"values": fake_vector(r["content"]["parts"][0]["text"].as_str().unwrap())}))
            .collect();
        return Json(json!({"embeddings": embeddings})).into_response();
    }
    if method != "streamGenerateContent" || query.as_deref() != Some("alt=sse") {
        return error(
            400,
            json!({"error": {"code": 400, "message": "expected streamGenerateContent?alt=sse", "status": "INVALID_ARGUMENT"}}),
        );
    }
    let attempt = mock.count(&model, &body);
    if let Some(response) = failure(&mock, &model, attempt, json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}})).await {
        return response;
    }
    let call_part = |name: &str, args: Value| json!({"functionCall": {"name": name, "args": args}});
    match model.as_str() {
        "tool" => sse(vec![
            gemini_frame(json!([{"text": "Checking."}]), None),
            gemini_frame(
                json!([call_part("get_weather", weather_args())]),
                Some("STOP"),
            ),
        ]),
        "parallel" => sse(vec![
            gemini_frame(json!([{"text": "Checking."}]), None),
            gemini_frame(
                json!([
                    call_part("get_weather", weather_args()),
                    call_part("get_time", time_args())
                ]),
                Some("STOP"),
            ),
        ]),
        "tool-result" => {
            let c = &body["contents"];
            let ok = c[1]["role"] == "model"
                && c[1]["parts"][0]["functionCall"]["name"] == "get_weather"
                && c[1]["parts"][0]["functionCall"]["args"] == weather_args()
                && c[2]["role"] == "user"
                && c[2]["parts"][0]["functionResponse"]["name"] == "get_weather"
                && c[2]["parts"][0]["functionResponse"]["response"]
                    == json!({"result": "18 degrees"})
                && body["systemInstruction"]["parts"][0]["text"] == "be brief";
            if !ok {
                return error(
                    400,
                    json!({"error": {"code": 400, "message": format!("unexpected {body}"), "status": "INVALID_ARGUMENT"}}),
                );
            }
            sse(vec![gemini_frame(json!([{"text": "ok"}]), Some("STOP"))])
        }
        "long" => sse(vec![gemini_frame(
            json!([{"text": "x".repeat(LONG_TEXT_BYTES)}]),
            Some("STOP"),
        )]),
        "midstream-error" => sse(vec![
            gemini_frame(json!([{"text": "Hel"}]), None),
            gdata(
                json!({"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}),
            ),
        ]),
        "stall" => sse_then(
            vec![gemini_frame(json!([{"text": "Hel"}]), None)],
            Tail::Hang,
        ),
        "endless" => sse_then(
            Vec::new(),
            Tail::Endless(
                mock.cancelled.clone(),
                gemini_frame(json!([{"text": "la "}]), None),
            ),
        ),
        _ => sse(vec![
            gemini_frame(json!([{"text": "Hello"}]), None),
            gemini_frame(json!([{"text": ", world"}]), Some("STOP")),
        ]),
    }
}

// ---------------------------------------------------------------------------------------------
// Replicate and Hugging Face

pub fn replicate(mock: Mock) -> Router {
    Router::new()
        .route(
            "/v1/models/{owner}/{name}/predictions",
            post(replicate_create),
        )
        .route("/v1/predictions/{id}", get(replicate_get))
        .route("/v1/predictions/{id}/cancel", post(replicate_cancel))
        .with_state(mock)
}

async fn replicate_create(
    State(mock): State<Mock>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, "authorization", &format!("Bearer {KEY}")) {
        return error(
            401,
            json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}),
        );
    }
    let model = format!("{owner}/{name}");
    let attempt = mock.count(&model, &body);
    let throttled = json!({"title": "Request was throttled", "detail": "Request was throttled. Expected available in 1 second.", "status": 429});
    if let Some(failed) = failure(&mock, &name, attempt, throttled).await {
        return failed;
    }
    let wait = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // `never` runs past any deadline; `slow` models are still running when the wait ends;
    // `failing` fails as a prediction does; others finish within the wait.
    let id = if name == "never" { "p-never" } else { "p1" };
    let urls = json!({"get": format!("http://{host}/v1/predictions/{id}"), "cancel": format!("http://{host}/v1/predictions/{id}/cancel")});
    if name == "failing" {
        return (StatusCode::CREATED, Json(json!({"id": id, "status": "failed", "output": null, "error": "NSFW content detected", "urls": urls}))).into_response();
    }
    if name.starts_with("slow") || name == "never" || !wait.starts_with("wait") {
        return (StatusCode::CREATED, Json(json!({"id": id, "status": "starting", "output": null, "urls": urls, "input": body["input"]}))).into_response();
    }
    let n = body["input"]["num_outputs"].as_u64().unwrap_or(1);
    let output: Vec<String> = (0..n)
        .map(|i| format!("https://replicate.delivery/{i}.webp"))
        .collect();
    (
        StatusCode::CREATED,
        Json(json!({"id": "p1", "status": "succeeded", "output": output, "urls": urls})),
    )
        .into_response()
}

async fn replicate_get(
    State(mock): State<Mock>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let polls = mock.count(&format!("poll/{id}"), &Value::Null);
    let urls = json!({"get": format!("http://{host}/v1/predictions/{id}"), "cancel": format!("http://{host}/v1/predictions/{id}/cancel")});
    if polls < 3 || id == "p-never" {
        return Json(json!({"id": id, "status": "processing", "output": null, "urls": urls}))
            .into_response();
    }
    Json(json!({"id": id, "status": "succeeded", "output": "https://replicate.delivery/late.webp", "urls": urls})).into_response()
}

async fn replicate_cancel(State(mock): State<Mock>, Path(id): Path<String>) -> Response {
    mock.count(&format!("cancel/{id}"), &Value::Null);
    Json(json!({"id": id, "status": "canceled"})).into_response()
}

pub fn hugging_face(mock: Mock) -> Router {
    Router::new()
        .route(
            "/hf-inference/models/{owner}/{name}/pipeline/feature-extraction",
            post(hf_features),
        )
        .nest(
            "/v1",
            Router::new()
                .route("/chat/completions", post(openai_chat))
                .with_state(mock.clone()),
        )
        .with_state(mock)
}

async fn hf_features(
    State(mock): State<Mock>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, "authorization", &format!("Bearer {KEY}")) {
        return error(
            401,
            json!({"error": "Invalid credentials in Authorization header"}),
        );
    }
    mock.count(&format!("{owner}/{name}"), &body);
    let rows: Vec<Vec<f32>> = body["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| fake_vector(t.as_str().unwrap()))
        .collect();
    Json(json!(rows)).into_response()
}
