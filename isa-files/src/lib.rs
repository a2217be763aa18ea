//! # isa-files
//!
//! Users' files: bytes in a [`FileStore`], metadata in a [`FileIndex`]. Every upload is
//! checked before it is kept: its size against the limit, its leading bytes against its
//! declared type ([`media`]), and its SHA-256 is recorded. The user service and the MCP file
//! tools ([`tools`]) both work through [`UserFiles`]. This crate holds the rules only; the
//! stores and indexes it works over are adapters (`isa-storage`).

pub mod media;
pub mod tools;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use isa_core::{
    ByteStream, DEFAULT_MAX_FILE_SIZE, Error, Event, EventSink, FileIndex, FileKey, FileStatus,
    FileStore, MAX_PRESIGN_TTL, PresignMethod, PresignedUrl, PutOptions, Result, UserId,
    now_to_the_microsecond,
};
pub use isa_core::{FileFilter, FilePage, FileRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::media::{SNIFF_LEN, check_media_type};

/// Longest display name kept, in characters.
pub const MAX_DISPLAY_NAME: usize = 255;

/// Abandoned direct uploads removed per sweep at most.
const SWEEP_BATCH: usize = 1000;

/// Limits of the user files.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Largest file accepted, in bytes (50 MB by default).
    pub max_size: u64,
    /// Lifetime of the presigned URLs handed out (one hour by default, at most seven days).
    pub url_ttl: Duration,
}

impl FilesConfig {
    /// How old a direct upload that was never completed must be before it counts as abandoned:
    /// a day past the lifetime of its upload URL. From then on it cannot be completed, and the
    /// sweep removes it.
    pub fn abandoned_after(&self) -> Duration {
        self.url_ttl + Duration::from_secs(24 * 3600)
    }
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_size: DEFAULT_MAX_FILE_SIZE,
            url_ttl: isa_core::DEFAULT_PRESIGN_TTL,
        }
    }
}

/// A file with a fresh presigned download URL, as the user service and the file tools answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileWithUrl {
    /// The file.
    #[serde(flatten)]
    pub file: FileRecord,
    /// Presigned download URL.
    pub url: String,
    /// When the URL stops working.
    pub url_expires_at: chrono::DateTime<Utc>,
}

/// A direct upload: PUT the bytes to `url`, then complete it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingUpload {
    /// The file as it will be (size 0 until completed).
    pub file: FileRecord,
    /// Where to PUT the bytes.
    pub url: PresignedUrl,
}

/// The display name: no control characters or path separators, at most
/// [`MAX_DISPLAY_NAME`] characters; `file` when nothing is left.
pub fn display_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || c == '/' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .take(MAX_DISPLAY_NAME)
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '.') {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Reads from `body` until at least `want` bytes (or the end) have arrived.
async fn read_head(body: &mut ByteStream, want: usize) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    while head.len() < want {
        match body.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => break,
        }
    }
    Ok(head)
}

/// Users' files, checked on the way in.
#[derive(Clone)]
pub struct UserFiles {
    store: Arc<dyn FileStore>,
    index: Arc<dyn FileIndex>,
    config: FilesConfig,
    events: Option<Arc<dyn EventSink>>,
}

impl UserFiles {
    /// Files' bytes in `store`, their metadata in `index`.
    pub fn new(
        store: Arc<dyn FileStore>,
        index: Arc<dyn FileIndex>,
        config: FilesConfig,
    ) -> Result<Self> {
        if config.url_ttl.is_zero() || config.url_ttl > MAX_PRESIGN_TTL {
            return Err(Error::Config(
                "presigned URLs live between 1 second and 7 days".into(),
            ));
        }
        Ok(UserFiles {
            store,
            index,
            config,
            events: None,
        })
    }

    /// Records a `file.uploaded` event in `sink` for every file that becomes ready.
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    async fn uploaded(&self, file: &FileRecord) {
        if let Some(events) = &self.events {
            let payload = serde_json::json!({
                "file_id": file.id,
                "key": file.key,
                "size": file.size,
                "content_type": file.content_type,
            });
            events
                .emit(Event::now(
                    "file.uploaded",
                    Some(file.user_id.clone()),
                    payload,
                ))
                .await;
        }
    }

