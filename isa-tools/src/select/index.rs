//! The in-memory index shared by the dense, lexical and hybrid selectors.

use std::collections::HashMap;

use isa_core::{IndexItem, Result, Scored, SelectionQuery};

use super::{
    bm25::Bm25Index,
    kernel::dot_rows,
    quantized::{QuantizedRows, exact},
};

/// One immutable version of the index. Updates build a new snapshot and swap it in whole, so a
/// reader holds either the old or the new version, never half of one.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub items: Vec<IndexItem>,
    /// Row `i` is item `i`'s unit vector; empty when the selector has no dense part.
    pub vectors: Vec<f32>,
    pub dims: usize,
    pub bm25: Option<Bm25Index>,
    pub positions: HashMap<String, usize>,
    /// Int8 codes of `vectors`, for dense-only selection.
    pub quantized: Option<QuantizedRows>,
}

impl Snapshot {
    /// Bytes of vectors one query reads: int8 codes when dense-only, floats otherwise.
    pub fn scan_bytes(&self) -> usize {
        match self.quantized {
            Some(_) => self.vectors.len(),
            None => self.vectors.len() * std::mem::size_of::<f32>(),
        }
    }

    /// A new snapshot: `self` minus `removed` ids, with `added` items (and their vectors, when
    /// dense) replacing any with the same id.
    pub fn updated(
        &self,
        removed: &[String],
        added: Vec<IndexItem>,
        added_vectors: Vec<Vec<f32>>,
        strategy: Strategy,
    ) -> Snapshot {
        let replaced: std::collections::HashSet<&str> = removed
            .iter()
            .map(String::as_str)
            .chain(added.iter().map(|i| i.id.as_str()))
            .collect();
        let mut items = Vec::with_capacity(self.items.len() + added.len());
        let mut vectors = Vec::with_capacity(self.vectors.len() + added_vectors.len() * self.dims);
        let dims = added_vectors.first().map_or(self.dims, Vec::len);
        for (i, item) in self.items.iter().enumerate() {
            if !replaced.contains(item.id.as_str()) {
                items.push(item.clone());
                if self.dims > 0 {
                    vectors.extend_from_slice(&self.vectors[i * self.dims..(i + 1) * self.dims]);
                }
            }
        }
        items.extend(added);
        for v in added_vectors {
            vectors.extend(v);
        }
        let positions = items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.id.clone(), i))
            .collect();
        let bm25 = (!matches!(strategy, Strategy::Dense)).then(|| Bm25Index::build(&items));
        let quantized = (strategy == Strategy::Dense).then(|| QuantizedRows::build(&vectors, dims));
        Snapshot {
            items,
            vectors,
            dims,
            bm25,
            positions,
            quantized,
        }
    }
}

/// How dense and lexical scores combine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// Cosine similarity of unit vectors.
    Dense,
    /// BM25, divided by the query's best BM25 score so it lies in `[0, 1]`.
    Lexical,
    /// `dense_weight x dense + (1 - dense_weight) x lexical`, both normalised per query (dense
    /// by min-max over the admitted items, lexical by the best score).
    Hybrid {
        /// Weight of the dense score in `[0, 1]`.
        dense_weight: f32,
    },
}

