//! Helpers shared by the criterion benches: the MetaTool data and the installed model.

use std::path::PathBuf;

use isa_core::{IndexItem, Result};
use isa_models::{EmbedderConfig, OrtEmbedder};

/// `benches/data/metatool`: the MetaTool catalog and queries (MIT, see its `LICENSE`).
pub fn metatool_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/metatool")
}

/// The MetaTool catalog as index items.
pub fn metatool_catalog() -> Result<Vec<IndexItem>> {
    isa_tools::catalog::load_catalog(&metatool_dir().join("catalog.json"))
}

/// The first `n` MetaTool queries of `file` (`queries-single.jsonl` or `queries-multi.jsonl`).
pub fn metatool_queries(file: &str, n: usize) -> Result<Vec<String>> {
    let path = metatool_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| isa_core::Error::invalid(format!("{}: {e}", path.display())))?;
    Ok(text
        .lines()
        .take(n)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["query"].as_str().map(str::to_string))
        .collect())
}

/// The installed embedder with its query cache off, so every iteration runs the model.
pub fn uncached_embedder() -> Result<OrtEmbedder> {
    let mut config = EmbedderConfig::from_env()?;
    config.cache_capacity = 0;
    OrtEmbedder::new(config)
}
