//! Configuration of the ONNX embedder: which files, which pooling, how much concurrency.

use std::path::{Path, PathBuf};

use isa_core::{Error, Result};
use serde::Deserialize;

use super::Products;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the tokens the attention mask marks (sentence-transformers' default; MiniLM).
    Mean,
    /// The first token's vector (BGE and other CLS-pooled models).
    Cls,
}

/// Everything [`OrtEmbedder`](crate::OrtEmbedder) needs; build with [`EmbedderConfig::from_model_dir`]
/// or [`EmbedderConfig::from_env`], then adjust fields.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// The ONNX Runtime shared library (`libonnxruntime.so`).
    pub runtime_library: PathBuf,
    /// The ONNX model; its first output is `[batch, seq, dims]` token states or `[batch, dims]`.
    pub model_file: PathBuf,
    /// The Hugging Face `tokenizer.json`.
    pub tokenizer_file: PathBuf,
    /// Vector length; checked against the model's output when the embedder starts.
    pub dimensions: usize,
    /// The encoder's attention heads (`num_attention_heads` in `config.json`). When known, the
    /// embedder rewrites the graph into ONNX Runtime's fused attention and GELU operators, and
    /// uses the rewrite if it gives the model's own vectors on a probe batch. `None` runs the
    /// model as written.
    pub attention_heads: Option<usize>,
    /// How the rewrite multiplies the weights a model stores as int8 codes (all products but the
    /// value projections). In int8 (activations quantised at run time) by the embedder's own
    /// kernel, the default, where the CPU has AVX2 or AVX-512 VNNI, else by ONNX Runtime's
    /// `MatMulNBits`; or in f32. An int8 rewrite is used only when the probe batch's vectors
    /// keep a cosine of at least 0.998 with the model's own; the embedder falls back down that
    /// list, and ignores this when `attention_heads` is `None`.
    pub products: Products,
    /// Inputs are truncated to this many tokens (the model's `max_seq_length`, not the
    /// tokenizer file's own truncation).
    pub max_seq_length: usize,
    /// Pooling over token vectors.
    pub pooling: Pooling,
    /// Whether to L2-normalise the result (selectors need unit vectors).
    pub normalize: bool,
    /// Text put before every query (E5 uses `"query: "`).
    pub query_prefix: String,
    /// Text put before every indexed document (E5 uses `"passage: "`).
    pub document_prefix: String,
    /// Inference threads, each with its own session.
    pub workers: usize,
    /// ONNX Runtime's threads within one inference.
    pub intra_threads: usize,
    /// Requests waiting for a worker before callers get "overloaded".
    pub queue_capacity: usize,
    /// Upper bound on `batch size x padded length` for one inference call. Small batches win on
    /// CPU: on the 2-core development machine 512 tokens embedded the MetaTool catalog at 175/s,
    /// 128 at 148/s, 1024 at 166/s and 4096 at 83/s.
    pub batch_token_budget: usize,
    /// Query embeddings kept in the LRU cache (0 turns the cache off).
    pub cache_capacity: usize,
}

/// An `on`/`off` environment variable; on when unset.
fn switch(name: &str) -> Result<bool> {
    match std::env::var(name).as_deref() {
        Err(_) | Ok("on") => Ok(true),
        Ok("off") => Ok(false),
        Ok(other) => Err(Error::Config(format!(
            "{name} must be on or off, not {other:?}"
        ))),
    }
}

/// The cache directory where `deploy/dev/setup-models.sh` puts ONNX Runtime and the model.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ISA_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("isa")
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

#[derive(Deserialize)]
struct ModelConfig {
    hidden_size: usize,
    num_attention_heads: Option<usize>,
}