/// Scores every item for one query text (zero for items the query does not admit), with the
/// text's relevance as [`Ranking::relevance`] defines it. `dense` is every item's cosine with the
/// text, when the strategy has a dense part.
fn score_all(
    strategy: Strategy,
    text: &str,
    dense: Option<Vec<f32>>,
    bm25: Option<&Bm25Index>,
    admitted: &[bool],
) -> Result<(Vec<f32>, f32)> {
    let best_admitted = |scores: &[f32]| {
        scores
            .iter()
            .zip(admitted)
            .enumerate()
            .filter(|(_, (_, admitted))| **admitted)
            .map(|(i, (&s, _))| (i, s))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let bm25 = bm25.map(|bm25| (bm25, bm25.scores(text)));
    let relevance = match (&dense, &bm25) {
        (Some(d), _) => best_admitted(d).map_or(0.0, |(_, s)| s.clamp(0.0, 1.0)),
        (None, Some((bm25, scores))) => match best_admitted(scores) {
            Some((best, s)) if s > 0.0 => bm25.coverage(text, best),
            _ => 0.0,
        },
        (None, None) => 0.0,
    };
    let lexical = bm25.map(|(_, mut scores)| {
        let max = scores.iter().copied().fold(0f32, f32::max);
        if max > 0.0 {
            scores.iter_mut().for_each(|s| *s /= max);
        }
        scores
    });
    let mut scores: Vec<f32> = match (strategy, dense, lexical) {
        (Strategy::Dense, Some(d), _) => d.into_iter().map(|s| s.clamp(0.0, 1.0)).collect(),
        (Strategy::Lexical, _, Some(l)) => l,
        (Strategy::Hybrid { dense_weight }, Some(d), Some(l)) => {
            let w = dense_weight.clamp(0.0, 1.0);
            let d = min_max(d, admitted);
            d.iter()
                .zip(&l)
                .map(|(d, l)| w * d + (1.0 - w) * l)
                .collect()
        }
        _ => {
            return Err(isa_core::Error::internal(
                "selector index lacks the scores its strategy needs",
            ));
        }
    };
    for (s, &admitted) in scores.iter_mut().zip(admitted) {
        if !admitted {
            *s = 0.0;
        }
    }
    Ok((scores, relevance))
}

/// The best `top_k` `(item, score)` pairs with a positive score at or above the query's
/// `min_score`.
fn best(query: &SelectionQuery, scores: &[f32]) -> Vec<(usize, f32)> {
    let min_score = query.min_score.unwrap_or(f32::MIN);
    top_k(
        scores
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s >= min_score && s > 0.0),
        query.top_k,
    )
}

/// A clause's score counts this much against the whole request's, so clauses fill the ranks
/// below a strong match for the whole request instead of displacing it.
pub const CLAUSE_DISCOUNT: f32 = 0.85;

/// The items a selection returns, and how relevant its request is to the index at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranking {
    /// The selected items, best first; none when `relevance` is below the query's
    /// `min_relevance`.
    pub items: Vec<Scored>,
    /// How well the request matches the best admitted item, in `[0, 1]`, whatever the other
    /// items score: with an embedder, the cosine similarity of the request's embedding with the
    /// closest item's document (a clause's counts [`CLAUSE_DISCOUNT`] times its own); lexical
    /// selection, the share of the request's term weight (idf) that the best BM25 match
    /// contains.
    pub relevance: f32,
}

impl Ranking {
    /// The ranking as the query asks for it: no items when the request's relevance is below
    /// the query's `min_relevance`.
    pub(crate) fn floored(mut self, query: &SelectionQuery) -> Ranking {
        if query.min_relevance.is_some_and(|min| self.relevance < min) {
            self.items.clear();
        }
        self
    }
}

/// Scores the whole request and each of its clauses, and keeps each item's best (clauses
/// discounted), so a request that asks for two things finds tools for both. `texts[0]` is the
/// whole request.
pub(crate) fn rank(
    snapshot: &Snapshot,
    strategy: Strategy,
    query: &SelectionQuery,
    texts: &[String],
    vectors: &[Vec<f32>],
) -> Result<Ranking> {
    if snapshot.items.is_empty() || query.top_k == 0 {
        return Ok(Ranking::default());
    }
    let ranking = match (strategy, &snapshot.quantized) {
        (Strategy::Dense, Some(quantized)) => dense_rank(snapshot, quantized, query, vectors),
        _ => fused_rank(snapshot, strategy, query, texts, vectors)?,
    };
    Ok(ranking.floored(query))
}

/// The texts a request is scored by: the whole request, then each clause of `spans`.
pub(crate) fn request_texts(text: &str, spans: &[std::ops::Range<usize>]) -> Vec<String> {
    std::iter::once(text)
        .chain(spans.iter().map(|span| &text[span.clone()]))
        .map(str::to_string)
        .collect()
}

/// [`rank`] for strategies that score every item in full precision.
fn fused_rank(
    snapshot: &Snapshot,
    strategy: Strategy,
    query: &SelectionQuery,
    texts: &[String],
    vectors: &[Vec<f32>],
) -> Result<Ranking> {
    let dense = vectors
        .iter()
        .map(|q| {
            let mut scores = vec![0f32; snapshot.items.len()];
            dot_rows(&snapshot.vectors, q, &mut scores);
            scores
        })
        .collect();
    let admitted: Vec<bool> = snapshot
        .items
        .iter()
        .map(|item| query.admits(item))
        .collect();
    let (best, relevance) = fuse(
        strategy,
        query,
        texts,
        dense,
        snapshot.bm25.as_ref(),
        &admitted,
    )?;
    Ok(Ranking {
        items: best
            .into_iter()
            .map(|(i, score)| Scored {
                id: snapshot.items[i].id.clone(),
                kind: snapshot.items[i].kind,
                score,
            })
            .collect(),
        relevance,
    })
}

