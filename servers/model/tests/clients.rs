//! The model service against independent clients and real models: the official OpenAI and
//! Anthropic Python SDKs, the local embedding model, and the OpenAPI description and its page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::serve;
use isa_core::{Embedder, TextKind};
use isa_models::OrtEmbedder;
use serde_json::{Value, json};

fn require(what: &str, available: bool) -> bool {
    if !available {
        assert!(
            std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{what} is required but not available (deploy/dev/setup-*.sh installs it)"
        );
        eprintln!("skipped: {what} not available");
    }
    available
}

fn sqlite(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("isa.db").display())
}

/// Runs the SDK script `tests/clients/{script}` with `{base}{path}` and a key of a user with
/// credits, when Python has `module` at `version`; it prints "all ok" when every check held.
/// The service it ran against, or `None` when the SDK is missing.
async fn sdk_script_passes(
    module: &str,
    version: &str,
    script: &str,
    path: &str,
) -> Option<common::Served> {
    let sdk = Command::new("python3")
        .args([
            "-c",
            &format!("import {module}; assert {module}.__version__ == '{version}'"),
        ])
        .status();
    if !require(
        &format!("the {module} Python SDK {version}"),
        sdk.is_ok_and(|s| s.success()),
    ) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&sqlite(&dir), 1_000_000).await;
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let base = format!("{}{path}", s.base);
    let key = s.key.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([&script, &base, &key])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all ok"));
    Some(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_sdk_works_against_the_service() {
    sdk_script_passes("openai", "3.51.0", "openai_client.py", "/api/v1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_anthropic_sdk_works_against_the_messages_door() {
    let Some(s) = sdk_script_passes("anthropic", "2.17.0", "anthropic_client.py", "/api").await
    else {
        return;
    };
    // The conversation with tool results, as the OpenAI-shaped provider received it.
    let sent = s.mock.last_body.lock().clone();
    let messages = sent["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "tool"],
        "{sent}"
    );
    assert_eq!(messages[0]["content"], "Be brief.", "{sent}");
    let calls = messages[2]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{sent}");
    assert_eq!(messages[3]["tool_call_id"], calls[0]["id"], "{sent}");
    assert_eq!(messages[4]["tool_call_id"], calls[1]["id"], "{sent}");
    assert_eq!(messages[3]["content"], "sunny", "{sent}");
    assert_eq!(messages[4]["content"], "09:00", "{sent}");
    assert_eq!(
        serde_json::from_str::<Value>(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris", "days": 3}),
        "{sent}"
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn local_embeddings_are_the_embedders_own_vectors() {
    let Ok(embedder) = OrtEmbedder::from_env() else {
        require("the embedding model", false);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&sqlite(&dir), 0).await;
    let texts = vec![
        "Search the web for recent news".to_owned(),
        "Résumé d'un fichier PDF".to_owned(),
        "x".to_owned(),
    ];
    let expected = embedder.embed(&texts, TextKind::Document).await.unwrap();
    for format in ["float", "base64"] {
        let response = s
            .post(
                "/api/v1/embeddings",
                None,
                &json!({"model": "all-MiniLM-L6-v2", "input": texts, "encoding_format": format}),
            )
            .await;
        assert_eq!(
            response.status(),
            200,
            "a free local model needs no credits"
        );
        let body: Value = response.json().await.unwrap();
        for (i, want) in expected.iter().enumerate() {
            let got: Vec<f32> = match &body["data"][i]["embedding"] {
                Value::String(b64) => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect()
                }
                v => v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            };
            assert_eq!(got.len(), 384);
            assert!(
                cosine(&got, want) >= 0.9999,
                "{format} text {i}: cosine {}",
                cosine(&got, want)
            );
        }
    }
    let wrong = s
        .post(
            "/api/v1/embeddings",
            None,
            &json!({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 100}),
        )
        .await;
    assert_eq!(
        wrong.status(),
        400,
        "the local model cannot shorten its vectors"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docs_page_is_built_in_and_the_description_names_only_served_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&sqlite(&dir), 1000).await;
    let page = s
        .http
        .get(format!("{}/docs/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "the page loads nothing from elsewhere: {html}"
    );
    let script = s
        .http
        .get(format!("{}/docs/swagger-initializer.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().contains("/openapi.json"));
    let bundle = s
        .http
        .get(format!("{}/docs/swagger-ui-bundle.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bundle.status(),
        200,
        "Swagger UI itself is served from the binary"
    );

    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 5);
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let request = match method.as_str() {
                "get" => s.http.get(format!("{}{path}", s.base)),
                "post" => s.http.post(format!("{}{path}", s.base)).json(&json!({})),
                other => panic!("{other}"),
            };
            let status = request
                .bearer_auth(&s.key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert!(status == 200 || status == 400, "{method} {path}: {status}");
        }
    }
}
