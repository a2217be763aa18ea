//! Evaluation of selectors: the query file format and retrieval metrics. Catalogs are read by
//! [`crate::catalog`], as the server reads them.
//!
//! Queries: JSON lines `{"id", "query", "gold": [tool ids]}`; requests no tool fits (to measure
//! abstention) have an empty `gold`.

use std::{collections::HashSet, path::Path};

use isa_core::{Error, IndexItem, Result};
use serde::Deserialize;
use serde_json::Value;

/// One evaluation query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvalQuery {
    /// Its id.
    pub id: Value,
    /// The request text.
    pub query: String,
    /// Ids of the tools that answer it.
    pub gold: Vec<String>,
}

/// Reads a queries file, checking each gold id against the catalog; errors name the line.
pub fn load_queries(path: &Path, catalog: &[IndexItem]) -> Result<Vec<EvalQuery>> {
    let known: HashSet<&str> = catalog.iter().map(|i| i.id.as_str()).collect();
    read_queries(path, |query| {
        if query.gold.is_empty() {
            return Err("the query has no gold tools".into());
        }
        match query.gold.iter().find(|g| !known.contains(g.as_str())) {
            Some(missing) => Err(format!("gold tool {missing:?} is not in the catalog")),
            None => Ok(()),
        }
    })
}

/// Reads a file of requests that no tool fits: query lines whose `gold` is empty.
pub fn load_irrelevant(path: &Path) -> Result<Vec<EvalQuery>> {
    read_queries(path, |query| match query.gold.is_empty() {
        true => Ok(()),
        false => Err("the request has gold tools; one that no tool fits has none".into()),
    })
}

/// The query lines of a file, each passing `check`; errors name the line.
fn read_queries(
    path: &Path,
    check: impl Fn(&EvalQuery) -> std::result::Result<(), String>,
) -> Result<Vec<EvalQuery>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read queries {}: {e}", path.display())))?;
    let mut queries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let query: EvalQuery = serde_json::from_str(line).map_err(|e| {
            Error::invalid(format!(
                "{}: not a query line ({{\"id\", \"query\", \"gold\"}}): {e}",
                at()
            ))
        })?;
        check(&query).map_err(|problem| Error::invalid(format!("{}: {problem}", at())))?;
        queries.push(query);
    }
    if queries.is_empty() {
        return Err(Error::invalid(format!("{}: no queries", path.display())));
    }
    Ok(queries)
}

/// Retrieval metrics for one query, with binary relevance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueryMetrics {
    /// NDCG@5.
    pub ndcg5: f64,
    /// NDCG@10.
    pub ndcg10: f64,
    /// Recall@5: share of gold tools in the top 5.
    pub recall5: f64,
    /// Recall@10.
    pub recall10: f64,
    /// 1 when the first result is gold.
    pub hit1: f64,
    /// 1 when every gold tool is in the top 5.
    pub complete5: f64,
}

impl QueryMetrics {
    /// Scores a ranking (best first) against the gold ids.
    ///
    /// ```
    /// use isa_tools::select::eval::QueryMetrics;
    /// let m = QueryMetrics::of(&["b", "a"], &["a".to_string()]);
    /// assert_eq!(m.hit1, 0.0);
    /// assert!((m.ndcg5 - 1.0 / 3f64.log2()).abs() < 1e-12);
    /// ```
    pub fn of<S: AsRef<str>>(ranked: &[S], gold: &[String]) -> Self {
        let gold: HashSet<&str> = gold.iter().map(String::as_str).collect();
        let relevant = |k: usize| -> Vec<bool> {
            ranked
                .iter()
                .take(k)
                .map(|id| gold.contains(id.as_ref()))
                .collect()
        };
        let ndcg = |k: usize| {
            let dcg: f64 = relevant(k)
                .iter()
                .enumerate()
                .filter(|(_, r)| **r)
                .map(|(rank, _)| 1.0 / ((rank + 2) as f64).log2())
                .sum();
            let ideal: f64 = (0..gold.len().min(k))
                .map(|rank| 1.0 / ((rank + 2) as f64).log2())
                .sum();
            if ideal > 0.0 { dcg / ideal } else { 0.0 }
        };
        let found = |k: usize| relevant(k).iter().filter(|r| **r).count() as f64;
        let total = gold.len().max(1) as f64;
        QueryMetrics {
            ndcg5: ndcg(5),
            ndcg10: ndcg(10),
            recall5: found(5) / total,
            recall10: found(10) / total,
            hit1: if relevant(1).first() == Some(&true) {
                1.0
            } else {
                0.0
            },
            complete5: if found(5) == gold.len() as f64 {
                1.0
            } else {
                0.0
            },
        }
    }
}

