//! # isa-storage
//!
//! Storage backends for isa. Today: [`files::ObjectFileStore`], the [`FileStore`](isa_core::FileStore)
//! on `object_store` for S3 (and S3-compatible servers such as Garage), local disk and memory,
//! with presigned URLs; [`events`]: event sinks on PostgreSQL and SQLite with batching, and the log; [`pgvector::PgVectorSelector`]: a tool index several servers share.

pub mod db;
pub mod events;
pub mod file_tools;
pub mod files;
pub mod keys;
pub mod media;
pub mod pgvector;
pub mod user_files;
pub mod users;
