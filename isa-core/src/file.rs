//! User file storage with presigned URLs.

use std::{pin::Pin, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::{Error, FileKey, Result};

/// Default lifetime of a presigned URL: one hour, as in the original deployment.
pub const DEFAULT_PRESIGN_TTL: Duration = Duration::from_secs(3600);

/// Longest lifetime of a presigned URL: seven days, the most S3's SigV4 allows.
pub const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest user file accepted unless configured otherwise: 50 MB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 50 * 1024 * 1024;

/// A stream of byte chunks, for uploads and downloads that never hold a whole file in memory.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Makes a [`ByteStream`] from bytes already in memory.
pub fn byte_stream(bytes: impl Into<Bytes>) -> ByteStream {
    Box::pin(futures::stream::once(futures::future::ready(Ok(
        bytes.into()
    ))))
}

/// Collects a [`ByteStream`], refusing more than `limit` bytes.
pub async fn collect_bytes(stream: ByteStream, limit: u64) -> Result<Bytes> {
    let chunks: Vec<Bytes> = stream
        .try_fold(Vec::new(), |mut acc: Vec<Bytes>, chunk| async move {
            let size: u64 = acc.iter().map(|c| c.len() as u64).sum::<u64>() + chunk.len() as u64;
            if size > limit {
                return Err(Error::TooLarge { limit });
            }
            acc.push(chunk);
            Ok(acc)
        })
        .await?;
    Ok(chunks.concat().into())
}

/// Facts about a stored object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Its key.
    pub key: FileKey,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
    /// The media type stored with it, when the backend keeps one.
    pub content_type: Option<String>,
}

/// Options for a write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutOptions {
    /// The media type to store with the object.
    pub content_type: Option<String>,
    /// Refuse the write once more than this many bytes arrive; nothing is left behind.
    pub max_size: Option<u64>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectPage {
    /// Objects in key order.
    pub objects: Vec<ObjectInfo>,
    /// Pass to the next call to continue; `None` at the end.
    pub next: Option<String>,
}

/// The HTTP method a presigned URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresignMethod {
    /// Download of a file.
    Get,
    /// Direct upload to an upload key ([`FileKey::upload`]) of exactly `content_length` bytes:
    /// a URL that accepted any size would let its holder store without limit until the
    /// upload is checked.
    Put {
        /// The one body size the URL accepts.
        content_length: u64,
    },
}

impl PresignMethod {
    /// Refuses a URL that would download an upload not yet checked, or upload over a file.
    pub fn check_target(self, key: &FileKey) -> Result<()> {
        match self {
            PresignMethod::Get if key.is_upload() => Err(Error::invalid(format!(
                "{key} is an upload not yet checked: there is nothing to download"
            ))),
            PresignMethod::Put { .. } if !key.is_upload() => Err(Error::invalid(format!(
                "{key} is a file: URLs upload only to upload keys"
            ))),
            _ => Ok(()),
        }
    }
}

/// A URL that grants one method on one key until it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresignedUrl {
    /// The URL.
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Stores user files: S3, local disk or memory, behind one interface.
///
/// Writes stream; a write that exceeds [`PutOptions::max_size`] fails with
/// [`Error::TooLarge`] and leaves nothing behind. Keys are [`FileKey`]s, so nothing outside
/// `users/{user_id}/files/` can be named. One conformance suite (in `isa-storage`) runs against
/// every implementation.
///
/// ```
/// use std::{collections::BTreeMap, sync::Mutex, time::Duration};
/// use bytes::Bytes;
/// use isa_core::*;
///
/// #[derive(Default)]
/// struct Tiny(Mutex<BTreeMap<String, Bytes>>);
///
/// #[async_trait]
/// impl FileStore for Tiny {
///     async fn put(&self, key: &FileKey, body: ByteStream, opts: PutOptions) -> Result<ObjectInfo> {
///         let bytes = collect_bytes(body, opts.max_size.unwrap_or(u64::MAX)).await?;
///         let info = ObjectInfo { key: key.clone(), size: bytes.len() as u64,
///             last_modified: chrono::Utc::now(), content_type: opts.content_type };
///         self.0.lock().unwrap().insert(key.to_string(), bytes);
///         Ok(info)
///     }
///     async fn get(&self, key: &FileKey) -> Result<ByteStream> {
///         let bytes = self.0.lock().unwrap().get(key.as_str()).cloned();
///         bytes.map(byte_stream).ok_or_else(|| Error::NotFound(key.to_string()))
///     }
///     async fn head(&self, key: &FileKey) -> Result<ObjectInfo> { unimplemented!() }
///     async fn delete(&self, key: &FileKey) -> Result<()> {
///         self.0.lock().unwrap().remove(key.as_str());
///         Ok(())
///     }
///     async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<ObjectPage> {
///         Ok(ObjectPage { objects: vec![], next: None })
///     }
///     async fn presign(&self, _: PresignMethod, _: &FileKey, _: Duration) -> Result<PresignedUrl> {
///         Err(Error::Unsupported("no URLs in memory".into()))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Tiny::default();
/// let key = FileKey::parse("users/u1/files/2026/11/1-a.txt").unwrap();
/// store.put(&key, byte_stream("hello"), PutOptions::default()).await.unwrap();
/// assert_eq!(store.get_bytes(&key).await.unwrap(), "hello");
/// let too_big = PutOptions { max_size: Some(3), ..Default::default() };
/// assert!(matches!(store.put(&key, byte_stream("hello"), too_big).await, Err(Error::TooLarge { .. })));
/// # });
/// ```
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Writes an object from a stream.
    async fn put(&self, key: &FileKey, body: ByteStream, opts: PutOptions) -> Result<ObjectInfo>;

    /// Reads an object as a stream; [`Error::NotFound`] when absent.
    async fn get(&self, key: &FileKey) -> Result<ByteStream>;

    /// An object's metadata; [`Error::NotFound`] when absent.
    async fn head(&self, key: &FileKey) -> Result<ObjectInfo>;

    /// Deletes an object; deleting an absent object succeeds.
    async fn delete(&self, key: &FileKey) -> Result<()>;

    /// Lists objects under `prefix` (such as [`FileKey::month_prefix`]) in key order, starting
    /// after the key `after`, at most `limit` per page.
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<ObjectPage>;

    /// A URL that allows `method` on `key` for `expires_in` (at most [`MAX_PRESIGN_TTL`]).
    /// Downloads are signed for file keys only and uploads for upload keys only
    /// ([`FileKey::is_upload`]): what a URL can write is never what anyone downloads.
    async fn presign(
        &self,
        method: PresignMethod,
        key: &FileKey,
        expires_in: Duration,
    ) -> Result<PresignedUrl>;

    /// Reads a whole object into memory.
    async fn get_bytes(&self, key: &FileKey) -> Result<Bytes> {
        collect_bytes(self.get(key).await?, u64::MAX).await
    }
}
