//! Embedding throughput and latency of the local ONNX embedder.
#![allow(missing_docs)] // criterion_group! generates undocumented functions
#![allow(clippy::expect_used)] // a bench without its model or data cannot run

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use isa_benches::{metatool_catalog, uncached_embedder};
use isa_core::{Embedder, TextKind};

fn embedding(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let embedder = uncached_embedder().expect("the model from deploy/dev/setup-models.sh");

    let mut group = c.benchmark_group("embed");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_short_query", |b| {
        b.to_async(&runtime)
            .iter(|| embedder.embed_one("what's the weather in Paris tomorrow?", TextKind::Query));
    });

    let descriptions: Vec<String> = metatool_catalog()
        .expect("MetaTool catalog")
        .iter()
        .map(|item| item.document_text())
        .collect();
    group.throughput(Throughput::Elements(descriptions.len() as u64));
    group.sample_size(20);
    group.bench_function("metatool_catalog_batched", |b| {
        b.to_async(&runtime)
            .iter(|| embedder.embed(&descriptions, TextKind::Document));
    });
    group.bench_function("metatool_catalog_one_at_a_time", |b| {
        b.to_async(&runtime).iter(|| async {
            for d in &descriptions {
                embedder
                    .embed_one(d, TextKind::Document)
                    .await
                    .expect("embedding");
            }
        });
    });
    group.finish();
}

criterion_group!(benches, embedding);
criterion_main!(benches);