    /// The limits.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Stores an upload streamed from `body`. Refused with [`Error::UnsupportedMediaType`]
    /// when its bytes contradict `declared_type` (or the type is not allowed), and with
    /// [`Error::TooLarge`] past the size limit; a refused upload leaves nothing behind.
    pub async fn upload(
        &self,
        user: &UserId,
        name: &str,
        declared_type: Option<&str>,
        mut body: ByteStream,
    ) -> Result<FileRecord> {
        let head = read_head(&mut body, SNIFF_LEN).await?;
        let content_type = check_media_type(declared_type, name, &head)?;
        let (id, key) = new_key(user, name);
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let hashing = hasher.clone();
        let body: ByteStream = Box::pin(
            futures::stream::once(futures::future::ready(Ok(bytes::Bytes::from(head))))
                .chain(body)
                .inspect_ok(move |chunk| {
                    if let Ok(mut h) = hashing.lock() {
                        h.update(chunk);
                    }
                }),
        );
        let opts = PutOptions {
            content_type: Some(content_type.clone()),
            max_size: Some(self.config.max_size),
        };
        let info = self.store.put(&key, body, opts).await?;
        let sha256 = match hasher.lock() {
            Ok(h) => hex::encode(h.clone().finalize()),
            Err(_) => return Err(Error::internal("the upload hasher was poisoned")),
        };
        let record = FileRecord {
            id,
            user_id: user.clone(),
            key: key.as_str().to_owned(),
            name: display_name(name),
            size: info.size,
            content_type,
            sha256: Some(sha256),
            created_at: now_to_the_microsecond(),
        };
        if let Err(e) = self.index.insert(&record, FileStatus::Ready).await {
            self.forget_object(&key).await;
            return Err(e);
        }
        self.uploaded(&record).await;
        Ok(record)
    }

    /// Starts a direct upload: a presigned PUT URL, and a pending file that
    /// [`UserFiles::complete_upload`] checks and makes visible.
    pub async fn begin_upload(
        &self,
        user: &UserId,
        name: &str,
        content_type: &str,
    ) -> Result<PendingUpload> {
        let (id, key) = new_key(user, name);
        let url = self
            .store
            .presign(PresignMethod::Put, &key, self.config.url_ttl)
            .await?;
        let file = FileRecord {
            id,
            user_id: user.clone(),
            key: key.as_str().to_owned(),
            name: display_name(name),
            size: 0,
            content_type: content_type.to_owned(),
            sha256: None,
            created_at: now_to_the_microsecond(),
        };
        self.index.insert(&file, FileStatus::Pending).await?;
        Ok(PendingUpload { file, url })
    }

    /// Checks what arrived for a direct upload as [`UserFiles::upload`] checks an upload;
    /// refused content is deleted with its pending file.
    pub async fn complete_upload(&self, user: &UserId, id: &str) -> Result<FileRecord> {
        let pending = self.find(user, id, FileStatus::Pending).await?;
        if self.is_abandoned(&pending) {
            return Err(Error::NotFound(format!(
                "pending upload {id} (abandoned: it was not completed in time)"
            )));
        }
        let key = FileKey::parse(&pending.key)?;
        let (size, content_type, sha256) = match self.check_stored(&pending, &key).await {
            Ok(facts) => facts,
            Err(e) => {
                self.forget_object(&key).await;
                self.index.remove(user, id, FileStatus::Pending).await?;
                return Err(e);
            }
        };
        let file = FileRecord {
            size,
            content_type,
            sha256: Some(sha256),
            ..pending
        };
        if !self.index.mark_ready(&file).await? {
            // Completed (or swept) by someone else meanwhile.
            return Err(Error::NotFound(format!("pending upload {id}")));
        }
        self.uploaded(&file).await;
        Ok(file)
    }

