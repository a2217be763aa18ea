//! The index of users' files on SQLite and on PostgreSQL: the file-index suite of
//! `isa_storage::testing` on each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use isa_storage::testing;

#[tokio::test(flavor = "multi_thread")]
async fn the_file_index_suite_passes_on_every_database() {
    for (name, db, _dir) in common::databases().await {
        testing::files_are_indexed_per_user_and_status(name, &db, &db).await;
        testing::file_listings_filter_and_page(name, &db, &db).await;
        testing::abandoned_uploads_are_found_and_can_no_longer_be_completed(name, &db, &db).await;
    }
}
