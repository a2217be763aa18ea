//! `isa-agent`: the agent service.

use clap::Parser;
use isa_agent_server::{App, Settings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "isa-agent",
    version,
    about = "The isa agent service: chat runs that discover and call MCP tools through the model service"
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ISA_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let app = App::build(Cli::parse().settings).await?;
    app.serve(isa_core::http::stop_on_signal()).await
}
