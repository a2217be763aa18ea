//! Any body POSTed to `/mcp`, as a client of either protocol revision sends it (headers
//! `Mcp-Method` and `Mcp-Name` taken from the body when it names them): answered, never a
//! panic and never a 5xx.
#![no_main]

use std::sync::OnceLock;

use axum::{Router, body::Body, http::Request};
use isa_core::{
    ToolOutput, ToolSpec,
    mcp::{McpConfig, McpServer},
    tool_fn,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::ServiceExt;

struct Target {
    runtime: Runtime,
    router: Router,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let router = runtime.block_on(async {
            let server = McpServer::builder(McpConfig::default()).build();
            let spec = ToolSpec::new("echo", "Says the text back").with_input_schema(json!({
                "type": "object",
                "properties": {"text": {"type": "string", "maxLength": 100}},
                "required": ["text"],
            }));
            let echo = tool_fn(spec, |args, _| async move {
                Ok(ToolOutput::text(args["text"].as_str().unwrap_or_default()))
            });
            server.add_tool(echo).await.unwrap();
            server.router()
        });
        Target { runtime, router }
    })
}

fuzz_target!(|body: &[u8]| {
    let target = target();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |path: &[&str]| {
        let mut value = parsed.as_ref()?;
        for step in path {
            value = value.get(step)?;
        }
        value.as_str().map(str::to_owned)
    };
    let (method, name) = (field(&["method"]), field(&["params", "name"]));
    target.runtime.block_on(async {
        for revision in ["2026-07-28", "2025-11-25"] {
            let mut request = Request::post("/mcp")
                .header("host", "localhost")
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", revision);
            if let Some(method) = &method {
                request = request.header("mcp-method", method.as_str());
            }
            if let Some(name) = &name {
                request = request.header("mcp-name", name.as_str());
            }
            let Ok(request) = request.body(Body::from(body.to_vec())) else {
                continue; // a method or name that cannot be a header value
            };
            let response = target.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            assert!(!status.is_server_error(), "{revision}: {status}");
            let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        }
    });
});
