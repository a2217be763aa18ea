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
/// Xeon, 2 cores).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: malloc_trim only releases free memory, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets glibc's allocator for a server whose embedding runs free large buffers, before any
/// thread starts:
/// - at most one malloc arena per core (at least two), not eight: memory freed in one arena is
///   not reused by another, and the embedder's runs were spread over several;
/// - fixed thresholds: buffers of 8 MiB and more mapped on their own, and a free top of a heap
///   over 16 MiB given back. glibc's own thresholds rise with the largest buffer freed (the
///   model's bytes), after which an arena's free top of 20–26 MiB stayed resident for good, and
///   malloc_trim does not reach the top of a thread's arena.
///
/// Measured on the MetaTool catalog (Intel Xeon, 2 cores): idle 116–124 MiB and peak 151–180 MiB
/// with glibc's defaults, 99–115 and 141–142 MiB with these; `tools/call` and discovery under
/// load as fast (one arena instead halved `tools/call`; a 1 MiB mapping threshold cost varied
/// discovery a third, each batch's buffers mapped anew).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: called first in main, before any other thread exists; mallopt only sets limits.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
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
