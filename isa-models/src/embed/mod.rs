//! The local ONNX sentence embedder.

mod config;
mod fusion;
mod int8;
mod stats;
mod worker;

use std::{
    num::NonZeroUsize,
    ops::Range,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use crossbeam_channel::TrySendError;
use isa_core::{Embedder, Error, Result, TextKind};
use lru::LruCache;
use ort::{
    environment::Environment,
    ep::CPU,
    operator::OperatorDomain,
    session::{Session, builder::GraphOptimizationLevel},
};
use parking_lot::Mutex;
use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::oneshot;

pub use config::{EmbedderConfig, Pooling, default_cache_dir};
pub use fusion::{FusionReport, Products};
pub use isa_core::EmbedderStats;
use stats::Counters;
use worker::{Encoder, Job, ModelInputs, Workers};

/// How long an overloaded caller is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Sentence embeddings computed locally with ONNX Runtime: all-MiniLM-L6-v2 by default, any
/// BERT-style sentence-transformers export by configuration.
///
/// Inference runs on dedicated OS threads behind a bounded queue; a full queue answers
/// [`Error::Overloaded`] at once. Query embeddings are cached (LRU) with hit and miss counters.
///
/// ```no_run
/// use isa_core::{Embedder, TextKind};
/// use isa_models::{EmbedderConfig, OrtEmbedder};
///
/// # async fn demo() -> isa_core::Result<()> {
/// let embedder = OrtEmbedder::new(EmbedderConfig::from_env()?)?;
/// let v = embedder.embed_one("find me a flight to Lisbon", TextKind::Query).await?;
/// assert_eq!(v.len(), 384);
/// # Ok(()) }
/// ```
pub struct OrtEmbedder {
    workers: Workers<Job>,
    tokenizer: Arc<Tokenizer>,
    config: Arc<EmbedderConfig>,
    cache: Option<Mutex<LruCache<String, Arc<[f32]>>>>,
    counters: Arc<Counters>,
    fusion: Option<FusionReport>,
    /// Whether parts of a text are mean-pooled from the run over the whole text: the model
    /// outputs token states and the configuration pools by mean.
    pools_parts: bool,
}

impl std::fmt::Debug for OrtEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEmbedder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// ONNX Runtime allows one environment per process; it is made on first use and shared.
static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

fn environment(library: &Path) -> Result<Environment> {
    let mut slot = ENVIRONMENT.lock();
    if let Some((loaded, env)) = slot.as_ref() {
        if loaded != library {
            return Err(Error::Config(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
                loaded.display(),
                library.display()
            )));
        }
        return Ok(env.clone());
    }
    if !library.is_file() {
        return Err(Error::Config(format!(
            "ONNX Runtime library not found at {}; run deploy/dev/setup-models.sh or set ISA_ONNXRUNTIME_LIB",
            library.display()
        )));
    }
    let env = ort::init_from(library)
        .map_err(|e| {
            Error::Config(format!(
                "could not load ONNX Runtime from {}: {e}",
                library.display()
            ))
        })?
        .with_name("isa")
        .build()
        .map_err(|e| Error::Config(format!("could not start ONNX Runtime: {e}")))?;
    *slot = Some((library.to_path_buf(), env.clone()));
    Ok(env)
}

fn load_tokenizer(config: &EmbedderConfig) -> Result<Tokenizer> {
    let path = &config.tokenizer_file;
    if !path.is_file() {
        return Err(Error::Config(format!(
            "tokenizer file not found: {}; run deploy/dev/setup-models.sh or set ISA_EMBEDDING_MODEL_DIR",
            path.display()
        )));
    }
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| Error::Config(format!("{} is not a valid tokenizer: {e}", path.display())))?;
    // The model's max_seq_length wins over whatever the tokenizer file says; padding is ours.
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: config.max_seq_length,
            ..Default::default()
        }))
        .map_err(|e| Error::Config(format!("cannot set truncation: {e}")))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

fn read_model(config: &EmbedderConfig) -> Result<Vec<u8>> {
    let path = &config.model_file;
    if !path.is_file() {
        return Err(Error::Config(format!(
            "embedding model not found: {}; run deploy/dev/setup-models.sh or set ISA_EMBEDDING_MODEL_DIR",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the ONNX model {}: {e}",
            path.display()
        ))
    })
}

