//! The HTTP edge of every listener `isa-mcp serve` runs, on the app it builds from its own
//! settings: one error envelope for 400, 401, 403, 404, 413 and overload, no server detail in
//! any body, and one `/health` shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::{
    Router,
    body::{Body, Bytes},
    http::{Request, StatusCode, header},
};
use common::{app, request, token};
use serde_json::Value;
use tower::ServiceExt;

mod common;

/// A JSON body that sends one byte, says so, and then never ends: the request holds its
/// place in the service until the test is over.
fn endless_body() -> (Body, tokio::sync::oneshot::Receiver<()>) {
    let (started, on_start) = tokio::sync::oneshot::channel();
    let chunks = futures::stream::unfold(Some(started), |started| async move {
        match started {
            Some(started) => {
                let _ = started.send(());
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"{")), None))
            }
            None => std::future::pending().await,
        }
    });
    (Body::from_stream(chunks), on_start)
}

/// Sends `request` and checks the answer is `status` in the one envelope, with `code`, and
/// that no path of the data directory, database or store appears in it.
async fn expect_envelope(
    app: &Router,
    request: Request<Body>,
    status: StatusCode,
    code: &str,
    data_dir: &str,
) -> axum::http::HeaderMap {
    let what = format!("{} {}", request.method(), request.uri());
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(parts.status, status, "{what}: {text}");
    let body: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no error object: {text}"));
    assert_eq!(error.len(), 2, "{what}: {text}");
    assert_eq!(error["code"], code, "{what}: {text}");
    assert!(error["message"].is_string(), "{what}: {text}");
    for secret in [data_dir, "sqlite", "isa.db", "SELECT", "bucket"] {
        assert!(!text.contains(secret), "{what} leaks {secret:?}: {text}");
    }
    parts.headers
}

/// The first request takes the service's only place; the second is refused at once with 503,
/// `Retry-After` and the envelope.
async fn expect_overload(app: &Router, uri: &str, data_dir: &str) {
    let alice = token("alice");
    let (body, started) = endless_body();
    let held = tokio::spawn(
        app.clone()
            .oneshot(request("POST", uri, Some(&alice), body)),
    );
    started.await.unwrap();
    let headers = expect_envelope(
        app,
        request("POST", uri, Some(&alice), "{}"),
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        data_dir,
    )
    .await;
    assert!(headers.contains_key(header::RETRY_AFTER), "{headers:?}");
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_user_service_answers_every_error_in_one_envelope() {
    let (app, dir) = app().await;
    let users = app.users.unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let alice = token("alice");
    let cases = [
        (
            request("POST", "/api/users/me/api-keys", Some(&alice), "{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            request("GET", "/api/users/me", None, ""),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            request("GET", "/api/users/bob/files", Some(&alice), ""),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            request("GET", "/api/users/nothing/here", Some(&alice), ""),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            request(
                "POST",
                "/api/users/me/api-keys",
                Some(&alice),
                format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ];
    for (request, status, code) in cases {
        expect_envelope(&users, request, status, code, data_dir).await;
    }
    expect_overload(&users, "/api/users/me/api-keys", data_dir).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_service_answers_every_error_in_one_envelope() {
    let (app, dir) = app().await;
    let events = app.events.unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let alice = token("alice");
    let cases = [
        (
            request("POST", "/api/events", Some(&alice), r#"{"kind": ""}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            request("GET", "/api/events", None, ""),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            request("GET", "/api/events?user_id=bob", Some(&alice), ""),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            request("GET", "/api/nothing", Some(&alice), ""),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            request(
                "POST",
                "/api/events",
                Some(&alice),
                format!(
                    "{{\"kind\": \"x\", \"payload\": \"{}\"}}",
                    "x".repeat(9 << 20)
                ),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ];
    for (request, status, code) in cases {
        expect_envelope(&events, request, status, code, data_dir).await;
    }
    expect_overload(&events, "/api/events", data_dir).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_listener_answers_its_errors_in_the_same_envelope() {
    let (app, dir) = app().await;
    let data_dir = dir.path().to_str().unwrap();
    let alice = token("alice");
    let cases = [
        (
            request("POST", "/discover", Some(&alice), r#"{"request": 7}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            request("POST", "/discover", None, r#"{"request": "x"}"#),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            rebound("POST", "/discover", &alice),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            rebound("POST", "/mcp", &alice),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            request("GET", "/nothing/here", Some(&alice), ""),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            request(
                "POST",
                "/discover",
                Some(&alice),
                format!("{{\"request\": \"{}\"}}", "x".repeat(5 << 20)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ];
    for (request, status, code) in cases {
        expect_envelope(&app.mcp_router, request, status, code, data_dir).await;
    }
    expect_overload(&app.mcp_router, "/discover", data_dir).await;
}

/// A request a browser sends after DNS rebinding: a valid credential, a host name the server
/// does not serve.
fn rebound(method: &str, uri: &str, bearer: &str) -> Request<Body> {
    let mut request = request(method, uri, Some(bearer), r#"{"request": "x"}"#);
    request
        .headers_mut()
        .insert(header::HOST, "rebound.example:8081".parse().unwrap());
    request
}

/// `{"status", "checks": {name: {"ready", "required", "latency_ms"}}}` on every listener.
#[tokio::test(flavor = "multi_thread")]
async fn every_listener_reports_health_in_one_shape() {
    let (app, _dir) = app().await;
    let events = app.events.unwrap();
    let listeners = [
        ("mcp", app.mcp_router, "/health"),
        ("mcp", app.mcp.router(), "/mcp/health"),
        ("users", app.users.unwrap(), "/health"),
        ("events", events, "/health"),
    ];
    for (name, router, path) in listeners {
        let response = router
            .oneshot(request("GET", path, None, ""))
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let ready = body["status"] == "ok";
        assert!(ready || body["status"] == "unavailable", "{name}: {body}");
        assert_eq!(
            status,
            if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            "{name}: {body}"
        );
        let checks = body["checks"].as_object().unwrap();
        assert!(checks.contains_key("database"), "{name}: {body}");
        for (check, report) in checks {
            assert!(report["ready"].is_boolean(), "{name}/{check}: {body}");
            assert!(report["required"].is_boolean(), "{name}/{check}: {body}");
            assert!(report["latency_ms"].is_number(), "{name}/{check}: {body}");
        }
        assert_eq!(body.as_object().unwrap().len(), 2, "{name}: {body}");
    }
}
