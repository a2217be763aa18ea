//! Users' files: bytes in a [`FileStore`], metadata in the [`Database`]. Every upload is
//! checked before it is kept: its size against the limit, its leading bytes against its
//! declared type ([`media`](crate::media)), and its SHA-256 is recorded. The user service and
//! the MCP file tools both work through [`UserFiles`].

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Datelike, Utc};
use futures::{StreamExt, TryStreamExt};
use isa_core::{
    ByteStream, Error, Event, EventSink, FileKey, FileStore, MAX_PRESIGN_TTL, PresignMethod,
    PresignedUrl, PutOptions, Result, UserId,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    db::{Database, db_error, db_now, on_pool},
    files::DEFAULT_MAX_FILE_SIZE,
    media::{SNIFF_LEN, check_media_type},
};

/// Longest display name kept, in characters.
pub const MAX_DISPLAY_NAME: usize = 255;
/// Largest page of a listing.
pub const MAX_PAGE: usize = 1000;

/// Limits of the user files.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Largest file accepted, in bytes (50 MB by default).
    pub max_size: u64,
    /// Lifetime of the presigned URLs handed out (one hour by default, at most seven days).
    pub url_ttl: Duration,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_size: DEFAULT_MAX_FILE_SIZE,
            url_ttl: isa_core::DEFAULT_PRESIGN_TTL,
        }
    }
}

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRecord {
    /// File id (UUIDv7).
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
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
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
    pub url_expires_at: DateTime<Utc>,
}

/// Which files to list: optionally one year (and month), a page of `limit` (100 by default)
/// after the file id `after`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct FileFilter {
    /// Only files uploaded in this year.
    pub year: Option<i32>,
    /// Only files uploaded in this month (needs `year`).
    pub month: Option<u32>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to [`MAX_PAGE`].
    pub limit: Option<usize>,
}

/// A page of files, newest last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilePage {
    /// Files in upload order.
    pub files: Vec<FileRecord>,
    /// Pass as `after` to continue; `None` at the end.
    pub next: Option<String>,
}

/// A direct upload: PUT the bytes to `url`, then complete it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingUpload {
    /// The file as it will be (size 0 until completed).
    pub file: FileRecord,
    /// Where to PUT the bytes.
    pub url: PresignedUrl,
}

#[derive(sqlx::FromRow)]
struct FileRow {
    id: String,
    user_id: String,
    key: String,
    name: String,
    size: i64,
    content_type: String,
    sha256: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<FileRow> for FileRecord {
    type Error = Error;
    fn try_from(row: FileRow) -> Result<Self> {
        Ok(FileRecord {
            id: row.id,
            user_id: UserId::new(row.user_id)?,
            key: row.key,
            name: row.name,
            size: u64::try_from(row.size).unwrap_or_default(),
            content_type: row.content_type,
            sha256: row.sha256,
            created_at: row.created_at,
        })
    }
}

const COLUMNS: &str = "id, user_id, key, name, size, content_type, sha256, created_at";

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
    db: Database,
    config: FilesConfig,
    events: Option<Arc<dyn EventSink>>,
}

impl UserFiles {
    /// Files in `store`, metadata in `db`.
    pub fn new(store: Arc<dyn FileStore>, db: Database, config: FilesConfig) -> Result<Self> {
        if config.url_ttl.is_zero() || config.url_ttl > MAX_PRESIGN_TTL {
            return Err(Error::Config(
                "presigned URLs live between 1 second and 7 days".into(),
            ));
        }
        Ok(UserFiles {
            store,
            db,
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

    /// The database holding the metadata.
    pub fn db(&self) -> &Database {
        &self.db
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
        let (id, key) = self.new_key(user, name);
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
            created_at: db_now(),
        };
        if let Err(e) = self.insert(&record, "ready").await {
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
        let (id, key) = self.new_key(user, name);
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
            created_at: db_now(),
        };
        self.insert(&file, "pending").await?;
        Ok(PendingUpload { file, url })
    }

    /// Checks what arrived for a direct upload as [`UserFiles::upload`] checks an upload;
    /// refused content is deleted with its pending file.
    pub async fn complete_upload(&self, user: &UserId, id: &str) -> Result<FileRecord> {
        let pending = self.find(user, id, "pending").await?;
        let key = FileKey::parse(&pending.key)?;
        let checked = self.check_stored(&pending, &key).await;
        let (size, content_type, sha256) = match checked {
            Ok(facts) => facts,
            Err(e) => {
                self.forget_object(&key).await;
                self.delete_row(user, id).await?;
                return Err(e);
            }
        };
        on_pool!(&self.db, pool => sqlx::query(
            "update files set status = 'ready', size = $3, content_type = $4, sha256 = $5 where id = $1 and user_id = $2",
        )
        .bind(id)
        .bind(user.as_str())
        .bind(size as i64)
        .bind(&content_type)
        .bind(&sha256)
        .execute(pool)
        .await
        .map_err(db_error)?
            .rows_affected());
        let file = self.get(user, id).await?;
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
        let FileFilter {
            year,
            month,
            after,
            limit,
        } = filter.clone();
        if month.is_some() && year.is_none() {
            return Err(Error::invalid("a month filter needs a year"));
        }
        if month.is_some_and(|m| !(1..=12).contains(&m)) {
            return Err(Error::invalid("month must be 1 to 12"));
        }
        let limit = limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let sql = format!(
            "select {COLUMNS} from files where user_id = $1 and status = 'ready' \
             and ($2 is null or year = $2) and ($3 is null or month = $3) \
             and ($4 is null or id > $4) order by id limit $5"
        );
        let rows: Vec<FileRow> = on_pool!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user.as_str())
            .bind(year)
            .bind(month.map(|m| m as i32))
            .bind(after.as_deref())
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await
            .map_err(db_error)?);
        let mut files = rows
            .into_iter()
            .map(FileRecord::try_from)
            .collect::<Result<Vec<_>>>()?;
        let next = (files.len() > limit).then(|| {
            files.truncate(limit);
            files.last().map(|f| f.id.clone())
        });
        Ok(FilePage {
            files,
            next: next.flatten(),
        })
    }

