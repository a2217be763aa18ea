//! Behaviour every adapter of the storage ports must have (feature `testing`), the way
//! `object_store` exports its suite: this crate runs each check against SQLite, PostgreSQL,
//! memory, local disk and S3 as they apply, and so should an adapter of your own.
//!
//! | port | checks |
//! |---|---|
//! | [`UserStore`](isa_core::UserStore), [`CreditLedger`](isa_core::CreditLedger) | [`users_are_made_once_on_first_sight`], [`a_request_id_is_charged_once_and_a_balance_never_goes_below_zero`], [`the_history_pages_newest_first`], [`concurrent_charges_never_overdraw`] |
//! | [`KeyStore`](isa_auth::KeyStore) | [`keys_are_issued_verified_listed_and_revoked`] |
//! | [`FileIndex`](isa_core::FileIndex) | [`files_are_indexed_per_user_and_status`], [`file_listings_filter_and_page`], [`abandoned_uploads_are_found_and_can_no_longer_be_completed`] |
//! | [`EventStore`](isa_core::EventStore) | [`events_are_stored_once_and_queried_by_user_kind_time_and_page`] |
//! | [`FileStore`](isa_core::FileStore) | [`file_store_conforms`] |
//! | [`SessionStore`](isa_core::SessionStore) | [`sessions_keep_their_messages_and_belong_to_their_user`] |
//! | [`TaskStore`](isa_core::TaskStore) | [`tasks_are_stored_whole_and_updated_only_from_the_version_read`] |
//!
//! Each check panics, naming the backend, when the behaviour is missing. Users get fresh ids,
//! so the checks can run against a database that outlives them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod events;
mod file_index;
mod file_store;
mod keys;
mod sessions;
mod tasks;

pub use accounts::*;
pub use events::*;
pub use file_index::*;
pub use file_store::*;
pub use keys::*;
pub use sessions::*;
pub use tasks::*;

use isa_core::UserId;

/// A user id no other run shares.
fn fresh_user(name: &str) -> UserId {
    UserId::new(format!("{name}-{}", uuid::Uuid::now_v7().simple())).unwrap()
}
