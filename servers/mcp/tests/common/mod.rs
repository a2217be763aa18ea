//! What the tests of `isa-mcp`'s app share: tokens, the app built from settings, requests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::{
    body::Body,
    http::{Request, header},
};
use std::sync::Arc;

use isa_auth::{ApiKeys, Authenticator, IssuerConfig, JwksOptions, JwtVerifier};
use isa_core::{FileStore, UserId, http::serve as serve_until};
use isa_files::{FilesConfig, UserFiles};
use isa_mcp_server::{
    api::{events::EventsService, users::UsersService},
    app::App,
    settings::Settings,
};
use isa_storage::{
    db::Database,
    events::{BatchingConfig, BatchingSink},
    files::{LocalSigner, ObjectFileStore},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// A Supabase token for `user`, with no scope.
pub fn token(user: &str) -> String {
    token_with(user, None)
}

/// The app `isa-mcp serve` would run with these settings: credentials required everywhere,
/// one request at a time per side service, SQLite and files in a temporary data directory.
pub async fn app() -> (App, tempfile::TempDir) {
    app_with(None, &[]).await
}

/// [`app`] on `database` when given (rather than a SQLite file of its own), with more
/// arguments (flags not set above).
pub async fn app_with(database: Option<&str>, extra: &[&str]) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let database = database.map_or_else(
        || format!("sqlite://{}", dir.path().join("isa.db").display()),
        str::to_owned,
    );
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

// The user and event services alone, on a free port, over both databases.

pub const SECRET: &str = "a-supabase-jwt-secret-of-at-least-32-bytes";
pub const MAX_FILE: u64 = 1 << 20;

/// A Supabase token (HS256, audience `authenticated`) for `user`, with `scope` if given.
pub fn token_with(user: &str, scope: Option<&str>) -> String {
    let mut claims = json!({
        "sub": user,
        "aud": "authenticated",
        "email": format!("{user}@example.com"),
        "exp": chrono::Utc::now().timestamp() + 600,
    });
    if let Some(scope) = scope {
        claims["scope"] = json!(scope);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Both databases: SQLite in a temporary directory, and the test PostgreSQL when the test
/// command started it.
pub async fn databases() -> Vec<(&'static str, Database, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("isa.db").display());
    let mut dbs = vec![("sqlite", Database::connect(&sqlite).await.unwrap(), dir)];
    match std::env::var("ISA_TEST_DATABASE_URL") {
        Ok(url) => dbs.push((
            "postgres",
            Database::connect(&url).await.unwrap(),
            tempfile::tempdir().unwrap(),
        )),
        Err(_) => {
            assert!(
                std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "ISA_TEST_DATABASE_URL is not set"
            );
            eprintln!(
                "skipped PostgreSQL: ISA_TEST_DATABASE_URL is not set (run ./deploy/dev/test.sh)"
            );
        }
    }
    dbs
}

pub fn authenticator(db: &Database) -> Authenticator {
    let verifier =
        JwtVerifier::new(vec![IssuerConfig::supabase(SECRET)], JwksOptions::default()).unwrap();
    Authenticator::new(
        "http://127.0.0.1/mcp",
        Some(verifier),
        Some(ApiKeys::new(Arc::new(db.clone()))),
    )
}

pub struct Users {
    pub base: String,
    pub store: Arc<dyn FileStore>,
    pub files: UserFiles,
}

/// The user service on a free port, files on local disk under `dir`, at most [`MAX_FILE`].
pub async fn user_service(db: &Database, dir: &std::path::Path) -> Users {
    user_service_serving(db, dir, 64).await
}

pub async fn user_service_serving(
    db: &Database,
    dir: &std::path::Path,
    concurrency: usize,
) -> Users {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let signer = LocalSigner::new(
        b"0123456789abcdef0123456789abcdef-key".to_vec(),
        format!("{base}/files"),
    )
    .unwrap();
    let store: Arc<dyn FileStore> =
        Arc::new(ObjectFileStore::local(dir.join("files"), signer.clone()).unwrap());
    let files = UserFiles::new(
        store.clone(),
        Arc::new(db.clone()),
        FilesConfig {
            max_size: MAX_FILE,
            ..FilesConfig::default()
        },
    )
    .unwrap();
    let service = UsersService {
        users: Arc::new(db.clone()),
        ledger: Arc::new(db.clone()),
        checks: vec![Arc::new(db.clone())],
        files: files.clone(),
        store: store.clone(),
        signer: Some(signer),
        keys: ApiKeys::new(Arc::new(db.clone())),
        initial_credits: 0,
        events: Arc::new(isa_storage::events::LogSink),
        concurrency,
    };
    let app = service.router(authenticator(db));
    tokio::spawn(serve_until(listener, app, std::future::pending()));
    Users { base, store, files }
}

/// A user with a unique id (the PostgreSQL test database outlives test runs).
pub fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::now_v7().simple())
}

/// A multipart body written out by hand, so a test controls every byte of the file name.
pub fn multipart(file_name: &[u8], content_type: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "isa-test-boundary-7d1f";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"");
    body.extend_from_slice(file_name);
    body.extend_from_slice(format!("\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub async fn upload(
    http: &Client,
    base: &str,
    bearer: &str,
    owner: &str,
    file_name: &[u8],
    content_type: &str,
    content: &[u8],
) -> (StatusCode, Value) {
    let (header, body) = multipart(file_name, content_type, content);
    let response = http
        .post(format!("{base}/api/users/{owner}/files"))
        .bearer_auth(bearer)
        .header("content-type", header)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn objects_of(store: &Arc<dyn FileStore>, user: &str) -> usize {
    let prefix = isa_core::FileKey::user_prefix(&UserId::new(user).unwrap());
    store.list(&prefix, None, 1000).await.unwrap().objects.len()
}

/// How many objects wait under `user`'s upload keys.
pub async fn uploads_of(store: &Arc<dyn FileStore>, user: &str) -> usize {
    let prefix = format!("{}{user}/", isa_core::FileKey::UPLOADS_PREFIX);
    store.list(&prefix, None, 1000).await.unwrap().objects.len()
}

/// GET with a bearer credential; the JSON answer.
pub async fn get_json(http: &Client, url: impl reqwest::IntoUrl, bearer: &str) -> Value {
    send_as(http, reqwest::Method::GET, url, bearer)
        .await
        .json()
        .await
        .unwrap()
}

/// Sends `method url` with a bearer credential.
pub async fn send_as(
    http: &Client,
    method: reqwest::Method,
    url: impl reqwest::IntoUrl,
    bearer: &str,
) -> reqwest::Response {
    http.request(method, url)
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

/// The status of `method url` sent with a bearer credential.
pub async fn status_as(
    http: &Client,
    method: reqwest::Method,
    url: impl reqwest::IntoUrl,
    bearer: &str,
) -> u16 {
    send_as(http, method, url, bearer).await.status().as_u16()
}

/// POST a JSON body with a bearer credential; the JSON answer.
pub async fn post_json(
    http: &Client,
    url: impl reqwest::IntoUrl,
    bearer: &str,
    body: &Value,
) -> Value {
    http.post(url)
        .bearer_auth(bearer)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Begins a direct upload of `name` for `user` and PUTs `bytes` to its presigned URL: the
/// service's answer to the beginning, and the status of the PUT.
pub async fn direct_upload(
    http: &Client,
    base: &str,
    bearer: &str,
    user: &str,
    name: &str,
    content_type: &str,
    bytes: &'static str,
) -> (Value, StatusCode) {
    let begun = post_json(
        http,
        format!("{base}/api/users/{user}/files/uploads"),
        bearer,
        &json!({"name": name, "content_type": content_type, "size": bytes.len()}),
    )
    .await;
    let put = http
        .put(begun["url"].as_str().unwrap())
        .body(bytes)
        .send()
        .await
        .unwrap();
    (begun, put.status())
}

pub struct Events {
    pub base: String,
    pub sink: Arc<BatchingSink>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub served: tokio::task::JoinHandle<isa_core::Result<()>>,
}

pub async fn event_service(db: &Database, config: BatchingConfig) -> Events {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sink = Arc::new(BatchingSink::spawn(Arc::new(db.clone()), config));
    let service = EventsService {
        store: Arc::new(db.clone()),
        sink: sink.clone(),
        checks: vec![Arc::new(db.clone())],
        concurrency: 64,
        handoff: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = service.router(authenticator(db));
    let served = tokio::spawn(serve_until(listener, app, async {
        let _ = stopped.await;
    }));
    Events {
        base,
        sink,
        stop,
        served,
    }
}
