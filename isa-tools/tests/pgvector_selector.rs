//! The pgvector selector against the real PostgreSQL + pgvector and the real embedder: the
//! behaviour every selector must have (the suite the in-memory selectors run), in both of its
//! strategies; hybrid rankings equal to the in-memory hybrid selector's on MetaTool, dense
//! recall against the exact dense selector, shared state between instances.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use isa_core::{Embedder, IndexItem, ItemKind, Scored, SelectionQuery, ToolSelector};
use isa_models::OrtEmbedder;
use isa_tools::{
    catalog::load_catalog,
    select::{
        DEFAULT_DENSE_WEIGHT, DEFAULT_MIN_RELEVANCE, LocalSelector, Strategy, eval::load_queries,
        pgvector::PgVectorSelector, testing as behaviour,
    },
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
                for suffix in STRATEGIES.map(|(name, _)| name) {
                    let drop = format!("drop table if exists {table}_{suffix}");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await;
                }
                let drop = format!("drop table if exists {table}");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await;
            });
        })
        .join()
        .unwrap();
    }
}

const HYBRID: Strategy = Strategy::Hybrid {
    dense_weight: DEFAULT_DENSE_WEIGHT,
};

/// Both strategies the pgvector selector has, each tested on a table of its own.
const STRATEGIES: [(&str, Strategy); 2] = [("hybrid", HYBRID), ("dense", Strategy::Dense)];

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
    /// A selector with this strategy on a table of its own, named after `name`.
    async fn selector(&self, (name, strategy): (&str, Strategy)) -> PgVectorSelector {
        let table = format!("{}_{name}", self.table);
        PgVectorSelector::with_strategy(self.pool.clone(), self.embedder.clone(), &table, strategy)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ranks_the_matching_tool_first_and_filters_by_kind_tag_and_exclusion() {
    let Some(f) = fixture().await else { return };
    for strategy in STRATEGIES {
        let name = format!("pgvector {}", strategy.0);
        behaviour::ranks_the_matching_tool_first_and_filters(&name, &f.selector(strategy).await)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_tool_is_never_returned_and_a_changed_one_is_reindexed() {
    let Some(f) = fixture().await else { return };
    for strategy in STRATEGIES {
        behaviour::a_removed_tool_is_never_returned_and_a_changed_one_is_reindexed(
            &format!("pgvector {}", strategy.0),
            &f.selector(strategy).await,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minimum_score_above_every_match_returns_nothing() {
    let Some(f) = fixture().await else { return };
    for strategy in STRATEGIES {
        behaviour::a_minimum_score_above_every_match_returns_nothing(
            &format!("pgvector {}", strategy.0),
            &f.selector(strategy).await,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_no_item_fits_gets_nothing_under_a_minimum_relevance() {
    let Some(f) = fixture().await else { return };
    for strategy in STRATEGIES {
        behaviour::a_request_no_item_fits_gets_nothing_under_a_minimum_relevance(
            &format!("pgvector {}", strategy.0),
            &f.selector(strategy).await,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_index_and_top_k_zero_return_nothing_and_duplicate_ids_are_refused() {
    let Some(f) = fixture().await else { return };
    for strategy in STRATEGIES {
        behaviour::an_empty_index_and_top_k_zero_return_nothing_and_duplicate_ids_are_refused(
            &format!("pgvector {}", strategy.0),
            &f.selector(strategy).await,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_during_concurrent_selection_never_return_a_removed_tool() {
    let Some(f) = fixture().await else { return };
    for strategy in STRATEGIES {
        behaviour::updates_during_concurrent_selection_never_return_a_removed_tool(
            &format!("pgvector {}", strategy.0),
            Arc::new(f.selector(strategy).await),
        )
        .await;
    }
}

fn metatool() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/data/metatool")
}

#[tokio::test(flavor = "multi_thread")]
async fn recall_at_10_against_the_exact_dense_selector_on_metatool() {
    let Some(f) = fixture().await else { return };
    let catalog = load_catalog(&metatool().join("catalog.json")).unwrap();
    let queries = load_queries(&metatool().join("queries-single.jsonl"), &catalog).unwrap();
    let pg = f.selector(("dense", Strategy::Dense)).await;
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

/// Whether two rankings agree: the same scores rank by rank (within what float rounding moves
/// between PostgreSQL's dot products and ours), and the same items, except that items tied
/// within that tolerance may trade places or, at the last rank, be one another.
fn same_ranking(want: &[Scored], got: &[Scored]) -> Result<(), String> {
    const TOLERANCE: f32 = 1e-4;
    if want.len() != got.len() {
        return Err(format!("{} items, not {}", got.len(), want.len()));
    }
    for (rank, (w, g)) in want.iter().zip(got).enumerate() {
        if (w.score - g.score).abs() > TOLERANCE {
            return Err(format!("rank {rank}: {g:?} where {w:?}"));
        }
        let tied = |list: &[Scored]| {
            list.iter()
                .any(|other| other.id == g.id && (other.score - w.score).abs() <= TOLERANCE)
        };
        let cut_off = want
            .last()
            .is_some_and(|last| (last.score - g.score).abs() <= TOLERANCE);
        if w.id != g.id && !tied(want) && !cut_off {
            return Err(format!("rank {rank}: {g:?} where {w:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hybrid_selection_ranks_as_the_in_memory_hybrid_selector_does_on_metatool() {
    let Some(f) = fixture().await else { return };
    let catalog = load_catalog(&metatool().join("catalog.json")).unwrap();
    let single = load_queries(&metatool().join("queries-single.jsonl"), &catalog).unwrap();
    let multi = load_queries(&metatool().join("queries-multi.jsonl"), &catalog).unwrap();
    let pg = f.selector(("hybrid", HYBRID)).await;
    pg.upsert(catalog.clone()).await.unwrap();
    let memory = LocalSelector::hybrid(f.embedder.clone());
    memory.upsert(catalog.clone()).await.unwrap();
    // A row indexed before terms were stored has none: the next upsert writes them without
    // embedding its text again.
    let forget = format!(
        "update {}_hybrid set terms = '{{}}', frequencies = '{{}}', doc_length = 0",
        f.table
    );
    sqlx::query(sqlx::AssertSqlSafe(forget))
        .execute(&f.pool)
        .await
        .unwrap();
    pg.upsert(catalog.clone()).await.unwrap();
    assert_eq!(
        pg.stats().unwrap().documents_embedded,
        catalog.len() as u64,
        "the second upsert embeds nothing"
    );

    // Multi-tool requests are split into clauses; filters and the relevance floor apply.
    let requests = single.iter().step_by(40).chain(multi.iter().step_by(10));
    let mut compared = 0;
    for (n, q) in requests.enumerate() {
        let mut query = SelectionQuery::new(q.query.clone(), 10);
        match n % 3 {
            1 => query = query.exclude(q.gold.iter().cloned()),
            2 => {
                query = query
                    .kinds([ItemKind::Tool])
                    .min_relevance(DEFAULT_MIN_RELEVANCE)
            }
            _ => {}
        }
        let want = memory.assess(&query).await.unwrap();
        let got = pg.assess(&query).await.unwrap();
        assert!(
            (want.relevance - got.relevance).abs() < 1e-4,
            "{:?}: relevance {} where {}",
            q.query,
            got.relevance,
            want.relevance
        );
        if let Err(problem) = same_ranking(&want.items, &got.items) {
            panic!("{:?}: {problem}", q.query);
        }
        compared += 1;
    }
    assert!(compared > 100, "{compared} requests compared");
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
    // Hybrid scores are scaled by the lowest and highest admitted item: the lowest scores 0
    // and is not returned.
    assert!(
        tools_only.iter().all(|s| s.kind == ItemKind::Tool) && tools_only[0].id == "get_weather"
    );
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
    let lexical = PgVectorSelector::with_strategy(
        f.pool.clone(),
        f.embedder.clone(),
        &f.table,
        Strategy::Lexical,
    )
    .await;
    assert!(
        lexical.is_err(),
        "lexical selection has no use for the index of embeddings"
    );
}
