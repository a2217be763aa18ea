//! The axum router: `/mcp` (Streamable HTTP) and the HTTP endpoints beside it.

use std::{fmt::Write, sync::Arc, sync::atomic::Ordering, time::Instant};

use axum::{
    Extension, Json, Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{McpServer, handler::Handler};
use crate::{
    CallContext, Error, Identity, ItemKind,
    http::{ApiJson, ApiQuery, ApiResult, allow_hosts, limit_body, limit_concurrency},
};

impl McpServer {
    /// The router to mount: [`McpServer::protected_router`] and [`McpServer::status_router`]
    /// together, with no authentication.
    pub fn router(&self) -> Router {
        self.protected_router().merge(self.status_router())
    }

    /// What needs a caller's identity: MCP at `/mcp` and `/mcp/`, `POST /discover`,
    /// `GET /search`, `GET /stats` and `GET /capabilities`. Put the authentication layer here.
    pub fn protected_router(&self) -> Router {
        let config = self.config();
        // The Host check is `allow_hosts` below, for every route, in the one error envelope.
        let transport = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(config.sessions)
            .with_sse_keep_alive(Some(config.sse_keep_alive))
            .with_cancellation_token(self.shutdown_token())
            .with_max_request_body_bytes(config.max_request_bytes)
            .disable_allowed_hosts();
        let handler = Handler {
            server: self.clone(),
        };
        let mcp = StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(LocalSessionManager::default()),
            transport,
        );
        let mcp_routes = Router::new()
            .route_service("/mcp", mcp.clone())
            .route_service("/mcp/", mcp)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                count_requests,
            ));
        let endpoints = Router::new()
            .route("/discover", post(discover))
            .route("/search", get(search))
            .route("/stats", get(stats))
            .route("/capabilities", get(capabilities))
            .with_state(self.clone());
        let routes = Router::new()
            .merge(mcp_routes)
            .merge(limit_body(endpoints, config.max_request_bytes));
        allow_hosts(
            limit_concurrency(routes, config.max_concurrent_requests),
            config.allowed_hosts.clone(),
        )
    }

    /// What a load balancer and a monitoring system need without credentials: `GET /health`,
    /// `GET /mcp/health` and `GET /metrics`.
    pub fn status_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(self.clone())
            .merge(self.inner.health.router(&["/health", "/mcp/health"]))
    }
}

