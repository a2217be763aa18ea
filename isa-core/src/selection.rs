//! Tool selection: embedders and selectors that pick the few tools, prompts and resources a
//! request needs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, ToolSpec};

/// Whether a text is a search query or a document being indexed. Some models (E5, BGE) prefix
/// the two differently; the embedder applies its configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextKind {
    /// A user request being matched against the index.
    Query,
    /// A tool, prompt or resource description being indexed.
    Document,
}

/// Turns texts into fixed-length, L2-normalised vectors.
///
/// One required method, [`Embedder::embed`]; [`Embedder::embed_one`] is derived from it.
/// Implementations run inference off the async runtime and answer
/// [`Error::Overloaded`] when their queue is full.
///
/// ```
/// use isa_core::{async_trait, Embedder, Result, TextKind};
///
/// /// Counts letters a..z: a toy embedder for tests.
/// struct Letters;
///
/// #[async_trait]
/// impl Embedder for Letters {
///     fn dimensions(&self) -> usize {
///         26
///     }
///     async fn embed(&self, texts: &[String], _kind: TextKind) -> Result<Vec<Vec<f32>>> {
///         Ok(texts
///             .iter()
///             .map(|t| {
///                 let mut v = vec![0.0f32; 26];
///                 for b in t.bytes().filter(u8::is_ascii_lowercase) {
///                     v[(b - b'a') as usize] += 1.0;
///                 }
///                 let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
///                 v.iter().map(|x| x / norm).collect()
///             })
///             .collect())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let v = Letters.embed_one("abba", TextKind::Query).await.unwrap();
/// assert!((v[0] - v[1]).abs() < 1e-6);
/// # });
/// ```
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Length of every vector this embedder returns.
    fn dimensions(&self) -> usize;

    /// Embeds a batch of texts; the result has one L2-normalised vector per text, in order.
    async fn embed(&self, texts: &[String], kind: TextKind) -> Result<Vec<Vec<f32>>>;

    /// Embeds `text` and each part of it named by a byte range in `parts`: `1 + parts.len()`
    /// vectors, the whole text's first. A request that asks for several things is scored by
    /// its clauses too. The default embeds each part as a text of its own, in one batch with
    /// the whole; an embedder that pools token states can pool each part's tokens from one
    /// run over the whole text instead, at the cost of one text. A range that is not within
    /// the text, on character boundaries, is refused.
    async fn embed_with_parts(
        &self,
        text: &str,
        parts: &[std::ops::Range<usize>],
        kind: TextKind,
    ) -> Result<Vec<Vec<f32>>> {
        let mut texts = vec![text.to_string()];
        texts.extend(part_texts(text, parts)?);
        self.embed(&texts, kind).await
    }

    /// Embeds one text.
    async fn embed_one(&self, text: &str, kind: TextKind) -> Result<Vec<f32>> {
        let mut vectors = self.embed(&[text.to_string()], kind).await?;
        vectors
            .pop()
            .ok_or_else(|| Error::internal("embedder returned no vector"))
    }

    /// Counters for `/stats` and `/metrics`, when the embedder keeps them.
    fn stats(&self) -> Option<EmbedderStats> {
        None
    }
}

/// The parts of `text` that `parts` names, refusing a range that is not within it on character
/// boundaries.
pub fn part_texts(text: &str, parts: &[std::ops::Range<usize>]) -> Result<Vec<String>> {
    parts
        .iter()
        .map(|range| {
            text.get(range.clone())
                .map(str::to_string)
                .ok_or_else(|| Error::invalid(format!("{range:?} is not a part of the text")))
        })
        .collect()
}

/// The three kinds of things an MCP server offers, all of which are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A tool.
    Tool,
    /// A prompt.
    Prompt,
    /// A resource or resource template.
    Resource,
}

/// What a selector indexes about one tool, prompt or resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexItem {
    /// Unique id across all kinds, such as `web_search` or `github/create_issue`.
    pub id: String,
    /// Which kind of item this is.
    pub kind: ItemKind,
    /// Its name as clients see it.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Parameter (or prompt argument) names and descriptions.
    pub params: Vec<(String, String)>,
    /// Tags for filtering.
    pub tags: Vec<String>,
}

impl IndexItem {
    /// The index entry of a tool, with id = name.
    pub fn from_tool(spec: &ToolSpec) -> Self {
        IndexItem {
            id: spec.name.clone(),
            kind: ItemKind::Tool,
            name: spec.name.clone(),
            description: spec.description.clone(),
            params: spec
                .parameters()
                .map(|(n, d)| (n.to_string(), d.to_string()))
                .collect(),
            tags: spec.tags.clone(),
        }
    }

