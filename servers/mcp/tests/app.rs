//! The app `isa-mcp serve` builds, used the way clients use it: every service records what
//! happened through the one event sink.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use common::{app_with, request, token};
use isa_core::{AuthMethod, CallContext, EventQuery, Identity, UserId};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_uploads_api_key_use_and_charges_are_recorded_as_events() {
    let (app, _dir) = app_with(None, &["--initial-credits", "10"]).await;
    let users = app.users.clone().unwrap();
    let alice = token("alice");

    let (status, created) = send(
        &users,
        request(
            "POST",
            "/api/users/me/api-keys",
            Some(&alice),
            r#"{"name": "laptop"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let by_key = Request::builder()
        .uri("/api/users/me")
        .header("x-api-key", &key)
        .body(Body::empty())
        .unwrap();
    let (status, me) = send(&users, by_key).await;
    assert_eq!(status, StatusCode::OK, "{me}");

    let boundary = "edge-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let upload = Request::builder()
        .method("POST")
        .uri("/api/users/alice/files")
        .header(header::AUTHORIZATION, format!("Bearer {alice}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    let (status, file) = send(&users, upload).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");

    let charge = json!({"request_id": "r-1", "amount": 3, "operation": "test"}).to_string();
    let (status, charged) = send(
        &users,
        request(
            "POST",
            "/api/users/alice/credits/consume",
            Some(&alice),
            charge.clone(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{charged}");
    // A replay charges nothing and records nothing.
    let (status, _) = send(
        &users,
        request(
            "POST",
            "/api/users/alice/credits/consume",
            Some(&alice),
            charge,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let caller = CallContext::of(Identity::new(
        UserId::new("alice").unwrap(),
        AuthMethod::Trusted,
    ));
    let out = app
        .mcp
        .call_tool("current_time", None, &caller)
        .await
        .unwrap();
    assert!(!out.is_error, "{out:?}");

    app.event_sink.close().await.unwrap();
    let query = EventQuery {
        user: Some(UserId::new("alice").unwrap()),
        limit: 100,
        ..EventQuery::default()
    };
    let events = app.event_store.query(&query).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let distinct: BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(
        distinct,
        BTreeSet::from([
            "auth.api_key_used",
            "credits.charged",
            "file.uploaded",
            "tool.called"
        ]),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "credits.charged").count(),
        1,
        "{kinds:?}"
    );
    let called = events.iter().find(|e| e.kind == "tool.called").unwrap();
    assert_eq!(called.payload["tool"], "current_time");
    let uploaded = events.iter().find(|e| e.kind == "file.uploaded").unwrap();
    assert_eq!(uploaded.payload["file_id"], file["id"]);
}

/// Beyond loopback (or with `--require-auth always`) and no token issuer, `/mcp` and the
/// endpoints beside it take API keys: a server can be protected by keys alone.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_can_be_protected_by_api_keys_alone() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("isa.db").display());
    let settings = isa_mcp_server::settings::Settings::parse_from([
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        &database,
        "--require-auth",
        "always",
        "--chromium",
        "/nonexistent/chromium",
    ])
    .unwrap();
    let app = isa_mcp_server::app::App::build(settings).await.unwrap();
    let db = isa_storage::db::Database::connect(&database).await.unwrap();
    let (key, _) = isa_auth::ApiKeys::new(std::sync::Arc::new(db))
        .issue(&UserId::new("alice").unwrap(), "ci", vec![])
        .await
        .unwrap();
    let discover = |key: Option<&str>| {
        let mut request = Request::builder()
            .method("POST")
            .uri("/discover")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request
            .body(Body::from(r#"{"request": "what time is it"}"#))
            .unwrap()
    };
    let (status, body) = send(&app.mcp_router, discover(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = send(&app.mcp_router, discover(Some("isa_not-a-key"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = send(&app.mcp_router, discover(Some(&key))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["tools"].is_array(), "{body}");
}
