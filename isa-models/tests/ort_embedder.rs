//! `OrtEmbedder` against reference embeddings computed by an independent fp32 implementation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use futures::future::BoxFuture;
use isa_core::{Embedder, Error, TextKind};
use isa_models::{EmbedderConfig, OrtEmbedder, Products};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> anyhow::Result<Reference> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/minilm_reference.json"
    );
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn embedder() -> Option<OrtEmbedder> {
    let config = common::installed_model()?;
    Some(OrtEmbedder::new(config).expect("the installed model loads"))
}

#[tokio::test]
async fn matches_the_reference_token_ids_and_embeddings() -> anyhow::Result<()> {
    let Some(embedder) = embedder() else {
        return Ok(());
    };
    let reference = reference()?;
    assert_eq!(reference.cases.len(), 40);
    let texts: Vec<String> = reference.cases.iter().map(|c| c.text.clone()).collect();
    let vectors = embedder.embed(&texts, TextKind::Document).await?;
    let (mut total, mut worst) = (0.0, 1.0f32);
    for (case, vector) in reference.cases.iter().zip(&vectors) {
        assert_eq!(
            embedder.token_ids(&case.text)?,
            case.input_ids,
            "token ids of {:?}",
            case.text
        );
        assert_eq!(vector.len(), 384);
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let similarity = cosine(vector, &case.embedding);
        assert!(
            similarity >= 0.995,
            "cosine {similarity} for {:?}",
            case.text
        );
        total += similarity;
        worst = worst.min(similarity);
    }
    let mean = total / reference.cases.len() as f32;
    eprintln!("against the reference: worst cosine {worst}, mean {mean}");
    assert!(mean >= 0.999, "mean cosine {mean}");
    Ok(())
}

/// Largest difference in any component between two lists of vectors.
fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// The reference texts and one longer than the model's 256 tokens.
fn probe_texts() -> anyhow::Result<Vec<String>> {
    let mut texts: Vec<String> = reference()?.cases.into_iter().map(|c| c.text).collect();
    texts.push("a much longer text about many things ".repeat(40));
    Ok(texts)
}

/// With every product in f32, the installed model is rewritten into ONNX Runtime's fused
/// operators, and the rewrite gives the vectors of the model as written, for batches padded to
/// different lengths and for single queries. A rewrite that disagrees (here, from a wrong head
/// count) is caught and not used, in int8 or in f32; that embedder runs the model with only its
/// int8 tables looked up before they are dequantised, which gives the same vectors too.
#[tokio::test]
async fn the_fused_graph_gives_the_vectors_of_the_model_as_written() -> anyhow::Result<()> {
    let Some(config) = common::installed_model() else {
        return Ok(());
    };
    let fused = OrtEmbedder::new(EmbedderConfig {
        products: Products::F32,
        ..config.clone()
    })?;
    let report = fused
        .fusion()
        .ok_or_else(|| anyhow::anyhow!("the installed model was not fused"))?;
    assert_eq!(
        (report.attention, report.gelu, report.int8_matmuls),
        (6, 6, 0),
        "{report:?}"
    );
    assert!(report.nodes_after < report.nodes_before, "{report:?}");
    let as_written = OrtEmbedder::new(EmbedderConfig {
        attention_heads: None,
        ..config.clone()
    })?;
    assert_eq!(as_written.fusion(), None);
    let wrong_heads = OrtEmbedder::new(EmbedderConfig {
        attention_heads: Some(4),
        ..config
    })?;
    assert_eq!(
        wrong_heads.fusion(),
        None,
        "a rewrite that disagrees is not used"
    );

    let texts = probe_texts()?;
    let expected = as_written.embed(&texts, TextKind::Document).await?;
    for embedder in [&fused, &wrong_heads] {
        let batch = embedder.embed(&texts, TextKind::Document).await?;
        let d = max_difference(&batch, &expected);
        assert!(d < 1e-4, "batched: max difference {d}");
        for (text, want) in texts.iter().zip(&expected).take(8) {
            let one = embedder
                .embed(std::slice::from_ref(text), TextKind::Query)
                .await?;
            let d = max_difference(&one, std::slice::from_ref(want));
            assert!(d < 1e-4, "{text:?} alone: max difference {d}");
        }
    }
    Ok(())
}

