//! The scripted model the tests use (`isa-models/tests/mock`), served on its own: an
//! OpenAI-compatible server at `ADDRESS/v1` whose model name picks a script (`files-agent`,
//! `plain`, …; the module's documentation lists them). The local deployment
//! (`deploy/local/`) puts it where the paid providers would be.
//!
//! Usage: `mock-providers ADDRESS` (such as `127.0.1.9:18290`).

#[path = "../../../isa-models/tests/mock/mod.rs"]
mod mock;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18290".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, mock::openai(mock::Mock::default())).await
}
