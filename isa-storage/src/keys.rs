//! The API-key store of `isa-auth` on PostgreSQL and SQLite. (isa-storage depends on isa-auth
//! for this trait alone: the issue that defines keys puts their storage here.)

use chrono::{DateTime, Utc};
use isa_auth::{ApiKeyRecord, KeyStore};
use isa_core::{Error, Result, UserId, async_trait};
use sqlx::Row;

use crate::db::{Database, db_error};

/// Times are stored as RFC 3339 text on SQLite.
fn text_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_time(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| Error::internal(format!("stored time: {e}")))
    })
    .transpose()
}

const COLUMNS: &str =
    "id, user_id, name, secret_hash, scopes, created_at, last_used_at, revoked_at, expires_at";

fn pg_record(row: &sqlx::postgres::PgRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id").map_err(db_error)?,
        user_id: UserId::new(row.try_get::<String, _>("user_id").map_err(db_error)?)?,
        name: row.try_get("name").map_err(db_error)?,
        secret_hash: row.try_get("secret_hash").map_err(db_error)?,
        scopes: row
            .try_get::<sqlx::types::Json<Vec<String>>, _>("scopes")
            .map_err(db_error)?
            .0,
        created_at: row.try_get("created_at").map_err(db_error)?,
        last_used_at: row.try_get("last_used_at").map_err(db_error)?,
        revoked_at: row.try_get("revoked_at").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
    })
}

fn sqlite_record(row: &sqlx::sqlite::SqliteRow) -> Result<ApiKeyRecord> {
    let scopes: String = row.try_get("scopes").map_err(db_error)?;
    Ok(ApiKeyRecord {
        id: row.try_get("id").map_err(db_error)?,
        user_id: UserId::new(row.try_get::<String, _>("user_id").map_err(db_error)?)?,
        name: row.try_get("name").map_err(db_error)?,
        secret_hash: row.try_get("secret_hash").map_err(db_error)?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| Error::internal(format!("stored scopes: {e}")))?,
        created_at: parse_time(Some(row.try_get("created_at").map_err(db_error)?))?
            .unwrap_or_default(),
        last_used_at: parse_time(row.try_get("last_used_at").map_err(db_error)?)?,
        revoked_at: parse_time(row.try_get("revoked_at").map_err(db_error)?)?,
        expires_at: parse_time(row.try_get("expires_at").map_err(db_error)?)?,
    })
}

#[async_trait]
impl KeyStore for Database {
    async fn insert(&self, r: ApiKeyRecord) -> Result<()> {
        match self {
            Database::Postgres(pool) => {
                sqlx::query(
                    "insert into api_keys (id, user_id, name, secret_hash, scopes, created_at, expires_at) values ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&r.id)
                .bind(r.user_id.as_str())
                .bind(&r.name)
                .bind(&r.secret_hash)
                .bind(sqlx::types::Json(&r.scopes))
                .bind(r.created_at)
                .bind(r.expires_at)
                .execute(pool)
                .await
                .map_err(db_error)?;
            }
            Database::Sqlite(pool) => {
                sqlx::query("insert into api_keys (id, user_id, name, secret_hash, scopes, created_at, expires_at) values (?, ?, ?, ?, ?, ?, ?)")
                    .bind(&r.id)
                    .bind(r.user_id.as_str())
                    .bind(&r.name)
                    .bind(&r.secret_hash)
                    .bind(serde_json::to_string(&r.scopes).map_err(|e| Error::internal(e.to_string()))?)
                    .bind(text_time(r.created_at))
                    .bind(r.expires_at.map(text_time))
                    .execute(pool)
                    .await
                    .map_err(db_error)?;
            }
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        match self {
            Database::Postgres(pool) => {
                let sql = format!("select {COLUMNS} from api_keys where id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_error)?;
                row.as_ref().map(pg_record).transpose()
            }
            Database::Sqlite(pool) => {
                let sql = format!("select {COLUMNS} from api_keys where id = ?");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_error)?;
                row.as_ref().map(sqlite_record).transpose()
            }
        }
    }

    async fn list(&self, user: &UserId) -> Result<Vec<ApiKeyRecord>> {
        match self {
            Database::Postgres(pool) => {
                let sql = format!(
                    "select {COLUMNS} from api_keys where user_id = $1 order by created_at desc"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(user.as_str())
                    .fetch_all(pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(pg_record).collect()
            }
            Database::Sqlite(pool) => {
                let sql = format!(
                    "select {COLUMNS} from api_keys where user_id = ? order by created_at desc"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(user.as_str())
                    .fetch_all(pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(sqlite_record).collect()
            }
        }
    }

    async fn revoke(&self, user: &UserId, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let changed = match self {
            Database::Postgres(pool) => sqlx::query(
                "update api_keys set revoked_at = coalesce(revoked_at, $3) where id = $1 and user_id = $2",
            )
            .bind(id)
            .bind(user.as_str())
            .bind(at)
            .execute(pool)
            .await
            .map_err(db_error)?
            .rows_affected(),
            Database::Sqlite(pool) => {
                sqlx::query("update api_keys set revoked_at = coalesce(revoked_at, ?) where id = ? and user_id = ?")
                    .bind(text_time(at))
                    .bind(id)
                    .bind(user.as_str())
                    .execute(pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected()
            }
        };
        Ok(changed > 0)
    }

    async fn touch(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        match self {
            Database::Postgres(pool) => {
                sqlx::query("update api_keys set last_used_at = $2 where id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(pool)
                    .await
                    .map_err(db_error)?;
            }
            Database::Sqlite(pool) => {
                sqlx::query("update api_keys set last_used_at = ? where id = ?")
                    .bind(text_time(at))
                    .bind(id)
                    .execute(pool)
                    .await
                    .map_err(db_error)?;
            }
        }
        Ok(())
    }
}
