//! Tool calls running as tasks across instances: two apps as `isa-mcp serve` builds them share
//! one PostgreSQL database, as two hosts behind the load balancer do. A task started on one is
//! read, and cancelled, through the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{Request, header},
};
use common::{app_with, token};
use isa_core::{TaskSupport, ToolOutput, ToolSpec, tool_fn};
use isa_mcp_server::app::App;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

/// An app on the shared database, with a tool that works for `seconds` as a task and counts
/// the calls that finished.
async fn instance(database: &str, finished: Arc<AtomicUsize>) -> (App, tempfile::TempDir) {
    let (app, dir) = app_with(Some(database), &[]).await;
    let report = ToolSpec::new("long_report", "Writes a report over `seconds` seconds")
        .with_input_schema(json!({
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        }))
        .with_task_support(TaskSupport::Optional);
    app.mcp
        .add_tool(tool_fn(report, move |args, ctx| {
            let finished = finished.clone();
            async move {
                ctx.continue_as_task().await?;
                let seconds = args["seconds"].as_f64().unwrap_or(0.0);
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(ToolOutput::text(format!("report after {seconds} s")))
            }
        }))
        .await
        .unwrap();
    (app, dir)
}

/// Sends one 2026-07-28 request as `user` (accepting tasks) and returns its JSON-RPC answer.
async fn rpc(router: &Router, user: &str, method: &str, name: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {
            "extensions": {"io.modelcontextprotocol/tasks": {}},
        },
    });
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let request = Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {}", token(user)))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .header("mcp-name", name)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .chain([text.as_ref()])
        .filter_map(|json| serde_json::from_str::<Value>(json.trim()).ok())
        .find(|answer| answer.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC answer in {text}"))
}

async fn start(router: &Router, seconds: f64) -> String {
    let created = rpc(
        router,
        "alice",
        "tools/call",
        "long_report",
        json!({"name": "long_report", "arguments": {"seconds": seconds}}),
    )
    .await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    assert_eq!(created["result"]["status"], "working", "{created}");
    created["result"]["taskId"].as_str().unwrap().to_owned()
}

async fn status(router: &Router, user: &str, id: &str) -> Value {
    rpc(router, user, "tasks/get", id, json!({"taskId": id})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_started_on_one_instance_is_read_and_cancelled_through_another() {
    let Ok(database) = std::env::var("ISA_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "ISA_TEST_DATABASE_URL is not set"
        );
        eprintln!("skipped: ISA_TEST_DATABASE_URL is not set");
        return;
    };
    let (finished_a, finished_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, _dir_a) = instance(&database, finished_a.clone()).await;
    let (b, _dir_b) = instance(&database, finished_b.clone()).await;

    let id = start(&a.mcp_router, 1.0).await;
    let early = status(&b.mcp_router, "alice", &id).await;
    assert_eq!(early["result"]["status"], "working", "{early}");
    assert!(early["result"].get("result").is_none(), "{early}");
    let foreign = status(&b.mcp_router, "mallory", &id).await;
    assert_eq!(
        foreign["error"]["code"], -32602,
        "another user's task is unknown: {foreign}"
    );

    // Answers to a task that asked nothing change nothing, and do not run it a second time.
    let stray = rpc(
        &b.mcp_router,
        "alice",
        "tasks/update",
        &id,
        json!({"taskId": id, "inputResponses": {"confirm": {"action": "accept"}}}),
    )
    .await;
    assert!(stray.get("error").is_none(), "{stray}");

    let mut done = Value::Null;
    for _ in 0..100 {
        done = status(&b.mcp_router, "alice", &id).await;
        if done["result"]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["result"]["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["result"]["content"][0]["text"], "report after 1 s",
        "{done}"
    );
    assert_eq!(finished_a.load(Ordering::SeqCst), 1, "it ran on instance A");
    assert_eq!(
        finished_b.load(Ordering::SeqCst),
        0,
        "the stray answers did not run it again on instance B"
    );

    // Cancelled through B, the task running on A stops and stays cancelled.
    let id = start(&a.mcp_router, 3.0).await;
    let ack = rpc(
        &b.mcp_router,
        "alice",
        "tasks/cancel",
        &id,
        json!({"taskId": id}),
    )
    .await;
    assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cancelled = status(&a.mcp_router, "alice", &id).await;
    assert_eq!(cancelled["result"]["status"], "cancelled", "{cancelled}");
    assert_eq!(
        finished_a.load(Ordering::SeqCst),
        1,
        "the cancelled call was stopped before it finished"
    );
}