impl EmbedderConfig {
    /// A configuration for a sentence-transformers model directory holding `model.onnx`,
    /// `tokenizer.json`, and optionally `config.json` (for `hidden_size` and
    /// `num_attention_heads`) and
    /// `sentence_bert_config.json` (for `max_seq_length`); defaults are MiniLM's 384 and 256.
    pub fn from_model_dir(model_dir: &Path, runtime_library: &Path) -> Result<Self> {
        let read_json = |name: &str| -> Result<Option<String>> {
            let path = model_dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Config(format!(
                    "cannot read {}: {e}",
                    path.display()
                ))),
            }
        };
        let parse_err = |name: &str, e: serde_json::Error| {
            Error::Config(format!(
                "{} is not valid: {e}",
                model_dir.join(name).display()
            ))
        };
        let max_seq_length = match read_json("sentence_bert_config.json")? {
            Some(s) => {
                serde_json::from_str::<SentenceBertConfig>(&s)
                    .map_err(|e| parse_err("sentence_bert_config.json", e))?
                    .max_seq_length
            }
            None => 256,
        };
        let (dimensions, attention_heads) = match read_json("config.json")? {
            Some(s) => {
                let model = serde_json::from_str::<ModelConfig>(&s)
                    .map_err(|e| parse_err("config.json", e))?;
                (model.hidden_size, model.num_attention_heads)
            }
            None => (384, None),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(EmbedderConfig {
            runtime_library: runtime_library.to_path_buf(),
            model_file: model_dir.join("model.onnx"),
            tokenizer_file: model_dir.join("tokenizer.json"),
            dimensions,
            attention_heads,
            products: Products::IsaInt8,
            max_seq_length,
            pooling: Pooling::Mean,
            normalize: true,
            query_prefix: String::new(),
            document_prefix: String::new(),
            workers: 1,
            intra_threads: cores,
            queue_capacity: 256,
            batch_token_budget: 512,
            cache_capacity: 4096,
        })
    }

    /// Reads `ISA_EMBEDDING_MODEL_DIR` (default `$ISA_CACHE/models/all-MiniLM-L6-v2`) and
    /// `ISA_ONNXRUNTIME_LIB` (default `$ISA_CACHE/onnxruntime/libonnxruntime.so`), plus optional
    /// overrides `ISA_EMBEDDING_POOLING` (`mean`|`cls`), `ISA_EMBEDDING_QUERY_PREFIX`,
    /// `ISA_EMBEDDING_DOCUMENT_PREFIX`, `ISA_EMBEDDING_WORKERS`, `ISA_EMBEDDING_THREADS`,
    /// `ISA_EMBEDDING_BATCH_TOKENS`, `ISA_EMBEDDING_FUSION` (`on`, the default, or `off` to
    /// run the model as written) and `ISA_EMBEDDING_INT8` (`on`, the default; `onnxruntime` for
    /// ONNX Runtime's int8 kernel instead of the embedder's own; `off` to keep every product in
    /// f32).
    pub fn from_env() -> Result<Self> {
        let cache = default_cache_dir();
        let env_path = |name: &str, default: PathBuf| {
            std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
        };
        let model_dir = env_path(
            "ISA_EMBEDDING_MODEL_DIR",
            cache.join("models").join("all-MiniLM-L6-v2"),
        );
        let lib = env_path(
            "ISA_ONNXRUNTIME_LIB",
            cache.join("onnxruntime").join("libonnxruntime.so"),
        );
        let mut config = Self::from_model_dir(&model_dir, &lib)?;
        if let Ok(p) = std::env::var("ISA_EMBEDDING_POOLING") {
            config.pooling = match p.as_str() {
                "mean" => Pooling::Mean,
                "cls" => Pooling::Cls,
                other => {
                    return Err(Error::Config(format!(
                        "ISA_EMBEDDING_POOLING must be mean or cls, not {other:?}"
                    )));
                }
            };
        }
        if !switch("ISA_EMBEDDING_FUSION")? {
            config.attention_heads = None;
        }
        config.products = match std::env::var("ISA_EMBEDDING_INT8").as_deref() {
            Err(_) | Ok("on") => Products::IsaInt8,
            Ok("onnxruntime") => Products::OnnxRuntimeInt8,
            Ok("off") => Products::F32,
            Ok(other) => {
                return Err(Error::Config(format!(
                    "ISA_EMBEDDING_INT8 must be on, onnxruntime or off, not {other:?}"
                )));
            }
        };
        if let Ok(p) = std::env::var("ISA_EMBEDDING_QUERY_PREFIX") {
            config.query_prefix = p;
        }
        if let Ok(p) = std::env::var("ISA_EMBEDDING_DOCUMENT_PREFIX") {
            config.document_prefix = p;
        }
        for (name, field) in [
            ("ISA_EMBEDDING_WORKERS", &mut config.workers),
            ("ISA_EMBEDDING_THREADS", &mut config.intra_threads),
            ("ISA_EMBEDDING_BATCH_TOKENS", &mut config.batch_token_budget),
        ] {
            if let Ok(v) = std::env::var(name) {
                *field = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Error::Config(format!("{name} must be a positive integer, not {v:?}"))
                })?;
            }
        }
        Ok(config)
    }
}
