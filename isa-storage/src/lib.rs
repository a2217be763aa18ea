//! # isa-storage
//!
//! The storage adapters of isa, each implementing ports of `isa-core`:
//!
//! - [`files::ObjectFileStore`]: the [`FileStore`](isa_core::FileStore) on `object_store` for S3
//!   (and S3-compatible servers such as Garage), local disk and memory, with presigned URLs;
//! - [`db::Database`]: PostgreSQL or SQLite, chosen by URL, with migrations for both. It is the
//!   [`UserStore`](isa_core::UserStore) and [`CreditLedger`](isa_core::CreditLedger)
//!   ([`users`]), the [`KeyStore`](isa_auth::KeyStore) of API keys ([`keys`]), the
//!   [`FileIndex`](isa_core::FileIndex) of users' files ([`file_index`]) and the
//!   [`EventStore`](isa_core::EventStore) and [`EventSink`](isa_core::EventSink) of events
//!   ([`events`]), the agent's [`SessionStore`](isa_core::SessionStore) ([`sessions`]) and
//!   the MCP service's [`TaskStore`](isa_core::TaskStore) ([`tasks`]);
//! - [`events`]: besides, event sinks that batch through a bounded channel, and the log;
//! - with feature `http`, module `presigned`: the router serving a local store's presigned
//!   URLs.
//!
//! The rules built on these ports (users' files, their tools) live in `isa-files`; the
//! services in `servers/`. With feature `testing`, module `testing` holds the behaviour every
//! adapter of these ports must have, which this crate runs against each of its own.

pub mod db;
pub mod events;
pub mod file_index;
pub mod files;
pub mod keys;
#[cfg(feature = "http")]
pub mod presigned;
pub mod sessions;
mod sigv4;
pub mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod users;
