//! # isa-core
//!
//! The traits and types every part of isa shares. Plugin authors depend on this crate alone:
//! implement [`Tool`] (or wrap a closure with [`tool_fn`]) and add it to a server.
//!
//! | trait | what it abstracts | implementations |
//! |---|---|---|
//! | [`Tool`] | one callable tool | built-ins in `isa-tools`, your plugins |
//! | [`Embedder`] | text to vectors | local ONNX in `isa-models` |
//! | [`ToolSelector`] | picking tools, prompts and resources for a request | dense, BM25, hybrid, pgvector (`isa-tools`) |
//! | [`ModelProvider`] | chat, embeddings, images | none yet: the contract the model service will implement |
//! | [`FileStore`] | user files with presigned URLs | S3, local disk, memory (`isa-storage`) |
//! | [`BrowserDriver`] | browser tasks | Chromium (`isa-tools`) |
//! | [`EventSink`] | recording events | PostgreSQL, SQLite, log (`isa-storage`) |
//! | [`EventStore`] | writing and querying recorded events | PostgreSQL, SQLite (`isa-storage`) |
//! | [`FileIndex`] | users' file metadata | PostgreSQL, SQLite (`isa-storage`) |
//! | [`UserStore`], [`CreditLedger`] | users and their credits | PostgreSQL, SQLite (`isa-storage`) |
//!
//! All errors are [`Error`]; [`Error::is_retryable`] separates transient failures from permanent
//! ones. Every caller is an [`Identity`], with one rule for scopes; every readiness check is a
//! [`HealthCheck`].
//!
//! With default features this crate is the traits and types alone. Feature `http` adds
//! [`http`], the edge every service is built on; feature `mcp` adds [`mcp`], the MCP service.

mod account;
pub mod ask;
mod browser;
mod error;
mod event;
mod file;
mod file_index;
mod health;
#[cfg(feature = "http")]
pub mod http;
mod identity;
mod ids;
#[cfg(feature = "mcp")]
pub mod mcp;
mod model;
mod prompt;
mod resource;
mod selection;
mod session;
mod task;
mod tool;

pub use account::*;
pub use ask::{
    ClientCapability, ClientChannel, ClientRequest, ElicitAction, Elicited, Root, Sampled,
    SamplingRequest,
};
pub use async_trait::async_trait;
pub use browser::*;
pub use error::*;
pub use event::*;
pub use file::*;
pub use file_index::*;
pub use health::*;
pub use identity::*;
pub use ids::*;
pub use model::*;
pub use prompt::*;
pub use resource::*;
pub use selection::*;
pub use session::*;
pub use task::*;
pub use tool::*;
