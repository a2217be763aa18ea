//! BM25 over a tool's name, description and parameters.

use std::collections::HashMap;

use isa_core::IndexItem;

use super::analyze::terms;

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation, weak: tool descriptions are a sentence or two, and a longer one
/// is longer because it says more, not because it repeats itself. Chosen on the tuning half of
/// MetaTool (docs/selection.md): 0.75, the usual value for prose, ranked worst of 0 to 0.75.
const B: f32 = 0.15;
/// Name terms count this many times: a tool's name is its most precise description.
const NAME_WEIGHT: usize = 2;

/// An immutable BM25 index; rebuilt on change (building 10k tools takes milliseconds).
#[derive(Debug, Default, Clone)]
pub(crate) struct Bm25Index {
    /// term -> (document, term frequency)
    postings: HashMap<String, Vec<(u32, f32)>>,
    doc_len: Vec<f32>,
    avg_len: f32,
}

/// The terms of an item, with name terms repeated [`NAME_WEIGHT`] times.
fn item_terms(item: &IndexItem) -> Vec<String> {
    let mut all = Vec::new();
    let name_terms = terms(&item.name);
    for _ in 0..NAME_WEIGHT {
        all.extend(name_terms.iter().cloned());
    }
    all.extend(terms(&item.description));
    for (name, description) in &item.params {
        all.extend(terms(name));
        all.extend(terms(description));
    }
    all
}

/// What BM25 reads of one item: its length in terms and each distinct term's frequency, sorted
/// by term.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TermCounts {
    pub len: f32,
    pub frequencies: Vec<(String, f32)>,
}

impl TermCounts {
    pub fn of(item: &IndexItem) -> Self {
        let item_terms = item_terms(item);
        let len = item_terms.len() as f32;
        let mut tf: HashMap<String, f32> = HashMap::new();
        for t in item_terms {
            *tf.entry(t).or_default() += 1.0;
        }
        let mut frequencies: Vec<(String, f32)> = tf.into_iter().collect();
        frequencies.sort_by(|a, b| a.0.cmp(&b.0));
        TermCounts { len, frequencies }
    }
}

impl Bm25Index {
    pub fn build(items: &[IndexItem]) -> Self {
        Self::from_counts(items.iter().map(TermCounts::of))
    }

    /// The index of documents `0, 1, …` with these counts. An index of only some terms' postings
    /// (every document's length still counted) scores queries of those terms as the whole index
    /// does.
    pub fn from_counts(documents: impl IntoIterator<Item = TermCounts>) -> Self {
        let mut postings: HashMap<String, Vec<(u32, f32)>> = HashMap::new();
        let mut doc_len = Vec::new();
        for (doc, counts) in documents.into_iter().enumerate() {
            doc_len.push(counts.len);
            for (t, f) in counts.frequencies {
                postings.entry(t).or_default().push((doc as u32, f));
            }
        }
        let avg_len = if doc_len.is_empty() {
            0.0
        } else {
            doc_len.iter().sum::<f32>() / doc_len.len() as f32
        };
        Bm25Index {
            postings,
            doc_len,
            avg_len,
        }
    }

    /// The distinct terms of a query.
    pub fn query_terms(query: &str) -> Vec<String> {
        let mut query_terms = terms(query);
        query_terms.sort();
        query_terms.dedup();
        query_terms
    }

    /// BM25's inverse document frequency of a term found in `df` of the documents.
    fn idf(&self, df: usize) -> f32 {
        let (n, df) = (self.doc_len.len() as f32, df as f32);
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// BM25 score of every document for `query` (zero where no term matches).
    pub fn scores(&self, query: &str) -> Vec<f32> {
        let mut scores = vec![0f32; self.doc_len.len()];
        for term in Self::query_terms(query) {
            let Some(posting) = self.postings.get(&term) else {
                continue;
            };
            let idf = self.idf(posting.len());
            for &(doc, tf) in posting {
                let len_norm = 1.0 - B + B * self.doc_len[doc as usize] / self.avg_len.max(1.0);
                scores[doc as usize] += idf * tf * (K1 + 1.0) / (tf + K1 * len_norm);
            }
        }
        scores
    }

    /// The share of the query's term weight (idf, a term no document has weighing most) that
    /// document `doc` contains, in `[0, 1]`: how much of the request the document speaks of.
    pub fn coverage(&self, query: &str, doc: usize) -> f32 {
        let (mut matched, mut total) = (0f32, 0f32);
        for term in Self::query_terms(query) {
            let posting = self.postings.get(&term);
            let idf = self.idf(posting.map_or(0, Vec::len));
            total += idf;
            if posting.is_some_and(|p| p.iter().any(|&(d, _)| d as usize == doc)) {
                matched += idf;
            }
        }
        if total > 0.0 { matched / total } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isa_core::ToolSpec;

    #[test]
    fn ranks_by_matching_terms_and_weighs_names() {
        let items: Vec<IndexItem> = [
            ToolSpec::new("get_weather", "Current conditions for a city"),
            ToolSpec::new("search_flights", "Find flights between airports"),
            ToolSpec::new("news", "Headlines, including weather news"),
        ]
        .iter()
        .map(IndexItem::from_tool)
        .collect();
        let index = Bm25Index::build(&items);
        let s = index.scores("weather in Paris");
        assert!(s[0] > s[2] && s[2] > 0.0 && s[1] == 0.0, "{s:?}");
        let s = index.scores("cheap flights");
        assert!(s[1] > 0.0 && s[0] == 0.0 && s[2] == 0.0, "{s:?}");
        assert!(index.scores("zzz").iter().all(|&x| x == 0.0));
        let partly = index.coverage("cheap flights", 1);
        assert!(partly > 0.0 && partly < 1.0, "{partly}");
        assert_eq!(index.coverage("flights", 1), 1.0);
        assert!(index.coverage("flights to Zzyzx", 1) < 0.5);
        assert_eq!(index.coverage("flights", 0), 0.0);
    }
}
