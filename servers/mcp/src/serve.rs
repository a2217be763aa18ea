//! `isa-mcp serve`: for now the health route, reporting whether the embedder loaded.

use std::{net::SocketAddr, sync::Arc};

use axum::{Json, Router, http::StatusCode, routing::get};
use clap::Args;
use isa_models::OrtEmbedder;
use serde_json::json;

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the MCP server.
    #[arg(long, env = "ISA_MCP_BIND", default_value = "127.0.0.1:8081")]
    bind: SocketAddr,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let embedder = tokio::task::spawn_blocking(OrtEmbedder::from_env).await?;
    let embedder_state = match &embedder {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, "the embedder did not load; /health answers 503");
            Err(e.to_string())
        }
    };
    let embedder_state = Arc::new(embedder_state);
    let health = move || {
        let state = embedder_state.clone();
        async move {
            match state.as_ref() {
                Ok(()) => (
                    StatusCode::OK,
                    Json(json!({"status": "ok", "embedder": "ready"})),
                ),
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "unavailable", "embedder": e})),
                ),
            }
        }
    };
    let app = Router::new()
        .route("/health", get(health.clone()))
        .route("/mcp/health", get(health));
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    eprintln!(
        "isa-mcp listening on http://{}  (health: /health)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
