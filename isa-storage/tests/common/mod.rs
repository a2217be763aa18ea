//! Helpers shared by the database tests.

#![allow(clippy::unwrap_used)]

use isa_storage::db::Database;

/// Both databases: a SQLite file in a temporary directory (kept alive by the returned
/// `TempDir`), and the test PostgreSQL when the test command started it.
pub async fn databases() -> Vec<(&'static str, Database, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("isa.db").display());
    let mut dbs = vec![(
        "sqlite",
        Database::connect(&sqlite_url).await.unwrap(),
        Some(dir),
    )];
    match std::env::var("ISA_TEST_DATABASE_URL") {
        Ok(url) => dbs.push(("postgres", Database::connect(&url).await.unwrap(), None)),
        Err(_) => {
            assert!(
                std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "ISA_TEST_DATABASE_URL is not set"
            );
            eprintln!("skipped PostgreSQL: ISA_TEST_DATABASE_URL is not set");
        }
    }
    dbs
}