/// What a session is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// To embed [`PROBE`] once with the model before fusion (its int8 lookups rewritten, which
    /// computes the same values), as the reference a rewrite is checked against. Not
    /// optimised: ONNX Runtime's constant folding would dequantise every weight stored as int8
    /// codes at load, the largest allocation of the embedder's start; unfolded, the dequantised
    /// weights are only a run's intermediate values.
    Reference,
    /// To serve: the model without fused operators (`None`) or the output of [`fusion::fuse`]
    /// with these products.
    Serving(Option<Products>),
}

/// A session for `model` in `role`.
fn load_session(
    env: &Environment,
    config: &EmbedderConfig,
    model: &[u8],
    role: Role,
) -> Result<Session> {
    let setup = |e: ort::Error| Error::Config(format!("cannot configure ONNX Runtime: {e}"));
    let (level, rewrite) = match role {
        Role::Reference => (GraphOptimizationLevel::Disable, None),
        Role::Serving(rewrite) => (GraphOptimizationLevel::Level3, rewrite),
    };
    let mut builder = Session::builder(env)
        .map_err(setup)?
        .with_optimization_level(level)
        .map_err(|e| setup(e.into()))?
        .with_intra_threads(config.intra_threads.max(1))
        .map_err(|e| setup(e.into()))?
        .with_inter_threads(1)
        .map_err(|e| setup(e.into()))?;
    // Without ONNX Runtime's arena, a run's intermediate values go back to the allocator when
    // it ends; with it, the largest run's (a batch of the catalog's documents) stay reserved for
    // the session's life: some 10 MiB more at idle (Intel host, 2 cores), for no faster query
    // (p50 3.59 / 3.47 ms with it, 3.68 / 3.55 ms without) nor discovery under load (282-301
    // requests/s with it, 335-452 without, alternating runs).
    builder = builder
        .with_memory_pattern(false)
        .map_err(|e| setup(e.into()))?
        .with_execution_providers([CPU::default().with_arena_allocator(false).build()])
        .map_err(|e| setup(e.into()))?;
    if rewrite.is_some() {
        builder = builder
            .with_disabled_optimizers(fusion::DISABLED_OPTIMIZERS)
            .map_err(|e| setup(e.into()))?;
    }
    if rewrite == Some(Products::IsaInt8) {
        let domain = OperatorDomain::new(int8::DOMAIN)
            .and_then(|domain| domain.add(int8::Int8MatMul))
            .map_err(setup)?;
        builder = builder
            .with_operators(domain)
            .map_err(|e| setup(e.into()))?;
    }
    builder.commit_from_memory(model).map_err(|e| {
        Error::Config(format!(
            "could not load the ONNX model {}: {e}",
            config.model_file.display()
        ))
    })
}

/// Texts of different lengths, embedded in one padded batch, so the probe also checks that the
/// fused attention honours the attention mask.
const PROBE: [&str; 3] = [
    "warm up",
    "find me a flight to Lisbon next Tuesday",
    "a longer probe sentence about weather forecasts, currency exchange rates and calendars",
];

/// Largest difference in any vector component between the rewritten graph and the model as
/// written; float summation order differs between fused and unfused kernels, nothing more.
const FUSION_TOLERANCE: f32 = 1e-4;

/// Smallest cosine between a probe vector of the int8 rewrite and the model's own. Rounding the
/// activations costs about 0.0001 on average and 0.0006 at worst over the reference texts; a
/// rewrite that multiplied the wrong bytes would be far below.
const INT8_MIN_COSINE: f32 = 0.998;

/// The model chosen to serve, the rewrite it is (if any), and the session that probed it.
struct Chosen {
    model: Vec<u8>,
    fusion: Option<FusionReport>,
    probed: Option<Encoder>,
}