/// The plain hybrid every selector here is compared with (`isa-mcp tools eval --selector
/// baseline`): BM25 (k1 1.5, b 0.75) over the lower-cased words of a tool's name and description,
/// without stemming or stop words, and the cosine of the whole request's embedding with the
/// tool's name and description ([`IndexItem::document_text`] of the tool without its
/// parameters), each min-max scaled over the catalog per request, fused as
/// `0.3 × BM25 + 0.7 × cosine`. No clause splitting, no parameters.
pub struct Baseline {
    ids: Vec<String>,
    vectors: Vec<Vec<f32>>,
    embedder: std::sync::Arc<dyn isa_core::Embedder>,
    /// term -> (document, term frequency)
    postings: std::collections::HashMap<String, Vec<(usize, f32)>>,
    lengths: Vec<f32>,
}

/// The baseline's words: lower case, split at anything not a letter or digit.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Baseline {
    const K1: f32 = 1.5;
    const B: f32 = 0.75;
    const DENSE_WEIGHT: f32 = 0.7;

    /// Indexes `catalog`, embedding every tool's document.
    pub async fn new(
        catalog: &[IndexItem],
        embedder: std::sync::Arc<dyn isa_core::Embedder>,
    ) -> Result<Self> {
        let documents: Vec<String> = catalog
            .iter()
            .map(|item| {
                let without_parameters = IndexItem {
                    params: Vec::new(),
                    ..item.clone()
                };
                without_parameters.document_text()
            })
            .collect();
        let vectors = embedder
            .embed(&documents, isa_core::TextKind::Document)
            .await?;
        let mut postings: std::collections::HashMap<String, Vec<(usize, f32)>> =
            std::collections::HashMap::new();
        let mut lengths = Vec::with_capacity(catalog.len());
        for (doc, item) in catalog.iter().enumerate() {
            let mut counts: std::collections::HashMap<String, f32> =
                std::collections::HashMap::new();
            let mut length = 0.0;
            for word in words(&item.name).chain(words(&item.description)) {
                *counts.entry(word).or_default() += 1.0;
                length += 1.0;
            }
            lengths.push(length);
            for (word, count) in counts {
                postings.entry(word).or_default().push((doc, count));
            }
        }
        Ok(Baseline {
            ids: catalog.iter().map(|i| i.id.clone()).collect(),
            vectors,
            embedder,
            postings,
            lengths,
        })
    }

    /// The `top_k` tool ids for `query`, best first.
    pub async fn rank(&self, query: &str, top_k: usize) -> Result<Vec<String>> {
        let n = self.ids.len();
        let average = self.lengths.iter().sum::<f32>() / n.max(1) as f32;
        let mut lexical = vec![0f32; n];
        let mut seen = HashSet::new();
        for word in words(query).filter(|w| seen.insert(w.clone())) {
            let Some(posting) = self.postings.get(&word) else {
                continue;
            };
            let df = posting.len() as f32;
            let idf = ((n as f32 - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(doc, tf) in posting {
                let norm = 1.0 - Self::B + Self::B * self.lengths[doc] / average.max(1.0);
                lexical[doc] += idf * tf * (Self::K1 + 1.0) / (tf + Self::K1 * norm);
            }
        }
        let question = self
            .embedder
            .embed(&[query.to_owned()], isa_core::TextKind::Query)
            .await?
            .pop()
            .unwrap_or_default();
        let dense: Vec<f32> = self
            .vectors
            .iter()
            .map(|v| v.iter().zip(&question).map(|(a, b)| a * b).sum())
            .collect();
        let every = vec![true; n];
        let lexical = super::index::min_max(lexical, &every);
        let dense = super::index::min_max(dense, &every);
        let mut order: Vec<usize> = (0..n).collect();
        let fused =
            |i: usize| Self::DENSE_WEIGHT * dense[i] + (1.0 - Self::DENSE_WEIGHT) * lexical[i];
        order.sort_by(|&a, &b| fused(b).total_cmp(&fused(a)));
        Ok(order
            .into_iter()
            .take(top_k)
            .map(|i| self.ids[i].clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::load_catalog;

    #[test]
    fn metrics_follow_the_benchmark_definitions() {
        let gold = vec!["a".to_string(), "b".to_string()];
        let perfect = QueryMetrics::of(&["a", "b", "c"], &gold);
        assert_eq!(
            (
                perfect.ndcg5,
                perfect.recall5,
                perfect.hit1,
                perfect.complete5
            ),
            (1.0, 1.0, 1.0, 1.0)
        );
        let half = QueryMetrics::of(&["x", "a", "y", "z", "w", "b"], &gold);
        assert_eq!(
            (half.recall5, half.recall10, half.hit1, half.complete5),
            (0.5, 1.0, 0.0, 0.0)
        );
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((half.ndcg5 - (1.0 / 3f64.log2()) / ideal).abs() < 1e-12);
        assert!((half.ndcg10 - (1.0 / 3f64.log2() + 1.0 / 7f64.log2()) / ideal).abs() < 1e-12);
        assert_eq!(
            QueryMetrics::of::<&str>(&[], &gold),
            QueryMetrics::default()
        );
    }

    #[test]
    fn loaders_name_the_bad_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let catalog = dir.path().join("catalog.json");
        std::fs::write(
            &catalog,
            r#"{"tools": [{"name": "a", "description": "x"}, {"id": "b2", "name": "b"}]}"#,
        )?;
        let items = load_catalog(&catalog)?;
        assert_eq!(
            items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["a", "b2"]
        );

        let queries = dir.path().join("q.jsonl");
        std::fs::write(
            &queries,
            "{\"id\": 1, \"query\": \"q\", \"gold\": [\"a\"]}\n\n{\"id\": 2, \"query\": \"q\", \"gold\": [\"b\"]}\n",
        )?;
        let err = load_queries(&queries, &items).unwrap_err().to_string();
        assert!(
            err.contains("q.jsonl:3") && err.contains("\"b\" is not in the catalog"),
            "{err}"
        );

        std::fs::write(
            &queries,
            "{\"id\": 1, \"query\": \"q\", \"gold\": [\"a\"]}\n{oops\n",
        )?;
        let err = load_queries(&queries, &items).unwrap_err().to_string();
        assert!(
            err.contains("q.jsonl:2") && err.contains("not a query line"),
            "{err}"
        );

        std::fs::write(
            &queries,
            "{\"id\": 1, \"query\": \"q\", \"gold\": []}\n{\"id\": 2, \"query\": \"q\", \"gold\": [\"a\"]}\n",
        )?;
        let err = load_queries(&queries, &items).unwrap_err().to_string();
        assert!(
            err.contains("q.jsonl:1") && err.contains("no gold"),
            "{err}"
        );
        let err = load_irrelevant(&queries).unwrap_err().to_string();
        assert!(
            err.contains("q.jsonl:2") && err.contains("has gold"),
            "{err}"
        );
        std::fs::write(&queries, "{\"id\": 1, \"query\": \"q\", \"gold\": []}\n")?;
        assert_eq!(load_irrelevant(&queries)?.len(), 1);

        std::fs::write(&catalog, r#"{"tools": []}"#)?;
        assert!(
            load_catalog(&catalog)
                .unwrap_err()
                .to_string()
                .contains("no tools")
        );
        std::fs::write(&catalog, r#"{"tools": [{"description": "no name"}]}"#)?;
        assert!(
            load_catalog(&catalog)
                .unwrap_err()
                .to_string()
                .contains("tool #1 is malformed")
        );
        Ok(())
    }

    /// Every text the same vector: dense scores tie, so the baseline's BM25 decides.
    struct SameVector;

    #[async_trait::async_trait]
    impl isa_core::Embedder for SameVector {
        fn dimensions(&self) -> usize {
            2
        }
        async fn embed(&self, texts: &[String], _: isa_core::TextKind) -> Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
        }
    }

    #[tokio::test]
    async fn the_baseline_ranks_by_words_when_embeddings_tie() {
        let catalog: Vec<IndexItem> = [
            ("get_weather", "Current weather for a city"),
            ("book_flight", "Book a flight between two airports"),
            ("send_email", "Send an email message"),
        ]
        .into_iter()
        .map(|(name, description)| {
            IndexItem::from_tool(&isa_core::ToolSpec::new(name, description))
        })
        .collect();
        let baseline = Baseline::new(&catalog, std::sync::Arc::new(SameVector))
            .await
            .unwrap();
        let ranked = baseline.rank("book me a flight to Oslo", 2).await.unwrap();
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0], "book_flight");
        let ranked = baseline.rank("what is the weather", 3).await.unwrap();
        assert_eq!(ranked[0], "get_weather");
    }
}
