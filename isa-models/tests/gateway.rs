//! The providers and the model service against local servers that speak each provider's wire
//! format (`mock/`), through the same code as production: configuration file, gateway,
//! provider adapters, and the OpenAI-compatible front door over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mock;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use base64::Engine;
use futures::StreamExt;
use isa_auth::{ApiKeys, Authenticator, MemoryKeyStore};
use isa_core::{UserId, http::Health};
use isa_models::{
    gateway::{Gateway, GatewayConfig},
    providers::sse::SseReader,
    service::{Metering, ServiceLimits, router},
};
use mock::Mock;
use serde_json::{Value, json};

/// The price of every scripted chat deployment.
const PRICE: &str = "input_per_million = 1.0, output_per_million = 2.0";

/// Hugging Face serves chat through its OpenAI-compatible router.
const CHAT_PROVIDERS: [&str; 4] = ["openai", "anthropic", "gemini", "hf"];

/// Replicate models scripted to fail: a 429 with `Retry-After`, a 5xx, a hang, a failed
/// prediction, and one that is still running at the deadline.
const REPLICATE_FAILURES: [&str; 5] = [
    "replicate/owner/rate-limited",
    "replicate/owner/broken",
    "replicate/owner/hang",
    "replicate/owner/failing",
    "replicate/owner/never",
];

struct Setup {
    base: String,
    key: String,
    mocks: std::collections::HashMap<&'static str, Mock>,
    http: reqwest::Client,
}

/// The configuration file the tests serve: every scripted model at every chat provider, and
/// aliases with fallbacks.
fn config(bases: &std::collections::HashMap<&str, String>) -> String {
    let mut toml = format!(
        r#"
[routing]
retries = 2
backoff_ms = 10
max_retry_wait_ms = 2000
first_byte_timeout_ms = 500
idle_timeout_ms = 500
image_timeout_ms = 2500
breaker_failures = 3
breaker_cooldown_ms = 300

[providers.openai]
kind = "openai"
base_url = "{openai}/v1"
api_key_env = "KEY"

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key_env = "KEY"

[providers.gemini]
kind = "gemini"
base_url = "{gemini}/v1beta"
api_key_env = "KEY"

[providers.replicate]
kind = "replicate"
base_url = "{replicate}/v1"
api_key_env = "KEY"

[providers.hf]
kind = "hugging_face"
base_url = "{hf}"
api_key_env = "KEY"

[providers.unkeyed]
kind = "openai"
api_key_env = "NOT_SET"

[[models]]
name = "failover"
kind = "chat"
deployments = [{{ provider = "openai", model = "broken", price = {{ {PRICE} }} }}, {{ provider = "anthropic", model = "plain", price = {{ {PRICE} }} }}]

[[models]]
name = "hang-then-ok"
kind = "chat"
deployments = [{{ provider = "openai", model = "hang", price = {{ {PRICE} }} }}, {{ provider = "gemini", model = "plain", price = {{ {PRICE} }} }}]

[[models]]
name = "needs-a-key"
kind = "chat"
deployments = [{{ provider = "unkeyed", model = "gpt-4.1-nano" }}]

[[models]]
name = "embed"
kind = "embeddings"
deployments = [{{ provider = "openai", model = "text-embedding-3-small", price = {{ input_per_million = 0.02 }} }}]
"#,
        openai = bases["openai"],
        anthropic = bases["anthropic"],
        gemini = bases["gemini"],
        replicate = bases["replicate"],
        hf = bases["hf"],
    )
    .replace("{PRICE}", PRICE);
    let scripts = [
        "plain",
        "tool",
        "parallel",
        "long",
        "tool-result",
        "midstream-error",
        "rate-limited",
        "broken",
        "hang",
        "stall",
        "endless",
    ];
    for provider in CHAT_PROVIDERS {
        for script in scripts {
            toml.push_str(&format!(
                "\n[[models]]\nname = \"{provider}/{script}\"\nkind = \"chat\"\ndeployments = [{{ provider = \"{provider}\", model = \"{script}\", price = {{ {PRICE} }} }}]\n"
            ));
        }
    }
    for (name, kind, provider, model) in [
        (
            "gemini/text-embedding-004",
            "embeddings",
            "gemini",
            "text-embedding-004",
        ),
        (
            "hf/sentence-transformers/all-MiniLM-L6-v2",
            "embeddings",
            "hf",
            "sentence-transformers/all-MiniLM-L6-v2",
        ),
        ("openai/gpt-image-1", "images", "openai", "gpt-image-1"),
        (
            "replicate/black-forest-labs/flux-schnell",
            "images",
            "replicate",
            "black-forest-labs/flux-schnell",
        ),
        (
            "replicate/black-forest-labs/slow-flux",
            "images",
            "replicate",
            "black-forest-labs/slow-flux",
        ),
    ]
    .into_iter()
    .chain(
        REPLICATE_FAILURES.map(|name| (name, "images", "replicate", &name["replicate/".len()..])),
    ) {
        toml.push_str(&format!(
            "\n[[models]]\nname = \"{name}\"\nkind = \"{kind}\"\ndeployments = [{{ provider = \"{provider}\", model = \"{model}\" }}]\n"
        ));
    }
    toml
}

