//! The gateway against real MCP servers (built on isa-core) started by the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use isa_core::{
    CallContext, ItemKind, ToolOutput, ToolSpec,
    mcp::{McpConfig, McpServer},
    tool_fn,
};
use isa_tools::{
    gateway::{Gateway, UpstreamConfig},
    select::LocalSelector,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn add_tool() -> Arc<dyn isa_core::Tool> {
    let spec = ToolSpec::new("add", "Add two numbers").with_input_schema(json!({
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]
    }));
    tool_fn(spec, |args, _| async move {
        Ok(ToolOutput::json(
            json!({"sum": args["a"].as_f64().unwrap() + args["b"].as_f64().unwrap()}),
        ))
    })
}

/// An upstream MCP server on a free port; cancelling the token stops it.
/// An upstream MCP server on a loopback port: the server, its URL, its stop signal, and the
/// task serving it, which ends once it has stopped.
async fn upstream() -> (
    McpServer,
    String,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let server = McpServer::builder(McpConfig::default()).build();
    server.add_tool(add_tool()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let (router, stopped, shutdown) = (server.router(), stop.clone(), server.shutdown_token());
    let served = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                stopped.cancelled().await;
                shutdown.cancel();
            })
            .await
    });
    (server, url, stop, served)
}

async fn gateway_to(upstreams: Vec<UpstreamConfig>) -> (McpServer, Gateway) {
    let gateway = Gateway::new(upstreams);
    let mut builder =
        McpServer::builder(McpConfig::default()).selector(Arc::new(LocalSelector::lexical()));
    for check in gateway.health_checks() {
        builder = builder.health_check(check);
    }
    (builder.build(), gateway)
}

async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tools_join_are_searchable_callable_and_follow_list_changes() {
    let (up, url, _stop, _served) = upstream().await;
    let (server, gateway) = gateway_to(vec![format!("calc={url}").parse().unwrap()]).await;
    gateway.start(&server, Duration::from_secs(10)).await;

    let ctx = CallContext::default();
    let found = server
        .discover("add two numbers", 3, &[ItemKind::Tool], &ctx)
        .await
        .unwrap();
    assert_eq!(found[0].id, "calc/add");
    let mut args = isa_core::JsonObject::new();
    args.insert("a".into(), json!(2));
    args.insert("b".into(), json!(3));
    let out = server
        .call_tool("calc/add", Some(args), &ctx)
        .await
        .unwrap();
    assert_eq!(out.structured_content, Some(json!({"sum": 5.0})), "{out:?}");

    // The upstream adds a tool and announces it; the gateway picks it up.
    let spec = ToolSpec::new("shout", "Upper-case a text");
    up.add_tool(tool_fn(spec, |_, _| async { Ok(ToolOutput::text("HI")) }))
        .await
        .unwrap();
    eventually("calc/shout is registered", async || {
        server
            .tool_specs(&ctx)
            .iter()
            .any(|t| t.name == "calc/shout")
    })
    .await;
    // …and removes one.
    up.remove_tool("add").await.unwrap();
    eventually("calc/add is gone", async || {
        !server.tool_specs(&ctx).iter().any(|t| t.name == "calc/add")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_is_down_is_a_tool_error_and_a_health_detail() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (up, url, stop, served) = upstream().await;
    let (server, gateway) = gateway_to(vec![
        format!("down=http://{unused}/mcp").parse().unwrap(),
        format!("calc={url}").parse().unwrap(),
    ])
    .await;
    gateway.start(&server, Duration::from_secs(10)).await;
    let ctx = CallContext::default();
    assert!(server.tool_specs(&ctx).iter().any(|t| t.name == "calc/add"));

    // The upstream goes away after its tools were imported: calling one is an error result.
    stop.cancel();
    drop(up);
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the upstream stopped")
        .unwrap()
        .unwrap();
    let mut args = isa_core::JsonObject::new();
    args.insert("a".into(), json!(1));
    args.insert("b".into(), json!(1));
    let out = server
        .call_tool("calc/add", Some(args), &ctx)
        .await
        .unwrap();
    assert!(out.is_error, "{out:?}");

    // /health names both upstreams as not ready, yet the server itself stays ready.
    let app = server.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(response.status(), 200);
    let health: serde_json::Value = response.json().await.unwrap();
    assert_eq!(health["checks"]["down"]["ready"], false, "{health}");
    assert_eq!(health["checks"]["down"]["required"], false, "{health}");
    // The class of the failure is named; where the upstream lives is only logged.
    assert!(health["checks"]["down"]["error"].is_string(), "{health}");
    assert!(
        !health.to_string().contains(&unused.to_string()),
        "{health}"
    );
}

#[test]
fn upstream_configuration_is_checked() {
    assert!("calc=http://h:1/mcp".parse::<UpstreamConfig>().is_ok());
    for bad in [
        "calc",
        "=http://h/mcp",
        "ca lc=http://h/mcp",
        "calc=ftp://h/",
    ] {
        assert!(bad.parse::<UpstreamConfig>().is_err(), "{bad}");
    }
}

/// An upstream that accepts connections and never says a word, and a tool of another upstream
/// that never returns: the server starts after its first wait, the stuck call ends at the
/// tool's deadline as a tool error, and other calls are served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_never_answers_holds_up_nothing_else() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/mcp", silent.local_addr().unwrap());
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let (up, url, _stop, _served) = upstream().await;
    let spec = ToolSpec::new("stuck", "Never returns")
        .with_input_schema(json!({"type": "object", "properties": {}}));
    up.add_tool(tool_fn(spec, |_, _| async move {
        std::future::pending::<()>().await;
        Ok(ToolOutput::text("unreachable"))
    }))
    .await
    .unwrap();

    let gateway = Gateway::new(vec![
        format!("silent={silent_url}").parse().unwrap(),
        format!("calc={url}").parse().unwrap(),
    ]);
    let deadline = Duration::from_secs(2);
    let server = McpServer::builder(McpConfig {
        default_limits: isa_core::mcp::ToolLimits {
            timeout: deadline,
            ..Default::default()
        },
        ..McpConfig::default()
    })
    .selector(Arc::new(LocalSelector::lexical()))
    .build();
    let first_wait = Duration::from_secs(3);
    let started = std::time::Instant::now();
    gateway.start(&server, first_wait).await;
    assert!(
        started.elapsed() < first_wait + Duration::from_secs(2),
        "start waited {:?} for the silent upstream",
        started.elapsed()
    );
    let ctx = CallContext::default();
    let names: Vec<String> = server
        .tool_specs(&ctx)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"calc/stuck".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("silent/")), "{names:?}");

    let mut add_args = isa_core::JsonObject::new();
    add_args.insert("a".into(), json!(2));
    add_args.insert("b".into(), json!(3));
    let stuck = server.call_tool("calc/stuck", None, &ctx);
    let others = async {
        // Served while the stuck call waits, each answered long before its deadline.
        for _ in 0..3 {
            let out = tokio::time::timeout(
                deadline,
                server.call_tool("calc/add", Some(add_args.clone()), &ctx),
            )
            .await
            .expect("calc/add waited behind the stuck call")
            .unwrap();
            assert!(!out.is_error, "{out:?}");
        }
    };
    let (stuck, ()) = tokio::join!(stuck, others);
    let stuck = stuck.unwrap();
    assert!(stuck.is_error, "{stuck:?}");
    assert!(
        format!("{:?}", stuck.content).contains("did not finish within 2s"),
        "{:?}",
        stuck.content
    );
}
