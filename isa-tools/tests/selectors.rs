//! The behaviour every selector must have (`isa_tools::select::testing`), run against the
//! in-memory dense, lexical and hybrid selectors with the real ONNX embedder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use isa_core::Embedder;
use isa_models::{EmbedderConfig, OrtEmbedder};
use isa_tools::select::{LocalSelector, testing as behaviour};

/// One embedder per test binary (ONNX Runtime loads once per process); `None` when the model is
/// not installed and services are not required.
fn embedder() -> Option<Arc<dyn Embedder>> {
    static EMBEDDER: OnceLock<Option<Arc<OrtEmbedder>>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| match EmbedderConfig::from_env() {
            Ok(c) if c.model_file.is_file() => Some(Arc::new(OrtEmbedder::new(c).unwrap())),
            _ => {
                assert_ne!(
                    std::env::var("ISA_REQUIRE_SERVICES").as_deref(),
                    Ok("1"),
                    "model not installed"
                );
                eprintln!(
                    "skipped: embedding model not installed (run deploy/dev/setup-models.sh)"
                );
                None
            }
        })
        .clone()
        .map(|e| e as Arc<dyn Embedder>)
}

fn selectors() -> Vec<(&'static str, LocalSelector)> {
    let mut all = vec![("lexical", LocalSelector::lexical())];
    if let Some(e) = embedder() {
        all.push(("dense", LocalSelector::dense(e.clone())));
        all.push(("hybrid", LocalSelector::hybrid(e)));
    }
    all
}

#[tokio::test]
async fn ranks_the_matching_tool_first_and_filters_by_kind_tag_and_exclusion() {
    for (name, selector) in selectors() {
        behaviour::ranks_the_matching_tool_first_and_filters(name, &selector).await;
    }
}

#[tokio::test]
async fn a_removed_tool_is_never_returned_and_a_changed_one_is_reindexed() {
    for (name, selector) in selectors() {
        behaviour::a_removed_tool_is_never_returned_and_a_changed_one_is_reindexed(name, &selector)
            .await;
        assert!(selector.item("search_flights").is_none());
    }
}

#[tokio::test]
async fn a_minimum_score_above_every_match_returns_nothing() {
    for (name, selector) in selectors() {
        behaviour::a_minimum_score_above_every_match_returns_nothing(name, &selector).await;
    }
}

#[tokio::test]
async fn a_request_no_item_fits_gets_nothing_under_a_minimum_relevance() {
    for (name, selector) in selectors() {
        behaviour::a_request_no_item_fits_gets_nothing_under_a_minimum_relevance(name, &selector)
            .await;
    }
}

#[tokio::test]
async fn an_empty_index_and_top_k_zero_return_nothing_and_duplicate_ids_are_refused() {
    for (name, selector) in selectors() {
        behaviour::an_empty_index_and_top_k_zero_return_nothing_and_duplicate_ids_are_refused(
            name, &selector,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_during_concurrent_selection_never_return_a_removed_tool() {
    for (name, selector) in selectors() {
        behaviour::updates_during_concurrent_selection_never_return_a_removed_tool(
            name,
            Arc::new(selector),
        )
        .await;
    }
}
