//! The MCP service's call path and HTTP endpoints, over real sockets where the transport
//! matters (host checks, graceful shutdown) and in process elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use isa_core::{
    AuthMethod, CallContext, Error, Identity, JsonObject, ToolOutput, ToolSpec, UserId,
    mcp::{McpConfig, McpServer, ToolLimits},
    tool_fn,
};
use serde_json::{Value, json};

fn args(value: Value) -> Option<JsonObject> {
    Some(serde_json::from_value(value).unwrap())
}

fn typed_tool() -> Arc<dyn isa_core::Tool> {
    let spec = ToolSpec::new("area", "Area of a rectangle")
        .with_input_schema(json!({
            "type": "object",
            "properties": {"w": {"type": "number", "minimum": 0}, "h": {"type": "number", "minimum": 0}},
            "required": ["w", "h"], "additionalProperties": false
        }))
        .with_output_schema(json!({"type": "object", "properties": {"area": {"type": "number"}}, "required": ["area"]}));
    tool_fn(spec, |a, _| async move {
        let w = a["w"].as_f64().unwrap();
        if w == 13.0 {
            // Contradicts the output schema on purpose.
            return Ok(ToolOutput::json(json!({"surface": 1})));
        }
        Ok(ToolOutput::json(
            json!({"area": w * a["h"].as_f64().unwrap()}),
        ))
    })
}

fn sleeper(name: &str, limits: ToolLimits) -> (Arc<dyn isa_core::Tool>, ToolLimits) {
    let spec = ToolSpec::new(name, "Sleeps for `ms` milliseconds").with_input_schema(json!({
        "type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]
    }));
    let tool = tool_fn(spec, |a, _| async move {
        tokio::time::sleep(Duration::from_millis(a["ms"].as_u64().unwrap())).await;
        Ok(ToolOutput::text("awake"))
    });
    (tool, limits)
}

/// Waits until `condition` holds, for at most ten seconds.
async fn until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A tool only holders of the scope `purge` see and call.
fn purge_tool() -> Arc<dyn isa_core::Tool> {
    let spec = ToolSpec::new("purge", "Delete everything").with_required_scope("purge");
    tool_fn(spec, |_, _| async { Ok(ToolOutput::text("purged")) })
}

fn text_of(out: &ToolOutput) -> String {
    format!("{:?}", out.content)
}

