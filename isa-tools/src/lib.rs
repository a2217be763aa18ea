//! # isa-tools
//!
//! Tool selection for isa: [`select::LocalSelector`] ranks tools, prompts and resources for a
//! request with exact dense retrieval, BM25, or a hybrid of both.

pub mod select;
