//! Faults injected into the real stores under the app `isa-mcp serve` builds: a PostgreSQL
//! server of the test's own, stopped and started again, and the S3 server (Garage) cut off
//! behind a relay and reconnected. Every service answers 503 with `Retry-After` at once while
//! a store is down, `/health` names the failing check, accepted events wait and are written
//! when the database returns, and everything recovers without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use common::{multipart, token, unique};
use isa_mcp_server::{app::App, settings::Settings};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinSet};
use tower::ServiceExt;

mod common;

/// How long a refusal may take while a store is down: the database pool waits 300 ms for a
/// connection, and a refused S3 connection is tried three times within half a second. With
/// the libraries' defaults a request hung for 30 s (PostgreSQL) or over 2 s (S3, ten tries).
const FAST: Duration = Duration::from_millis(1500);
/// How long recovery may take once the store is back.
const RECOVERY: Duration = Duration::from_secs(30);

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    took: Duration,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let started = Instant::now();
    let response = router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        took: started.elapsed(),
    }
}

fn request(method: &str, uri: &str, bearer: &str, body: Option<Value>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap()
}

fn upload_request(owner: &str, bearer: &str, name: &[u8], content: &[u8]) -> Request<Body> {
    let (content_type, body) = multipart(name, "text/plain", content);
    Request::builder()
        .method("POST")
        .uri(format!("/api/users/{owner}/files"))
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

/// Asserts the answer is a fast 503 that tells the client when to try again.
fn assert_refused_fast(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert!(
        answer.headers.contains_key(header::RETRY_AFTER),
        "{what}: no Retry-After"
    );
    assert!(answer.took < FAST, "{what} took {:?}", answer.took);
    eprintln!("{what}: 503 in {:?}", answer.took);
}

/// Asserts `/health` answers 503 and says the check `failing` is not ready.
async fn assert_unhealthy(router: &Router, failing: &str, service: &str) {
    let health = send(router, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(health.status, 503, "{service}: {}", health.body);
    assert_eq!(
        health.body["checks"][failing]["ready"], false,
        "{service}: {}",
        health.body
    );
    assert!(
        health.took < FAST,
        "{service} /health took {:?}",
        health.took
    );
}

/// Waits until `/health` answers 200 again.
async fn wait_until_healthy(router: &Router, service: &str) {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let health = send(router, Request::get("/health").body(Body::empty()).unwrap()).await;
        if health.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service} did not recover: {}",
            health.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn app(data_dir: &Path, database_url: &str, extra: &[&str]) -> App {
    let mut args = vec![
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--database-url",
        database_url,
        "--require-auth",
        "always",
        "--supabase-jwt-secret",
        common::SECRET,
        "--chromium",
        "/nonexistent/chromium",
        "--users-bind",
        "127.0.0.1:0",
        "--events-bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    App::build(Settings::parse_from(args).unwrap())
        .await
        .unwrap()
}

/// A PostgreSQL server of the test's own in a temporary directory, so that stopping it touches
/// no other test. Runs as the `postgres` account when the test runs as root (PostgreSQL
/// refuses to run as root).
struct OwnPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn start() -> Option<OwnPostgres> {
        let Some(bin) = postgres_bin_dir() else {
            assert!(
                std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
            );
            eprintln!("skipped: PostgreSQL's initdb and pg_ctl are not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = OwnPostgres { bin, dir, port };
        if is_root() {
            let chowned = Command::new("chown")
                .args(["postgres:postgres", pg.dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(chowned.success());
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.pg_ctl("start");
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", &data, "-l", &log, "-o", &options, "-w"];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        self.run("pg_ctl", &args);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        if is_root() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Where `pg_config` says the server programs are, or Debian's place for them.
fn postgres_bin_dir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|dirs| dirs.flatten().map(|d| d.path().join("bin")).max());
    [from_pg_config, debian]
        .into_iter()
        .flatten()
        .find(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
}

#[tokio::test(flavor = "multi_thread")]
async fn while_postgres_is_down_every_service_refuses_fast_and_recovers_by_itself() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &pg.url(), &[]).await;
    let (users, events, mcp) = (
        app.users.clone().unwrap(),
        app.events.clone().unwrap(),
        app.mcp_router.clone(),
    );
    let alice = unique("alice");
    let a = token(&alice);
    assert_eq!(
        send(&users, request("GET", "/api/users/me", &a, None))
            .await
            .status,
        200
    );

    pg.pg_ctl("stop");
    for (router, method, uri, body, what) in [
        (
            &users,
            "GET",
            "/api/users/me".to_owned(),
            None,
            "users: account",
        ),
        (
            &users,
            "GET",
            format!("/api/users/{alice}/files"),
            None,
            "users: file list",
        ),
        (
            &users,
            "POST",
            format!("/api/users/{alice}/credits/consume"),
            Some(json!({"request_id": "down-1", "amount": 1, "operation": "test"})),
            "users: charge",
        ),
        (
            &events,
            "GET",
            "/api/events".to_owned(),
            None,
            "events: query",
        ),
    ] {
        let answer = send(router, request(method, &uri, &a, body)).await;
        assert_refused_fast(&answer, what);
    }
    for (router, service) in [(&users, "users"), (&events, "events"), (&mcp, "mcp")] {
        assert_unhealthy(router, "database", service).await;
    }
    // Events are accepted into the bounded buffer while the database is away.
    for i in 0..5 {
        let posted = send(
            &events,
            request(
                "POST",
                "/api/events",
                &a,
                Some(json!({"kind": "fault.test", "payload": {"i": i}})),
            ),
        )
        .await;
        assert_eq!(posted.status, 202, "{}", posted.body);
    }

    pg.pg_ctl("start");
    for (router, service) in [(&users, "users"), (&events, "events"), (&mcp, "mcp")] {
        wait_until_healthy(router, service).await;
    }
    assert_eq!(
        send(&users, request("GET", "/api/users/me", &a, None))
            .await
            .status,
        200
    );
    // Every event accepted while it was down is written.
    let deadline = Instant::now() + RECOVERY;
    loop {
        let found = send(
            &events,
            request("GET", "/api/events?kind=fault.test", &a, None),
        )
        .await;
        assert_eq!(found.status, 200, "{}", found.body);
        let mut written: Vec<i64> = found.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"]["i"].as_i64().unwrap())
            .collect();
        written.sort();
        if written == [0, 1, 2, 3, 4] {
            break;
        }
        assert!(Instant::now() < deadline, "written so far: {written:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.event_sink.close().await.unwrap();
}

/// A TCP relay in front of a real server. Cutting it closes its listening socket and every
/// open connection, so clients find the server gone (connection refused); restoring it
/// listens on the same address again.
struct Relay {
    address: SocketAddr,
    target: SocketAddr,
    running: Mutex<Option<JoinSet<()>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Arc<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Arc::new(Relay {
            address: listener.local_addr().unwrap(),
            target,
            running: Mutex::new(None),
        });
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        *self.running.lock() = Some(tasks);
    }

    fn cut(&self) {
        // Dropping the task set aborts the accept loop, whose own set of connections goes
        // with it.
        self.running.lock().take();
    }

    async fn restore(&self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.address).unwrap();
        self.serve(socket.listen(64).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn while_s3_is_down_uploads_are_refused_fast_leave_nothing_and_recover_by_itself() {
    let Ok(endpoint) = std::env::var("ISA_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "ISA_TEST_S3_ENDPOINT is not set"
        );
        eprintln!("skipped: no S3 server (run ./deploy/dev/test.sh)");
        return;
    };
    let bucket = std::env::var("ISA_TEST_S3_BUCKET").unwrap();
    let garage: SocketAddr =
        tokio::net::lookup_host(endpoint.trim_start_matches("http://").trim_end_matches('/'))
            .await
            .unwrap()
            .next()
            .unwrap();
    let relay = Relay::start(garage).await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("isa.db").display());
    let through_relay = format!("http://{}", relay.address);
    let app = app(
        dir.path(),
        &database,
        &["--s3-bucket", &bucket, "--s3-endpoint", &through_relay],
    )
    .await;
    let users = app.users.clone().unwrap();
    let alice = unique("alice");
    let a = token(&alice);
    let first = send(&users, upload_request(&alice, &a, b"before.txt", b"before")).await;
    assert_eq!(first.status, 201, "{}", first.body);

    relay.cut();
    let refused = send(&users, upload_request(&alice, &a, b"during.txt", b"during")).await;
    assert_refused_fast(&refused, "users: upload while S3 is down");
    assert_unhealthy(&users, "files", "users").await;
    // What needs only the database still works, and the refused upload left no record.
    let listed = send(
        &users,
        request("GET", &format!("/api/users/{alice}/files"), &a, None),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let names: Vec<&str> = listed.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before.txt"]);

    relay.restore().await;
    wait_until_healthy(&users, "users").await;
    let after = send(&users, upload_request(&alice, &a, b"after.txt", b"after")).await;
    assert_eq!(after.status, 201, "{}", after.body);
    // The bucket holds the two stored files of this user and nothing else.
    let store = isa_storage::files::ObjectFileStore::s3(&isa_storage::files::S3Config {
        bucket,
        region: std::env::var("AWS_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        endpoint: Some(endpoint),
    })
    .unwrap();
    let objects = isa_core::FileStore::list(&store, &format!("users/{alice}/"), None, 100)
        .await
        .unwrap();
    assert_eq!(objects.objects.len(), 2, "{:?}", objects.objects);
    app.event_sink.close().await.unwrap();
}
