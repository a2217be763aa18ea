//! The `FileStore` suite of `isa_storage::testing`, run against memory, local disk and Garage
//! (real S3 with signature checks). Presigned URLs are fetched with a plain HTTP client: from
//! Garage itself, and for local disk and memory from the router the user service serves them
//! with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use axum::body::Bytes;
use isa_core::{
    ByteStream, Error, FileKey, FileStore, PresignMethod, PutOptions, UserId, byte_stream,
};
use isa_storage::{
    files::{LocalSigner, ObjectFileStore, S3Config},
    presigned::presigned_router,
    testing,
};

const SIGNING_KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test";

/// A store whose presigned URLs the user service's own router serves, on a loopback port.
async fn locally_served(make: impl FnOnce(LocalSigner) -> ObjectFileStore) -> Arc<ObjectFileStore> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/files", listener.local_addr().unwrap());
    let signer = LocalSigner::new(SIGNING_KEY, base).unwrap();
    let store = Arc::new(make(signer.clone()));
    let app = presigned_router(store.clone(), signer, 64 << 20);
    tokio::spawn(async move { axum::serve(listener, app).await });
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_conforms() {
    let store = locally_served(ObjectFileStore::memory).await;
    testing::file_store_conforms("memory", store.as_ref(), "signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_disk_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let store = locally_served(move |signer| ObjectFileStore::local(root, signer).unwrap()).await;
    testing::file_store_conforms("local disk", store.as_ref(), "signature").await;
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
    testing::file_store_conforms("S3 (Garage)", &store, "X-Amz-Signature").await;
}

#[test]
fn a_local_signature_is_bound_to_method_key_expiry_and_size() {
    let signer = LocalSigner::new(SIGNING_KEY, "http://files").unwrap();
    let user = UserId::new("alice").unwrap();
    let k = testing::key_in_month(&user, 5, "a.txt");
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
            .verify(
                PresignMethod::Put { content_length: 1 },
                k.as_str(),
                expires_in_url,
                &signature
            )
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

    // An upload URL is bound to its size.
    let staged = FileKey::upload(&user, chrono::Utc::now().date_naive(), "0a1b", "a.txt");
    let put = |content_length| PresignMethod::Put { content_length };
    let url = reqwest::Url::parse(&signer_url_for(&signer, put(10), &staged)).unwrap();
    let query = |name: &str| {
        url.query_pairs()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(query("content_length"), "10");
    let expires: i64 = query("expires").parse().unwrap();
    let signature = query("signature");
    assert!(
        signer
            .verify(put(10), staged.as_str(), expires, &signature)
            .is_ok()
    );
    assert!(
        signer
            .verify(put(11), staged.as_str(), expires, &signature)
            .is_err(),
        "size bound"
    );
}

fn signer_url(signer: &LocalSigner, k: &FileKey) -> String {
    signer_url_for(signer, PresignMethod::Get, k)
}

fn signer_url_for(signer: &LocalSigner, method: PresignMethod, k: &FileKey) -> String {
    let store = ObjectFileStore::memory(signer.clone());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.presign(method, k, Duration::from_secs(60)))
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
                &testing::key_in_month(&user, 1 + i % 12, &format!("f{i}.txt")),
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

/// A body that sends `first` and then, having told `asked_again` it was asked for more,
/// never ends: an upload that holds its memory.
fn stalled_body(first: Vec<u8>) -> (ByteStream, tokio::sync::oneshot::Receiver<()>) {
    let (asked, asked_again) = tokio::sync::oneshot::channel();
    let stream = futures::stream::unfold((Some(first), Some(asked)), |(first, asked)| async move {
        match first {
            Some(bytes) => Some((Ok(Bytes::from(bytes)), (None, asked))),
            None => {
                if let Some(asked) = asked {
                    let _ = asked.send(());
                }
                std::future::pending().await
            }
        }
    });
    (Box::pin(stream), asked_again)
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_beyond_the_memory_budget_are_refused_at_once() {
    let signer = LocalSigner::new(SIGNING_KEY, "http://127.0.0.1:1/files").unwrap();
    let store = Arc::new(ObjectFileStore::memory(signer).with_upload_memory(4 << 20));
    let user = UserId::new("budget").unwrap();
    let (body, holding) = stalled_body(vec![1; 3 << 20]);
    let first = {
        let (store, key) = (store.clone(), testing::key_in_month(&user, 1, "a.bin"));
        tokio::spawn(async move { store.put(&key, body, PutOptions::default()).await })
    };
    holding.await.unwrap();

    let second = testing::key_in_month(&user, 1, "b.bin");
    let refused = store
        .put(
            &second,
            byte_stream(vec![2; 2 << 20]),
            PutOptions::default(),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::Overloaded { .. })),
        "3 MiB held and 2 MiB more exceed 4 MiB: {refused:?}"
    );
    let small = store
        .put(
            &second,
            byte_stream(vec![2; 512 << 10]),
            PutOptions::default(),
        )
        .await;
    assert!(small.is_ok(), "what fits still goes: {small:?}");
    let large = store
        .put(
            &testing::key_in_month(&user, 1, "c.bin"),
            byte_stream(vec![3; 12 << 20]),
            PutOptions::default(),
        )
        .await;
    assert!(matches!(large, Err(Error::Overloaded { .. })), "{large:?}");

    first.abort();
    let _ = first.await;
    let again = store
        .put(
            &second,
            byte_stream(vec![2; 2 << 20]),
            PutOptions::default(),
        )
        .await;
    assert!(
        again.is_ok(),
        "the stalled upload's memory came back: {again:?}"
    );
}
