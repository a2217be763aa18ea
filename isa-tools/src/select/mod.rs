//! Tool selection in memory: exact dense, BM25 and hybrid, over tools, prompts and resources.

mod analyze;
mod bm25;
pub mod eval;
mod index;
mod kernel;
#[cfg(feature = "pgvector")]
pub mod pgvector;
mod quantized;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use isa_core::{
    Embedder, Error, IndexItem, IndexStats, Result, Scored, SelectionQuery, TextKind, ToolSelector,
};
use parking_lot::RwLock;

pub use analyze::{clause_spans, clauses, terms};
pub use index::{CLAUSE_DISCOUNT, Ranking, Strategy};
use index::{Snapshot, rank, request_texts};

/// The dense weight of [`Strategy::Hybrid`] by default, chosen on the tuning half of MetaTool's
/// single-tool queries (see `docs/selection.md`).
pub const DEFAULT_DENSE_WEIGHT: f32 = 0.8;

/// The [`Ranking::relevance`] below which `isa-mcp serve` answers that no tool fits, for the
/// default embedding model (all-MiniLM-L6-v2): chosen on the tuning halves of MetaTool and BFCL
/// against BFCL's irrelevance requests (see `docs/selection.md`). Another model needs its own.
pub const DEFAULT_MIN_RELEVANCE: f32 = 0.225;

/// Indexes whose scoring reads more than this many bytes are scored on rayon's threads, not the
/// async runtime's (an int8 scan of this size takes tens of microseconds).
const INLINE_SCAN_BYTES: usize = 800_000;

/// An in-memory [`ToolSelector`].
///
/// Each update builds a new immutable snapshot and swaps it in, so concurrent selections see the
/// index before or after an update, never during it, and a removed item is never returned once
/// [`ToolSelector::remove`] has returned. Document vectors are computed once per upsert.
///
/// ```no_run
/// use std::sync::Arc;
/// use isa_core::{IndexItem, SelectionQuery, ToolSelector, ToolSpec};
/// use isa_tools::select::LocalSelector;
///
/// # async fn demo(embedder: Arc<dyn isa_core::Embedder>) -> isa_core::Result<()> {
/// let selector = LocalSelector::hybrid(embedder);
/// selector.upsert(vec![IndexItem::from_tool(&ToolSpec::new("get_weather", "Weather for a city"))]).await?;
/// let best = selector.select(&SelectionQuery::new("is it raining in Oslo?", 5)).await?;
/// # Ok(()) }
/// ```
pub struct LocalSelector {
    strategy: Strategy,
    embedder: Option<Arc<dyn Embedder>>,
    current: RwLock<Arc<Snapshot>>,
    /// Serialises writers so two updates cannot lose each other's changes.
    writer: tokio::sync::Mutex<()>,
    /// Documents embedded since the selector was made.
    embedded: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LocalSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSelector")
            .field("strategy", &self.strategy)
            .field("items", &self.len())
            .finish()
    }
}

impl LocalSelector {
    /// Exact dense selection: cosine similarity against every item.
    pub fn dense(embedder: Arc<dyn Embedder>) -> Self {
        Self::with_strategy(Strategy::Dense, Some(embedder))
    }

    /// Lexical selection with BM25; needs no model.
    pub fn lexical() -> Self {
        Self::with_strategy(Strategy::Lexical, None)
    }

    /// Hybrid selection with [`DEFAULT_DENSE_WEIGHT`].
    pub fn hybrid(embedder: Arc<dyn Embedder>) -> Self {
        Self::with_strategy(
            Strategy::Hybrid {
                dense_weight: DEFAULT_DENSE_WEIGHT,
            },
            Some(embedder),
        )
    }

