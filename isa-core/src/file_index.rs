//! The index of users' files: what each stored object is, whose, and whether it is ready.
//! The bytes live in a [`FileStore`](crate::FileStore); this port keeps their metadata.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Result, UserId};

/// Largest page of a file listing.
pub const MAX_FILE_PAGE: usize = 1000;

/// Default size of a page of a file listing.
pub const DEFAULT_FILE_PAGE: usize = 100;

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File id (UUIDv7, so ids sort by upload time).
    pub id: String,
    /// Owner.
    pub user_id: UserId,
    /// Object key: `users/{user_id}/files/{YYYY}/{MM}/{id}-{sanitised name}`.
    pub key: String,
    /// The name given at upload, without control characters or path separators.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type, checked against the content.
    pub content_type: String,
    /// SHA-256 of the content, hex (absent while a direct upload is pending).
    pub sha256: Option<String>,
    /// When it was uploaded (or, while pending, when the upload began).
    pub created_at: DateTime<Utc>,
}

/// Whether a file may be seen: a direct upload is pending until its content is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Begun, not yet checked: invisible to listings and downloads.
    Pending,
    /// Checked and visible.
    Ready,
    /// A pending upload the sweeper has claimed: it can no longer be completed; its bytes and
    /// then its record are being removed.
    Abandoned,
}

impl FileStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::Ready => "ready",
            FileStatus::Abandoned => "abandoned",
        }
    }
}

/// Which files to list: optionally one year (and month), a page of `limit` after the file id
/// `after`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FileFilter {
    /// Only files uploaded in this year.
    pub year: Option<i32>,
    /// Only files uploaded in this month (needs `year`).
    pub month: Option<u32>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to [`MAX_FILE_PAGE`] ([`DEFAULT_FILE_PAGE`] when absent).
    pub limit: Option<usize>,
}

impl FileFilter {
    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_FILE_PAGE)
            .clamp(1, MAX_FILE_PAGE)
    }
}

/// A page of files in upload order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilePage {
    /// Files in upload order.
    pub files: Vec<FileRecord>,
    /// Pass as `after` to continue; `None` at the end.
    pub next: Option<String>,
}

/// Where file metadata is kept: PostgreSQL and SQLite in `isa-storage`. Every method is scoped
/// to one user except the sweep of abandoned uploads; a file of another user is as absent as
/// one that never existed. `isa-storage`'s `testing` feature holds the behaviour every index
/// must have.
#[async_trait]
pub trait FileIndex: Send + Sync {
    /// Adds `file` with `status`.
    async fn insert(&self, file: &FileRecord, status: FileStatus) -> Result<()>;

    /// The user's file `id` if it has `status`.
    async fn find(&self, user: &UserId, id: &str, status: FileStatus)
    -> Result<Option<FileRecord>>;

    /// Makes the pending file `file.id` of `file.user_id` ready, with `file`'s key, size, type
    /// and digest; false when there is no such pending file.
    async fn mark_ready(&self, file: &FileRecord) -> Result<bool>;

    /// A page of the user's ready files matching `filter`, in id order.
    async fn list(&self, user: &UserId, filter: &FileFilter) -> Result<FilePage>;

    /// Removes the user's file `id` if it has `status`; false when there was none.
    async fn remove(&self, user: &UserId, id: &str, status: FileStatus) -> Result<bool>;

    /// Marks the user's file `id` abandoned if it is pending (or already abandoned); false when
    /// it is not (it was completed, or removed).
    async fn abandon(&self, user: &UserId, id: &str) -> Result<bool>;

    /// At most `limit` unfinished uploads of every user, oldest first: pending files begun before
    /// `cutoff`, and abandoned ones of any age (a sweep that stopped half way).
    async fn unfinished_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<FileRecord>>;
}
