//! The pgvector selector against the real PostgreSQL + pgvector and the real embedder: the
//! behaviour every selector must have (the suite the in-memory selectors run), recall against
//! the exact dense selector on MetaTool, shared state between instances.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use isa_core::{Embedder, IndexItem, ItemKind, SelectionQuery, ToolSelector};
use isa_models::OrtEmbedder;
use isa_tools::{
    catalog::load_catalog,
    select::{LocalSelector, eval::load_queries, pgvector::PgVectorSelector, testing as behaviour},
};

struct Fixture {
    pool: sqlx::PgPool,
    embedder: Arc<dyn Embedder>,
    table: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let (pool, table) = (self.pool.clone(), self.table.clone());
        // Leave the shared test database as it was.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let drop = format!("drop table if exists {table}");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await;
            });
        })
        .join()
        .unwrap();
    }
}

async fn fixture() -> Option<Fixture> {
    let required = std::env::var("ISA_REQUIRE_SERVICES").as_deref() == Ok("1");
    let (Ok(url), Ok(embedder)) = (
        std::env::var("ISA_TEST_DATABASE_URL"),
        OrtEmbedder::from_env(),
    ) else {
        assert!(!required, "PostgreSQL and the embedding model are required");
        eprintln!("skipped: needs ISA_TEST_DATABASE_URL and the embedding model");
        return None;
    };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = format!("tool_index_test_{}", uuid::Uuid::now_v7().simple());
    Some(Fixture {
        pool,
        embedder: Arc::new(embedder),
        table,
    })
}

impl Fixture {
    async fn selector(&self) -> PgVectorSelector {
        PgVectorSelector::new(self.pool.clone(), self.embedder.clone(), &self.table)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ranks_the_matching_tool_first_and_filters_by_kind_tag_and_exclusion() {
    let Some(f) = fixture().await else { return };
    behaviour::ranks_the_matching_tool_first_and_filters("pgvector", &f.selector().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_tool_is_never_returned_and_a_changed_one_is_reindexed() {
    let Some(f) = fixture().await else { return };
    behaviour::a_removed_tool_is_never_returned_and_a_changed_one_is_reindexed(
        "pgvector",
        &f.selector().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minimum_score_above_every_match_returns_nothing() {
    let Some(f) = fixture().await else { return };
    behaviour::a_minimum_score_above_every_match_returns_nothing("pgvector", &f.selector().await)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_no_item_fits_gets_nothing_under_a_minimum_relevance() {
    let Some(f) = fixture().await else { return };
    behaviour::a_request_no_item_fits_gets_nothing_under_a_minimum_relevance(
        "pgvector",
        &f.selector().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_index_and_top_k_zero_return_nothing_and_duplicate_ids_are_refused() {
    let Some(f) = fixture().await else { return };
    behaviour::an_empty_index_and_top_k_zero_return_nothing_and_duplicate_ids_are_refused(
        "pgvector",
        &f.selector().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_during_concurrent_selection_never_return_a_removed_tool() {
    let Some(f) = fixture().await else { return };
    behaviour::updates_during_concurrent_selection_never_return_a_removed_tool(
        "pgvector",
        Arc::new(f.selector().await),
    )
    .await;
}

fn metatool() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/data/metatool")
}

#[tokio::test(flavor = "multi_thread")]
async fn recall_at_10_against_the_exact_dense_selector_on_metatool() {
    let Some(f) = fixture().await else { return };
    let catalog = load_catalog(&metatool().join("catalog.json")).unwrap();
    let queries = load_queries(&metatool().join("queries-single.jsonl"), &catalog).unwrap();
    let pg = PgVectorSelector::new(f.pool.clone(), f.embedder.clone(), &f.table)
        .await
        .unwrap();
    pg.upsert(catalog.clone()).await.unwrap();
    let exact = LocalSelector::dense(f.embedder.clone());
    exact.upsert(catalog).await.unwrap();

    let sample: Vec<_> = queries.iter().step_by(20).collect();
    let mut overlap = 0usize;
    for q in &sample {
        let query = SelectionQuery::new(q.query.clone(), 10);
        let want: HashSet<String> = exact
            .select(&query)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        let got: HashSet<String> = pg
            .select(&query)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        overlap += want.intersection(&got).count();
    }
    let recall = overlap as f64 / (sample.len() * 10) as f64;
    eprintln!(
        "pgvector recall@10 against exact dense over {} queries: {recall:.4}",
        sample.len()
    );
    assert!(recall >= 0.99, "recall@10 {recall}");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_share_one_index_and_filters_apply() {
    let Some(f) = fixture().await else { return };
    let a = PgVectorSelector::new(f.pool.clone(), f.embedder.clone(), &f.table)
        .await
        .unwrap();
    let b = PgVectorSelector::new(f.pool.clone(), f.embedder.clone(), &f.table)
        .await
        .unwrap();
    let item = |id: &str, kind: ItemKind, description: &str, tags: &[&str]| IndexItem {
        id: id.into(),
        kind,
        name: id.into(),
        description: description.into(),
        params: vec![],
        tags: tags.iter().map(|t| t.to_string()).collect(),
    };
    a.upsert(vec![
        item(
            "get_weather",
            ItemKind::Tool,
            "Current weather and forecast for a city",
            &["web"],
        ),
        item(
            "weather_report",
            ItemKind::Prompt,
            "Write a weather report",
            &[],
        ),
        item(
            "send_email",
            ItemKind::Tool,
            "Send an email message",
            &["mail"],
        ),
    ])
    .await
    .unwrap();

    let ask = |k: usize| SelectionQuery::new("will it rain in Lisbon tomorrow?", k);
    let seen_by_b = b.select(&ask(3)).await.unwrap();
    assert_eq!(
        seen_by_b[0].id, "get_weather",
        "b sees what a added: {seen_by_b:?}"
    );
    assert!(
        seen_by_b.windows(2).all(|w| w[0].score >= w[1].score)
            && seen_by_b.iter().all(|s| (0.0..=1.0).contains(&s.score))
    );

    let tools_only = b.select(&ask(3).kinds([ItemKind::Tool])).await.unwrap();
    assert!(tools_only.iter().all(|s| s.kind == ItemKind::Tool) && tools_only.len() == 2);
    let mail = b.select(&ask(3).tags(["mail"])).await.unwrap();
    assert_eq!(
        mail.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["send_email"]
    );
    let excluded = b.select(&ask(3).exclude(["get_weather"])).await.unwrap();
    assert!(excluded.iter().all(|s| s.id != "get_weather"));
    let strict = b.select(&ask(3).min_score(0.99)).await.unwrap();
    assert!(strict.is_empty(), "nothing is that close: {strict:?}");

    b.remove(&["get_weather".into()]).await.unwrap();
    let after = a.select(&ask(3)).await.unwrap();
    assert!(
        after.iter().all(|s| s.id != "get_weather"),
        "a sees what b removed"
    );
    assert!(
        PgVectorSelector::new(f.pool.clone(), f.embedder.clone(), "x; drop table y")
            .await
            .is_err()
    );
}