    async fn check_stored(
        &self,
        pending: &FileRecord,
        key: &FileKey,
    ) -> Result<(u64, String, String)> {
        let info = self.store.head(key).await.map_err(|e| match e {
            Error::NotFound(_) => Error::invalid("nothing was uploaded to the URL yet"),
            other => other,
        })?;
        if info.size > self.config.max_size {
            return Err(Error::TooLarge {
                limit: self.config.max_size,
            });
        }
        let mut body = self.store.get(key).await?;
        let head = read_head(&mut body, SNIFF_LEN).await?;
        let content_type = check_media_type(Some(&pending.content_type), &pending.name, &head)?;
        let mut hasher = Sha256::new();
        hasher.update(&head);
        while let Some(chunk) = body.next().await {
            hasher.update(chunk?);
        }
        Ok((info.size, content_type, hex::encode(hasher.finalize())))
    }

    /// The user's files matching `filter`, in upload order.
    pub async fn list(&self, user: &UserId, filter: &FileFilter) -> Result<FilePage> {
        if filter.month.is_some() && filter.year.is_none() {
            return Err(Error::invalid("a month filter needs a year"));
        }
        if filter.month.is_some_and(|m| !(1..=12).contains(&m)) {
            return Err(Error::invalid("month must be 1 to 12"));
        }
        self.index.list(user, filter).await
    }

    /// A file of the user's; [`Error::NotFound`] for files of others, as for files that do
    /// not exist.
    pub async fn get(&self, user: &UserId, id: &str) -> Result<FileRecord> {
        self.find(user, id, FileStatus::Ready).await
    }

    /// The file with a download URL valid for the configured lifetime.
    pub async fn with_download_url(&self, file: FileRecord) -> Result<FileWithUrl> {
        let url = self
            .store
            .presign(
                PresignMethod::Get,
                &FileKey::parse(&file.key)?,
                self.config.url_ttl,
            )
            .await?;
        Ok(FileWithUrl {
            file,
            url: url.url,
            url_expires_at: url.expires_at,
        })
    }

    /// Deletes a file of the user's: its bytes, then its metadata.
    pub async fn delete(&self, user: &UserId, id: &str) -> Result<()> {
        let file = self.get(user, id).await?;
        self.store.delete(&FileKey::parse(&file.key)?).await?;
        self.index.remove(user, id, FileStatus::Ready).await?;
        Ok(())
    }

    /// Removes direct uploads begun more than `older_than` ago and never completed (the server
    /// passes [`FilesConfig::abandoned_after`]): their bytes, if any arrived, and their records.
    /// Returns how many were removed.
    ///
    /// Each is first marked abandoned, so it can no longer be completed; then its bytes go;
    /// then its record. A sweep stopped at any point leaves an abandoned record the next sweep
    /// finishes, never a ready file without bytes nor bytes without a record.
    pub async fn sweep_abandoned(&self, older_than: Duration) -> Result<usize> {
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| now_to_the_microsecond().checked_sub_signed(age))
            .ok_or_else(|| Error::invalid("sweep age out of range"))?;
        let mut swept = 0;
        for file in self.index.unfinished_before(cutoff, SWEEP_BATCH).await? {
            if !self.index.abandon(&file.user_id, &file.id).await? {
                continue; // completed meanwhile
            }
            self.store.delete(&FileKey::parse(&file.key)?).await?;
            if self
                .index
                .remove(&file.user_id, &file.id, FileStatus::Abandoned)
                .await?
            {
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Whether a pending upload is too old to be completed.
    fn is_abandoned(&self, pending: &FileRecord) -> bool {
        let age = (now_to_the_microsecond() - pending.created_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        age > self.config.abandoned_after()
    }

    async fn find(&self, user: &UserId, id: &str, status: FileStatus) -> Result<FileRecord> {
        self.index
            .find(user, id, status)
            .await?
            .ok_or_else(|| Error::NotFound(format!("file {id}")))
    }

    async fn forget_object(&self, key: &FileKey) {
        if let Err(e) = self.store.delete(key).await {
            tracing::warn!(key = %key, error = %e, "could not delete a refused upload");
        }
    }
}

fn new_key(user: &UserId, name: &str) -> (String, FileKey) {
    let id = Uuid::now_v7().to_string();
    let key = FileKey::new(user, Utc::now().date_naive(), &id, name);
    (id, key)
}
