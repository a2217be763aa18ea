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

/// Hands the memory freed after start-up back to the system: glibc keeps freed heap pages
/// resident, and loading and probing the embedding model frees large buffers. On the MetaTool
/// catalog this took the server's idle resident memory from 195–250 MiB to 165–177 MiB (Intel
/// Xeon, 2 cores). Fixed allocator thresholds instead (mallopt) saved as much and lowered the
/// peak, but made every multi-clause request some 7 % slower.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: malloc_trim only releases free memory, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

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
            return_freed_memory();
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
