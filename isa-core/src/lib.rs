//! # isa-core
//!
//! The traits and types every part of isa shares. Plugin authors depend on this crate alone:
//! implement [`Tool`] (or wrap a closure with [`tool_fn`]) and add it to a server.
//!
//! | trait | what it abstracts | implementations |
//! |---|---|---|
//! | [`Tool`] | one callable tool | built-ins in `isa-tools`, your plugins |
//! | [`Embedder`] | text to vectors | local ONNX in `isa-models` |
//! | [`ToolSelector`] | picking tools, prompts and resources for a request | dense, BM25, hybrid (`isa-tools`), pgvector (`isa-storage`) |
//! | [`ModelProvider`] | chat, embeddings, images | OpenAI, Anthropic, Gemini, Replicate, Hugging Face (`isa-models`) |
//! | [`FileStore`] | user files with presigned URLs | S3, local disk, memory (`isa-storage`) |
//! | [`BrowserDriver`] | browser tasks | Chromium (`isa-tools`) |
//! | [`EventSink`] | recording events | PostgreSQL, SQLite, log (`isa-storage`) |
//!
//! All errors are [`Error`]; [`Error::is_retryable`] separates transient failures from permanent
//! ones.

mod browser;
mod error;
mod event;
mod file;
mod ids;
pub mod mcp;
mod model;
mod prompt;
mod resource;
mod selection;
mod tool;

pub use async_trait::async_trait;
pub use browser::*;
pub use error::*;
pub use event::*;
pub use file::*;
pub use ids::*;
pub use model::*;
pub use prompt::*;
pub use resource::*;
pub use selection::*;
pub use tool::*;