/// The model to run: the int8 rewrite (when configured), else the f32 rewrite, else the model as
/// written. A rewrite is used when [`fusion::fuse`] matched the graph and the rewrite embeds
/// [`PROBE`] as the model as written does: within rounding in int8, within [`FUSION_TOLERANCE`]
/// in f32. When rewriting, lookups in int8 tables come first
/// ([`fusion::dequantise_after_lookups`]), for the reference too: they compute the same values.
fn choose_model(
    model: Vec<u8>,
    config: &EmbedderConfig,
    encoder: impl Fn(&[u8], Role) -> Result<Encoder>,
) -> Result<Chosen> {
    let unfused = |model| Chosen {
        model,
        fusion: None,
        probed: None,
    };
    let Some(heads) = config.attention_heads else {
        return Ok(unfused(model));
    };
    let model = match fusion::dequantise_after_lookups(&model) {
        Some((rewritten, lookups)) => {
            tracing::info!(lookups, "int8 tables dequantised after their lookups");
            drop(model);
            rewritten
        }
        None => model,
    };
    let attempts = match config.products {
        Products::IsaInt8 if int8::available() => {
            &[Products::IsaInt8, Products::OnnxRuntimeInt8, Products::F32][..]
        }
        Products::IsaInt8 | Products::OnnxRuntimeInt8 => {
            &[Products::OnnxRuntimeInt8, Products::F32]
        }
        Products::F32 => &[Products::F32],
    };
    let mut expected = None;
    for &products in attempts {
        let Some((rewritten, report)) = fusion::fuse(&model, heads, products) else {
            return Ok(unfused(model));
        };
        let int8 = products != Products::F32;
        if int8 && report.int8_matmuls == 0 {
            continue;
        }
        let expected = match &expected {
            Some(vectors) => vectors,
            None => expected.insert(encoder(&model, Role::Reference)?.encode(&PROBE)?),
        };
        let probed = encoder(&rewritten, Role::Serving(Some(products)))
            .and_then(|mut encoder| Ok((encoder.encode(&PROBE)?, encoder)));
        let disagreement = match &probed {
            Ok((got, _)) if int8 => {
                let worst = got
                    .iter()
                    .zip(expected.iter())
                    .map(|(a, b)| cosine(a, b))
                    .fold(1.0f32, f32::min);
                (worst < INT8_MIN_COSINE)
                    .then(|| format!("a probe vector's cosine with the model's own is {worst}"))
            }
            Ok((got, _)) => {
                let worst = got
                    .iter()
                    .flatten()
                    .zip(expected.iter().flatten())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                (worst > FUSION_TOLERANCE).then(|| format!("its vectors differ by up to {worst}"))
            }
            Err(e) => Some(e.to_string()),
        };
        match disagreement {
            None => {
                tracing::info!(
                    attention = report.attention,
                    gelu = report.gelu,
                    int8_matmuls = report.int8_matmuls,
                    folded_adds = report.folded_adds,
                    products = ?report.products,
                    nodes_before = report.nodes_before,
                    nodes_after = report.nodes_after,
                    "embedding model rewritten into fused operators"
                );
                return Ok(Chosen {
                    model: rewritten,
                    fusion: Some(report),
                    probed: probed.ok().map(|(_, encoder)| encoder),
                });
            }
            Some(why) => {
                tracing::warn!(
                    ?products,
                    "the rewritten embedding model is not used: {why}"
                )
            }
        }
    }
    tracing::warn!("running the embedding model without fused operators");
    Ok(unfused(model))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}

impl OrtEmbedder {
    /// Loads the runtime, tokenizer and model, checks the output dimension with one warm-up
    /// inference, and starts the worker threads.
    pub fn new(config: EmbedderConfig) -> Result<Self> {
        let config = Arc::new(config);
        let env = environment(&config.runtime_library)?;
        let tokenizer = Arc::new(load_tokenizer(&config)?);
        let counters = Arc::new(Counters::default());
        let (mut workers, jobs) = Workers::new(config.queue_capacity.max(1));
        let encoder = |model: &[u8], role: Role| -> Result<Encoder> {
            let session = load_session(&env, &config, model, role)?;
            Ok(Encoder {
                inputs: ModelInputs::of(&session)?,
                session,
                tokenizer: tokenizer.clone(),
                config: config.clone(),
                counters: counters.clone(),
                token_states: false,
            })
        };
        let Chosen {
            model,
            fusion,
            mut probed,
        } = choose_model(read_model(&config)?, &config, encoder)?;
        let mut pools_parts = false;
        for n in 0..config.workers.max(1) {
            // The session that probed the rewrite serves too, rather than loading it again.
            let mut encoder = match probed.take() {
                Some(encoder) => encoder,
                None => encoder(&model, Role::Serving(fusion.map(|report| report.products)))?,
            };
            // Warm-up: the first run allocates; this also proves the output shape matches.
            encoder.encode(&["warm up"])?;
            pools_parts = encoder.token_states && config.pooling == Pooling::Mean;
            let jobs = jobs.clone();
            workers.spawn(format!("isa-embed-{n}"), move || encoder.serve(jobs))?;
        }
        let cache = NonZeroUsize::new(config.cache_capacity).map(|n| Mutex::new(LruCache::new(n)));
        Ok(OrtEmbedder {
            workers,
            tokenizer,
            config,
            cache,
            counters,
            fusion,
            pools_parts,
        })
    }

