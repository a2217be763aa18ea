//! The account ports on both databases: the behaviour suites of `isa_storage::testing`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use isa_storage::testing;

#[tokio::test(flavor = "multi_thread")]
async fn users_and_credits_behave_on_every_database() {
    for (name, db, _dir) in common::databases().await {
        testing::users_are_made_once_on_first_sight(name, &db, &db).await;
        testing::a_request_id_is_charged_once_and_a_balance_never_goes_below_zero(name, &db, &db)
            .await;
        testing::the_history_pages_newest_first(name, &db, &db).await;
        testing::concurrent_charges_never_overdraw(name, Arc::new(db)).await;
    }
}
