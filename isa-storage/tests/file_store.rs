//! One `FileStore` conformance suite, run against memory, local disk and Garage (real S3 with
//! signature checks). Presigned URLs are fetched with a plain HTTP client: from Garage itself,
//! and for local disk and memory from a server that checks them the way the user service does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::get,
};
use chrono::NaiveDate;
use futures::StreamExt;
use isa_core::{
    ByteStream, Error, FileKey, FileStore, PresignMethod, PutOptions, UserId, byte_stream,
};
use isa_storage::files::{LocalSigner, ObjectFileStore, S3Config};

const SIGNING_KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn chunked(total: usize, chunk: usize) -> (ByteStream, Vec<u8>) {
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let chunks: Vec<isa_core::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (Box::pin(futures::stream::iter(chunks)), data)
}

fn key(user: &UserId, month: u32, name: &str) -> FileKey {
    FileKey::new(
        user,
        NaiveDate::from_ymd_opt(2026, month, 3).unwrap(),
        &uuid(),
        name,
    )
}

fn uuid() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

fn tamper(url: &str, param: &str) -> String {
    let at = url.find(&format!("{param}=")).unwrap() + param.len() + 1;
    let mut bytes = url.as_bytes().to_vec();
    bytes[at + 3] = if bytes[at + 3] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

/// The suite every backend runs. `signature_param` names the query parameter holding the
/// signature in the backend's presigned URLs.
async fn conformance(store: &dyn FileStore, signature_param: &str) {
    let user = UserId::new(format!("conformance-{}", uuid())).unwrap();
    let http = reqwest::Client::new();

    // Round trip with content type.
    let hello = key(&user, 11, "hello.txt");
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        max_size: None,
    };
    let info = store
        .put(&hello, byte_stream("hello, files"), opts)
        .await
        .unwrap();
    assert_eq!(info.size, 12);
    assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    assert_eq!(store.head(&hello).await.unwrap().size, 12);
    assert_eq!(store.get_bytes(&hello).await.unwrap(), "hello, files");

    // Listing by month, in pages.
    for i in 0..4 {
        store
            .put(
                &key(&user, 11, &format!("n{i}.txt")),
                byte_stream("x"),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    store
        .put(
            &key(&user, 10, "october.txt"),
            byte_stream("x"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let november = FileKey::month_prefix(&user, 2026, 11);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(&november, after.as_deref(), 2).await.unwrap();
        assert!(page.objects.len() <= 2);
        seen.extend(page.objects.iter().map(|o| o.key.as_str().to_owned()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "pages come in key order"
    );
    assert_eq!(
        store
            .list(user.as_str(), None, 100)
            .await
            .unwrap()
            .objects
            .len(),
        0,
        "a bare user id is not a prefix of the layout"
    );
    assert_eq!(
        store
            .list(&FileKey::user_prefix(&user), None, 100)
            .await
            .unwrap()
            .objects
            .len(),
        6
    );

    // Delete: gone, and deleting again is fine.
    store.delete(&hello).await.unwrap();
    assert!(matches!(store.head(&hello).await, Err(Error::NotFound(_))));
    assert!(matches!(store.get(&hello).await, Err(Error::NotFound(_))));
    store.delete(&hello).await.unwrap();

    // Over the limit: refused, nothing left — in one request and in a multipart upload.
    for (total, limit) in [(2048, 1024u64), (12 << 20, 8 << 20)] {
        let big = key(&user, 11, "big.bin");
        let (body, _) = chunked(total, 256 * 1024);
        let refused = store
            .put(
                &big,
                body,
                PutOptions {
                    content_type: None,
                    max_size: Some(limit),
                },
            )
            .await;
        assert!(
            matches!(refused, Err(Error::TooLarge { limit: l }) if l == limit),
            "{refused:?}"
        );
        assert!(
            matches!(store.head(&big).await, Err(Error::NotFound(_))),
            "nothing left behind"
        );
    }

    // A multipart upload (12 MiB in 1 MiB chunks) reads back intact.
    let large = key(&user, 11, "large.bin");
    let (body, data) = chunked(12 << 20, 1 << 20);
    let info = store
        .put(&large, body, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(info.size, 12 << 20);
    let mut read = Vec::new();
    let mut stream = store.get(&large).await.unwrap();
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert!(read == data, "multipart content differs");

    // Presigned GET: works with a plain client; a changed signature and an expired URL do not.
    let doc = key(&user, 11, "doc.txt");
    store
        .put(&doc, byte_stream("presigned!"), PutOptions::default())
        .await
        .unwrap();
    let url = store
        .presign(PresignMethod::Get, &doc, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!((url.expires_at - chrono::Utc::now()).num_seconds() > 3500);
    let fetched = http.get(&url.url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.text().await.unwrap(), "presigned!");
    let forged = http
        .get(tamper(&url.url, signature_param))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "a changed signature is refused");
    let short = store
        .presign(PresignMethod::Get, &doc, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = http.get(&short.url).send().await.unwrap();
    assert!(
        expired.status().is_client_error(),
        "an expired URL is refused: {}",
        expired.status()
    );

    // Presigned PUT uploads.
    let direct = key(&user, 11, "direct.txt");
    let put_url = store
        .presign(PresignMethod::Put, &direct, Duration::from_secs(600))
        .await
        .unwrap();
    let uploaded = http
        .put(&put_url.url)
        .body("uploaded directly")
        .send()
        .await
        .unwrap();
    assert!(uploaded.status().is_success(), "{}", uploaded.status());
    assert_eq!(store.get_bytes(&direct).await.unwrap(), "uploaded directly");

    // TTL bounds.
    assert!(
        store
            .presign(PresignMethod::Get, &doc, Duration::from_secs(8 * 24 * 3600))
            .await
            .is_err()
    );
}

#[derive(serde::Deserialize)]
struct Signed {
    method: String,
    expires: i64,
    signature: String,
}

type Serving = (Arc<ObjectFileStore>, LocalSigner);

/// Serves local presigned URLs the way the user service does.
async fn serve_presigned(
    State((store, signer)): State<Serving>,
    method: axum::http::Method,
    Path(key): Path<String>,
    Query(q): Query<Signed>,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let presign_method = match (method.as_str(), q.method.as_str()) {
        ("GET", "GET") => PresignMethod::Get,
        ("PUT", "PUT") => PresignMethod::Put,
        _ => return (StatusCode::FORBIDDEN, Bytes::new()),
    };
    if let Err(e) = signer.verify(presign_method, &key, q.expires, &q.signature) {
        return (StatusCode::FORBIDDEN, Bytes::from(e.to_string()));
    }
    let Ok(file_key) = FileKey::parse(&key) else {
        return (StatusCode::BAD_REQUEST, Bytes::new());
    };
    match presign_method {
        PresignMethod::Get => match store.get_bytes(&file_key).await {
            Ok(bytes) => (StatusCode::OK, bytes),
            Err(_) => (StatusCode::NOT_FOUND, Bytes::new()),
        },
        PresignMethod::Put => match store
            .put(&file_key, byte_stream(body), PutOptions::default())
            .await
        {
            Ok(_) => (StatusCode::OK, Bytes::new()),
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
        },
    }
}

async fn locally_served(make: impl FnOnce(LocalSigner) -> ObjectFileStore) -> Arc<ObjectFileStore> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/files", listener.local_addr().unwrap());
    let signer = LocalSigner::new(SIGNING_KEY, base).unwrap();
    let store = Arc::new(make(signer.clone()));
    let app = Router::new()
        .route("/files/{*key}", get(serve_presigned).put(serve_presigned))
        .with_state((store.clone(), signer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_conforms() {
    let store = locally_served(ObjectFileStore::memory).await;
    conformance(store.as_ref(), "signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_disk_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let store = locally_served(move |signer| ObjectFileStore::local(root, signer).unwrap()).await;
    conformance(store.as_ref(), "signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_s3_store_conforms() {
    let Ok(endpoint) = std::env::var("ISA_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "ISA_TEST_S3_ENDPOINT is not set"
        );
        eprintln!("skipped: no S3 server (run ./deploy/dev/test.sh)");
        return;
    };
    let config = S3Config {
        bucket: std::env::var("ISA_TEST_S3_BUCKET").unwrap(),
        region: std::env::var("AWS_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        endpoint: Some(endpoint),
    };
    let store = ObjectFileStore::s3(&config).unwrap();
    conformance(&store, "X-Amz-Signature").await;
}

#[test]
fn a_local_signature_is_bound_to_method_key_and_expiry() {
    let signer = LocalSigner::new(SIGNING_KEY, "http://files").unwrap();
    let user = UserId::new("alice").unwrap();
    let k = key(&user, 5, "a.txt");
    let expires = chrono::Utc::now().timestamp() + 3600;
    let url = reqwest::Url::parse(&signer_url(&signer, &k)).unwrap();
    let signature = url
        .query_pairs()
        .find(|(n, _)| n == "signature")
        .unwrap()
        .1
        .to_string();
    let expires_in_url: i64 = url
        .query_pairs()
        .find(|(n, _)| n == "expires")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!(
        signer
            .verify(PresignMethod::Get, k.as_str(), expires_in_url, &signature)
            .is_ok()
    );
    assert!(
        signer
            .verify(PresignMethod::Put, k.as_str(), expires_in_url, &signature)
            .is_err(),
        "method bound"
    );
    assert!(
        signer
            .verify(
                PresignMethod::Get,
                "users/bob/files/2026/05/x-a.txt",
                expires_in_url,
                &signature
            )
            .is_err(),
        "key bound"
    );
    assert!(
        signer
            .verify(PresignMethod::Get, k.as_str(), expires, &signature)
            .is_err(),
        "expiry bound"
    );
    assert!(LocalSigner::new(b"short".to_vec(), "http://files").is_err());
}

fn signer_url(signer: &LocalSigner, k: &FileKey) -> String {
    let store = ObjectFileStore::memory(signer.clone());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.presign(PresignMethod::Get, k, Duration::from_secs(60)))
        .unwrap()
        .url
}

#[tokio::test]
async fn health_reports_an_unreachable_store() {
    use isa_core::HealthCheck;
    use isa_storage::files::FileStoreHealth;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = S3Config {
        bucket: "nowhere".into(),
        region: "us-east-1".into(),
        endpoint: Some(format!("http://{closed}")),
    };
    let store = ObjectFileStore::s3(&config).unwrap();
    let health = FileStoreHealth(Arc::new(store));
    assert!(
        health.check().await.is_err(),
        "an unreachable S3 endpoint is not ready"
    );
    let memory = FileStoreHealth(Arc::new(ObjectFileStore::memory(
        LocalSigner::new(SIGNING_KEY, "http://f").unwrap(),
    )));
    assert!(memory.check().await.is_ok());
}

/// Delegates to a store, but refuses to list and counts what it was asked.
struct RefusesListings {
    inner: ObjectFileStore,
    calls: std::sync::atomic::AtomicUsize,
}

#[isa_core::async_trait]
impl FileStore for RefusesListings {
    async fn put(
        &self,
        key: &FileKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> isa_core::Result<isa_core::ObjectInfo> {
        self.inner.put(key, body, opts).await
    }
    async fn get(&self, key: &FileKey) -> isa_core::Result<ByteStream> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &FileKey) -> isa_core::Result<isa_core::ObjectInfo> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.head(key).await
    }
    async fn delete(&self, key: &FileKey) -> isa_core::Result<()> {
        self.inner.delete(key).await
    }
    async fn list(
        &self,
        _prefix: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> isa_core::Result<isa_core::ObjectPage> {
        Err(Error::Internal("health listed the store".into()))
    }
    async fn presign(
        &self,
        method: PresignMethod,
        key: &FileKey,
        expires_in: Duration,
    ) -> isa_core::Result<isa_core::PresignedUrl> {
        self.inner.presign(method, key, expires_in).await
    }
}

#[tokio::test]
async fn health_of_a_store_with_a_thousand_files_asks_one_head_and_lists_nothing() {
    use isa_core::HealthCheck;
    use isa_storage::files::FileStoreHealth;
    let dir = tempfile::tempdir().unwrap();
    let store = RefusesListings {
        inner: ObjectFileStore::local(
            dir.path(),
            LocalSigner::new(SIGNING_KEY, "http://f").unwrap(),
        )
        .unwrap(),
        calls: Default::default(),
    };
    let user = UserId::new("many").unwrap();
    for i in 0..1000 {
        store
            .put(
                &key(&user, 1 + i % 12, &format!("f{i}.txt")),
                byte_stream("x"),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let store = Arc::new(store);
    let health = FileStoreHealth(store.clone());
    health.check().await.unwrap();
    assert_eq!(
        store.calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one HEAD per check"
    );
}
