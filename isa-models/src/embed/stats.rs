//! Counters the embedder keeps for `/stats` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use isa_core::EmbedderStats;

#[derive(Default)]
pub(super) struct Counters {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub overloaded: AtomicU64,
    pub abandoned: AtomicU64,
    pub texts: AtomicU64,
    pub tokenize_ns: AtomicU64,
    pub queue_ns: AtomicU64,
    pub inference_ns: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self, queue_depth: usize) -> EmbedderStats {
        let ms = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e6;
        EmbedderStats {
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            texts_embedded: self.texts.load(Ordering::Relaxed),
            queue_depth,
            tokenize_ms: ms(&self.tokenize_ns),
            queue_ms: ms(&self.queue_ns),
            inference_ms: ms(&self.inference_ns),
        }
    }
}
