//! `isa-mcp tools rank|eval|import`: rank a catalog for a set of queries, measure the ranking,
//! and import a catalog for the server to offer for discovery.

use std::{io::IsTerminal, io::Write, path::PathBuf, sync::Arc, time::Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use isa_core::{Embedder, ItemKind, SelectionQuery, ToolSelector};
use isa_models::{EmbedderConfig, OrtEmbedder};
use isa_tools::{
    catalog::load_catalog,
    select::{
        DEFAULT_DENSE_WEIGHT, LocalSelector, Ranking, Strategy,
        eval::{Baseline, EvalQuery, QueryMetrics, load_irrelevant, load_queries},
        pgvector::PgVectorSelector,
    },
};
use serde_json::json;

#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Print one JSON line per query: {"id", "ranked": [tool ids, best first]}.
    Rank(RankArgs),
    /// Print NDCG@5/10, Recall@5/10, Hit@1, Complete@5 and selection latency.
    Eval(EvalArgs),
    /// Check a catalog file and copy it into the data directory, where `serve` loads it.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// Catalog file: {"tools": [{"id", "name", "description", "inputSchema"}]}.
    file: PathBuf,
    /// The server's data directory.
    #[arg(long, env = "ISA_DATA_DIR", default_value_os_t = isa_mcp_server::settings::default_data_dir())]
    data_dir: PathBuf,
}

fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let specs = isa_tools::catalog::load_catalog_specs(&args.file)?;
    let name = args
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the catalog file needs a name")?;
    let dir = args.data_dir.join("catalog");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join(format!("{name}.json"));
    std::fs::copy(&args.file, &target)
        .with_context(|| format!("copying to {}", target.display()))?;
    println!(
        "imported {} tools into {}; `isa-mcp serve` loads them at start",
        specs.len(),
        target.display()
    );
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum SelectorKind {
    Hybrid,
    Dense,
    Lexical,
    /// The plain reference every selector is compared with: 0.3 × BM25 + 0.7 × cosine, min-max
    /// scaled, no stemming, no clause splitting (`isa_tools::select::eval::Baseline`).
    Baseline,
}

/// What ranks the queries: one of the library's selectors, in memory or on PostgreSQL, or the
/// baseline.
enum Ranker {
    Selector(LocalSelector),
    Shared(PgVectorSelector),
    Baseline(Baseline),
}

impl Ranker {
    /// The dense weight to report, for hybrid selectors.
    fn dense_weight(&self) -> Option<f32> {
        let strategy = match self {
            Ranker::Selector(s) => s.strategy(),
            Ranker::Shared(s) => s.strategy(),
            Ranker::Baseline(_) => return None,
        };
        match strategy {
            Strategy::Hybrid { dense_weight } => Some(dense_weight),
            _ => None,
        }
    }
}

/// The table `tools eval --database-url` indexes the catalog in.
const EVAL_TABLE: &str = "isa_tools_eval";

/// Which half of the queries to use: weights are tuned on one half and reported on the other.
#[derive(Clone, Copy, ValueEnum)]
enum Half {
    /// Queries at even positions (0, 2, 4, …).
    Tune,
    /// Queries at odd positions.
    Holdout,
}

