//! [`FileStore`] on `object_store`: S3 (and S3-compatible servers), local disk, and memory.
//!
//! Uploads stream: bodies up to [`MULTIPART_CHUNK`] are written in one request, larger ones as a
//! multipart upload, and a body over the size limit is abandoned (the multipart upload aborted)
//! so nothing is left behind. Presigned URLs come from S3's own signing on S3 (for uploads, a
//! SigV4 signature of our own that also binds the body's size), and from an HMAC over method,
//! key, expiry and upload size on local disk and memory, which the user service checks
//! ([`LocalSigner::verify`]) when it serves them.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use isa_core::{
    ByteStream, DEFAULT_MAX_FILE_SIZE, Error, FileKey, FileStore, ObjectInfo, ObjectPage,
    PresignMethod, PresignedUrl, PutOptions, Result, async_trait,
};
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions as StorePutOptions, PutPayload, RetryConfig, WriteMultipart,
    aws::{AmazonS3, AmazonS3Builder},
    local::LocalFileSystem,
    memory::InMemory,
    path::Path,
    signer::{Method, SignedUrlOptions, Signer},
};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::sigv4;

/// Uploads larger than this go up in parts of this size (S3's minimum part is 5 MiB).
pub const MULTIPART_CHUNK: usize = 5 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Memory all uploads through one store may hold at once by default: 512 MiB.
pub const DEFAULT_UPLOAD_MEMORY: usize = 512 * 1024 * 1024;
const MIB: usize = 1024 * 1024;

/// The type every presigned download is served as, whatever the file is: browsers save it
/// rather than render it.
pub const DOWNLOAD_CONTENT_TYPE: &str = "application/octet-stream";

/// The `Content-Disposition` of a presigned download of `key`: an attachment named as the
/// key names the file (its last segment is `{unique id}-{sanitised name}`, and a sanitised
/// name holds no quote).
pub fn attachment(key: &str) -> String {
    let last = key.rsplit('/').next().unwrap_or("file");
    let file_name = last.split_once('-').map_or(last, |(_, name)| name);
    format!("attachment; filename=\"{file_name}\"")
}

/// How long connecting to S3 may take.
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed S3 request is tried again a few times within a few seconds, not (as by default)
/// ten times over three minutes: while S3 is unreachable, a caller hears 503 (retry shortly)
/// at once instead of waiting minutes for an upload or a listing.
fn s3_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(3),
    }
}

/// The memory uploads hold, counted in MiB: an upload reserves what it buffers before it
/// buffers it, and one that finds the budget spent is refused at once as overloaded.
#[derive(Debug, Clone)]
struct UploadMemory(Arc<tokio::sync::Semaphore>);

impl UploadMemory {
    fn new(bytes: usize) -> Self {
        UploadMemory(Arc::new(tokio::sync::Semaphore::new(
            bytes.div_ceil(MIB).max(1),
        )))
    }