/// Counts MCP POST requests until their response body has been sent, so a graceful shutdown
/// waits for answers to reach clients, not just for tools to return. Long-lived GET streams
/// are not counted: they end when the server's shutdown token fires.
async fn count_requests(
    State(server): State<McpServer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let in_flight = server.enter_request();
    let (parts, body) = next.run(request).await.into_parts();
    let stream = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
        let _ = &in_flight; // dropped with the stream, once the body is sent
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

fn call_context(identity: Option<Extension<Identity>>) -> CallContext {
    CallContext {
        identity: identity.map(|Extension(identity)| identity),
        ..Default::default()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverRequest {
    request: String,
    #[serde(default = "default_max_tools")]
    max_tools: usize,
    /// `tool`, `prompt`, `resource`; all when absent.
    #[serde(default)]
    kinds: Vec<ItemKind>,
}

fn default_max_tools() -> usize {
    5
}

async fn discover(
    State(server): State<McpServer>,
    identity: Option<Extension<Identity>>,
    ApiJson(body): ApiJson<DiscoverRequest>,
) -> ApiResult<Json<Value>> {
    if body.max_tools == 0 {
        return Err(Error::invalid("max_tools must be at least 1").into());
    }
    let started = Instant::now();
    let found = server
        .discover(
            &body.request,
            body.max_tools,
            &body.kinds,
            &call_context(identity),
        )
        .await?;
    let of_kind = |kind: ItemKind| -> Vec<Value> {
        found
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| json!({"id": d.id, "score": d.score, "spec": d.spec}))
            .collect()
    };
    Ok(Json(json!({
        "request": body.request,
        "tools": of_kind(ItemKind::Tool),
        "prompts": of_kind(ItemKind::Prompt),
        "resources": of_kind(ItemKind::Resource),
        "latency_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: String,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    10
}

async fn search(
    State(server): State<McpServer>,
    identity: Option<Extension<Identity>>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Value>> {
    if query.limit == 0 {
        return Err(Error::invalid("limit must be at least 1").into());
    }
    let found = server
        .discover(&query.q, query.limit, &[], &call_context(identity))
        .await?;
    let results: Vec<Value> = found
        .iter()
        .map(|d| {
            let description = d.spec.get("description").cloned().unwrap_or(Value::Null);
            json!({"kind": d.kind, "id": d.id, "score": d.score, "description": description})
        })
        .collect();
    Ok(Json(json!({ "query": query.q, "results": results })))
}

/// Counts and the most selected items, as far as the caller may see them: a tool that needs a
/// scope the caller lacks is neither counted nor named.
async fn stats(
    State(server): State<McpServer>,
    identity: Option<Extension<Identity>>,
) -> Json<Value> {
    let ctx = call_context(identity);
    let hidden = server.tools_hidden_from(&ctx);
    let stats = &server.inner.stats;
    let embedder = server.inner.embedder.as_ref().and_then(|e| e.stats());
    let most_selected: Vec<Value> = stats
        .most_selected(usize::MAX)
        .into_iter()
        .filter(|(id, _)| !hidden.contains(id))
        .take(10)
        .map(|(id, count)| json!({"id": id, "count": count}))
        .collect();
    Json(json!({
        "tools": server.tool_specs(&ctx).len(),
        "prompts": server.inner.registry.prompts.read().len(),
        "resources": server.inner.registry.resources.read().len(),
        "mode": format!("{:?}", server.config().mode).to_lowercase(),
        "queries_served": stats.selection.count(),
        "selection_latency_ms": {"p50": stats.selection.percentile_ms(0.5), "p99": stats.selection.percentile_ms(0.99)},
        "embedding_cache": embedder.map(|e| json!({
            "hits": e.cache_hits, "misses": e.cache_misses, "hit_rate": e.cache_hit_rate(),
        })),
        "index_build_ms": stats.index_build_ms.load(Ordering::Relaxed),
        "index": server.inner.selector.as_ref().and_then(|s| s.stats()),
        "most_selected": most_selected,
    }))
}

/// What this server offers the caller: the tools it may use (as `tools/list` shows them), the
/// prompts and the resources.
async fn capabilities(
    State(server): State<McpServer>,
    identity: Option<Extension<Identity>>,
) -> Json<Value> {
    let registry = &server.inner.registry;
    let tools: Vec<String> = server
        .tool_specs(&call_context(identity))
        .into_iter()
        .map(|spec| spec.name)
        .collect();
    let prompts: Vec<String> = registry.prompts.read().keys().cloned().collect();
    let (templates, resources): (Vec<String>, Vec<String>) = {
        let all = registry.resources.read();
        let (t, r): (Vec<_>, Vec<_>) = all.values().partition(|r| r.spec().is_template());
        (
            t.iter().map(|r| r.spec().uri.clone()).collect(),
            r.iter().map(|r| r.spec().uri.clone()).collect(),
        )
    };
    Json(json!({
        "server": {"name": server.config().name, "version": server.config().version},
        "mode": format!("{:?}", server.config().mode).to_lowercase(),
        "tools": {"count": tools.len(), "names": tools},
        "prompts": {"count": prompts.len(), "names": prompts},
        "resources": {"count": resources.len(), "uris": resources},
        "resource_templates": {"count": templates.len(), "uri_templates": templates},
    }))
}

/// The label under which `/metrics`, which needs no credential, counts the calls of every tool
/// that needs a scope: their names are not shown to anyone without it.
pub const RESTRICTED_TOOLS_LABEL: &str = "(restricted)";

async fn metrics(State(server): State<McpServer>) -> Response {
    let stats = &server.inner.stats;
    let mut out = String::new();
    let registry = &server.inner.registry;
    let _ = writeln!(
        out,
        "# HELP isa_registered_items Items offered by this server.\n# TYPE isa_registered_items gauge\n\
         isa_registered_items{{kind=\"tool\"}} {}\nisa_registered_items{{kind=\"prompt\"}} {}\n\
         isa_registered_items{{kind=\"resource\"}} {}",
        registry.tools.read().len(),
        registry.prompts.read().len(),
        registry.resources.read().len()
    );
    let _ = writeln!(
        out,
        "# HELP isa_tool_calls_in_flight Tool calls running now.\n# TYPE isa_tool_calls_in_flight gauge\n\
         isa_tool_calls_in_flight {}",
        server.calls_in_flight()
    );
    let _ = writeln!(
        out,
        "# HELP isa_tool_calls_total Tool calls by tool and outcome; tools that need a scope are counted together as {RESTRICTED_TOOLS_LABEL}.\n# TYPE isa_tool_calls_total counter"
    );
    let restricted = server.tools_hidden_from(&CallContext::default());
    let mut calls: std::collections::BTreeMap<String, super::stats::ToolCounts> =
        Default::default();
    for (tool, counts) in stats.tool_calls.lock().iter() {
        let label = if restricted.contains(tool) {
            RESTRICTED_TOOLS_LABEL
        } else {
            tool
        };
        let sum = calls.entry(label.to_owned()).or_default();
        sum.calls += counts.calls;
        sum.errors += counts.errors;
    }
    for (tool, counts) in calls {
        let tool = tool.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "isa_tool_calls_total{{tool=\"{tool}\",outcome=\"ok\"}} {}\n\
             isa_tool_calls_total{{tool=\"{tool}\",outcome=\"error\"}} {}",
            counts.calls - counts.errors,
            counts.errors
        );
    }
    stats.selection.write_prometheus(
        &mut out,
        "isa_selection_duration_seconds",
        "Time to select tools for a request, including the query embedding.",
    );
    if let Some(e) = server.inner.embedder.as_ref().and_then(|e| e.stats()) {
        let _ = writeln!(
            out,
            "# HELP isa_embedding_cache_lookups_total Query embedding cache lookups.\n\
             # TYPE isa_embedding_cache_lookups_total counter\n\
             isa_embedding_cache_lookups_total{{result=\"hit\"}} {}\n\
             isa_embedding_cache_lookups_total{{result=\"miss\"}} {}\n\
             # HELP isa_embedding_queue_depth Embedding requests waiting for a worker.\n\
             # TYPE isa_embedding_queue_depth gauge\nisa_embedding_queue_depth {}\n\
             # HELP isa_embedding_overloaded_total Embedding requests refused because the queue was full.\n\
             # TYPE isa_embedding_overloaded_total counter\nisa_embedding_overloaded_total {}\n\
             # HELP isa_embedding_abandoned_total Embedding requests dropped from the queue because their caller had gone.\n\
             # TYPE isa_embedding_abandoned_total counter\nisa_embedding_abandoned_total {}\n\
             # HELP isa_embedding_texts_total Texts the embedding model ran on (documents and queries).\n\
             # TYPE isa_embedding_texts_total counter\nisa_embedding_texts_total {}",
            e.cache_hits,
            e.cache_misses,
            e.queue_depth,
            e.overloaded,
            e.abandoned,
            e.texts_embedded
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
