//! # isa-tools
//!
//! Tool selection and built-in tools for isa: [`select::LocalSelector`] ranks tools, prompts
//! and resources for a request with exact dense retrieval, BM25, or a hybrid of both;
//! [`web`] holds `web_search`, `web_fetch` and the SSRF guard; [`catalog::CatalogTool`] makes
//! specs from a catalog file discoverable.

pub mod browser;
pub mod catalog;
pub mod clock;
pub mod gateway;
pub mod select;
pub mod web;