    /// The text a dense embedder sees for this item: its name made readable (separators become
    /// spaces, camelCase is split, so `getFlightStatus` reads `get Flight Status`), then its
    /// description, then its parameters' names made readable the same way (measured in
    /// `docs/selection.md`: their descriptions as well did less).
    ///
    /// ```
    /// use isa_core::{IndexItem, ToolSpec};
    /// let item = IndexItem::from_tool(&ToolSpec::new("FinanceTool", "Stock quotes"));
    /// assert_eq!(item.document_text(), "Finance Tool: Stock quotes");
    /// let mut item = IndexItem::from_tool(&ToolSpec::new("get_quote", "A stock's price"));
    /// item.params = vec![("ticker".into(), "The symbol".into()), ("asOfDate".into(), String::new())];
    /// assert_eq!(item.document_text(), "get quote: A stock's price Parameters: ticker, as Of Date.");
    /// ```
    pub fn document_text(&self) -> String {
        let mut text = readable(&self.name);
        if !self.description.is_empty() {
            text.push_str(": ");
            text.push_str(&self.description);
        }
        if !self.params.is_empty() {
            let names: Vec<String> = self.params.iter().map(|(name, _)| readable(name)).collect();
            text.push_str(" Parameters: ");
            text.push_str(&names.join(", "));
            text.push('.');
        }
        text
    }
}

/// An identifier as words: `_ - . /` become spaces and camelCase is split.
fn readable(name: &str) -> String {
    let mut words = String::with_capacity(name.len() + 8);
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if matches!(c, '_' | '-' | '.' | '/') {
            words.push(' ');
        } else {
            if c.is_uppercase() && previous.is_some_and(char::is_lowercase) {
                words.push(' ');
            }
            words.push(c);
        }
        previous = Some(c);
    }
    words
}

/// A selection request.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionQuery {
    /// The user's request, in natural language.
    pub text: String,
    /// How many items to return at most.
    pub top_k: usize,
    /// Drop matches scoring below this (scores are in `[0, 1]` for every selector); returns fewer
    /// items, even none, rather than padding with poor matches.
    pub min_score: Option<f32>,
    /// Return nothing when no admitted item is relevant to the request by at least this much:
    /// the request matches nothing offered. Scores are relative to one request (the hybrid
    /// selector scales them per request, so its best is near 1 whatever the request), so
    /// `min_score` cannot tell such a request; relevance is absolute. Each selector documents
    /// what it measures (the in-memory ones: `isa_tools::select::Ranking::relevance`).
    pub min_relevance: Option<f32>,
    /// Only these kinds; empty means all kinds.
    pub kinds: Vec<ItemKind>,
    /// Only items carrying at least one of these tags; empty means no tag filter.
    pub tags: Vec<String>,
    /// Never return these ids.
    pub exclude: Vec<String>,
}

impl SelectionQuery {
    /// A query for the `top_k` best tools, prompts and resources, with no filters.
    ///
    /// ```
    /// use isa_core::{ItemKind, SelectionQuery};
    /// let q = SelectionQuery::new("find flights to Lisbon", 5).kinds([ItemKind::Tool]).min_score(0.3);
    /// assert_eq!(q.top_k, 5);
    /// ```
    pub fn new(text: impl Into<String>, top_k: usize) -> Self {
        SelectionQuery {
            text: text.into(),
            top_k,
            min_score: None,
            min_relevance: None,
            kinds: Vec::new(),
            tags: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// Restricts the kinds returned.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = ItemKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Sets the minimum score.
    pub fn min_score(mut self, min: f32) -> Self {
        self.min_score = Some(min);
        self
    }

    /// Sets the minimum relevance below which nothing is returned.
    pub fn min_relevance(mut self, min: f32) -> Self {
        self.min_relevance = Some(min);
        self
    }

    /// Restricts to items with one of these tags.
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Excludes these ids.
    pub fn exclude(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.exclude = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Whether an item passes the kind, tag and exclusion filters.
    pub fn admits(&self, item: &IndexItem) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&item.kind))
            && (self.tags.is_empty() || item.tags.iter().any(|t| self.tags.contains(t)))
            && !self.exclude.contains(&item.id)
    }
}

/// One selected item and its score (higher is better).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The item's id.
    pub id: String,
    /// Its kind.
    pub kind: ItemKind,
    /// Its score in `[0, 1]`.
    pub score: f32,
}

