//! Counters the embedder keeps for `/stats` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Default)]
pub(super) struct Counters {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub overloaded: AtomicU64,
    pub texts: AtomicU64,
    pub tokenize_ns: AtomicU64,
    pub queue_ns: AtomicU64,
    pub inference_ns: AtomicU64,
}

/// A snapshot of the embedder's counters since it started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EmbedderStats {
    /// Query embeddings answered from the cache.
    pub cache_hits: u64,
    /// Query embeddings that had to be computed.
    pub cache_misses: u64,
    /// Requests refused because the queue was full.
    pub overloaded: u64,
    /// Texts embedded by the model.
    pub texts_embedded: u64,
    /// Requests waiting for a worker right now.
    pub queue_depth: usize,
    /// Total time spent tokenizing, in milliseconds.
    pub tokenize_ms: f64,
    /// Total time requests waited in the queue, in milliseconds.
    pub queue_ms: f64,
    /// Total time spent in inference and pooling, in milliseconds.
    pub inference_ms: f64,
}

impl EmbedderStats {
    /// Share of query lookups answered by the cache, in `[0, 1]` (0 before any lookup).
    pub fn cache_hit_rate(&self) -> f64 {
        let total = self.cache_hits + self.cache_misses;
        if total == 0 {
            0.0
        } else {
            self.cache_hits as f64 / total as f64
        }
    }
}

impl Counters {
    pub fn snapshot(&self, queue_depth: usize) -> EmbedderStats {
        let ms = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e6;
        EmbedderStats {
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            texts_embedded: self.texts.load(Ordering::Relaxed),
            queue_depth,
            tokenize_ms: ms(&self.tokenize_ns),
            queue_ms: ms(&self.queue_ns),
            inference_ms: ms(&self.inference_ns),
        }
    }
}
