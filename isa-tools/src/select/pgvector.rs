//! A [`ToolSelector`] on PostgreSQL + pgvector, so that several server instances share one tool
//! index and see each other's changes at once.
//!
//! Vectors are the embedder's L2-normalised document embeddings in an HNSW index over inner
//! product (`vector_ip_ops`); the score of a match is its cosine similarity clamped to `[0, 1]`,
//! and a multi-intent request's clauses are scored too, as the in-memory dense selector scores.
//! Filters (kinds, tags, exclusions) run inside the index scan with pgvector's iterative scans,
//! so a filtered query still fills its `top_k`.
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

use super::{CLAUSE_DISCOUNT, clause_spans};

/// Tool index in a PostgreSQL table.
pub struct PgVectorSelector {
    pool: PgPool,
    embedder: Arc<dyn Embedder>,
    table: String,
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
    /// A selector on `table` (created with its HNSW index when missing). The table name is
    /// letters, digits and `_` only, since it becomes part of SQL statements.
    pub async fn new(pool: PgPool, embedder: Arc<dyn Embedder>, table: &str) -> Result<Self> {
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
            embedded: AtomicU64::new(0),
        })
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
                let kind = match row.try_get::<String, _>("kind").map_err(db_error)?.as_str() {
                    "prompt" => ItemKind::Prompt,
                    "resource" => ItemKind::Resource,
                    _ => ItemKind::Tool,
                };
                Ok(Scored {
                    id: row.try_get("id").map_err(db_error)?,
                    kind,
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
            "insert into {} (id, kind, tags, embedding, fingerprint) values ($1, $2, $3, $4::vector, $5) \
             on conflict (id) do update set kind = excluded.kind, tags = excluded.tags, \
             embedding = excluded.embedding, fingerprint = excluded.fingerprint",
            self.table
        );
        let retag = format!(
            "update {} set kind = $2, tags = $3 where id = $1",
            self.table
        );
        for (i, item) in items.iter().enumerate() {
            let statement = match new_vectors.remove(&i) {
                Some(vector) => sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                    .bind(&item.id)
                    .bind(kind_name(item.kind))
                    .bind(&item.tags)
                    .bind(vector_literal(&vector))
                    .bind(&prints[i]),
                None => sqlx::query(sqlx::AssertSqlSafe(retag.as_str()))
                    .bind(&item.id)
                    .bind(kind_name(item.kind))
                    .bind(&item.tags),
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
        if query.top_k == 0 {
            return Ok(Vec::new());
        }
        let spans = clause_spans(&query.text);
        let vectors = self
            .embedder
            .embed_with_parts(&query.text, &spans, TextKind::Query)
            .await?;
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
        if query.min_relevance.is_some_and(|min| relevance < min) {
            return Ok(Vec::new());
        }
        let mut ranked: Vec<Scored> = best
            .into_values()
            .filter(|s| query.min_score.is_none_or(|min| s.score >= min))
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        ranked.truncate(query.top_k);
        Ok(ranked)
    }
}