/// Picks the items that matter for a request out of an index that changes at run time.
///
/// Implementations: exact dense, BM25 and hybrid in memory, and dense or hybrid on PostgreSQL
/// with pgvector, in `isa-tools`.
/// Updates are atomic for readers: a concurrent [`ToolSelector::select`] sees the index before or
/// after an update, never half of it, and never returns a removed item.
///
/// ```
/// use std::sync::Mutex;
/// use isa_core::{async_trait, IndexItem, Result, Scored, SelectionQuery, ToolSelector};
///
/// /// Scores by the share of query words found in the description.
/// #[derive(Default)]
/// struct WordOverlap(Mutex<Vec<IndexItem>>);
///
/// #[async_trait]
/// impl ToolSelector for WordOverlap {
///     async fn upsert(&self, items: Vec<IndexItem>) -> Result<()> {
///         let mut index = self.0.lock().unwrap();
///         index.retain(|old| items.iter().all(|new| new.id != old.id));
///         index.extend(items);
///         Ok(())
///     }
///     async fn remove(&self, ids: &[String]) -> Result<()> {
///         self.0.lock().unwrap().retain(|item| !ids.contains(&item.id));
///         Ok(())
///     }
///     async fn select(&self, query: &SelectionQuery) -> Result<Vec<Scored>> {
///         let words: Vec<&str> = query.text.split_whitespace().collect();
///         let mut scored: Vec<Scored> = self.0.lock().unwrap().iter()
///             .filter(|item| query.admits(item))
///             .map(|item| {
///                 let hits = words.iter().filter(|w| item.description.contains(*w)).count();
///                 Scored { id: item.id.clone(), kind: item.kind, score: hits as f32 / words.len().max(1) as f32 }
///             })
///             .filter(|s| s.score >= query.min_score.unwrap_or(0.0))
///             .collect();
///         scored.sort_by(|a, b| b.score.total_cmp(&a.score));
///         scored.truncate(query.top_k);
///         Ok(scored)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let selector = WordOverlap::default();
/// let spec = isa_core::ToolSpec::new("weather", "current weather for a city");
/// selector.upsert(vec![IndexItem::from_tool(&spec)]).await.unwrap();
/// let hits = selector.select(&SelectionQuery::new("weather in Oslo", 3)).await.unwrap();
/// assert_eq!(hits[0].id, "weather");
/// selector.remove(&["weather".to_string()]).await.unwrap();
/// assert!(selector.select(&SelectionQuery::new("weather", 3)).await.unwrap().is_empty());
/// # });
/// ```
#[async_trait]
pub trait ToolSelector: Send + Sync {
    /// Adds items, replacing any with the same id. An id given twice in one call is refused
    /// ([`refuse_duplicate_ids`]): which of the two should win is not knowable.
    async fn upsert(&self, items: Vec<IndexItem>) -> Result<()>;

    /// Removes items by id; unknown ids are ignored.
    async fn remove(&self, ids: &[String]) -> Result<()>;

    /// Returns at most `query.top_k` admitted items, best first, each scoring at least
    /// `query.min_score`.
    async fn select(&self, query: &SelectionQuery) -> Result<Vec<Scored>>;

    /// What `/stats` reports about the index; `None` for an index that keeps no statistics.
    fn stats(&self) -> Option<IndexStats> {
        None
    }
}

/// What an index reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexStats {
    /// Where the index lives: `memory` (this process) or `pgvector` (shared).
    pub backend: String,
    /// Documents this process embedded to build or update it; a server that joined a shared
    /// index already holding its catalog embedded none.
    pub documents_embedded: u64,
}

/// `Err(InvalidInput)` naming the first id that appears twice in `items`: what every
/// [`ToolSelector::upsert`] checks before changing anything.
pub fn refuse_duplicate_ids(items: &[IndexItem]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    match items.iter().find(|i| !seen.insert(i.id.as_str())) {
        Some(dup) => Err(Error::invalid(format!(
            "item id {:?} appears twice in one upsert",
            dup.id
        ))),
        None => Ok(()),
    }
}

/// A snapshot of the embedder's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbedderStats {
    /// Query embeddings answered from the cache.
    pub cache_hits: u64,
    /// Query embeddings that had to be computed.
    pub cache_misses: u64,
    /// Requests refused because the queue was full.
    pub overloaded: u64,
    /// Requests not embedded because their caller had gone (timed out or disconnected) before
    /// a worker took them from the queue.
    pub abandoned: u64,
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
