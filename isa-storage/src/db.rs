//! The SQL database behind events, API keys and the rest, on PostgreSQL or SQLite.

use std::time::Duration;

use isa_core::{Error, Result};
use sqlx::{PgPool, SqlitePool, postgres::PgPoolOptions};

/// How long a request waits for a PostgreSQL connection. While the database is down every
/// connection attempt is refused and the pool keeps trying until this passes; it is short so
/// that callers hear 503 (retry shortly) at once rather than hang, and so that a pool
/// exhausted under overload refuses fast too.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the first connection at start may take: a database that is still starting (as
/// after a reboot of both) is waited for.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a database failure means to the caller: a request that contradicts stored data is a
/// conflict or invalid input, for which retrying will not help; an unreachable or overloaded
/// database is unavailable (503, retry); anything else is a bug. The text keeps the database's
/// own words for the log; callers are told only the kind (`Error::public_message`).
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    use sqlx::error::ErrorKind;
    match &e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => {
                Error::Conflict("the request conflicts with stored data".into())
            }
            // Class 22, data exceptions: a value the column cannot hold (a NUL in `jsonb`).
            _ if db.code().is_some_and(|code| code.starts_with("22")) => {
                tracing::warn!(error = %e, "the database refused a value");
                Error::invalid("the database refused a value it cannot store")
            }
            ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation => {
                tracing::warn!(error = %e, "the database refused a write");
                Error::invalid("the database refused the values given")
            }
            _ => Error::Unavailable(format!("database: {e}")),
        },
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Error::Unavailable(format!("database: {e}")),
        _ => Error::internal(format!("database: {e}")),
    }
}

/// Runs the same sqlx code on whichever pool `db` holds. The SQL must read the same on both
/// (`$N` placeholders, which SQLite also understands), and bound values must be types both
/// drivers encode (text, integers, `DateTime<Utc>`, `Json`).
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Database::Postgres($pool) => $body,
            $crate::db::Database::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The database: PostgreSQL (Supabase-compatible) or SQLite (the embedded default), chosen by
/// `DATABASE_URL`, with the migrations of both.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL (Supabase-compatible).
    Postgres(PgPool),
    /// SQLite, the embedded default.
    Sqlite(SqlitePool),
}

/// `~/.local/share/isa`: where servers keep their SQLite database and local files by default.
pub fn default_data_dir() -> std::path::PathBuf {
    std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join(".local/share/isa")
}

impl Database {
    /// Opens `url` when given, else the SQLite file `isa.db` in `data_dir` (created when
    /// missing: on a fresh machine not even `~/.local/share` exists, and SQLite does not create
    /// folders). Every server on one machine shares that file by default.
    pub async fn open(data_dir: &std::path::Path, url: Option<&str>) -> Result<Self> {
        let url = match url {
            Some(url) => url.to_owned(),
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    Error::Config(format!(
                        "creating the data directory {}: {e}",
                        data_dir.display()
                    ))
                })?;
                format!("sqlite://{}", data_dir.join("isa.db").display())
            }
        };
        Database::connect(&url).await
    }

    /// Connects by URL (`postgres://…` or `sqlite://…`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let db = if url.starts_with("postgres") {
            let pool = PgPoolOptions::new()
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy(url)
                .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?;
            wait_for_postgres(&pool).await?;
            Database::Postgres(pool)
        } else if url.starts_with("sqlite") {
            let options: sqlx::sqlite::SqliteConnectOptions = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .map_err(|e| Error::Config(format!("{url}: {e}")))?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
            Database::Sqlite(SqlitePool::connect_with(options).await.map_err(db_error)?)
        } else {
            return Err(Error::Config(format!(
                "DATABASE_URL {url:?}: expected postgres:// or sqlite://"
            )));
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => sqlx::query("select 1").execute(pool).await.map(drop).map_err(db_error))
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> Result<()> {
        let outcome = match self {
            Database::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
            Database::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
        };
        outcome.map_err(|e| Error::Unavailable(format!("migrations: {e}")))
    }
}

/// Waits up to [`START_TIMEOUT`] for the first connection, trying again while it is refused.
async fn wait_for_postgres(pool: &PgPool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match pool.acquire().await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::PoolTimedOut) if tokio::time::Instant::now() < deadline => {}
            Err(e) => return Err(db_error(e)),
        }
    }
}

/// `/health` readiness: the database must answer.
#[isa_core::async_trait]
impl isa_core::HealthCheck for Database {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> Result<()> {
        self.ping().await
    }
}