#[tokio::test]
async fn arguments_are_validated_before_the_call_with_a_clear_message() {
    let server = McpServer::builder(McpConfig::default()).build();
    server.add_tool(typed_tool()).await.unwrap();
    let ctx = CallContext::default();
    let ok = server
        .call_tool("area", args(json!({"w": 2, "h": 3})), &ctx)
        .await
        .unwrap();
    assert_eq!(ok.structured_content, Some(json!({"area": 6.0})));
    for (bad, mentions) in [
        (json!({"w": 2}), "\\\"h\\\" is a required property"),
        (json!({"w": "wide", "h": 1}), "/w"),
        (json!({"w": -1, "h": 1}), "minimum"),
        (json!({"w": 1, "h": 1, "d": 1}), "'d'"),
    ] {
        let out = server
            .call_tool("area", args(bad.clone()), &ctx)
            .await
            .unwrap();
        assert!(out.is_error, "{bad} must be refused");
        let text = text_of(&out);
        assert!(
            text.contains("invalid arguments for area") && text.contains(mentions),
            "{bad}: {text}"
        );
    }
    let out = server
        .call_tool("area", args(json!({"w": 13, "h": 1})), &ctx)
        .await
        .unwrap();
    assert!(
        out.is_error && text_of(&out).contains("output schema"),
        "{out:?}"
    );
    assert!(matches!(
        server.call_tool("nope", None, &ctx).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn a_tool_that_fails_panics_or_hangs_is_an_error_result() {
    let server = McpServer::builder(McpConfig::default()).build();
    let panics = tool_fn(ToolSpec::new("panics", "Panics"), |_, _| async {
        panic!("boom")
    });
    let fails = tool_fn(ToolSpec::new("fails", "Fails"), |_, _| async {
        Err(Error::internal("secret detail"))
    });
    server.add_tool(panics).await.unwrap();
    server.add_tool(fails).await.unwrap();
    let limits = ToolLimits {
        timeout: Duration::from_millis(100),
        max_concurrent: 4,
    };
    server
        .add_tools_with_limits(vec![sleeper("slow", limits)])
        .await
        .unwrap();
    let ctx = CallContext::default();
    let out = server.call_tool("panics", None, &ctx).await.unwrap();
    assert!(out.is_error && text_of(&out).contains("failed unexpectedly"));
    let out = server.call_tool("fails", None, &ctx).await.unwrap();
    assert!(
        out.is_error && !text_of(&out).contains("secret"),
        "internal details stay in the log: {out:?}"
    );
    let out = server
        .call_tool("slow", args(json!({"ms": 5000})), &ctx)
        .await
        .unwrap();
    assert!(
        out.is_error && text_of(&out).contains("did not finish within"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_concurrency_limit_refuses_at_once_instead_of_queueing() {
    let server = McpServer::builder(McpConfig::default()).build();
    let limits = ToolLimits {
        timeout: Duration::from_secs(5),
        max_concurrent: 1,
    };
    server
        .add_tools_with_limits(vec![sleeper("single", limits)])
        .await
        .unwrap();
    let first = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .call_tool("single", args(json!({"ms": 500})), &CallContext::default())
                .await
        })
    };
    until(|| server.calls_in_flight() == 1).await;
    let second = server
        .call_tool("single", args(json!({"ms": 1})), &CallContext::default())
        .await
        .unwrap();
    assert!(
        second.is_error && text_of(&second).contains("busy"),
        "{second:?}"
    );
    assert!(
        !first.await.unwrap().unwrap().is_error,
        "the first call was not disturbed"
    );
}

#[tokio::test]
async fn tools_requiring_a_scope_are_hidden_and_refused_without_it() {
    let server = McpServer::builder(McpConfig::default()).build();
    server.add_tool(purge_tool()).await.unwrap();
    let anonymous = CallContext::default();
    assert!(server.tool_specs(&anonymous).is_empty());
    assert!(matches!(
        server.call_tool("purge", None, &anonymous).await,
        Err(Error::NotFound(_))
    ));
    let alice = || Identity::new(UserId::new("alice").unwrap(), AuthMethod::Trusted);
    let plain = CallContext::of(alice().with_scopes(["files"]));
    assert!(server.tool_specs(&plain).is_empty());
    let holder = CallContext::of(alice().with_scopes(["purge"]));
    assert_eq!(server.tool_specs(&holder).len(), 1);
    // The one rule: an administrator holds every scope.
    let admin = CallContext::of(alice().with_scopes(["admin"]));
    assert_eq!(server.tool_specs(&admin).len(), 1);
    assert!(
        !server
            .call_tool("purge", None, &admin)
            .await
            .unwrap()
            .is_error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_gets_its_own_request_id_whatever_its_json_rpc_id() {
    let server = McpServer::builder(McpConfig::default()).build();
    server
        .add_tool(tool_fn(
            ToolSpec::new("whoami", "The call's request id"),
            |_, ctx: CallContext| async move {
                Ok(ToolOutput::text(ctx.request_id.unwrap_or_default()))
            },
        ))
        .await
        .unwrap();
    let (base, _stop, _task) = listen(&server).await;
    let client = reqwest::Client::new();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        // Two clients that both number this request 7.
        let text = post_mcp(
            &client,
            &format!("{base}/mcp"),
            "whoami",
            &stateless_call("whoami", json!({})),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        let answer = answer_of(&text);
        let id = answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(uuid_like(&id), "{answer}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 3, "{ids:?}");
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

/// Serves `server`'s router on a loopback port as the auth layer would: every request made by
/// `identity`, or anonymous.
async fn serve_as(server: &McpServer, identity: Option<Identity>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = match identity {
        Some(identity) => server.router().layer(axum::Extension(identity)),
        None => server.router(),
    };
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_needs_a_scope_is_named_only_to_those_who_hold_it() {
    let server = McpServer::builder(McpConfig::default()).build();
    server.add_tool(purge_tool()).await.unwrap();
    server.add_tool(typed_tool()).await.unwrap();
    let holder =
        Identity::new(UserId::new("alice").unwrap(), AuthMethod::Trusted).with_scopes(["purge"]);
    assert!(
        !server
            .call_tool("purge", None, &CallContext::of(holder.clone()))
            .await
            .unwrap()
            .is_error
    );
    let client = reqwest::Client::new();
    let get = |base: String, path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };

    let anonymous = serve_as(&server, None).await;
    let privileged = serve_as(&server, Some(holder)).await;
    for path in ["/capabilities", "/stats"] {
        let seen = get(anonymous.clone(), path).await;
        assert!(
            !seen.contains("purge"),
            "{path} names a hidden tool: {seen}"
        );
    }
    let capabilities: Value =
        serde_json::from_str(&get(anonymous.clone(), "/capabilities").await).unwrap();
    assert_eq!(
        capabilities["tools"],
        json!({"count": 1, "names": ["area"]})
    );
    let stats: Value = serde_json::from_str(&get(anonymous.clone(), "/stats").await).unwrap();
    assert_eq!(stats["tools"], 1, "{stats}");
    let capabilities: Value =
        serde_json::from_str(&get(privileged.clone(), "/capabilities").await).unwrap();
    assert_eq!(capabilities["tools"]["count"], 2, "{capabilities}");
    let stats: Value = serde_json::from_str(&get(privileged, "/stats").await).unwrap();
    assert_eq!(stats["tools"], 2, "{stats}");

    // /metrics needs no credential: the call is counted, under a label that names no tool.
    let metrics = get(anonymous, "/metrics").await;
    assert!(!metrics.contains("purge"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "isa_tool_calls_total{{tool=\"{}\",outcome=\"ok\"}} 1",
            isa_core::mcp::RESTRICTED_TOOLS_LABEL
        )),
        "{metrics}"
    );
}

async fn listen(
    server: &McpServer,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server.clone();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = stopped.await;
        };
        server
            .serve(listener, server.router(), signal, Duration::from_secs(10))
            .await
            .unwrap();
    });
    (base, stop, task)
}

fn stateless_call(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments,
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}}})
}

