//! A whole MCP server that embeds isa-core: a plugin tool, a closure tool, and the router
//! mounted in your own axum app next to your own routes.
//!
//! `cargo run --bin embedded-server`, then point any MCP client at `http://127.0.0.1:3000/mcp/`.

use std::sync::Arc;

use axum::{Router, routing::get};
use isa_core::{
    ToolOutput, ToolSpec,
    mcp::{McpConfig, McpServer},
    tool_fn,
};
use isa_example_custom_tool::WordCount;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = McpServer::builder(McpConfig::default()).build();

    // A tool from a plugin crate…
    server.add_tool(Arc::new(WordCount::new())).await?;
    // …and one written in place.
    let echo = ToolSpec::new("echo", "Repeat a message").with_input_schema(serde_json::json!({
        "type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]
    }));
    server
        .add_tool(tool_fn(echo, |args, _ctx| async move {
            Ok(ToolOutput::text(
                args["message"].as_str().unwrap_or_default(),
            ))
        }))
        .await?;

    let app = Router::new()
        .route("/", get(|| async { "my app" }))
        .merge(server.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("MCP on http://{}/mcp/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