    /// Any strategy; dense and hybrid strategies need an embedder (a missing one is reported by
    /// the first update or selection).
    pub fn with_strategy(strategy: Strategy, embedder: Option<Arc<dyn Embedder>>) -> Self {
        LocalSelector {
            strategy,
            embedder,
            current: RwLock::new(Arc::new(Snapshot::default())),
            writer: tokio::sync::Mutex::new(()),
            embedded: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Number of indexed items.
    pub fn len(&self) -> usize {
        self.current.read().items.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indexed item with this id.
    pub fn item(&self, id: &str) -> Option<IndexItem> {
        let snapshot = self.current.read().clone();
        snapshot
            .positions
            .get(id)
            .map(|&i| snapshot.items[i].clone())
    }

    fn uses_dense(&self) -> bool {
        !matches!(self.strategy, Strategy::Lexical)
    }

    fn embedder(&self) -> Result<&Arc<dyn Embedder>> {
        self.embedder.as_ref().ok_or_else(|| {
            Error::Config(format!("{:?} selection needs an embedder", self.strategy))
        })
    }

    async fn update(&self, removed: Vec<String>, added: Vec<IndexItem>) -> Result<()> {
        let vectors = if self.uses_dense() && !added.is_empty() {
            let texts: Vec<String> = added.iter().map(IndexItem::document_text).collect();
            let vectors = self.embedder()?.embed(&texts, TextKind::Document).await?;
            self.embedded
                .fetch_add(texts.len() as u64, std::sync::atomic::Ordering::Relaxed);
            vectors
        } else {
            Vec::new()
        };
        let _writer = self.writer.lock().await;
        let base = self.current.read().clone();
        let strategy = self.strategy;
        let next =
            tokio::task::spawn_blocking(move || base.updated(&removed, added, vectors, strategy))
                .await
                .map_err(|e| Error::internal(format!("index update failed: {e}")))?;
        *self.current.write() = Arc::new(next);
        Ok(())
    }
}

#[async_trait]
impl ToolSelector for LocalSelector {
    async fn upsert(&self, items: Vec<IndexItem>) -> Result<()> {
        isa_core::refuse_duplicate_ids(&items)?;
        self.update(Vec::new(), items).await
    }

    async fn remove(&self, ids: &[String]) -> Result<()> {
        self.update(ids.to_vec(), Vec::new()).await
    }

    fn stats(&self) -> Option<IndexStats> {
        Some(IndexStats {
            backend: "memory".into(),
            documents_embedded: self.embedded.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    async fn select(&self, query: &SelectionQuery) -> Result<Vec<Scored>> {
        Ok(self.assess(query).await?.items)
    }
}

impl LocalSelector {
    /// Selects as [`ToolSelector::select`] does, and says how relevant the request is to the
    /// index ([`Ranking::relevance`]), so a caller can measure or choose a `min_relevance`.
    pub async fn assess(&self, query: &SelectionQuery) -> Result<Ranking> {
        // Clauses help embeddings, which average a request's meaning; BM25 already sums over every
        // term of the whole request, so lexical selection scores it once.
        let (texts, vectors) = if self.uses_dense() {
            let spans = clause_spans(&query.text);
            let vectors = self
                .embedder()?
                .embed_with_parts(&query.text, &spans, TextKind::Query)
                .await?;
            (request_texts(&query.text, &spans), vectors)
        } else {
            (vec![query.text.clone()], Vec::new())
        };
        let snapshot = self.current.read().clone();
        let strategy = self.strategy;
        if snapshot.scan_bytes() <= INLINE_SCAN_BYTES {
            return rank(&snapshot, strategy, query, &texts, &vectors);
        }
        // Larger scans run on rayon's pool, one thread per core, which also splits the scan
        // across the cores (see `quantized`), rather than on a thread of the async runtime.
        let query = query.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            // A panic on rayon's pool would abort the process: it becomes this request's error.
            let ranked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rank(&snapshot, strategy, &query, &texts, &vectors)
            }))
            .unwrap_or_else(|_| Err(Error::internal("selection failed: its scoring panicked")));
            // The receiver is gone only if the caller stopped waiting.
            let _ = done.send(ranked);
        });
        result
            .await
            .map_err(|_| Error::internal("selection failed: its worker stopped"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isa_core::ToolSpec;

    /// A deterministic unit vector per text, the same for queries and documents: a query equal
    /// to a document's text scores 1 against it.
    struct HashedTexts;

    #[async_trait]
    impl Embedder for HashedTexts {
        fn dimensions(&self) -> usize {
            384
        }
        async fn embed(&self, texts: &[String], _kind: TextKind) -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|text| {
                    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                    });
                    let mut v: Vec<f32> = (0..384)
                        .map(|_| {
                            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                        })
                        .collect();
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    v.iter_mut().for_each(|x| *x /= norm);
                    v
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn large_indexes_are_scored_on_rayon_with_the_results_of_inline_scoring() {
        let selector = LocalSelector::dense(Arc::new(HashedTexts));
        let items: Vec<IndexItem> = (0..3000)
            .map(|i| IndexItem::from_tool(&ToolSpec::new(format!("tool_{i}"), format!("does {i}"))))
            .collect();
        let wanted = items[1717].document_text();
        selector.upsert(items).await.unwrap();
        let snapshot = selector.current.read().clone();
        assert!(snapshot.scan_bytes() > INLINE_SCAN_BYTES);

        let query = SelectionQuery::new(wanted.clone(), 5);
        let hits = selector.select(&query).await.unwrap();
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].id, "tool_1717");
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{hits:?}");
        let vectors = HashedTexts
            .embed(std::slice::from_ref(&wanted), TextKind::Query)
            .await
            .unwrap();
        let inline = rank(&snapshot, Strategy::Dense, &query, &[wanted], &vectors)
            .unwrap()
            .items;
        assert_eq!(hits, inline);
    }
}
