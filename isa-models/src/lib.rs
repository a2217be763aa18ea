//! # isa-models
//!
//! Model access for isa: the local ONNX sentence embedder [`OrtEmbedder`] (all-MiniLM-L6-v2 by
//! default) that powers tool selection without any remote API.

mod embed;
mod error;

pub use embed::{
    EmbedderConfig, EmbedderStats, FusionReport, OrtEmbedder, Pooling, Products, default_cache_dir,
};
