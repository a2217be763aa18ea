//! MCP tasks on both databases, and in the MCP service's memory: the behaviour suite of
//! `isa_storage::testing`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use isa_storage::testing;

#[tokio::test(flavor = "multi_thread")]
async fn tasks_behave_on_every_database() {
    for (name, db, _dir) in common::databases().await {
        testing::tasks_are_stored_whole_and_updated_only_from_the_version_read(name, &db).await;
    }
    let memory = isa_core::mcp::MemoryTaskStore::default();
    testing::tasks_are_stored_whole_and_updated_only_from_the_version_read("memory", &memory).await;
}
