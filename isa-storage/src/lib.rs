//! # isa-storage
//!
//! Storage for isa:
//!
//! - [`files::ObjectFileStore`]: the [`FileStore`](isa_core::FileStore) on `object_store` for S3
//!   (and S3-compatible servers such as Garage), local disk and memory, with presigned URLs;
//! - [`db::Database`]: PostgreSQL or SQLite, chosen by URL, with migrations for both: users,
//!   API keys ([`keys`]), file metadata, events, credits ([`users`]) and agent sessions;
//! - [`user_files::UserFiles`]: users' files, checked on the way in (size, [`media`] type
//!   against the leading bytes, SHA-256), and their MCP tools ([`file_tools`]);
//! - [`events`]: event sinks on the database with batching through a bounded channel, and the log;
//! - [`users`]: the users and credits of `isa-core`'s [`UserStore`](isa_core::UserStore) and
//!   [`CreditLedger`](isa_core::CreditLedger) on the database; with feature `testing`, the
//!   behaviour every such store must have (module `testing`).

pub mod db;
pub mod events;
pub mod file_tools;
pub mod files;
pub mod keys;
pub mod media;
#[cfg(feature = "testing")]
pub mod testing;
pub mod user_files;
pub mod users;