async fn setup_with(limits: ServiceLimits) -> Setup {
    let mut mocks = std::collections::HashMap::new();
    let mut bases = std::collections::HashMap::new();
    for (name, make) in [
        ("openai", mock::openai as fn(Mock) -> axum::Router),
        ("anthropic", mock::anthropic),
        ("gemini", mock::gemini),
        ("replicate", mock::replicate),
        ("hf", mock::hugging_face),
    ] {
        let m = Mock::default();
        bases.insert(name, mock::serve(make(m.clone())).await);
        mocks.insert(name, m);
    }
    let config = GatewayConfig::from_toml(&config(&bases)).unwrap();
    let gateway: Gateway = config
        .build(|var| (var == "KEY").then(|| mock::KEY.to_owned()), None)
        .unwrap();
    let keys = ApiKeys::new(Arc::new(MemoryKeyStore::default()));
    let (key, _) = keys
        .issue(&UserId::new("alice").unwrap(), "test", vec![])
        .await
        .unwrap();
    let auth = Authenticator::new("http://model.test/api/v1", None, Some(keys));
    let app = router(
        Arc::new(gateway),
        Metering::default(),
        auth,
        Health::new(vec![]),
        limits,
        8082,
    );
    Setup {
        base: mock::serve(app).await,
        key,
        mocks,
        http: reqwest::Client::new(),
    }
}

async fn setup() -> Setup {
    setup_with(ServiceLimits::default()).await
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                  {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]})
}

/// The conversation `tool-result` checks: a call and its result.
fn with_tool_result(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": mock::weather_args().to_string()}}]},
        {"role": "tool", "tool_call_id": "call_w", "content": "18 degrees"}
    ]})
}

impl Setup {
    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn chat(&self, body: &Value) -> (u16, Value) {
        let response = self.post("/api/v1/chat/completions", body).await;
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The data of every frame of a streamed chat (`[DONE]` as the string).
    async fn chat_stream(&self, body: &Value) -> Vec<Value> {
        let mut body = body.clone();
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let response = self.post("/api/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader::new("test", response.bytes_stream())
            .map(|e| {
                let data = e.unwrap().data;
                if data == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(&data).unwrap()
                }
            })
            .collect()
            .await
    }
}

/// What a client makes of an answer, with the ids set aside (each provider has its own).
#[derive(Debug, PartialEq)]
struct Answer {
    content: String,
    calls: Vec<(String, Value)>,
    finish: String,
    usage: Value,
}

fn ids_are_unique_and_present(ids: &[String]) {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        assert!(
            !id.is_empty() && seen.insert(id.clone()),
            "tool call ids {ids:?}"
        );
    }
}

