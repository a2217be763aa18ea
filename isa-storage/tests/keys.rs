//! API keys of isa-auth stored in PostgreSQL, SQLite and memory: the key-store suite of
//! `isa_storage::testing` on each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use isa_auth::MemoryKeyStore;
use isa_storage::testing;

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_issued_verified_listed_and_revoked_in_every_store() {
    for (name, db, _dir) in common::databases().await {
        testing::keys_are_issued_verified_listed_and_revoked(name, Arc::new(db)).await;
    }
    testing::keys_are_issued_verified_listed_and_revoked(
        "memory",
        Arc::new(MemoryKeyStore::default()),
    )
    .await;
}
