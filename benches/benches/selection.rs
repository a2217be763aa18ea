//! Selection latency: exact dense top-5 over synthetic indexes of 1k, 10k and 100k tools, and
//! the whole discovery path (embed the query, hybrid selection) on the MetaTool catalog.
#![allow(missing_docs)] // criterion_group! generates undocumented functions
#![allow(clippy::expect_used)] // a bench without its model or data cannot run

use std::sync::Arc;

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use isa_benches::{metatool_catalog, metatool_queries, uncached_embedder};
use isa_core::{Embedder, IndexItem, ItemKind, Result, SelectionQuery, TextKind, ToolSelector};
use isa_tools::select::LocalSelector;

/// Unit vectors from a fixed pseudo-random sequence: documents get the next vector, queries one
/// fixed vector, so the bench measures scoring and not the model.
struct SyntheticVectors {
    dims: usize,
    state: std::sync::atomic::AtomicU64,
}

impl SyntheticVectors {
    fn next_vector(&self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..self.dims)
            .map(|_| {
                let x = self
                    .state
                    .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
                let x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

#[async_trait]
impl Embedder for SyntheticVectors {
    fn dimensions(&self) -> usize {
        self.dims
    }
    async fn embed(&self, texts: &[String], kind: TextKind) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|_| match kind {
                TextKind::Document => self.next_vector(),
                TextKind::Query => vec![1.0 / (self.dims as f32).sqrt(); self.dims],
            })
            .collect())
    }
}

fn selection(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");

    let mut group = c.benchmark_group("select_top5_dense");
    group.throughput(Throughput::Elements(1));
    for n in [1_000usize, 10_000, 100_000] {
        let embedder = Arc::new(SyntheticVectors {
            dims: 384,
            state: 1.into(),
        });
        let selector = LocalSelector::dense(embedder);
        let items: Vec<IndexItem> = (0..n)
            .map(|i| IndexItem {
                id: format!("tool_{i}"),
                kind: ItemKind::Tool,
                name: format!("tool_{i}"),
                description: String::new(),
                params: Vec::new(),
                tags: Vec::new(),
            })
            .collect();
        runtime.block_on(selector.upsert(items)).expect("index");
        let query = SelectionQuery::new("any", 5);
        group.bench_with_input(BenchmarkId::from_parameter(n), &query, |b, q| {
            b.to_async(&runtime).iter(|| selector.select(q));
        });
    }
    group.finish();

    let embedder: Arc<dyn Embedder> = Arc::new(uncached_embedder().expect("the installed model"));
    let selector = LocalSelector::hybrid(embedder);
    runtime
        .block_on(selector.upsert(metatool_catalog().expect("MetaTool catalog")))
        .expect("index");
    // The same requests benches/python_embed.py embeds: single-tool ones, and multi-tool ones,
    // whose clauses are embedded with them in one batch.
    let mut group = c.benchmark_group("discovery");
    group.throughput(Throughput::Elements(1));
    for (name, file) in [
        (
            "metatool_hybrid_embed_and_select_top5",
            "queries-single.jsonl",
        ),
        (
            "metatool_multi_hybrid_embed_and_select_top5",
            "queries-multi.jsonl",
        ),
    ] {
        let queries = metatool_queries(file, 256).expect("MetaTool queries");
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                next = (next + 1) % queries.len();
                let query = SelectionQuery::new(queries[next].clone(), 5);
                let selector = &selector;
                async move { selector.select(&query).await }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