/// The best `top_k` `(item, score)` pairs for a request, and its relevance, from what each of
/// its texts scores against items `0, 1, …`, wherever they are stored: `dense[t]` is every
/// item's cosine with `texts[t]` (none without a dense part), `bm25` indexes the items' terms
/// (at least the texts' terms), `admitted` says which items the query's filters let through.
/// Each item keeps its best score over the texts, clauses (`texts[1..]`) discounted, as [`rank`]
/// says.
pub(crate) fn fuse(
    strategy: Strategy,
    query: &SelectionQuery,
    texts: &[String],
    dense: Vec<Vec<f32>>,
    bm25: Option<&Bm25Index>,
    admitted: &[bool],
) -> Result<(Vec<(usize, f32)>, f32)> {
    let mut dense = dense.into_iter();
    let mut combined: Option<Vec<f32>> = None;
    let mut relevance = 0f32;
    for (i, text) in texts.iter().enumerate() {
        let (scores, text_relevance) = score_all(strategy, text, dense.next(), bm25, admitted)?;
        let discount = if i == 0 { 1.0 } else { CLAUSE_DISCOUNT };
        relevance = relevance.max(discount * text_relevance);
        combined = Some(match combined {
            None => scores,
            Some(mut c) => {
                c.iter_mut()
                    .zip(&scores)
                    .for_each(|(c, s)| *c = c.max(CLAUSE_DISCOUNT * s));
                c
            }
        });
    }
    Ok((
        combined.map(|c| best(query, &c)).unwrap_or_default(),
        relevance,
    ))
}

/// Dense selection as [`rank`] defines it (each text's cosine clamped to `[0, 1]`, clauses
/// discounted, each item's best kept), over int8 codes with bounds, then in full precision for
/// the rows that may make the top k: the same result as scoring every row in f32.
fn dense_rank(
    snapshot: &Snapshot,
    quantized: &QuantizedRows,
    query: &SelectionQuery,
    vectors: &[Vec<f32>],
) -> Ranking {
    let discount = |t: usize| if t == 0 { 1.0 } else { CLAUSE_DISCOUNT };
    let weighted: Vec<(&[f32], f32)> = vectors
        .iter()
        .enumerate()
        .map(|(t, v)| (v.as_slice(), discount(t)))
        .collect();
    let filtered = !query.kinds.is_empty() || !query.tags.is_empty() || !query.exclude.is_empty();
    let admitted = |i: usize| !filtered || query.admits(&snapshot.items[i]);
    let rows = quantized.candidates(&weighted, admitted, query.top_k);
    let exact_scores: Vec<(usize, f32)> = rows
        .into_iter()
        .map(|i| {
            let best = vectors
                .iter()
                .enumerate()
                .map(|(t, v)| {
                    discount(t) * exact(&snapshot.vectors, snapshot.dims, i, v).clamp(0.0, 1.0)
                })
                .fold(0f32, f32::max);
            (i, best)
        })
        .collect();
    // The best row is always a candidate, so the best exact score is the request's relevance.
    let relevance = exact_scores.iter().map(|(_, s)| *s).fold(0f32, f32::max);
    let min_score = query.min_score.unwrap_or(f32::MIN);
    let items = top_k(
        exact_scores
            .iter()
            .map(|(i, s)| (*i, s))
            .filter(|&(_, &s)| s >= min_score && s > 0.0),
        query.top_k,
    )
    .into_iter()
    .map(|(i, score)| Scored {
        id: snapshot.items[i].id.clone(),
        kind: snapshot.items[i].kind,
        score,
    })
    .collect();
    Ranking { items, relevance }
}

