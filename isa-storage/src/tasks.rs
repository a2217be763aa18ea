//! MCP tasks on the database: [`TaskStore`] over `mcp_tasks`, each task kept whole as JSON
//! beside its version (updates are conditional on it) and its expiry.

use chrono::{DateTime, Utc};
use isa_core::{Error, Result, TaskRecord, TaskStore, async_trait};
use sqlx::types::Json;

use crate::db::{Database, db_error, on_pool};

fn expires_at(task: &TaskRecord) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(task.ttl)
        .ok()
        .and_then(|ttl| task.created_at.checked_add_signed(ttl))
        .ok_or_else(|| Error::invalid("a task's time to live is too long"))
}

#[async_trait]
impl TaskStore for Database {
    async fn create(&self, task: &TaskRecord) -> Result<()> {
        let expires = expires_at(task)?;
        on_pool!(self, pool => sqlx::query(
            "insert into mcp_tasks (id, version, expires_at, task) values ($1, $2, $3, $4)")
            .bind(&task.id)
            .bind(task.version)
            .bind(expires)
            .bind(Json(task))
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(db_error)?);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<TaskRecord>> {
        let row: Option<(Json<TaskRecord>, i64)> = on_pool!(self, pool => sqlx::query_as(
            "select task, version from mcp_tasks where id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?);
        Ok(row.map(|(Json(mut task), version)| {
            task.version = version;
            task
        }))
    }

    async fn update(&self, task: &TaskRecord, read_version: i64) -> Result<bool> {
        let expires = expires_at(task)?;
        let written = TaskRecord {
            version: read_version + 1,
            ..task.clone()
        };
        let done = on_pool!(self, pool => sqlx::query(
            "update mcp_tasks set version = $2, expires_at = $3, task = $4 \
             where id = $1 and version = $5")
            .bind(&task.id)
            .bind(written.version)
            .bind(expires)
            .bind(Json(&written))
            .bind(read_version)
            .execute(pool)
            .await
            .map_err(db_error)?
            .rows_affected());
        Ok(done == 1)
    }

    async fn remove_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let removed = on_pool!(self, pool => sqlx::query("delete from mcp_tasks where expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await
            .map_err(db_error)?
            .rows_affected());
        Ok(removed)
    }
}
