//! What the tests of `isa-mcp`'s app share: tokens, the app built from settings, requests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::{
    body::Body,
    http::{Request, header},
};
use isa_mcp_server::app::{App, Settings};
use serde_json::json;

pub const SECRET: &str = "a-supabase-jwt-secret-of-at-least-32-bytes";

pub fn token(user: &str) -> String {
    let claims = json!({
        "sub": user,
        "aud": "authenticated",
        "exp": chrono::Utc::now().timestamp() + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The app `isa-mcp serve` would run with these settings: credentials required everywhere,
/// one request at a time per side service, SQLite and files in a temporary data directory.
pub async fn app() -> (App, tempfile::TempDir) {
    app_with(&[]).await
}

/// [`app`] with more arguments (flags not set above).
pub async fn app_with(extra: &[&str]) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("isa.db").display());
    let mut args = vec![
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        &database,
        "--require-auth",
        "always",
        "--supabase-jwt-secret",
        SECRET,
        "--chromium",
        "/nonexistent/chromium",
        "--api-concurrency",
        "1",
        "--users-bind",
        "127.0.0.1:0",
        "--events-bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let settings = Settings::parse_from(args).unwrap();
    (App::build(settings).await.unwrap(), dir)
}

pub fn request(
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(body.into()).unwrap()
}