    /// Loads the embedder from [`EmbedderConfig::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(EmbedderConfig::from_env()?)
    }

    /// What the graph rewrite fused, or `None` when the model runs as written (see
    /// [`EmbedderConfig::attention_heads`]).
    pub fn fusion(&self) -> Option<FusionReport> {
        self.fusion
    }

    /// The configuration in use.
    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    /// The token ids the model sees for `text` (with special tokens, truncated, unpadded).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| Error::invalid(format!("cannot tokenize: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Counters since start.
    pub fn stats(&self) -> EmbedderStats {
        self.counters.snapshot(self.workers.queue().len())
    }

    /// `text` with the configured prefix of its kind.
    fn prefixed(&self, text: &str, kind: TextKind) -> String {
        let prefix = match kind {
            TextKind::Query => &self.config.query_prefix,
            TextKind::Document => &self.config.document_prefix,
        };
        format!("{prefix}{text}")
    }

    /// Embeds texts, each with the parts to pool from it (see [`Job`]).
    async fn compute(&self, texts: Vec<(String, Vec<Range<usize>>)>) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            texts,
            reply,
            enqueued: Instant::now(),
        };
        match self.workers.queue().try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.overloaded.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Overloaded {
                    retry_after: RETRY_AFTER,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::Unavailable(
                    "the embedding workers have stopped".into(),
                ));
            }
        }
        answer
            .await
            .map_err(|_| Error::Unavailable("an embedding worker stopped mid-request".into()))?
    }
}

#[async_trait]
impl Embedder for OrtEmbedder {
    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    fn stats(&self) -> Option<EmbedderStats> {
        Some(OrtEmbedder::stats(self))
    }

    async fn embed(&self, texts: &[String], kind: TextKind) -> Result<Vec<Vec<f32>>> {
        let prefixed = |t: &String| (self.prefixed(t, kind), Vec::new());
        let cache = match (&self.cache, kind) {
            (Some(cache), TextKind::Query) => cache,
            _ => return self.compute(texts.iter().map(prefixed).collect()).await,
        };

        let mut found: Vec<Option<Arc<[f32]>>> = {
            let mut cache = cache.lock();
            texts.iter().map(|t| cache.get(t).cloned()).collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| found[i].is_none()).collect();
        self.counters
            .cache_hits
            .fetch_add((texts.len() - missing.len()) as u64, Ordering::Relaxed);
        self.counters
            .cache_misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        if !missing.is_empty() {
            let computed = self
                .compute(missing.iter().map(|&i| prefixed(&texts[i])).collect())
                .await?;
            let mut cache = cache.lock();
            for (&i, vector) in missing.iter().zip(computed) {
                let vector: Arc<[f32]> = vector.into();
                cache.put(texts[i].clone(), vector.clone());
                found[i] = Some(vector);
            }
        }
        Ok(found
            .into_iter()
            .map(|v| v.map(|v| v.to_vec()).unwrap_or_default())
            .collect())
    }

    /// Pools each part from the one run over the whole text when the model gives token states
    /// and pools by mean; else embeds each part as a text of its own.
    async fn embed_with_parts(
        &self,
        text: &str,
        parts: &[Range<usize>],
        kind: TextKind,
    ) -> Result<Vec<Vec<f32>>> {
        let part_texts = isa_core::part_texts(text, parts)?;
        if parts.is_empty() || !self.pools_parts {
            let mut texts = vec![text.to_string()];
            texts.extend(part_texts);
            return self.embed(&texts, kind).await;
        }
        // One cache entry holds the whole text's vector and its parts', end to end.
        let key = format!("{text}\u{0}{parts:?}");
        let cached = match (&self.cache, kind) {
            (Some(cache), TextKind::Query) => cache.lock().get(&key).cloned(),
            _ => None,
        };
        if let Some(vectors) = cached {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(vectors
                .chunks_exact(self.config.dimensions.max(1))
                .map(<[f32]>::to_vec)
                .collect());
        }
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let prefixed = self.prefixed(text, kind);
        // The prefix moves every part along.
        let shift = prefixed.len() - text.len();
        let shifted = parts
            .iter()
            .map(|p| p.start + shift..p.end + shift)
            .collect();
        let vectors = self.compute(vec![(prefixed, shifted)]).await?;
        if let (Some(cache), TextKind::Query) = (&self.cache, kind) {
            cache.lock().put(key, vectors.concat().into());
        }
        Ok(vectors)
    }
}