    /// A file of the user's; [`Error::NotFound`] for files of others, as for files that do
    /// not exist.
    pub async fn get(&self, user: &UserId, id: &str) -> Result<FileRecord> {
        self.find(user, id, "ready").await
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
        self.delete_row(user, id).await
    }

    /// Deletes direct uploads begun more than `older_than` ago and never completed: their
    /// bytes, if any arrived, and their rows. Returns how many were swept.
    pub async fn sweep_pending(&self, older_than: Duration) -> Result<usize> {
        let cutoff = db_now()
            - chrono::Duration::from_std(older_than)
                .map_err(|_| Error::invalid("sweep age out of range"))?;
        let sql = format!(
            "select {COLUMNS} from files where status = 'pending' and created_at < $1 order by id limit 1000"
        );
        let rows: Vec<FileRow> = on_pool!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(cutoff)
            .fetch_all(pool)
            .await
            .map_err(db_error)?);
        let mut swept = 0;
        for file in rows.into_iter().map(FileRecord::try_from) {
            let file = file?;
            self.forget_object(&FileKey::parse(&file.key)?).await;
            on_pool!(&self.db, pool => sqlx::query("delete from files where id = $1 and status = 'pending'")
                .bind(&file.id)
                .execute(pool)
                .await
                .map_err(db_error)?
                .rows_affected());
            swept += 1;
        }
        Ok(swept)
    }

    fn new_key(&self, user: &UserId, name: &str) -> (String, FileKey) {
        let id = Uuid::now_v7().to_string();
        let key = FileKey::new(user, Utc::now().date_naive(), &id, name);
        (id, key)
    }

    async fn insert(&self, file: &FileRecord, status: &str) -> Result<()> {
        let created = file.created_at;
        on_pool!(&self.db, pool => sqlx::query(
            "insert into files (id, user_id, key, name, size, content_type, sha256, year, month, status, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&file.id)
        .bind(file.user_id.as_str())
        .bind(&file.key)
        .bind(&file.name)
        .bind(file.size as i64)
        .bind(&file.content_type)
        .bind(&file.sha256)
        .bind(created.year())
        .bind(created.month() as i32)
        .bind(status)
        .bind(created)
        .execute(pool)
        .await
        .map_err(db_error)?
            .rows_affected());
        Ok(())
    }

    async fn find(&self, user: &UserId, id: &str, status: &str) -> Result<FileRecord> {
        let sql =
            format!("select {COLUMNS} from files where id = $1 and user_id = $2 and status = $3");
        let row: Option<FileRow> = on_pool!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(user.as_str())
            .bind(status)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?);
        row.map(FileRecord::try_from)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("file {id}")))
    }

    async fn delete_row(&self, user: &UserId, id: &str) -> Result<()> {
        on_pool!(&self.db, pool => sqlx::query("delete from files where id = $1 and user_id = $2")
            .bind(id)
            .bind(user.as_str())
            .execute(pool)
            .await
            .map_err(db_error)?
            .rows_affected());
        Ok(())
    }

    async fn forget_object(&self, key: &FileKey) {
        if let Err(e) = self.store.delete(key).await {
            tracing::warn!(key = %key, error = %e, "could not delete a refused upload");
        }
    }
}