fn from_completion(body: &Value) -> Answer {
    assert_eq!(body["object"], "chat.completion");
    let message = &body["choices"][0]["message"];
    let calls = message["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ids_are_unique_and_present(
        &calls
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
    );
    Answer {
        content: message["content"].as_str().unwrap_or_default().to_owned(),
        calls: calls
            .iter()
            .map(|c| {
                assert_eq!(c["type"], "function");
                let args =
                    serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                (c["function"]["name"].as_str().unwrap().to_owned(), args)
            })
            .collect(),
        finish: body["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_owned(),
        usage: body["usage"].clone(),
    }
}

/// Assembles a stream the way OpenAI's SDKs do, checking its shape on the way: the role first,
/// a call's id and name in its first piece only, usage after the finish, `[DONE]` last.
fn from_stream(frames: &[Value]) -> Answer {
    assert_eq!(frames.last().unwrap(), "[DONE]", "{frames:?}");
    assert_eq!(frames[0]["choices"][0]["delta"]["role"], "assistant");
    let mut content = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    let mut usage = Value::Null;
    for frame in &frames[..frames.len() - 1] {
        assert_eq!(frame["object"], "chat.completion.chunk");
        if let Some(u) = frame.get("usage").filter(|u| !u.is_null()) {
            assert!(finish.is_some(), "usage comes after the finish");
            assert_eq!(frame["choices"], json!([]));
            usage = u.clone();
            continue;
        }
        let choice = &frame["choices"][0];
        content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                calls.push((
                    call["id"].as_str().unwrap().to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            } else {
                assert!(
                    call.get("id").is_none() && call["function"].get("name").is_none(),
                    "only a call's first piece names it"
                );
            }
            calls[index]
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap());
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    ids_are_unique_and_present(&calls.iter().map(|c| c.0.clone()).collect::<Vec<_>>());
    Answer {
        content,
        calls: calls
            .into_iter()
            .map(|(_, name, args)| (name, serde_json::from_str(&args).unwrap()))
            .collect(),
        finish: finish.expect("a finish reason"),
        usage,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_provider_gives_the_same_openai_answer_streamed_or_not() {
    let s = setup().await;
    let usage = json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
    let weather = ("get_weather".to_owned(), mock::weather_args());
    let time = ("get_time".to_owned(), mock::time_args());
    let expected = [
        (
            "plain",
            Answer {
                content: "Hello, world".into(),
                calls: vec![],
                finish: "stop".into(),
                usage: usage.clone(),
            },
        ),
        (
            "tool",
            Answer {
                content: "Checking.".into(),
                calls: vec![weather.clone()],
                finish: "tool_calls".into(),
                usage: usage.clone(),
            },
        ),
        (
            "parallel",
            Answer {
                content: "Checking.".into(),
                calls: vec![weather, time],
                finish: "tool_calls".into(),
                usage: usage.clone(),
            },
        ),
        (
            "long",
            Answer {
                content: "x".repeat(mock::LONG_TEXT_BYTES),
                calls: vec![],
                finish: "stop".into(),
                usage: usage.clone(),
            },
        ),
    ];
    for provider in CHAT_PROVIDERS {
        for (script, answer) in &expected {
            let model = format!("{provider}/{script}");
            let (status, body) = s.chat(&ask(&model)).await;
            assert_eq!(status, 200, "{model}: {body}");
            assert_eq!(&from_completion(&body), answer, "{model}, not streamed");
            assert_eq!(body["model"], model);
            assert_eq!(body["billing"]["deployment"], model);
            let frames = s.chat_stream(&ask(&model)).await;
            assert_eq!(&from_stream(&frames), answer, "{model}, streamed");
        }
        // The request side: a call and its result, translated into the provider's shapes.
        let model = format!("{provider}/tool-result");
        let (status, body) = s.chat(&with_tool_result(&model)).await;
        assert_eq!(
            (status, body["choices"][0]["message"]["content"].as_str()),
            (200, Some("ok")),
            "{model}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_fails_midway_ends_with_an_error_event_and_is_not_retried() {
    let s = setup().await;
    for provider in CHAT_PROVIDERS {
        let model = format!("{provider}/midstream-error");
        let frames = s.chat_stream(&ask(&model)).await;
        let last = frames.last().unwrap();
        assert!(last["error"]["message"].is_string(), "{model}: {frames:?}");
        assert_eq!(last["error"]["code"], "upstream");
        assert!(!frames.contains(&json!("[DONE]")));
        let text: String = frames
            .iter()
            .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hel", "what was streamed before the failure arrives");
        assert_eq!(
            s.mocks[provider].attempts("midstream-error"),
            1,
            "{model}: no retry after the first byte"
        );

        // Not streamed, nothing reached the client yet: the whole answer is retried.
        let (status, body) = s.chat(&ask(&model)).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "upstream");
        assert_eq!(s.mocks[provider].attempts("midstream-error"), 1 + 3);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_retried_after_the_providers_wait() {
    let s = setup().await;
    let runs = CHAT_PROVIDERS.map(|provider| {
        let s = &s;
        async move {
            let started = Instant::now();
            let (status, body) = s.chat(&ask(&format!("{provider}/rate-limited"))).await;
            (provider, status, body, started.elapsed())
        }
    });
    for (provider, status, body, elapsed) in futures::future::join_all(runs).await {
        assert_eq!(status, 200, "{provider}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], "Hello, world");
        assert_eq!(s.mocks[provider].attempts("rate-limited"), 2);
        assert!(
            elapsed >= Duration::from_secs(1),
            "{provider}: Retry-After: 1 was honoured ({elapsed:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_is_retried_then_the_fallback_answers_and_the_breaker_opens_and_closes() {
    let s = setup().await;
    let openai = &s.mocks["openai"];
    let (status, body) = s.chat(&ask("failover")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["billing"]["deployment"], "anthropic/plain");
    assert_eq!(openai.attempts("broken"), 3, "one try and two retries");

    let breaker = "isa_model_breaker_state{provider=\"openai\",model=\"broken\"}";
    assert!(
        s.metrics().await.contains(&format!("{breaker} 1")),
        "open after 3 failures"
    );
    assert!(s.metrics().await.contains(
        "isa_model_errors_total{provider=\"openai\",model=\"broken\",class=\"upstream\"} 3"
    ));

    let (_, body) = s.chat(&ask("failover")).await;
    assert_eq!(body["billing"]["deployment"], "anthropic/plain");
    assert_eq!(
        openai.attempts("broken"),
        3,
        "an open breaker sends nothing to its deployment"
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    openai.healed.store(true, Ordering::SeqCst);
    let (_, body) = s.chat(&ask("failover")).await;
    assert_eq!(
        body["billing"]["deployment"], "openai/broken",
        "after the cooldown a probe goes through"
    );
    assert_eq!(openai.attempts("broken"), 4);
    assert!(
        s.metrics().await.contains(&format!("{breaker} 0")),
        "closed after a good probe"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_hangs_times_out_and_the_fallback_answers() {
    let s = setup().await;
    let (status, body) = s.chat(&ask("hang-then-ok")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["billing"]["deployment"], "gemini/plain");
    assert_eq!(s.mocks["openai"].attempts("hang"), 3);

    // Silence inside a stream ends it with a timeout the client can read.
    for provider in CHAT_PROVIDERS {
        let frames = s.chat_stream(&ask(&format!("{provider}/stall"))).await;
        assert_eq!(
            frames.last().unwrap()["error"]["code"],
            "timeout",
            "{provider}: {frames:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_request_is_cancelled_when_the_client_goes_away() {
    let s = setup().await;
    for provider in CHAT_PROVIDERS {
        let mut body = ask(&format!("{provider}/endless"));
        body["stream"] = json!(true);
        let response = s.post("/api/v1/chat/completions", &body).await;
        let mut bytes = response.bytes_stream();
        let mut seen = 0;
        while seen < 200 {
            seen += bytes.next().await.unwrap().unwrap().len();
        }
        assert!(!s.mocks[provider].cancelled.load(Ordering::SeqCst));
        drop(bytes);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.mocks[provider].cancelled.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "{provider}: the provider's stream was not closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn floats(value: &Value) -> Vec<f32> {
    match value {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => other
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_come_in_order_in_both_encodings_from_every_provider() {
    let s = setup().await;
    let input = ["alpha", "a longer text", "z"];
    for model in [
        "embed",
        "gemini/text-embedding-004",
        "hf/sentence-transformers/all-MiniLM-L6-v2",
    ] {
        for format in ["float", "base64"] {
            let response = s
                .post(
                    "/api/v1/embeddings",
                    &json!({"model": model, "input": input, "encoding_format": format}),
                )
                .await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["object"], "list");
            let data = body["data"].as_array().unwrap();
            assert_eq!(data.len(), 3, "{model}");
            for (i, text) in input.iter().enumerate() {
                assert_eq!(data[i]["index"], i);
                assert_eq!(data[i]["embedding"].is_string(), format == "base64");
                assert_eq!(
                    floats(&data[i]["embedding"]),
                    mock::fake_vector(text),
                    "{model} {format} input {i}"
                );
            }
        }
    }
    let response = s
        .post(
            "/api/v1/embeddings",
            &json!({"model": "embed", "input": "one"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 7, "the provider's count");
    assert!(body["billing"]["cost_usd"].as_f64().unwrap() > 0.0);
    let response = s
        .post(
            "/api/v1/embeddings",
            &json!({"model": "embed", "input": [[1, 2]]}),
        )
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn images_come_from_openai_and_from_replicate_waiting_or_polling() {
    let s = setup().await;
    for (model, n, first) in [
        ("openai/gpt-image-1", 2, "https://images.example/0.png"),
        (
            "replicate/black-forest-labs/flux-schnell",
            2,
            "https://replicate.delivery/0.webp",
        ),
        (
            "replicate/black-forest-labs/slow-flux",
            1,
            "https://replicate.delivery/late.webp",
        ),
    ] {
        let response = s
            .post(
                "/api/v1/images/generations",
                &json!({"model": model, "prompt": "a red fox", "n": n, "size": "1024x1024"}),
            )
            .await;
        assert_eq!(response.status(), 200, "{model}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), n, "{model}: {body}");
        assert_eq!(body["data"][0]["url"], first);
    }
    assert_eq!(
        s.mocks["replicate"].last_body.lock().clone(),
        Value::Null,
        "the last request was a poll"
    );
    assert_eq!(s.mocks["replicate"].attempts("poll/p1"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_failures_are_retried_or_answered_as_the_envelope_says() {
    let s = setup().await;
    let runs = REPLICATE_FAILURES.map(|model| {
        let s = &s;
        async move {
            let started = Instant::now();
            let response = s
                .post(
                    "/api/v1/images/generations",
                    &json!({"model": model, "prompt": "a red fox"}),
                )
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (model, status, body, started.elapsed())
        }
    });
    let replicate = &s.mocks["replicate"];
    for (model, status, body, elapsed) in futures::future::join_all(runs).await {
        let name = &model["replicate/".len()..];
        let (want_status, want_code, attempts) = match name {
            "owner/rate-limited" => (200, None, 2),
            "owner/broken" => (502, Some("upstream"), 3),
            "owner/hang" => (504, Some("timeout"), 3),
            "owner/failing" => (502, Some("upstream"), 1),
            "owner/never" => (504, Some("timeout"), 3),
            other => panic!("{other}"),
        };
        assert_eq!(status, want_status, "{model}: {body}");
        assert_eq!(body["error"]["code"].as_str(), want_code, "{model}: {body}");
        assert_eq!(replicate.attempts(name), attempts, "{model}");
        match name {
            "owner/rate-limited" => {
                assert_eq!(body["data"][0]["url"], "https://replicate.delivery/0.webp");
                assert!(
                    elapsed >= Duration::from_secs(1),
                    "Retry-After: 1 was honoured ({elapsed:?})"
                );
            }
            // Not retried; what the prediction said is logged, not passed on, as for every
            // upstream failure.
            "owner/failing" => assert_eq!(body["error"]["message"], "replicate failed"),
            _ => {}
        }
    }
    assert!(
        replicate.attempts("cancel/p-never") >= 1,
        "a prediction past the deadline is cancelled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mistakes_and_overload_answer_in_the_envelope_with_a_request_id() {
    let s = setup_with(ServiceLimits {
        max_concurrent_requests: 1,
        ..ServiceLimits::default()
    })
    .await;
    let response = s
        .post(
            "/api/v1/chat/completions",
            &json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let response = s
        .post(
            "/api/v1/chat/completions",
            &json!({"model": "openai/plain", "messages": "hi"}),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert!(
        response.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages")
    );

    let response = s.post("/api/v1/embeddings", &ask("openai/plain")).await;
    assert_eq!(
        response.status(),
        400,
        "a chat model is not an embedding model"
    );

    let (status, _) = s.chat(&ask("needs-a-key")).await;
    assert_eq!(status, 404, "a provider without its key is left out");

    let unauthenticated = s
        .http
        .post(format!("{}/api/v1/chat/completions", s.base))
        .json(&ask("openai/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let given = s
        .http
        .get(format!("{}/api/v1/models", s.base))
        .bearer_auth(&s.key)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42");
    let models: Value = given.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"failover") && ids.contains(&"openai/plain") && !ids.contains(&"needs-a-key")
    );

    // One request at a time: while a hung one holds the only place, another is refused at once.
    let hung = {
        let s = Setup {
            base: s.base.clone(),
            key: s.key.clone(),
            mocks: s.mocks.clone(),
            http: s.http.clone(),
        };
        tokio::spawn(async move { s.chat(&ask("openai/hang")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (status, body) = s.chat(&ask("openai/plain")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("overloaded"))
    );
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "refused without waiting"
    );
    assert_eq!(hung.await.unwrap().0, 504, "the hung request timed out");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_provider_s_5xx_and_hang_are_retried_then_answered_in_the_envelope() {
    let s = setup().await;
    let runs = CHAT_PROVIDERS.map(|provider| {
        let s = &s;
        async move {
            let (broken, broken_body) = s.chat(&ask(&format!("{provider}/broken"))).await;
            let (hang, hang_body) = s.chat(&ask(&format!("{provider}/hang"))).await;
            (provider, broken, broken_body, hang, hang_body)
        }
    });
    for (provider, broken, broken_body, hang, hang_body) in futures::future::join_all(runs).await {
        assert_eq!(
            (broken, broken_body["error"]["code"].as_str()),
            (502, Some("upstream")),
            "{provider}: {broken_body}"
        );
        assert_eq!(
            broken_body["error"]["message"],
            format!("{provider} failed with status 503")
        );
        assert_eq!(
            s.mocks[provider].attempts("broken"),
            3,
            "{provider}: one try and two retries"
        );
        assert_eq!(
            (hang, hang_body["error"]["code"].as_str()),
            (504, Some("timeout")),
            "{provider}: {hang_body}"
        );
        assert_eq!(s.mocks[provider].attempts("hang"), 3, "{provider}");
    }
}
