//! `isa-model`: the model service.

use clap::Parser;
use isa_model_server::{App, Settings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "isa-model",
    version,
    about = "The isa model service: one OpenAI-compatible API over many providers"
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
