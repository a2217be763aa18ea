//! `isa-mcp`: the smart MCP server and its command-line tools.

mod eval;
mod keys;

use isa_mcp_server::{
    app::{App, shutdown_signal},
    settings::Settings,
};
use tokio_util::sync::CancellationToken;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "isa-mcp", version, about = "The isa smart MCP server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<Settings>),
    /// Work with tool catalogs: rank and evaluate selection.
    #[command(subcommand)]
    Tools(eval::ToolsCommand),
    /// Make API keys in the server's database.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ISA_LOG")
                .unwrap_or_else(|_| "info,rmcp=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(settings) => {
            let app = App::build(*settings).await?;
            let stop = CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                on_signal.cancel();
            });
            app.serve(stop).await
        }
        Command::Tools(command) => eval::run(command).await,
        Command::Keys(command) => keys::run(command).await,
    }
}
