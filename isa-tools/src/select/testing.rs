//! Behaviour every [`ToolSelector`] must have (feature `testing`): the in-memory selectors and
//! the pgvector selector run these same checks in their tests, and so should a selector of
//! your own. Each check panics, naming the selector, when the behaviour is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use isa_core::{IndexItem, ItemKind, SelectionQuery, ToolSelector, ToolSpec};

/// A selector under test, which can also say how many items it holds.
pub trait Counted: ToolSelector + 'static {
    /// Items in the index.
    fn count(&self) -> impl std::future::Future<Output = usize> + Send;
}

impl Counted for super::LocalSelector {
    async fn count(&self) -> usize {
        self.len()
    }
}

#[cfg(feature = "pgvector")]
impl Counted for super::pgvector::PgVectorSelector {
    async fn count(&self) -> usize {
        super::pgvector::PgVectorSelector::count(self)
            .await
            .unwrap()
    }
}

/// Five tools, a prompt and a resource.
pub fn catalog() -> Vec<IndexItem> {
    let mut items: Vec<IndexItem> = [
        ToolSpec::new("get_weather", "Current weather and forecast for a city")
            .with_tags(["weather"]),
        ToolSpec::new(
            "search_flights",
            "Find flights between two airports on a date",
        )
        .with_tags(["travel"]),
        ToolSpec::new("book_hotel", "Reserve a hotel room in a city").with_tags(["travel"]),
        ToolSpec::new("stock_quote", "Latest stock price for a ticker symbol")
            .with_tags(["finance"]),
        ToolSpec::new("translate_text", "Translate text between languages").with_tags(["language"]),
    ]
    .iter()
    .map(IndexItem::from_tool)
    .collect();
    items.push(IndexItem {
        id: "prompt:trip_plan".into(),
        kind: ItemKind::Prompt,
        name: "trip_plan".into(),
        description: "A prompt that plans a trip itinerary with flights and hotels".into(),
        params: vec![("destination".into(), "Where to travel".into())],
        tags: vec!["travel".into()],
    });
    items.push(IndexItem {
        id: "resource:weather_stations".into(),
        kind: ItemKind::Resource,
        name: "weather_stations".into(),
        description: "List of weather stations and their locations".into(),
        params: vec![],
        tags: vec!["weather".into()],
    });
    items
}

/// The right tool comes first, scores are sorted and in `[0, 1]`, and kind, tag and exclusion
/// filters hold.
pub async fn ranks_the_matching_tool_first_and_filters(name: &str, selector: &dyn ToolSelector) {
    selector.upsert(catalog()).await.unwrap();
    let best = selector
        .select(&SelectionQuery::new("find flights to Lisbon", 3))
        .await
        .unwrap();
    assert_eq!(best[0].id, "search_flights", "{name}: {best:?}");
    assert!(
        best.windows(2).all(|w| w[0].score >= w[1].score),
        "{name}: not sorted"
    );
    assert!(
        best.iter().all(|s| (0.0..=1.0).contains(&s.score)),
        "{name}: {best:?}"
    );

    let prompts = selector
        .select(&SelectionQuery::new("plan a trip with flights", 5).kinds([ItemKind::Prompt]))
        .await
        .unwrap();
    assert!(
        !prompts.is_empty() && prompts.iter().all(|s| s.kind == ItemKind::Prompt),
        "{name}: {prompts:?}"
    );

    let weather_only = selector
        .select(&SelectionQuery::new("weather stations", 7).tags(["weather"]))
        .await
        .unwrap();
    assert!(
        weather_only.iter().all(|s| s.id.contains("weather")),
        "{name}: {weather_only:?}"
    );
    assert!(
        weather_only.iter().any(|s| s.kind == ItemKind::Resource),
        "{name}: resources selected too"
    );

    let excluded = selector
        .select(&SelectionQuery::new("find flights", 7).exclude(["search_flights"]))
        .await
        .unwrap();
    assert!(
        excluded.iter().all(|s| s.id != "search_flights"),
        "{name}: {excluded:?}"
    );
}

/// A removed tool is gone, and a tool upserted again under the same id is found by its new
/// description only.
pub async fn a_removed_tool_is_never_returned_and_a_changed_one_is_reindexed<S: Counted>(
    name: &str,
    selector: &S,
) {
    selector.upsert(catalog()).await.unwrap();
    selector
        .remove(&["search_flights".to_string()])
        .await
        .unwrap();
    let hits = selector
        .select(&SelectionQuery::new("find flights between airports", 10))
        .await
        .unwrap();
    assert!(
        hits.iter().all(|s| s.id != "search_flights"),
        "{name}: {hits:?}"
    );

    // Same id, new meaning: the old description must no longer match.
    let changed = IndexItem::from_tool(&ToolSpec::new(
        "stock_quote",
        "Play chess against a computer opponent",
    ));
    selector.upsert(vec![changed]).await.unwrap();
    let hits = selector
        .select(&SelectionQuery::new("chess game opponent", 1))
        .await
        .unwrap();
    assert_eq!(hits[0].id, "stock_quote", "{name}");
    assert_eq!(
        selector.count().await,
        catalog().len() - 1,
        "{name}: upsert replaced, not added"
    );
}