/// By default the output projections and feed-forward layers run in int8 over the model's own
/// codes, by the embedder's own kernel where the CPU has AVX2 or AVX-512 VNNI, else by ONNX
/// Runtime's.
/// With either kernel every text stays within rounding of the model as written (the reference
/// test above holds the default embedder to the fp32 reference), and a text gets the same
/// vector alone as in a batch, because each row's activations are quantised on their own.
#[tokio::test]
async fn the_int8_rewrite_stays_within_rounding_of_the_model_as_written() -> anyhow::Result<()> {
    let Some(config) = common::installed_model() else {
        return Ok(());
    };
    let as_written = OrtEmbedder::new(EmbedderConfig {
        attention_heads: None,
        ..config.clone()
    })?;
    let texts = probe_texts()?;
    let expected = as_written.embed(&texts, TextKind::Document).await?;

    let vector_kernel = cfg!(target_arch = "x86_64")
        && (std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            || std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vnni"));
    let default_products = if vector_kernel {
        Products::IsaInt8
    } else {
        Products::OnnxRuntimeInt8
    };
    for (products, expected_products) in [
        (config.products, default_products),
        (Products::OnnxRuntimeInt8, Products::OnnxRuntimeInt8),
    ] {
        let int8 = OrtEmbedder::new(EmbedderConfig {
            products,
            ..config.clone()
        })?;
        let report = int8
            .fusion()
            .ok_or_else(|| anyhow::anyhow!("the installed model was not rewritten"))?;
        // The own products add the attention output's and the feed-forward output's biases
        // and residuals, in each of the 6 layers.
        let folded = if expected_products == Products::IsaInt8 {
            24
        } else {
            0
        };
        assert_eq!(
            (
                report.attention,
                report.gelu,
                report.int8_matmuls,
                report.products,
                report.folded_adds,
            ),
            (6, 6, 30, expected_products, folded),
            "{report:?}"
        );
        let batch = int8.embed(&texts, TextKind::Document).await?;
        let mut total = 0.0;
        for ((text, got), want) in texts.iter().zip(&batch).zip(&expected) {
            let similarity = cosine(got, want);
            assert!(
                similarity >= 0.998,
                "{products:?}: cosine {similarity} for {text:?}"
            );
            total += similarity;
        }
        let mean = total / texts.len() as f32;
        assert!(mean >= 0.9995, "{products:?}: mean cosine {mean}");
        for (text, want) in texts.iter().zip(&batch) {
            let alone = int8
                .embed(std::slice::from_ref(text), TextKind::Query)
                .await?;
            let d = max_difference(&alone, std::slice::from_ref(want));
            assert!(
                d < 1e-5,
                "{products:?}: {text:?} alone: max difference {d} from its batch"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_text_gets_the_same_vector_alone_and_in_a_batch_of_longer_texts() -> anyhow::Result<()> {
    let Some(embedder) = embedder() else {
        return Ok(());
    };
    let short = "weather in Paris".to_string();
    let alone = embedder
        .embed(std::slice::from_ref(&short), TextKind::Document)
        .await?;
    let long = "a much longer text about many things ".repeat(30);
    let batch = vec![
        long.clone(),
        short.clone(),
        long,
        "medium length text about flights".into(),
    ];
    let together = embedder.embed(&batch, TextKind::Document).await?;
    let diff = alone[0]
        .iter()
        .zip(&together[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "max difference {diff}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_callers_get_what_one_caller_gets() -> anyhow::Result<()> {
    let Some(embedder) = embedder() else {
        return Ok(());
    };
    let embedder = Arc::new(embedder);
    let texts: Vec<String> = reference()?.cases.into_iter().map(|c| c.text).collect();
    let expected = embedder.embed(&texts, TextKind::Document).await?;
    let mut tasks = Vec::new();
    for caller in 0..16 {
        let (embedder, texts) = (embedder.clone(), texts.clone());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in (caller..texts.len()).step_by(3) {
                let v = embedder
                    .embed(std::slice::from_ref(&texts[i]), TextKind::Document)
                    .await;
                results.push((i, v));
            }
            results
        }));
    }
    for task in tasks {
        for (i, got) in task.await? {
            let got = got?;
            let diff = got[0]
                .iter()
                .zip(&expected[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "text {i}: max difference {diff}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn repeated_queries_come_from_the_cache() -> anyhow::Result<()> {
    let Some(embedder) = embedder() else {
        return Ok(());
    };
    let before = embedder.stats();
    let first = embedder
        .embed_one("book a table for two", TextKind::Query)
        .await?;
    let second = embedder
        .embed_one("book a table for two", TextKind::Query)
        .await?;
    let after = embedder.stats();
    assert_eq!(first, second);
    assert_eq!(after.cache_misses - before.cache_misses, 1);
    assert_eq!(after.cache_hits - before.cache_hits, 1);
    // Documents are never cached.
    embedder
        .embed_one("book a table for two", TextKind::Document)
        .await?;
    assert_eq!(embedder.stats().cache_hits, after.cache_hits);
    Ok(())
}

#[tokio::test]
async fn a_texts_parts_are_pooled_from_one_run_over_it() -> anyhow::Result<()> {
    let Some(embedder) = embedder() else {
        return Ok(());
    };
    let text = "book a flight to Lisbon, then find me a quiet hotel near the beach";
    let (flight, hotel) = (0..23, 30..66);
    let before = embedder.stats();
    let vectors = embedder
        .embed_with_parts(text, &[flight.clone(), hotel.clone()], TextKind::Query)
        .await?;
    let after = embedder.stats();
    // One text through the model, not three.
    assert_eq!(after.texts_embedded - before.texts_embedded, 1);
    assert_eq!(vectors.len(), 3);
    // The whole text's vector is the one it gets alone.
    let alone = embedder.embed_one(text, TextKind::Document).await?;
    assert!(cosine(&vectors[0], &alone) > 0.9999);
    // Each part's vector stands for that part: nearer its own words than the other part's.
    let own = embedder
        .embed(
            &[text[flight].to_string(), text[hotel].to_string()],
            TextKind::Document,
        )
        .await?;
    for (part, (mine, other)) in [(1, (0, 1)), (2, (1, 0))] {
        let (near, far) = (
            cosine(&vectors[part], &own[mine]),
            cosine(&vectors[part], &own[other]),
        );
        assert!(
            near > 0.7 && near > far + 0.1,
            "part {part}: {near} vs {far}"
        );
    }
    // Asked again, the whole answer comes from the cache.
    let again = embedder
        .embed_with_parts(text, &[0..23, 30..66], TextKind::Query)
        .await?;
    assert_eq!(again, vectors);
    assert_eq!(embedder.stats().cache_hits - after.cache_hits, 1);
    // A range outside the text, or inside a character, is refused.
    let err = embedder
        .embed_with_parts(text, &[0..3, 60..90], TextKind::Query)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let err = embedder
        .embed_with_parts("café au lait", &[0..4, 6..8], TextKind::Query)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    Ok(())
}

/// 64 distinct texts that keep a worker busy for a while (the same text twice in a round is
/// embedded once).
fn long_texts() -> Vec<String> {
    (0..64)
        .map(|n| format!("long text {n} that takes a while to embed ").repeat(20))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_overloaded_at_once() -> anyhow::Result<()> {
    let Some(mut config) = common::installed_model() else {
        return Ok(());
    };
    config.queue_capacity = 1;
    config.cache_capacity = 0;
    let embedder = Arc::new(OrtEmbedder::new(config)?);
    let long = long_texts();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (embedder, long) = (embedder.clone(), long.clone());
        tasks.push(tokio::spawn(async move {
            embedder.embed(&long, TextKind::Document).await
        }));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for task in tasks {
        match task.await? {
            Ok(v) => {
                assert_eq!(v.len(), 64);
                ok += 1;
            }
            Err(Error::Overloaded { retry_after }) => {
                assert!(retry_after.as_millis() > 0);
                overloaded += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(
        ok >= 1 && overloaded >= 1,
        "ok {ok}, overloaded {overloaded}"
    );
    assert_eq!(embedder.stats().overloaded, overloaded);
    Ok(())
}

/// An embedder with one worker and no query cache, when the model is installed.
fn one_worker_without_cache() -> anyhow::Result<Option<OrtEmbedder>> {
    let Some(mut config) = common::installed_model() else {
        return Ok(None);
    };
    config.workers = 1;
    config.cache_capacity = 0;
    Ok(Some(OrtEmbedder::new(config)?))
}

/// Starts embedding `texts` on `embedder` and returns the request once a worker has taken it,
/// so that with one worker what is asked next waits in the queue until it is done.
async fn keep_busy<'a>(
    embedder: &'a OrtEmbedder,
    texts: &'a [String],
) -> BoxFuture<'a, isa_core::Result<Vec<Vec<f32>>>> {
    let mut busy = embedder.embed(texts, TextKind::Document);
    assert!(futures::poll!(&mut busy).is_pending());
    while embedder.stats().queue_depth > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    busy
}

#[tokio::test]
async fn a_request_whose_caller_has_gone_is_not_embedded() -> anyhow::Result<()> {
    let Some(embedder) = one_worker_without_cache()? else {
        return Ok(());
    };
    let embedded_before = embedder.stats().texts_embedded;
    // A long request the one worker is busy with while the next caller comes and goes.
    let long = long_texts();
    let busy = keep_busy(&embedder, &long).await;
    let mut gone = Box::pin(embedder.embed_one("a caller that gives up", TextKind::Query));
    assert!(futures::poll!(&mut gone).is_pending());
    assert_eq!(embedder.stats().queue_depth, 1);
    drop(gone);
    assert_eq!(busy.await?.len(), 64);
    // Queued after the one that gave up, so answered after the worker has passed it.
    let still_here = embedder
        .embed_one("a caller that waits", TextKind::Query)
        .await?;
    assert_eq!(still_here.len(), 384);
    let stats = embedder.stats();
    assert_eq!(stats.abandoned, 1);
    assert_eq!(stats.texts_embedded - embedded_before, 64 + 1);
    Ok(())
}

#[tokio::test]
async fn the_same_text_asked_for_at_once_is_embedded_once() -> anyhow::Result<()> {
    // No query cache, so that only the worker can share the work.
    let Some(embedder) = one_worker_without_cache()? else {
        return Ok(());
    };
    let alone = embedder
        .embed_one("book a table for two tonight", TextKind::Query)
        .await?;
    let embedded_before = embedder.stats().texts_embedded;
    // The one worker is busy while five callers ask for the same text and one for another.
    let long = long_texts();
    let busy = keep_busy(&embedder, &long).await;
    let same = (0..5).map(|_| embedder.embed_one("book a table for two tonight", TextKind::Query));
    let (busy, same, other) = tokio::join!(
        busy,
        futures::future::try_join_all(same),
        embedder.embed_one("convert 20 euros to dollars", TextKind::Query)
    );
    assert_eq!(busy?.len(), 64);
    for vector in same? {
        let similarity = cosine(&vector, &alone);
        assert!(
            similarity > 0.9999,
            "the shared vector is the text's own: {similarity}"
        );
    }
    assert_eq!(other?.len(), 384);
    assert_eq!(embedder.stats().texts_embedded - embedded_before, 64 + 2);
    Ok(())
}

#[test]
fn missing_corrupt_and_mismatched_models_give_clear_errors() -> anyhow::Result<()> {
    let Some(config) = common::installed_model() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;

    let mut missing = config.clone();
    missing.model_file = dir.path().join("nope.onnx");
    let err = OrtEmbedder::new(missing).unwrap_err().to_string();
    assert!(
        err.contains("embedding model not found") && err.contains("nope.onnx"),
        "{err}"
    );

    let mut corrupt = config.clone();
    corrupt.model_file = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt.model_file, b"this is not an onnx model")?;
    let err = OrtEmbedder::new(corrupt).unwrap_err().to_string();
    assert!(
        err.contains("could not load the ONNX model") && err.contains("corrupt.onnx"),
        "{err}"
    );

    let mut wrong_dims = config.clone();
    wrong_dims.dimensions = 768;
    let err = OrtEmbedder::new(wrong_dims).unwrap_err().to_string();
    assert!(err.contains("768") && err.contains("shape"), "{err}");

    let mut no_tokenizer = config;
    no_tokenizer.tokenizer_file = dir.path().join("tokenizer.json");
    let err = OrtEmbedder::new(no_tokenizer).unwrap_err().to_string();
    assert!(err.contains("tokenizer file not found"), "{err}");
    Ok(())
}