#[derive(Args)]
struct Common {
    /// Catalog file: {"tools": [{"id", "name", "description", "inputSchema"}]}.
    #[arg(long)]
    catalog: PathBuf,
    /// Queries file: JSON lines {"id", "query", "gold": [tool ids]}.
    #[arg(long)]
    queries: PathBuf,
    /// Selection method.
    #[arg(long, value_enum, default_value = "hybrid")]
    selector: SelectorKind,
    /// Weight of the dense score in hybrid selection. `eval` takes a comma-separated list and
    /// reports each weight, embedding every query once.
    #[arg(long, value_delimiter = ',', default_values_t = [DEFAULT_DENSE_WEIGHT])]
    dense_weight: Vec<f32>,
    /// Use only half of the queries.
    #[arg(long, value_enum)]
    half: Option<Half>,
    /// Answer nothing for a request whose relevance (`isa_tools::select::Ranking::relevance`)
    /// is below this, as `isa-mcp serve` does; by default every query is ranked in full.
    #[arg(long)]
    min_relevance: Option<f32>,
    /// Rank with the pgvector selector, the index `serve --index pgvector` shares, on this
    /// PostgreSQL database (in the table `isa_tools_eval`, replaced at each run) rather than in
    /// memory; hybrid and dense selection only.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Args)]
pub struct RankArgs {
    #[command(flatten)]
    common: Common,
    /// How many tools to list per query.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    common: Common,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Requests no tool fits (query lines with an empty `gold`): reports, for a range of
    /// `--min-relevance` values, the share of them answered with nothing beside the share of
    /// the queries that lose their tools.
    #[arg(long)]
    irrelevant: Option<PathBuf>,
}

pub async fn run(command: ToolsCommand) -> anyhow::Result<()> {
    match command {
        ToolsCommand::Import(args) => import(&args),
        ToolsCommand::Rank(args) => {
            anyhow::ensure!(
                args.common.dense_weight.len() == 1,
                "rank takes one --dense-weight"
            );
            let (mut rankers, queries) = prepare(&args.common).await?;
            let selector = rankers.remove(0);
            let progress = progress_bar(queries.len());
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for q in &queries {
                let (mut ranked, relevance) = rank(&selector, q, args.top_k).await?;
                if refused(args.common.min_relevance, relevance) {
                    ranked.clear();
                }
                writeln!(
                    out,
                    "{}",
                    json!({ "id": q.id, "ranked": ranked, "relevance": relevance })
                )?;
                progress.inc(1);
            }
            progress.finish_and_clear();
            out.flush()?;
            Ok(())
        }
        ToolsCommand::Eval(args) => {
            let (rankers, queries) = prepare(&args.common).await?;
            let irrelevant = match &args.irrelevant {
                Some(path) => load_irrelevant(path)?,
                None => Vec::new(),
            };
            for ranker in &rankers {
                let mut report = evaluate(ranker, &queries, args.common.min_relevance).await?;
                if !irrelevant.is_empty() {
                    let relevance = rank_all(ranker, &irrelevant).await?;
                    add_abstention(&mut report, &relevance, args.common.min_relevance);
                }
                print_report(&report, ranker.dense_weight(), args.json);
            }
            Ok(())
        }
    }
}

/// Whether a request of this relevance is answered with nothing under `min_relevance`.
fn refused(min_relevance: Option<f32>, relevance: Option<f32>) -> bool {
    matches!((min_relevance, relevance), (Some(min), Some(r)) if r < min)
}

/// Ranks every query, timing each selection including the query embedding. With
/// `min_relevance`, a refused query scores zero on every metric.
async fn evaluate(
    selector: &Ranker,
    queries: &[EvalQuery],
    min_relevance: Option<f32>,
) -> anyhow::Result<serde_json::Value> {
    let progress = progress_bar(queries.len());
    let mut sum = QueryMetrics::default();
    let mut latencies = Vec::with_capacity(queries.len());
    // Each query's relevance and Recall@5 in full, for the abstention curve.
    let mut answered = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        let (ranked, relevance) = rank(selector, q, 10).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let full = QueryMetrics::of(&ranked, &q.gold);
        answered.push((relevance.unwrap_or(1.0), full.recall5));
        let m = match refused(min_relevance, relevance) {
            true => QueryMetrics::default(),
            false => full,
        };
        sum.ndcg5 += m.ndcg5;
        sum.ndcg10 += m.ndcg10;
        sum.recall5 += m.recall5;
        sum.recall10 += m.recall10;
        sum.hit1 += m.hit1;
        sum.complete5 += m.complete5;
        progress.inc(1);
    }
    progress.finish_and_clear();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let n = queries.len() as f64;
    Ok(json!({
        "answered": answered,
        "queries": queries.len(),
        "ndcg@5": 100.0 * sum.ndcg5 / n,
        "ndcg@10": 100.0 * sum.ndcg10 / n,
        "recall@5": 100.0 * sum.recall5 / n,
        "recall@10": 100.0 * sum.recall10 / n,
        "hit@1": 100.0 * sum.hit1 / n,
        "complete@5": 100.0 * sum.complete5 / n,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }))
}