    /// Grows `held` to cover `bytes`.
    fn reserve(
        &self,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        bytes: usize,
    ) -> Result<()> {
        let want = u32::try_from(bytes.div_ceil(MIB)).unwrap_or(u32::MAX);
        let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want <= have {
            return Ok(());
        }
        let more = self
            .0
            .clone()
            .try_acquire_many_owned(want - have)
            .map_err(|_| Error::Overloaded {
                retry_after: std::time::Duration::from_secs(2),
            })?;
        match held {
            Some(permit) => permit.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

/// Signs URLs for stores without their own signing (local disk, memory); the user service
/// serves `GET {base_url}/{key}?method=GET&expires=&signature=` and
/// `PUT {base_url}/{key}?method=PUT&content_length=&expires=&signature=` after
/// [`LocalSigner::verify`].
#[derive(Clone)]
pub struct LocalSigner {
    key: Arc<Vec<u8>>,
    base_url: String,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LocalSigner {
    /// A signer with an HMAC key of at least 32 bytes, for URLs under `base_url`.
    pub fn new(key: impl Into<Vec<u8>>, base_url: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.len() < 32 {
            return Err(Error::Config(
                "the URL signing key needs at least 32 bytes".into(),
            ));
        }
        Ok(LocalSigner {
            key: Arc::new(key),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
        })
    }

    fn signature(&self, method: PresignMethod, key: &str, expires: i64) -> Vec<u8> {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        let signed = match method {
            PresignMethod::Get => format!("GET\n{key}\n{expires}"),
            PresignMethod::Put { content_length } => {
                format!("PUT\n{key}\n{expires}\n{content_length}")
            }
        };
        mac.update(signed.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn sign(&self, method: PresignMethod, key: &FileKey, expires_at: DateTime<Utc>) -> String {
        let expires = expires_at.timestamp();
        let signature = hex::encode(self.signature(method, key.as_str(), expires));
        let method = match method {
            PresignMethod::Get => "GET".to_owned(),
            PresignMethod::Put { content_length } => {
                format!("PUT&content_length={content_length}")
            }
        };
        format!(
            "{}/{}?method={method}&expires={expires}&signature={signature}",
            self.base_url,
            key.as_str(),
        )
    }

    /// Checks a presigned request: the signature (compared in constant time) and the expiry.
    pub fn verify(
        &self,
        method: PresignMethod,
        key: &str,
        expires: i64,
        signature: &str,
    ) -> Result<()> {
        let Ok(given) = hex::decode(signature) else {
            return Err(Error::Forbidden("bad signature".into()));
        };
        let expected = self.signature(method, key, expires);
        if !bool::from(expected.ct_eq(&given)) {
            return Err(Error::Forbidden("bad signature".into()));
        }
        if Utc::now().timestamp() > expires {
            return Err(Error::Forbidden("the URL has expired".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Signing {
    S3 { s3: Arc<AmazonS3>, region: String },
    Local(LocalSigner),
}

/// S3 settings; [`S3Config::from_env`] reads the seed deployment's variables.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket (`AWS_S3_BUCKET`).
    pub bucket: String,
    /// Region (`AWS_S3_REGION`, default `us-east-1`).
    pub region: String,
    /// Endpoint of an S3-compatible server (`AWS_ENDPOINT_URL`); path-style addressing then.
    pub endpoint: Option<String>,
}

impl S3Config {
    /// From `AWS_S3_BUCKET`, `AWS_S3_REGION` and `AWS_ENDPOINT_URL`.
    pub fn from_env() -> Result<Self> {
        let bucket = std::env::var("AWS_S3_BUCKET")
            .map_err(|_| Error::Config("AWS_S3_BUCKET is not set".into()))?;
        Ok(S3Config {
            bucket,
            region: std::env::var("AWS_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
            endpoint: std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .filter(|e| !e.is_empty()),
        })
    }
}

/// A [`FileStore`] over any `object_store` backend.
#[derive(Debug, Clone)]
pub struct ObjectFileStore {
    store: Arc<dyn ObjectStore>,
    signing: Signing,
    /// Whether the backend keeps a content type with each object.
    keeps_content_type: bool,
    upload_memory: UploadMemory,
}

impl ObjectFileStore {
    /// S3: credentials from the environment (`AWS_ACCESS_KEY_ID`, …) or the EC2 instance role.
    pub fn s3(config: &S3Config) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(ClientOptions::new().with_connect_timeout(S3_CONNECT_TIMEOUT))
            .with_retry(s3_retries());
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let s3 = Arc::new(
            builder
                .build()
                .map_err(|e| Error::Config(format!("S3: {e}")))?,
        );
        Ok(ObjectFileStore {
            store: s3.clone(),
            signing: Signing::S3 {
                s3,
                region: config.region.clone(),
            },
            keeps_content_type: true,
            upload_memory: UploadMemory::new(DEFAULT_UPLOAD_MEMORY),
        })
    }

    /// Files under `root` on local disk (created if missing).
    pub fn local(root: impl Into<PathBuf>, signer: LocalSigner) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::Config(format!("{}: {e}", root.display())))?;
        Ok(ObjectFileStore {
            store: Arc::new(fs),
            signing: Signing::Local(signer),
            keeps_content_type: false,
            upload_memory: UploadMemory::new(DEFAULT_UPLOAD_MEMORY),
        })
    }

    /// Files in memory, for tests and throwaway servers.
    pub fn memory(signer: LocalSigner) -> Self {
        ObjectFileStore {
            store: Arc::new(InMemory::new()),
            signing: Signing::Local(signer),
            keeps_content_type: true,
            upload_memory: UploadMemory::new(DEFAULT_UPLOAD_MEMORY),
        }
    }

    /// Bounds the memory all uploads through this store hold at once to `bytes` (by default
    /// [`DEFAULT_UPLOAD_MEMORY`]): a small upload holds what it sends, a large one up to
    /// six parts of [`MULTIPART_CHUNK`]. Uploads beyond are refused as overloaded.
    pub fn with_upload_memory(mut self, bytes: usize) -> Self {
        self.upload_memory = UploadMemory::new(bytes);
        self
    }

    fn attributes(&self, content_type: Option<&str>) -> Attributes {
        match content_type {
            Some(ct) if self.keeps_content_type => {
                Attributes::from_iter([(Attribute::ContentType, ct.to_owned())])
            }
            _ => Attributes::new(),
        }
    }

    fn info(key: &FileKey, meta: &ObjectMeta, content_type: Option<String>) -> ObjectInfo {
        ObjectInfo {
            key: key.clone(),
            size: meta.size,
            last_modified: meta.last_modified,
            content_type,
        }
    }
}

/// Maps a store error; a missing object is `NotFound`, everything else the store's trouble.
fn store_error(key: &str) -> impl Fn(object_store::Error) -> Error + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => Error::NotFound(format!("file {key}")),
        other => Error::Unavailable(format!("object store: {other}")),
    }
}

#[async_trait]
impl FileStore for ObjectFileStore {
    async fn put(
        &self,
        key: &FileKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectInfo> {
        let limit = opts.max_size.unwrap_or(DEFAULT_MAX_FILE_SIZE);
        let path = Path::from(key.as_str());
        let mapped = store_error(key.as_str());
        let mut head = Vec::new();
        let mut size: u64 = 0;
        let mut memory = None;
        // Small bodies: one request. The first MULTIPART_CHUNK bytes decide.
        while head.len() < MULTIPART_CHUNK {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(Error::TooLarge { limit });
                    }
                    self.upload_memory
                        .reserve(&mut memory, head.len() + chunk.len())?;
                    head.extend_from_slice(&chunk);
                }
                None => {
                    let put = StorePutOptions {
                        attributes: self.attributes(opts.content_type.as_deref()),
                        ..Default::default()
                    };
                    self.store
                        .put_opts(&path, PutPayload::from(Bytes::from(head)), put)
                        .await
                        .map_err(&mapped)?;
                    return self.head(key).await.map(|mut info| {
                        info.content_type = info.content_type.or(opts.content_type);
                        info
                    });
                }
            }
        }
        // The part being filled, the parts in flight, and the chunk arriving.
        self.upload_memory
            .reserve(&mut memory, (PARTS_IN_FLIGHT + 2) * MULTIPART_CHUNK)?;
        let upload = self
            .store
            .put_multipart_opts(
                &path,
                PutMultipartOptions {
                    attributes: self.attributes(opts.content_type.as_deref()),
                    ..Default::default()
                },
            )
            .await
            .map_err(&mapped)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        writer.put(Bytes::from(head));
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(Error::TooLarge { limit });
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(&mapped)?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await.map_err(&mapped)?;
            }
            Err(e) => {
                // Abandon the upload so no part of the body stays behind.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %key, error = %abort, "aborting a multipart upload failed");
                }
                return Err(e);
            }
        }
        self.head(key).await.map(|mut info| {
            info.content_type = info.content_type.or(opts.content_type);
            info
        })
    }

    async fn get(&self, key: &FileKey) -> Result<ByteStream> {
        let result = self
            .store
            .get(&Path::from(key.as_str()))
            .await
            .map_err(store_error(key.as_str()))?;
        let owned = key.as_str().to_owned();
        Ok(Box::pin(
            result
                .into_stream()
                .map_err(move |e| store_error(&owned)(e)),
        ))
    }

    async fn head(&self, key: &FileKey) -> Result<ObjectInfo> {
        let path = Path::from(key.as_str());
        if self.keeps_content_type {
            // A zero-length range read returns the attributes (content type) with the metadata.
            let result = self
                .store
                .get_opts(
                    &path,
                    object_store::GetOptions {
                        head: true,
                        ..Default::default()
                    },
                )
                .await
                .map_err(store_error(key.as_str()))?;
            let content_type = result
                .attributes
                .get(&Attribute::ContentType)
                .map(|v| v.to_string());
            return Ok(Self::info(key, &result.meta, content_type));
        }
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(store_error(key.as_str()))?;
        Ok(Self::info(key, &meta, None))
    }

    async fn delete(&self, key: &FileKey) -> Result<()> {
        match self.store.delete(&Path::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(key.as_str())(e)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<ObjectPage> {
        let prefix_path = Path::from(prefix.trim_end_matches('/'));
        let stream = match after {
            Some(offset) => self
                .store
                .list_with_offset(Some(&prefix_path), &Path::from(offset)),
            None => self.store.list(Some(&prefix_path)),
        };
        let mut metas: Vec<ObjectMeta> = stream.try_collect().await.map_err(store_error(prefix))?;
        // Backends list in no promised order; pages need one.
        metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        let more = metas.len() > limit;
        metas.truncate(limit);
        let objects = metas
            .iter()
            .filter_map(|m| {
                FileKey::parse(m.location.as_ref())
                    .ok()
                    .map(|k| Self::info(&k, m, None))
            })
            .collect::<Vec<_>>();
        let next = more
            .then(|| metas.last().map(|m| m.location.to_string()))
            .flatten();
        Ok(ObjectPage { objects, next })
    }

    async fn presign(
        &self,
        method: PresignMethod,
        key: &FileKey,
        expires_in: Duration,
    ) -> Result<PresignedUrl> {
        if expires_in.is_zero() || expires_in > isa_core::MAX_PRESIGN_TTL {
            return Err(Error::invalid(
                "a presigned URL lives between 1 second and 7 days",
            ));
        }
        let expires_at = Utc::now()
            + chrono::Duration::from_std(expires_in)
                .map_err(|_| Error::invalid("expiry out of range"))?;
        method.check_target(key)?;
        let url = match &self.signing {
            Signing::S3 { s3, region } => {
                let path = Path::from(key.as_str());
                let mapped = store_error(key.as_str());
                match method {
                    // S3 answers with the type the object was stored with; a file someone
                    // uploaded as HTML would render in the bucket's origin. The URL signs in
                    // the answer's headers instead: a download, as the local store serves it.
                    PresignMethod::Get => {
                        let options = SignedUrlOptions::new().with_query([
                            ("response-content-disposition", attachment(key.as_str())),
                            ("response-content-type", DOWNLOAD_CONTENT_TYPE.to_owned()),
                        ]);
                        s3.signed_url_opts(Method::GET, &path, expires_in, &options)
                            .await
                            .map_err(mapped)?
                    }
                    PresignMethod::Put { content_length } => {
                        // object_store's own URL gives the object's address; the signature is
                        // ours, to bind the size (see `sigv4`).
                        let mut address = s3
                            .signed_url(Method::PUT, &path, expires_in)
                            .await
                            .map_err(&mapped)?;
                        address.set_query(None);
                        let credential = s3.credentials().get_credential().await.map_err(mapped)?;
                        sigv4::Presign {
                            method: "PUT",
                            url: address,
                            headers: &[("content-length", content_length.to_string())],
                            credential: &credential,
                            region,
                            expires_in,
                            now: Utc::now(),
                        }
                        .sign()
                    }
                }
                .to_string()
            }
            Signing::Local(signer) => signer.sign(method, key, expires_at),
        };
        Ok(PresignedUrl { url, expires_at })
    }
}

/// `/health` readiness of a file store: it must answer a HEAD of one key. "Not found" is an
/// answer; a listing would cost as much as the store is large.
pub struct FileStoreHealth(pub Arc<dyn FileStore>);

/// The key `FileStoreHealth` asks about; no file needs to exist there.
const HEALTH_PROBE_KEY: &str = "users/isa-health/files/2000/01/probe";

#[async_trait]
impl isa_core::HealthCheck for FileStoreHealth {
    fn name(&self) -> &str {
        "files"
    }

    async fn check(&self) -> Result<()> {
        let probe = FileKey::parse(HEALTH_PROBE_KEY)?;
        match self.0.head(&probe).await {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// The signing key of a local store: `ISA_FILE_SIGNING_KEY` (hex or text of at least 32 bytes),
/// else a random key kept in `{data_dir}/file-signing.key` (created with mode 0600), so URLs
/// stay valid across restarts.
pub fn local_signing_key(data_dir: &std::path::Path) -> Result<Vec<u8>> {
    if let Ok(key) = std::env::var("ISA_FILE_SIGNING_KEY")
        && !key.is_empty()
    {
        return Ok(key.into_bytes());
    }
    let path = data_dir.join("file-signing.key");
    if let Ok(existing) = std::fs::read(&path) {
        return Ok(existing);
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Config(format!("{}: {e}", data_dir.display())))?;
    let mut key = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
    let key = hex::encode(key).into_bytes();
    write_private(&path, &key)
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}
