//! A [`ToolSelector`] on PostgreSQL + pgvector, so that several server instances share one tool
//! index and see each other's changes at once.
//!
//! Each row holds an item's L2-normalised document embedding and the terms BM25 reads (the
//! in-memory selectors' analyser, written at upsert). Hybrid selection, the default, ranks as
//! [`LocalSelector`](super::LocalSelector) does with the same strategy: one statement reads every
//! row's cosine with the request and its clauses and the request's terms found in it, and the
//! scores are fused in this process by the in-memory selectors' own code. That reads the whole
//! table per request (the dense scores are scaled by the lowest and highest of every admitted
//! item), a few milliseconds for catalogs of thousands of tools. Dense selection instead scans
//! an HNSW index over inner product (`vector_ip_ops`), with filters inside the scan through
//! pgvector's iterative scans, for indexes too large to read whole.
//!
//! Each row keeps a fingerprint of the text it was embedded from: an upsert embeds only what
//! is new or changed, so a second server starting on the same catalog embeds nothing.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use isa_core::{
    Embedder, Error, IndexItem, IndexStats, ItemKind, Result, Scored, SelectionQuery, TextKind,
    ToolSelector, async_trait,
};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use super::{
    CLAUSE_DISCOUNT, DEFAULT_DENSE_WEIGHT, Ranking, Strategy,
    bm25::{Bm25Index, TermCounts},
    clause_spans,
    index::{fuse, request_texts},
};

/// Tool index in a PostgreSQL table.
pub struct PgVectorSelector {
    pool: PgPool,
    embedder: Arc<dyn Embedder>,
    table: String,
    strategy: Strategy,
    /// Documents this process embedded (the rest were in the table already).
    embedded: AtomicU64,
}

fn db_error(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("database: {e}"))
}

fn kind_name(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Tool => "tool",
        ItemKind::Prompt => "prompt",
        ItemKind::Resource => "resource",
    }
}

fn kind_of(row: &sqlx::postgres::PgRow) -> Result<ItemKind> {
    Ok(
        match row.try_get::<String, _>("kind").map_err(db_error)?.as_str() {
            "prompt" => ItemKind::Prompt,
            "resource" => ItemKind::Resource,
            _ => ItemKind::Tool,
        },
    )
}

/// What identifies the text a vector was embedded from. Servers sharing a table share their
/// embedding model too (the table's vector width is the model's).
fn fingerprint(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn vector_literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

impl PgVectorSelector {
    /// A hybrid selector with [`DEFAULT_DENSE_WEIGHT`] on `table` (created with its HNSW index
    /// when missing). The table name is letters, digits and `_` only, since it becomes part of
    /// SQL statements.
    pub async fn new(pool: PgPool, embedder: Arc<dyn Embedder>, table: &str) -> Result<Self> {
        let strategy = Strategy::Hybrid {
            dense_weight: DEFAULT_DENSE_WEIGHT,
        };
        Self::with_strategy(pool, embedder, table, strategy).await
    }

    /// A selector on `table` with a hybrid or dense strategy (lexical selection needs no shared
    /// index of embeddings: use [`LocalSelector::lexical`](super::LocalSelector::lexical)).
    pub async fn with_strategy(
        pool: PgPool,
        embedder: Arc<dyn Embedder>,
        table: &str,
        strategy: Strategy,
    ) -> Result<Self> {
        if strategy == Strategy::Lexical {
            return Err(Error::Config(
                "the pgvector index selects by embeddings: use a dense or hybrid strategy".into(),
            ));
        }
        if table.is_empty()
            || table.len() > 60
            || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Config(format!(
                "table name {table:?}: use letters, digits and _"
            )));
        }
        let dims = embedder.dimensions();
        let statements = [
            "create extension if not exists vector".to_owned(),
            format!(
                "create table if not exists {table} (id text primary key, kind text not null, \
                 tags text[] not null default '{{}}', embedding vector({dims}) not null)"
            ),
            format!(
                "create index if not exists {table}_hnsw on {table} using hnsw (embedding vector_ip_ops)"
            ),
            format!("alter table {table} add column if not exists fingerprint text"),
            // What BM25 reads of each item: its distinct terms, their frequencies and its
            // length in terms.
            format!(
                "alter table {table} add column if not exists terms text[] not null default '{{}}', \
                 add column if not exists frequencies real[] not null default '{{}}', \
                 add column if not exists doc_length real not null default 0"
            ),
            // Finds the rows holding a request's terms without reading every row's terms.
            format!("create index if not exists {table}_terms on {table} using gin (terms)"),
        ];
        for statement in statements {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .map_err(db_error)?;
        }
        Ok(PgVectorSelector {
            pool,
            embedder,
            table: table.to_owned(),
            strategy,
            embedded: AtomicU64::new(0),
        })
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How many items the shared index holds.
    pub async fn count(&self) -> Result<usize> {
        let statement = format!("select count(*) from {}", self.table);
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(usize::try_from(count).unwrap_or_default())
    }

    /// The fingerprints stored for `ids`, by id.
    async fn fingerprints(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, String>> {
        let statement = format!(
            "select id, fingerprint from {} where id = any($1) and fingerprint is not null",
            self.table
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id").map_err(db_error)?,
                    row.try_get("fingerprint").map_err(db_error)?,
                ))
            })
            .collect()
    }

    /// The `top_k` nearest items to `vector` that pass the query's filters.
    async fn nearest(&self, query: &SelectionQuery, vector: &[f32]) -> Result<Vec<Scored>> {
        let vector = vector_literal(vector);
        let kinds: Vec<&str> = query.kinds.iter().copied().map(kind_name).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // A wider candidate list than top_k keeps HNSW recall high; iterative scans keep
        // filtered queries from coming back short.
        let ef_search = (query.top_k * 4).clamp(40, 1000);
        for setting in [
            format!("set local hnsw.ef_search = {ef_search}"),
            "set local hnsw.iterative_scan = relaxed_order".to_owned(),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(setting))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        let statement = format!(
            "select id, kind, score from (
                 select id, kind, -(embedding <#> $1::vector) as score from {}
                 where (cardinality($2::text[]) = 0 or kind = any($2))
                   and (cardinality($3::text[]) = 0 or tags && $3)
                   and not (id = any($4))
                 order by embedding <#> $1::vector
                 limit $5
             ) found order by score desc",
            self.table
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(&vector)
            .bind(&kinds)
            .bind(&query.tags)
            .bind(&query.exclude)
            .bind(query.top_k as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(Scored {
                    id: row.try_get("id").map_err(db_error)?,
                    kind: kind_of(row)?,
                    score: (row.try_get::<f64, _>("score").map_err(db_error)? as f32)
                        .clamp(0.0, 1.0),
                })
            })
            .collect()
    }
}