/// Rescales scores of admitted items to `[0, 1]` by the query's lowest and highest.
pub(super) fn min_max(mut scores: Vec<f32>, admitted: &[bool]) -> Vec<f32> {
    let (mut lo, mut hi) = (f32::MAX, f32::MIN);
    for (&s, &admitted) in scores.iter().zip(admitted) {
        if admitted {
            lo = lo.min(s);
            hi = hi.max(s);
        }
    }
    let range = hi - lo;
    for s in &mut scores {
        *s = if range > f32::EPSILON {
            ((*s - lo) / range).clamp(0.0, 1.0)
        } else {
            1.0
        };
    }
    scores
}

/// The `k` highest `(index, score)` pairs, best first; ties go to the lower index so results are
/// deterministic.
fn top_k<'a>(scores: impl Iterator<Item = (usize, &'a f32)>, k: usize) -> Vec<(usize, f32)> {
    use std::{cmp::Reverse, collections::BinaryHeap};

    #[derive(PartialEq)]
    struct Entry(f32, Reverse<usize>);
    impl Eq for Entry {}
    impl PartialOrd for Entry {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Entry {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
        }
    }

    // A min-heap of the best k so far: the root is the weakest kept entry.
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::with_capacity(k + 1);
    for (i, &s) in scores {
        let entry = Entry(s, Reverse(i));
        if heap.len() < k {
            heap.push(Reverse(entry));
        } else if heap.peek().is_some_and(|Reverse(weakest)| entry > *weakest) {
            heap.pop();
            heap.push(Reverse(entry));
        }
    }
    let mut best: Vec<(usize, f32)> = heap
        .into_iter()
        .map(|Reverse(Entry(s, Reverse(i)))| (i, s))
        .collect();
    best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use isa_core::{ItemKind, ToolSpec};

    /// Unit vectors from a fixed sequence, with clusters so that scores near the top are close.
    fn vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..8)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let mut v: Vec<f32> = centres[i % 8].iter().map(|c| c + 0.3 * next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect()
    }

    #[test]
    fn dense_selection_over_int8_codes_equals_full_precision_scoring() {
        // 6,001 x 384 codes (2.3 MB) are scanned in parallel parts; the last block of 16 rows
        // holds one.
        let (n, dims) = (6001, 384);
        let items: Vec<IndexItem> = (0..n)
            .map(|i| {
                let mut item = IndexItem::from_tool(&ToolSpec::new(format!("t{i}"), "x"));
                if i % 5 == 0 {
                    item.kind = ItemKind::Prompt;
                }
                item
            })
            .collect();
        let rows = vectors(n, dims, 7);
        let quantized =
            Snapshot::default().updated(&[], items.clone(), rows.clone(), Strategy::Dense);
        // Queries of 7-bit codes, as on a CPU with AVX2 but not VNNI, whatever this one has.
        let mut narrow =
            Snapshot::default().updated(&[], items.clone(), rows.clone(), Strategy::Dense);
        if let Some(codes) = narrow.quantized.as_mut() {
            codes.query_limit = 63;
        }
        let mut full = Snapshot::default().updated(&[], items, rows, Strategy::Dense);
        full.quantized = None;
        let queries = vectors(40, dims, 99);
        for (q, k) in queries.chunks(2).zip([1usize, 5, 10, 50].iter().cycle()) {
            for query in [
                SelectionQuery::new("", *k),
                SelectionQuery::new("", *k).kinds([ItemKind::Prompt]),
                SelectionQuery::new("", *k).exclude(["t0", "t8", "t16"]),
                SelectionQuery::new("", *k).min_score(0.5),
            ] {
                for vectors in [&q[..1], q] {
                    let texts = vec![String::new(); vectors.len()];
                    let slow = rank(&full, Strategy::Dense, &query, &texts, vectors).unwrap();
                    assert!(slow.relevance > 0.0);
                    assert!(!slow.items.is_empty() || query.min_score.is_some());
                    for codes in [&quantized, &narrow] {
                        let fast = rank(codes, Strategy::Dense, &query, &texts, vectors).unwrap();
                        assert_eq!(fast, slow, "k {k}, {} texts", vectors.len());
                    }
                }
            }
        }
    }

    #[test]
    fn top_k_keeps_the_best_in_order_with_stable_ties() {
        let scores = [0.1, 0.9, 0.5, 0.9, 0.3];
        let best = top_k(scores.iter().enumerate(), 3);
        assert_eq!(best, vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
        assert!(top_k(scores.iter().enumerate(), 0).is_empty());
        assert_eq!(top_k(scores.iter().enumerate(), 10).len(), 5);
    }
}