/// `min_score` drops what scores below it.
pub async fn a_minimum_score_above_every_match_returns_nothing(
    name: &str,
    selector: &dyn ToolSelector,
) {
    selector.upsert(catalog()).await.unwrap();
    let all = selector
        .select(&SelectionQuery::new("weather forecast", 10))
        .await
        .unwrap();
    let best = all[0].score;
    let none = selector
        .select(&SelectionQuery::new("weather forecast", 10).min_score(best + 0.001))
        .await
        .unwrap();
    assert!(none.is_empty(), "{name}: {none:?}");
    let some = selector
        .select(&SelectionQuery::new("weather forecast", 10).min_score(best))
        .await
        .unwrap();
    assert!(
        !some.is_empty() && some.iter().all(|s| s.score >= best),
        "{name}"
    );
    // Nothing lexical in common: the lexical selector returns nothing rather than padding.
    if name == "lexical" {
        assert!(
            selector
                .select(&SelectionQuery::new("zzyzx qwerty", 5))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// `min_relevance` answers nothing for a request the catalog does not speak of, and still
/// answers one it does.
pub async fn a_request_no_item_fits_gets_nothing_under_a_minimum_relevance(
    name: &str,
    selector: &dyn ToolSelector,
) {
    selector.upsert(catalog()).await.unwrap();
    let ask = |text: &str| SelectionQuery::new(text, 3).min_relevance(0.3);
    let fits = selector
        .select(&ask("weather forecast for Paris"))
        .await
        .unwrap();
    assert_eq!(
        fits.first().map(|s| s.id.as_str()),
        Some("get_weather"),
        "{name}"
    );
    let unfit = selector
        .select(&ask("a recipe for chocolate cake"))
        .await
        .unwrap();
    assert!(unfit.is_empty(), "{name}: {unfit:?}");
    let query = SelectionQuery::new("a recipe for chocolate cake", 3);
    assert!(!selector.select(&query).await.unwrap().is_empty() || name == "lexical");
    // Relevance is at most 1.
    let above = ask("weather forecast for Paris").min_relevance(1.01);
    assert!(selector.select(&above).await.unwrap().is_empty(), "{name}");
}

/// An empty index and `top_k` 0 return nothing; an upsert naming an id twice is refused.
pub async fn an_empty_index_and_top_k_zero_return_nothing_and_duplicate_ids_are_refused(
    name: &str,
    selector: &dyn ToolSelector,
) {
    assert!(
        selector
            .select(&SelectionQuery::new("anything", 5))
            .await
            .unwrap()
            .is_empty(),
        "{name}"
    );
    selector.upsert(catalog()).await.unwrap();
    assert!(
        selector
            .select(&SelectionQuery::new("weather", 0))
            .await
            .unwrap()
            .is_empty(),
        "{name}"
    );
    let twice = vec![catalog()[0].clone(), catalog()[0].clone()];
    let err = selector.upsert(twice).await.unwrap_err().to_string();
    assert!(err.contains("appears twice"), "{name}: {err}");
}

/// Selection while tools come and go never returns a removed tool nor an id twice.
pub async fn updates_during_concurrent_selection_never_return_a_removed_tool<S: Counted>(
    name: &str,
    selector: Arc<S>,
) {
    selector.upsert(catalog()).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // flaky_* tools come and go one at a time: seeing two at once means a removed one came back.
    let writer = {
        let (selector, done) = (selector.clone(), done.clone());
        tokio::spawn(async move {
            for round in 0..40 {
                let id = format!("flaky_flight_tool_{round}");
                let spec = ToolSpec::new(&id, "Find cheap flights and airline tickets");
                selector
                    .upsert(vec![IndexItem::from_tool(&spec)])
                    .await
                    .unwrap();
                selector.remove(std::slice::from_ref(&id)).await.unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (selector, done) = (selector.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut checked = 0;
            while !done.load(Ordering::SeqCst) || checked == 0 {
                let hits = selector
                    .select(&SelectionQuery::new("cheap flights", 10))
                    .await
                    .unwrap();
                let ids: std::collections::HashSet<_> = hits.iter().map(|s| s.id.clone()).collect();
                assert_eq!(ids.len(), hits.len(), "duplicate ids in {hits:?}");
                assert!(
                    hits.iter().filter(|s| s.id.starts_with("flaky_")).count() <= 1,
                    "{hits:?}"
                );
                checked += 1;
                // Cached selection never waits on anything; yield so the writer gets a thread.
                tokio::task::yield_now().await;
            }
            checked
        }));
    }
    writer.await.unwrap();
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    let hits = selector
        .select(&SelectionQuery::new("cheap flights", 10))
        .await
        .unwrap();
    assert!(
        hits.iter().all(|s| !s.id.starts_with("flaky_")),
        "{name}: {hits:?}"
    );
    assert_eq!(selector.count().await, catalog().len(), "{name}");
}