#[async_trait]
impl ToolSelector for PgVectorSelector {
    async fn upsert(&self, items: Vec<IndexItem>) -> Result<()> {
        isa_core::refuse_duplicate_ids(&items)?;
        if items.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = items.iter().map(IndexItem::document_text).collect();
        let prints: Vec<String> = texts.iter().map(|t| fingerprint(t)).collect();
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        let stored = self.fingerprints(&ids).await?;
        let changed: Vec<usize> = (0..items.len())
            .filter(|&i| stored.get(&items[i].id) != Some(&prints[i]))
            .collect();
        let to_embed: Vec<String> = changed.iter().map(|&i| texts[i].clone()).collect();
        let vectors = if to_embed.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed(&to_embed, TextKind::Document).await?
        };
        let mut new_vectors: std::collections::HashMap<usize, Vec<f32>> =
            changed.into_iter().zip(vectors).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let insert = format!(
            "insert into {} (id, kind, tags, terms, frequencies, doc_length, embedding, fingerprint) \
             values ($1, $2, $3, $4, $5, $6, $7::vector, $8) \
             on conflict (id) do update set kind = excluded.kind, tags = excluded.tags, \
             terms = excluded.terms, frequencies = excluded.frequencies, \
             doc_length = excluded.doc_length, embedding = excluded.embedding, \
             fingerprint = excluded.fingerprint",
            self.table
        );
        // Terms are written whether or not the text changed, so a row indexed before they were
        // stored, or under an older analyser, gets them at the next upsert.
        let retag = format!(
            "update {} set kind = $2, tags = $3, terms = $4, frequencies = $5, doc_length = $6 \
             where id = $1",
            self.table
        );
        for (i, item) in items.iter().enumerate() {
            let counts = TermCounts::of(item);
            let (terms, frequencies): (Vec<String>, Vec<f32>) =
                counts.frequencies.into_iter().unzip();
            let vector = new_vectors.remove(&i);
            let statement = sqlx::query(sqlx::AssertSqlSafe(match vector {
                Some(_) => insert.as_str(),
                None => retag.as_str(),
            }))
            .bind(&item.id)
            .bind(kind_name(item.kind))
            .bind(&item.tags)
            .bind(terms)
            .bind(frequencies)
            .bind(counts.len);
            let statement = match vector {
                Some(vector) => statement.bind(vector_literal(&vector)).bind(&prints[i]),
                None => statement,
            };
            statement.execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        self.embedded
            .fetch_add(to_embed.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn remove(&self, ids: &[String]) -> Result<()> {
        let statement = format!("delete from {} where id = any($1)", self.table);
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    fn stats(&self) -> Option<IndexStats> {
        Some(IndexStats {
            backend: "pgvector".into(),
            documents_embedded: self.embedded.load(Ordering::Relaxed),
        })
    }

    async fn select(&self, query: &SelectionQuery) -> Result<Vec<Scored>> {
        Ok(self.assess(query).await?.items)
    }
}

impl PgVectorSelector {
    /// Selects as [`ToolSelector::select`] does, and says how relevant the request is to the
    /// index, as [`LocalSelector::assess`](super::LocalSelector::assess) does.
    pub async fn assess(&self, query: &SelectionQuery) -> Result<Ranking> {
        if query.top_k == 0 {
            return Ok(Ranking::default());
        }
        let spans = clause_spans(&query.text);
        let vectors = self
            .embedder
            .embed_with_parts(&query.text, &spans, TextKind::Query)
            .await?;
        let ranking = match self.strategy {
            Strategy::Dense => self.dense_ranking(query, &vectors).await?,
            _ => {
                let texts = request_texts(&query.text, &spans);
                self.fused_ranking(query, &texts, &vectors).await?
            }
        };
        Ok(ranking.floored(query))
    }

    /// Dense selection through the HNSW index: each text's nearest items, clauses discounted.
    async fn dense_ranking(&self, query: &SelectionQuery, vectors: &[Vec<f32>]) -> Result<Ranking> {
        // Every item of the true top k is in the top k of the text it scores best on, so the
        // union of the per-text lists holds the answer.
        let mut best: std::collections::HashMap<String, Scored> = std::collections::HashMap::new();
        for (i, vector) in vectors.iter().enumerate() {
            let factor = if i == 0 { 1.0 } else { CLAUSE_DISCOUNT };
            for mut found in self.nearest(query, vector).await? {
                found.score *= factor;
                match best.get(&found.id) {
                    Some(existing) if existing.score >= found.score => {}
                    _ => {
                        best.insert(found.id.clone(), found);
                    }
                }
            }
        }
        // Scores are (discounted) cosines, as the in-memory dense selector's, so the best is
        // the request's relevance.
        let relevance = best.values().map(|s| s.score).fold(0f32, f32::max);
        let mut items: Vec<Scored> = best
            .into_values()
            .filter(|s| query.min_score.is_none_or(|min| s.score >= min))
            .collect();
        items.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        items.truncate(query.top_k);
        Ok(Ranking { items, relevance })
    }

    /// Hybrid selection as in memory: every row's cosine with each text and the texts' terms it
    /// holds, read in one statement (one snapshot of the table), fused by [`fuse`].
    async fn fused_ranking(
        &self,
        query: &SelectionQuery,
        texts: &[String],
        vectors: &[Vec<f32>],
    ) -> Result<Ranking> {
        let mut query_terms: Vec<String> = texts
            .iter()
            .flat_map(|text| Bm25Index::query_terms(text))
            .collect();
        query_terms.sort();
        query_terms.dedup();
        let kinds: Vec<&str> = query.kinds.iter().copied().map(kind_name).collect();
        let cosines = (0..vectors.len())
            .map(|i| format!("-(r.embedding <#> ${}::vector)", i + 5))
            .collect::<Vec<_>>()
            .join(", ");
        // Rows in id order, so equal scores rank by id.
        let statement = format!(
            "with found as ( \
                 select r.id, array_agg(t.term) as terms, array_agg(t.frequency) as frequencies \
                 from {table} r, unnest(r.terms, r.frequencies) as t(term, frequency) \
                 where r.terms && $1 and t.term = any($1) group by r.id) \
             select r.id, r.kind, r.doc_length, \
                 (cardinality($2::text[]) = 0 or r.kind = any($2)) \
                 and (cardinality($3::text[]) = 0 or r.tags && $3) \
                 and not (r.id = any($4)) as admitted, \
                 array[{cosines}]::real[] as cosines, \
                 coalesce(found.terms, '{{}}') as terms, \
                 coalesce(found.frequencies, '{{}}') as frequencies \
             from {table} r left join found on found.id = r.id \
             order by r.id",
            table = self.table
        );
        let mut statement = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(&query_terms)
            .bind(&kinds)
            .bind(&query.tags)
            .bind(&query.exclude);
        for vector in vectors {
            statement = statement.bind(vector_literal(vector));
        }
        let rows = statement.fetch_all(&self.pool).await.map_err(db_error)?;
        if rows.is_empty() {
            return Ok(Ranking::default());
        }
        let mut found = Vec::with_capacity(rows.len());
        let mut admitted = Vec::with_capacity(rows.len());
        let mut counts = Vec::with_capacity(rows.len());
        let mut dense = vec![Vec::with_capacity(rows.len()); vectors.len()];
        for row in &rows {
            found.push((
                row.try_get::<String, _>("id").map_err(db_error)?,
                kind_of(row)?,
            ));
            admitted.push(row.try_get::<bool, _>("admitted").map_err(db_error)?);
            let terms: Vec<String> = row.try_get("terms").map_err(db_error)?;
            let frequencies: Vec<f32> = row.try_get("frequencies").map_err(db_error)?;
            counts.push(TermCounts {
                len: row.try_get("doc_length").map_err(db_error)?,
                frequencies: terms.into_iter().zip(frequencies).collect(),
            });
            let cosines: Vec<f32> = row.try_get("cosines").map_err(db_error)?;
            for (text, cosine) in dense.iter_mut().zip(cosines) {
                text.push(cosine);
            }
        }
        let bm25 = Bm25Index::from_counts(counts);
        let (best, relevance) = fuse(self.strategy, query, texts, dense, Some(&bm25), &admitted)?;
        let items = best
            .into_iter()
            .map(|(i, score)| {
                let (id, kind) = found[i].clone();
                Scored { id, kind, score }
            })
            .collect();
        Ok(Ranking { items, relevance })
    }
}
