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
use sha2::{Digest as _, Sha256};
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
    /// The file as it will be: its declared size, no digest until completed.
    pub file: FileRecord,
    /// Where to PUT the bytes.
    pub url: PresignedUrl,
}

/// What [`UserFiles::sweep_abandoned`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Direct uploads never completed, with their bytes.
    pub uploads: usize,
    /// Objects sent to upload URLs after their uploads were completed, deleted or swept.
    pub stray_objects: usize,
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
        let id = Uuid::now_v7();
        let created_at = now_to_the_microsecond();
        let key = FileKey::new(
            user,
            created_at.date_naive(),
            &id.simple().to_string(),
            name,
        );
        let (body, digest) = hashed(head, body);
        let opts = PutOptions {
            content_type: Some(content_type.clone()),
            max_size: Some(self.config.max_size),
        };
        let info = self.store.put(&key, body, opts).await?;
        let record = FileRecord {
            id: id.to_string(),
            user_id: user.clone(),
            key: key.as_str().to_owned(),
            name: display_name(name),
            size: info.size,
            content_type,
            sha256: Some(digest.finish()?),
            created_at,
        };
        if let Err(e) = self.index.insert(&record, FileStatus::Ready).await {
            self.forget_object(&key).await;
            return Err(e);
        }
        self.uploaded(&record).await;
        Ok(record)
    }

    /// Starts a direct upload of `size` bytes: a presigned URL that accepts a PUT of exactly
    /// that many, and a pending file that [`UserFiles::complete_upload`] checks and makes
    /// visible. The URL writes to an upload key ([`FileKey::upload`]), never to a file: bytes
    /// sent after the upload was completed, or after the file was deleted, are never served,
    /// and [`UserFiles::sweep_abandoned`] removes them.
    pub async fn begin_upload(
        &self,
        user: &UserId,
        name: &str,
        content_type: &str,
        size: u64,
    ) -> Result<PendingUpload> {
        if size > self.config.max_size {
            return Err(Error::TooLarge {
                limit: self.config.max_size,
            });
        }
        let id = Uuid::now_v7();
        let created_at = now_to_the_microsecond();
        let key = FileKey::upload(
            user,
            created_at.date_naive(),
            &id.simple().to_string(),
            name,
        );
        let file = FileRecord {
            id: id.to_string(),
            user_id: user.clone(),
            key: key.as_str().to_owned(),
            name: display_name(name),
            size,
            content_type: content_type.to_owned(),
            sha256: None,
            created_at,
        };
        self.index.insert(&file, FileStatus::Pending).await?;
        let url = self
            .store
            .presign(
                PresignMethod::Put {
                    content_length: size,
                },
                &key,
                self.config.url_ttl,
            )
            .await?;
        Ok(PendingUpload { file, url })
    }

    /// Checks what arrived for a direct upload as [`UserFiles::upload`] checks an upload, and
    /// keeps it as a file of its own: the bytes are read once from the upload key, checked and
    /// hashed as they are copied to a new file key, so what is recorded is exactly what is
    /// served, whatever is sent to the upload URL later. Content that fails the check is
    /// deleted with its pending file; anything else that fails (the store or the database
    /// unavailable, nothing uploaded yet) leaves the upload pending, to be completed again.
    pub async fn complete_upload(&self, user: &UserId, id: &str) -> Result<FileRecord> {
        let pending = self.find(user, id, FileStatus::Pending).await?;
        if self.is_abandoned(&pending) {
            return Err(Error::NotFound(format!(
                "pending upload {id} (abandoned: it was not completed in time)"
            )));
        }
        let staged = FileKey::parse(&pending.key)?;
        let file = match self.copy_checked(&pending, &staged).await {
            Ok(file) => file,
            Err(e @ (Error::UnsupportedMediaType(_) | Error::TooLarge { .. })) => {
                self.forget_object(&staged).await;
                self.index.remove(user, id, FileStatus::Pending).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let key = FileKey::parse(&file.key)?;
        match self.index.mark_ready(&file).await {
            Ok(true) => {}
            Ok(false) => {
                // Completed (or swept) by someone else meanwhile: their copy is the file.
                self.forget_object(&key).await;
                return Err(Error::NotFound(format!("pending upload {id}")));
            }
            Err(e) => {
                self.forget_object(&key).await;
                return Err(e);
            }
        }
        self.forget_object(&staged).await;
        self.uploaded(&file).await;
        Ok(file)
    }

    /// Copies the bytes at `staged` to a new file key, checking their type against the pending
    /// file's and their size against both the declared size and the limit: the file as it will
    /// be kept. A copy that fails is deleted.
    async fn copy_checked(&self, pending: &FileRecord, staged: &FileKey) -> Result<FileRecord> {
        let mut body = self.store.get(staged).await.map_err(|e| match e {
            Error::NotFound(_) => Error::invalid("nothing was uploaded to the URL yet"),
            other => other,
        })?;
        let head = read_head(&mut body, SNIFF_LEN).await?;
        let content_type = check_media_type(Some(&pending.content_type), &pending.name, &head)?;
        let key = FileKey::new(
            &pending.user_id,
            pending.created_at.date_naive(),
            &Uuid::now_v7().simple().to_string(),
            &pending.name,
        );
        let (body, digest) = hashed(head, body);
        let opts = PutOptions {
            content_type: Some(content_type.clone()),
            max_size: Some(self.config.max_size.min(pending.size)),
        };
        let info = match self.store.put(&key, body, opts).await {
            Ok(info) if info.size == pending.size => info,
            Ok(_) => {
                self.forget_object(&key).await;
                return Err(Error::invalid("the upload is shorter than declared"));
            }
            Err(e) => {
                self.forget_object(&key).await;
                return Err(e);
            }
        };
        Ok(FileRecord {
            key: key.as_str().to_owned(),
            size: info.size,
            content_type,
            sha256: Some(digest.finish()?),
            ..pending.clone()
        })
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

    /// A text file of the user's (`text/*` or JSON) of at most `limit` bytes: its record and
    /// its content.
    pub async fn read_text(
        &self,
        user: &UserId,
        id: &str,
        limit: u64,
    ) -> Result<(FileRecord, String)> {
        let file = self.get(user, id).await?;
        let textual =
            file.content_type.starts_with("text/") || file.content_type == "application/json";
        if !textual {
            return Err(Error::UnsupportedMediaType(format!(
                "{} is {}, not text",
                file.name, file.content_type
            )));
        }
        if file.size > limit {
            return Err(Error::TooLarge { limit });
        }
        let stream = self.store.get(&FileKey::parse(&file.key)?).await?;
        let bytes = isa_core::collect_bytes(stream, limit).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::invalid(format!("{} is not UTF-8 text", file.name)))?;
        Ok((file, text))
    }

    /// Deletes a file of the user's: its bytes, then its metadata.
    pub async fn delete(&self, user: &UserId, id: &str) -> Result<()> {
        let file = self.get(user, id).await?;
        self.store.delete(&FileKey::parse(&file.key)?).await?;
        self.index.remove(user, id, FileStatus::Ready).await?;
        Ok(())
    }

    /// Removes direct uploads begun more than `older_than` ago and never completed (the server
    /// passes [`FilesConfig::abandoned_after`]): their bytes, if any arrived, and their records;
    /// then every object under the upload keys last written before then, which is what was
    /// sent to an upload URL after its upload was completed or its file deleted.
    ///
    /// Each pending file is first marked abandoned, so it can no longer be completed; then its
    /// bytes go; then its record. A sweep stopped at any point leaves an abandoned record the
    /// next sweep finishes, never a ready file without bytes nor bytes without a record. An
    /// object under the upload keys older than `older_than` can belong to no upload that can
    /// still be completed: the upload began before the object was written.
    pub async fn sweep_abandoned(&self, older_than: Duration) -> Result<Swept> {
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| now_to_the_microsecond().checked_sub_signed(age))
            .ok_or_else(|| Error::invalid("sweep age out of range"))?;
        let mut swept = Swept::default();
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
                swept.uploads += 1;
            }
        }
        let mut after = None;
        loop {
            let page = self
                .store
                .list(FileKey::UPLOADS_PREFIX, after.as_deref(), SWEEP_BATCH)
                .await?;
            for object in page.objects {
                if object.last_modified < cutoff {
                    self.store.delete(&object.key).await?;
                    swept.stray_objects += 1;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(swept),
            }
        }
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

/// The SHA-256 of a body, computed as it streams by.
struct Digest(Arc<Mutex<Sha256>>);

impl Digest {
    /// The hex digest of everything that streamed by.
    fn finish(self) -> Result<String> {
        match self.0.lock() {
            Ok(hasher) => Ok(hex::encode(hasher.clone().finalize())),
            Err(_) => Err(Error::internal("the upload hasher was poisoned")),
        }
    }
}

/// `head` followed by the rest of `body`, hashed on the way through.
fn hashed(head: Vec<u8>, body: ByteStream) -> (ByteStream, Digest) {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let hashing = hasher.clone();
    let stream: ByteStream = Box::pin(
        futures::stream::once(futures::future::ready(Ok(bytes::Bytes::from(head))))
            .chain(body)
            .inspect_ok(move |chunk| {
                if let Ok(mut h) = hashing.lock() {
                    h.update(chunk);
                }
            }),
    );
    (stream, Digest(hasher))
}
