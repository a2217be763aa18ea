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
        DEFAULT_DENSE_WEIGHT, LocalSelector, Strategy,
        eval::{Baseline, EvalQuery, QueryMetrics, load_queries},
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

/// What ranks the queries: one of the library's selectors, or the baseline.
enum Ranker {
    Selector(LocalSelector),
    Baseline(Baseline),
}

impl Ranker {
    /// The dense weight to report, for hybrid selectors.
    fn dense_weight(&self) -> Option<f32> {
        match self {
            Ranker::Selector(s) => match s.strategy() {
                Strategy::Hybrid { dense_weight } => Some(dense_weight),
                _ => None,
            },
            Ranker::Baseline(_) => None,
        }
    }
}

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
                let ranked = rank(&selector, q, args.top_k).await?;
                writeln!(out, "{}", json!({ "id": q.id, "ranked": ranked }))?;
                progress.inc(1);
            }
            progress.finish_and_clear();
            out.flush()?;
            Ok(())
        }
        ToolsCommand::Eval(args) => {
            let (rankers, queries) = prepare(&args.common).await?;
            for ranker in &rankers {
                let report = evaluate(ranker, &queries).await?;
                print_report(&report, ranker.dense_weight(), args.json);
            }
            Ok(())
        }
    }
}

/// Ranks every query, timing each selection including the query embedding.
async fn evaluate(selector: &Ranker, queries: &[EvalQuery]) -> anyhow::Result<serde_json::Value> {
    let progress = progress_bar(queries.len());
    let mut sum = QueryMetrics::default();
    let mut latencies = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        let ranked = rank(selector, q, 10).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let m = QueryMetrics::of(&ranked, &q.gold);
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

fn print_report(report: &serde_json::Value, dense_weight: Option<f32>, as_json: bool) {
    let mut report = report.clone();
    if let Some(w) = dense_weight {
        report["dense_weight"] = json!(w);
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
}

async fn rank(ranker: &Ranker, q: &EvalQuery, top_k: usize) -> anyhow::Result<Vec<String>> {
    let selector = match ranker {
        Ranker::Selector(selector) => selector,
        Ranker::Baseline(baseline) => return Ok(baseline.rank(&q.query, top_k).await?),
    };
    let query = SelectionQuery::new(q.query.clone(), top_k).kinds([ItemKind::Tool]);
    Ok(selector
        .select(&query)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

async fn prepare(common: &Common) -> anyhow::Result<(Vec<Ranker>, Vec<EvalQuery>)> {
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
    let selectors = match common.selector {
        SelectorKind::Baseline => {
            let started = Instant::now();
            let baseline = Baseline::new(&catalog, embedder()?).await?;
            tracing::info!(ms = started.elapsed().as_millis() as u64, "catalog indexed");
            return Ok((vec![Ranker::Baseline(baseline)], queries));
        }
        SelectorKind::Lexical => vec![LocalSelector::lexical()],
        SelectorKind::Dense => vec![LocalSelector::dense(embedder()?)],
        SelectorKind::Hybrid => {
            let embedder = embedder()?;
            common
                .dense_weight
                .iter()
                .map(|&dense_weight| {
                    LocalSelector::with_strategy(
                        Strategy::Hybrid { dense_weight },
                        Some(embedder.clone()),
                    )
                })
                .collect()
        }
    };
    for selector in &selectors {
        let started = Instant::now();
        selector.upsert(catalog.clone()).await?;
        tracing::info!(
            tools = selector.len(),
            ms = started.elapsed().as_millis() as u64,
            "catalog indexed"
        );
    }
    Ok((
        selectors.into_iter().map(Ranker::Selector).collect(),
        queries,
    ))
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
