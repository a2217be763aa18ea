//! # isa-models
//!
//! Model access for isa:
//!
//! - the local ONNX sentence embedder [`OrtEmbedder`] (all-MiniLM-L6-v2 by default) that powers
//!   tool selection without any remote API;
//! - [`providers`]: OpenAI (and any server speaking its format), Anthropic, Gemini, Replicate,
//!   Hugging Face and the local embedder, each a [`ModelProvider`](isa_core::ModelProvider).

mod embed;
mod error;
pub mod gateway;
pub mod providers;
#[cfg(feature = "service")]
pub mod service;

pub use embed::{
    EmbedderConfig, EmbedderStats, FusionReport, OrtEmbedder, Pooling, Products, default_cache_dir,
};

/// A token count for text no tokenizer was run on: about four characters a token, as OpenAI
/// documents for English.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
