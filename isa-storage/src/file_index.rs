//! The [`FileIndex`] on the database: one row per file in `files`, with the year and month of
//! its upload kept apart so listings by month stay on an index.

use chrono::{DateTime, Datelike, Utc};
use isa_core::{
    Error, FileFilter, FileIndex, FilePage, FileRecord, FileStatus, Result, UserId, async_trait,
};

use crate::db::{Database, db_error, on_pool};

#[derive(sqlx::FromRow)]
struct FileRow {
    id: String,
    user_id: String,
    key: String,
    name: String,
    size: i64,
    content_type: String,
    sha256: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<FileRow> for FileRecord {
    type Error = Error;
    fn try_from(row: FileRow) -> Result<Self> {
        Ok(FileRecord {
            id: row.id,
            user_id: UserId::new(row.user_id)?,
            key: row.key,
            name: row.name,
            size: u64::try_from(row.size).unwrap_or_default(),
            content_type: row.content_type,
            sha256: row.sha256,
            created_at: row.created_at,
        })
    }
}

const COLUMNS: &str = "id, user_id, key, name, size, content_type, sha256, created_at";

fn records(rows: Vec<FileRow>) -> Result<Vec<FileRecord>> {
    rows.into_iter().map(FileRecord::try_from).collect()
}

fn stored_size(size: u64) -> Result<i64> {
    i64::try_from(size).map_err(|_| Error::invalid("file size out of range"))
}

#[async_trait]
impl FileIndex for Database {
    async fn insert(&self, file: &FileRecord, status: FileStatus) -> Result<()> {
        let created = file.created_at;
        let size = stored_size(file.size)?;
        on_pool!(self, pool => sqlx::query(
            "insert into files (id, user_id, key, name, size, content_type, sha256, year, month, status, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&file.id)
        .bind(file.user_id.as_str())
        .bind(&file.key)
        .bind(&file.name)
        .bind(size)
        .bind(&file.content_type)
        .bind(&file.sha256)
        .bind(created.year())
        .bind(created.month() as i32)
        .bind(status.as_str())
        .bind(created)
        .execute(pool)
        .await
        .map_err(db_error)?
            .rows_affected());
        Ok(())
    }

    async fn find(
        &self,
        user: &UserId,
        id: &str,
        status: FileStatus,
    ) -> Result<Option<FileRecord>> {
        let sql =
            format!("select {COLUMNS} from files where id = $1 and user_id = $2 and status = $3");
        let row: Option<FileRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(user.as_str())
            .bind(status.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_error)?);
        row.map(FileRecord::try_from).transpose()
    }

    async fn mark_ready(&self, file: &FileRecord) -> Result<bool> {
        let size = stored_size(file.size)?;
        let changed = on_pool!(self, pool => sqlx::query(
            "update files set status = 'ready', key = $3, size = $4, content_type = $5, sha256 = $6 \
             where id = $1 and user_id = $2 and status = 'pending'",
        )
        .bind(&file.id)
        .bind(file.user_id.as_str())
        .bind(&file.key)
        .bind(size)
        .bind(&file.content_type)
        .bind(&file.sha256)
        .execute(pool)
        .await
        .map_err(db_error)?
            .rows_affected());
        Ok(changed > 0)
    }

    async fn list(&self, user: &UserId, filter: &FileFilter) -> Result<FilePage> {
        let limit = filter.page_size();
        let sql = format!(
            "select {COLUMNS} from files where user_id = $1 and status = 'ready' \
             and ($2 is null or year = $2) and ($3 is null or month = $3) \
             and ($4 is null or id > $4) order by id limit $5"
        );
        let rows: Vec<FileRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user.as_str())
            .bind(filter.year)
            .bind(filter.month.map(|m| m as i32))
            .bind(filter.after.as_deref())
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await
            .map_err(db_error)?);
        let mut files = records(rows)?;
        let more = files.len() > limit;
        files.truncate(limit);
        let next = if more {
            files.last().map(|f| f.id.clone())
        } else {
            None
        };
        Ok(FilePage { files, next })
    }

    async fn remove(&self, user: &UserId, id: &str, status: FileStatus) -> Result<bool> {
        let removed = on_pool!(self, pool => sqlx::query(
            "delete from files where id = $1 and user_id = $2 and status = $3",
        )
        .bind(id)
        .bind(user.as_str())
        .bind(status.as_str())
        .execute(pool)
        .await
        .map_err(db_error)?
            .rows_affected());
        Ok(removed > 0)
    }

    async fn abandon(&self, user: &UserId, id: &str) -> Result<bool> {
        let changed = on_pool!(self, pool => sqlx::query(
            "update files set status = 'abandoned' \
             where id = $1 and user_id = $2 and status in ('pending', 'abandoned')",
        )
        .bind(id)
        .bind(user.as_str())
        .execute(pool)
        .await
        .map_err(db_error)?
            .rows_affected());
        Ok(changed > 0)
    }

    async fn unfinished_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<FileRecord>> {
        let sql = format!(
            "select {COLUMNS} from files \
             where (status = 'pending' and created_at < $1) or status = 'abandoned' \
             order by created_at, id limit $2"
        );
        let rows: Vec<FileRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(cutoff)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
            .map_err(db_error)?);
        records(rows)
    }
}
