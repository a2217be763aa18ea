//! The agent's sessions on both databases: the behaviour suite of `isa_storage::testing`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use isa_storage::testing;

#[tokio::test(flavor = "multi_thread")]
async fn sessions_behave_on_every_database() {
    for (name, db, _dir) in common::databases().await {
        testing::sessions_keep_their_messages_and_belong_to_their_user(name, &db, &db).await;
    }
}