fn post_mcp(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .json(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_a_call_in_flight() {
    let server = McpServer::builder(McpConfig::default()).build();
    server
        .add_tools_with_limits(vec![sleeper("nap", ToolLimits::default())])
        .await
        .unwrap();
    let (base, stop, task) = listen(&server).await;
    let client = reqwest::Client::new();
    let call = post_mcp(
        &client,
        &format!("{base}/mcp/"),
        "nap",
        &stateless_call("nap", json!({"ms": 1500})),
    )
    .send();
    let call = tokio::spawn(call);
    until(|| server.calls_in_flight() == 1).await;
    stop.send(()).unwrap();
    let body = call.await.unwrap().unwrap().text().await.unwrap();
    assert!(
        body.contains("awake"),
        "the call in flight finished: {body}"
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server stopped")
        .unwrap();
}

/// A selector that never answers, and counts the selections dropped before they did.
struct Stuck {
    started: tokio::sync::mpsc::UnboundedSender<()>,
    dropped: Arc<std::sync::atomic::AtomicUsize>,
}

#[isa_core::async_trait]
impl isa_core::ToolSelector for Stuck {
    async fn upsert(&self, _: Vec<isa_core::IndexItem>) -> isa_core::Result<()> {
        Ok(())
    }
    async fn remove(&self, _: &[String]) -> isa_core::Result<()> {
        Ok(())
    }
    async fn select(
        &self,
        _: &isa_core::SelectionQuery,
    ) -> isa_core::Result<Vec<isa_core::Scored>> {
        struct Dropped(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _dropped = Dropped(self.dropped.clone());
        let _ = self.started.send(());
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_discovery_stops_when_its_client_has_gone() {
    let (started, mut on_start) = tokio::sync::mpsc::unbounded_channel();
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = McpServer::builder(McpConfig::default())
        .selector(Arc::new(Stuck {
            started,
            dropped: dropped.clone(),
        }))
        .build();
    let (base, _stop, _task) = listen(&server).await;
    let client = reqwest::Client::new();
    let call = post_mcp(
        &client,
        &format!("{base}/mcp/"),
        "discover_tools",
        &stateless_call("discover_tools", json!({"query": "book a table for two"})),
    )
    .send();
    let call = tokio::spawn(call);
    on_start.recv().await.unwrap();
    // The client goes away: its connection closes with the request unanswered, and the
    // selection (in a real selector, the query waiting for the embedder) is dropped.
    call.abort();
    until(|| dropped.load(std::sync::atomic::Ordering::SeqCst) == 1).await;

    // The same through `POST /discover`.
    let call = client
        .post(format!("{base}/discover"))
        .json(&json!({"request": "book a table for two"}))
        .send();
    let call = tokio::spawn(call);
    on_start.recv().await.unwrap();
    call.abort();
    until(|| dropped.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_endpoints_answer_and_unknown_hosts_are_refused() {
    let server = McpServer::builder(McpConfig::default()).build();
    server.add_tool(typed_tool()).await.unwrap();
    let (base, _stop, _task) = listen(&server).await;
    let client = reqwest::Client::new();

    let call = stateless_call("area", json!({"w": 2, "h": 2}));
    let rebinding = post_mcp(&client, &format!("{base}/mcp"), "area", &call)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rebinding.status(),
        403,
        "a Host outside the allowed list is refused"
    );

    let ok = post_mcp(&client, &format!("{base}/mcp"), "area", &call)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("\\\"area\\\":4.0"));

    let capabilities: Value = client
        .get(format!("{base}/capabilities"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        capabilities["tools"],
        json!({"count": 1, "names": ["area"]})
    );
    // Without a selector, discovery says so instead of inventing tools.
    let discover = client
        .post(format!("{base}/discover"))
        .json(&json!({"request": "area"}))
        .send()
        .await
        .unwrap();
    assert_eq!(discover.status(), 501);
    let malformed = client
        .post(format!("{base}/discover"))
        .json(&json!({"max_tools": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("isa_tool_calls_total{tool=\"area\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        client
            .get(format!("{base}/mcp/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A tool that says when it starts, counts how many of it run at once, and waits to be
/// released when asked to block.
struct Gate {
    started: tokio::sync::mpsc::UnboundedSender<()>,
    running: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
}

fn gated_tool(gate: Gate) -> (Arc<dyn isa_core::Tool>, ToolLimits) {
    use std::sync::atomic::Ordering;
    let gate = Arc::new(gate);
    let spec = ToolSpec::new("gated", "Waits when asked to block");
    let tool = tool_fn(spec, move |a, _| {
        let gate = gate.clone();
        async move {
            let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
            gate.most.fetch_max(now, Ordering::SeqCst);
            let _ = gate.started.send(());
            struct Leaving(Arc<Gate>);
            impl Drop for Leaving {
                fn drop(&mut self) {
                    self.0.running.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _leaving = Leaving(gate.clone());
            if a.get("block").and_then(Value::as_bool) == Some(true) {
                std::future::pending::<()>().await;
            }
            Ok(ToolOutput::text("done"))
        }
    });
    let limits = ToolLimits {
        timeout: Duration::from_secs(30),
        max_concurrent: 1,
    };
    (tool, limits)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_call_is_not_counted_and_its_tool_stops_before_another_may_run() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (started, mut on_start) = tokio::sync::mpsc::unbounded_channel();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let server = McpServer::builder(McpConfig::default()).build();
    server
        .add_tools_with_limits(vec![gated_tool(Gate {
            started,
            running: running.clone(),
            most: most.clone(),
        })])
        .await
        .unwrap();

    let blocked = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .call_tool(
                    "gated",
                    args(json!({"block": true})),
                    &CallContext::default(),
                )
                .await
        })
    };
    on_start.recv().await.unwrap();
    assert_eq!(server.calls_in_flight(), 1);
    // The client goes away: the call is dropped mid-way.
    blocked.abort();
    assert!(blocked.await.unwrap_err().is_cancelled());
    assert_eq!(
        server.calls_in_flight(),
        0,
        "a cancelled call is not counted"
    );

    // Until the cancelled tool has stopped, the only place is still taken; after, a new call
    // runs alone.
    loop {
        let out = server
            .call_tool("gated", args(json!({})), &CallContext::default())
            .await
            .unwrap();
        if !out.is_error {
            break;
        }
        assert!(text_of(&out).contains("busy"), "{out:?}");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two calls of the tool ran at once"
    );
    assert_eq!(running.load(Ordering::SeqCst), 0);
}

/// The JSON-RPC answer in a response body: a JSON answer, or the answer event of an SSE one.
fn answer_of(text: &str) -> Value {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .chain([text])
        .filter_map(|json| serde_json::from_str::<Value>(json.trim()).ok())
        .find(|answer| answer.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC answer in {text}"))
}

/// A tool that asks for a name, then for a colour, in two rounds.
fn two_questions() -> Arc<dyn isa_core::Tool> {
    let ask = |field: &str| json!({"type": "object", "properties": {field: {"type": "string"}}});
    tool_fn(
        ToolSpec::new("favourite", "Asks a name, then a colour"),
        move |_, ctx| async move {
            let name = ctx.elicit("name", "Your name?", ask("name")).await?;
            let colour = ctx.elicit("colour", "Your colour?", ask("colour")).await?;
            Ok(ToolOutput::text(format!(
                "{} likes {}",
                name.field("name").and_then(Value::as_str).unwrap_or("?"),
                colour
                    .field("colour")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            )))
        },
    )
}

async fn round(base: &str, arguments: Value, responses: Value, state: Option<&Value>) -> Value {
    let mut call = stateless_call("favourite", arguments);
    call["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"elicitation": {}});
    call["params"]["inputResponses"] = responses;
    if let Some(state) = state {
        call["params"]["requestState"] = state.clone();
    }
    let text = post_mcp(
        &reqwest::Client::new(),
        &format!("{base}/mcp"),
        "favourite",
        &call,
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    answer_of(&text)
}

fn accepted(field: &str, value: &str) -> Value {
    json!({"action": "accept", "content": {field: value}})
}

/// Over 2026-07-28 a call that asks ends with an input-required result; the answers of earlier
/// rounds come back only in the sealed request state, which serves its own caller, arguments
/// and time only.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_asks_resumes_only_with_its_own_unexpired_request_state() {
    let server = McpServer::builder(McpConfig::default()).build();
    server.add_tool(two_questions()).await.unwrap();
    let alice = Identity::new(UserId::new("alice").unwrap(), AuthMethod::Trusted);
    let bob = Identity::new(UserId::new("bob").unwrap(), AuthMethod::Trusted);
    let (as_alice, as_bob) = (
        serve_as(&server, Some(alice)).await,
        serve_as(&server, Some(bob)).await,
    );
    let args = json!({});

    let first = round(&as_alice, args.clone(), json!({}), None).await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    assert_eq!(
        result["inputRequests"]["name"]["method"],
        "elicitation/create"
    );
    let second = round(
        &as_alice,
        args.clone(),
        json!({"name": accepted("name", "Ann")}),
        Some(&result["requestState"]),
    )
    .await;
    let result = &second["result"];
    assert_eq!(result["resultType"], "input_required", "{second}");
    assert!(result["inputRequests"].get("name").is_none(), "{second}");
    let state = &result["requestState"];
    assert!(
        !state.as_str().unwrap().contains("Ann"),
        "the state hides its answers"
    );

    let colour = json!({"colour": accepted("colour", "red")});
    let stolen = round(&as_bob, args.clone(), colour.clone(), Some(state)).await;
    assert_eq!(stolen["error"]["code"], -32602, "{stolen}");
    let changed = round(&as_alice, json!({"x": 1}), colour.clone(), Some(state)).await;
    assert_eq!(changed["error"]["code"], -32602, "{changed}");
    let mut tampered = state.as_str().unwrap().to_owned();
    tampered.replace_range(..1, if tampered.starts_with('A') { "B" } else { "A" });
    let tampered = round(
        &as_alice,
        args.clone(),
        colour.clone(),
        Some(&json!(tampered)),
    )
    .await;
    assert_eq!(tampered["error"]["code"], -32602, "{tampered}");

    // The name is not sent again: it comes from the state.
    let done = round(&as_alice, args.clone(), colour.clone(), Some(state)).await;
    assert_eq!(
        done["result"]["content"][0]["text"], "Ann likes red",
        "{done}"
    );

    let expiring = McpServer::builder(McpConfig {
        input_ttl: Duration::ZERO,
        ..McpConfig::default()
    })
    .build();
    expiring.add_tool(two_questions()).await.unwrap();
    let base = serve_as(&expiring, None).await;
    let first = round(&base, args.clone(), json!({}), None).await;
    let late = round(
        &base,
        args,
        json!({"name": accepted("name", "Ann")}),
        Some(&first["result"]["requestState"]),
    )
    .await;
    assert_eq!(late["error"]["code"], -32602, "{late}");
    assert!(
        late["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{late}"
    );
}

/// The server's configuration decides over a tool's spec whether its calls are confirmed.
#[tokio::test]
async fn the_configuration_makes_a_tool_ask_for_confirmation_or_stop_asking() {
    let confirmed = |answer: Value| {
        struct Answering(Value);
        #[isa_core::async_trait]
        impl isa_core::ClientChannel for Answering {
            fn supports(&self, capability: isa_core::ClientCapability) -> bool {
                capability == isa_core::ClientCapability::Elicitation
            }
            async fn ask(&self, _: &str, _: isa_core::ClientRequest) -> isa_core::Result<Value> {
                Ok(self.0.clone())
            }
        }
        CallContext {
            client: Some(Arc::new(Answering(answer))),
            ..Default::default()
        }
    };
    let purge = tool_fn(
        ToolSpec::new("purge", "Deletes everything")
            .with_confirmation(isa_core::Confirmation::Required),
        |_, _| async { Ok(ToolOutput::text("purged")) },
    );
    let args = args(json!({"w": 2, "h": 3}));
    let server = McpServer::builder(McpConfig {
        confirmations: [
            ("area".to_owned(), Some(isa_core::Confirmation::Required)),
            ("purge".to_owned(), None),
        ]
        .into(),
        ..McpConfig::default()
    })
    .build();
    server.add_tool(typed_tool()).await.unwrap();
    server.add_tool(purge).await.unwrap();

    let unasked = server
        .call_tool("area", args.clone(), &CallContext::default())
        .await
        .unwrap();
    assert!(text_of(&unasked).contains("confirmation"), "{unasked:?}");
    let declined = server
        .call_tool(
            "area",
            args.clone(),
            &confirmed(json!({"action": "decline"})),
        )
        .await
        .unwrap();
    assert!(
        text_of(&declined).contains("did not confirm"),
        "{declined:?}"
    );
    let yes = json!({"action": "accept", "content": {"confirm": true}});
    let done = server
        .call_tool("area", args, &confirmed(yes))
        .await
        .unwrap();
    assert_eq!(done.structured_content, Some(json!({"area": 6.0})));
    let purged = server
        .call_tool("purge", None, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(
        purged,
        ToolOutput::text("purged"),
        "its spec's confirmation is turned off"
    );
}