/// The relevance of each request, for requests no tool fits.
async fn rank_all(ranker: &Ranker, requests: &[EvalQuery]) -> anyhow::Result<Vec<f32>> {
    let progress = progress_bar(requests.len());
    let mut relevance = Vec::with_capacity(requests.len());
    for q in requests {
        let (_, r) = rank(ranker, q, 1).await?;
        relevance.push(r.context("the baseline does not measure relevance")?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(relevance)
}

/// Adds to `report` (which holds each query's relevance and Recall@5 as `answered`), for
/// thresholds from 0.100 to 0.600 by 0.025: the share of irrelevant requests answered with nothing, the
/// share of queries answered with nothing, and the points of Recall@5 they lose; and the same
/// at `min_relevance` when one is given.
fn add_abstention(report: &mut serde_json::Value, irrelevant: &[f32], min_relevance: Option<f32>) {
    let answered: Vec<(f32, f64)> =
        serde_json::from_value(report["answered"].clone()).unwrap_or_default();
    let at = |min: f32| {
        let share = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        let lost: f64 = answered
            .iter()
            .filter(|(r, _)| *r < min)
            .map(|(_, recall)| recall)
            .sum();
        json!({
            "min_relevance": min,
            "irrelevant_refused": share(irrelevant.iter().filter(|&&r| r < min).count(), irrelevant.len()),
            "refused": share(answered.iter().filter(|(r, _)| *r < min).count(), answered.len()),
            // + 0.0 turns a sum of nothing (-0.0) into 0.
            "recall@5_lost": 100.0 * lost / answered.len().max(1) as f64 + 0.0,
        })
    };
    report["irrelevant"] = json!(irrelevant.len());
    report["abstention"] = (4..=24).map(|step| at(step as f32 * 0.025)).collect();
    if let Some(min) = min_relevance {
        report["at_min_relevance"] = at(min);
    }
}

fn print_report(report: &serde_json::Value, dense_weight: Option<f32>, as_json: bool) {
    let mut report = report.clone();
    if let Some(w) = dense_weight {
        report["dense_weight"] = json!(w);
    }
    if let Some(map) = report.as_object_mut() {
        map.remove("answered");
    }
    if as_json {
        println!("{report}");
        return;
    }
    if let Some(w) = dense_weight {
        println!("dense weight {w}");
    }
    println!("queries     {}", report["queries"]);
    for key in [
        "ndcg@5",
        "ndcg@10",
        "recall@5",
        "recall@10",
        "hit@1",
        "complete@5",
        "p50_ms",
        "p99_ms",
    ] {
        println!("{key:<11} {:.3}", report[key].as_f64().unwrap_or_default());
    }
    if let Some(curve) = report["abstention"].as_array() {
        println!(
            "abstention over {} irrelevant requests (percent):",
            report["irrelevant"]
        );
        println!("min_relevance  irrelevant_refused  refused  recall@5_lost");
        for point in curve.iter().chain(report.get("at_min_relevance")) {
            let f = |key: &str| point[key].as_f64().unwrap_or_default();
            println!(
                "{:>13.3}  {:>18.2}  {:>7.2}  {:>13.2}",
                f("min_relevance"),
                f("irrelevant_refused"),
                f("refused"),
                f("recall@5_lost")
            );
        }
    }
}

/// The query's `top_k` tool ids, best first, ranked in full, and its relevance (`None` from the
/// baseline, which does not measure it).
async fn rank(
    ranker: &Ranker,
    q: &EvalQuery,
    top_k: usize,
) -> anyhow::Result<(Vec<String>, Option<f32>)> {
    let query = SelectionQuery::new(q.query.clone(), top_k).kinds([ItemKind::Tool]);
    let ranking: Ranking = match ranker {
        Ranker::Selector(selector) => selector.assess(&query).await?,
        Ranker::Shared(selector) => selector.assess(&query).await?,
        Ranker::Baseline(baseline) => return Ok((baseline.rank(&q.query, top_k).await?, None)),
    };
    let ids = ranking.items.into_iter().map(|s| s.id).collect();
    Ok((ids, Some(ranking.relevance)))
}

async fn prepare(common: &Common) -> anyhow::Result<(Vec<Ranker>, Vec<EvalQuery>)> {
    anyhow::ensure!(
        !matches!(common.selector, SelectorKind::Baseline) || common.min_relevance.is_none(),
        "the baseline does not measure relevance: --min-relevance needs another selector"
    );
    let catalog = load_catalog(&common.catalog)?;
    let mut queries = load_queries(&common.queries, &catalog)?;
    if let Some(half) = common.half {
        let keep = match half {
            Half::Tune => 0,
            Half::Holdout => 1,
        };
        queries = queries
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == keep)
            .map(|(_, q)| q)
            .collect();
    }
    let embedder = || -> anyhow::Result<Arc<dyn Embedder>> {
        let mut config = EmbedderConfig::from_env().context("configuring the embedding model")?;
        // Several weights re-rank the same queries: keep every query vector.
        config.cache_capacity = config.cache_capacity.max(queries.len() + 1);
        Ok(Arc::new(
            OrtEmbedder::new(config).context("loading the embedding model")?,
        ))
    };
    let strategies = match common.selector {
        SelectorKind::Baseline => {
            anyhow::ensure!(
                common.database_url.is_none(),
                "the baseline ranks in memory only: --database-url needs another selector"
            );
            let started = Instant::now();
            let baseline = Baseline::new(&catalog, embedder()?).await?;
            tracing::info!(ms = started.elapsed().as_millis() as u64, "catalog indexed");
            return Ok((vec![Ranker::Baseline(baseline)], queries));
        }
        SelectorKind::Lexical => vec![Strategy::Lexical],
        SelectorKind::Dense => vec![Strategy::Dense],
        SelectorKind::Hybrid => common
            .dense_weight
            .iter()
            .map(|&dense_weight| Strategy::Hybrid { dense_weight })
            .collect(),
    };
    let embedder = match common.selector {
        SelectorKind::Lexical => None,
        _ => Some(embedder()?),
    };
    let pool = match &common.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url)
                .await
                .context("connecting to --database-url")?;
            let replace = format!("drop table if exists {EVAL_TABLE}");
            sqlx::query(sqlx::AssertSqlSafe(replace))
                .execute(&pool)
                .await?;
            Some(pool)
        }
        None => None,
    };
    let mut rankers = Vec::new();
    for strategy in strategies {
        let started = Instant::now();
        let ranker = match (&pool, &embedder) {
            (Some(pool), Some(embedder)) => {
                let selector = PgVectorSelector::with_strategy(
                    pool.clone(),
                    embedder.clone(),
                    EVAL_TABLE,
                    strategy,
                )
                .await?;
                // Selectors of several weights share the table: only the first embeds.
                selector.upsert(catalog.clone()).await?;
                Ranker::Shared(selector)
            }
            (Some(_), None) => anyhow::bail!("--database-url needs hybrid or dense selection"),
            (None, embedder) => {
                let selector = LocalSelector::with_strategy(strategy, embedder.clone());
                selector.upsert(catalog.clone()).await?;
                Ranker::Selector(selector)
            }
        };
        tracing::info!(
            tools = catalog.len(),
            ms = started.elapsed().as_millis() as u64,
            "catalog indexed"
        );
        rankers.push(ranker);
    }
    Ok((rankers, queries))
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} queries {elapsed}<{eta}")
    {
        bar.set_style(style);
    }
    bar
}
