//! The sweep of abandoned direct uploads, over the real adapters (SQLite, a memory store):
//! a sweep stopped half way leaves nothing the next sweep cannot finish, and an abandoned
//! upload can no longer be completed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use isa_core::{
    ByteStream, Error, FileIndex, FileKey, FileRecord, FileStatus, FileStore, ObjectInfo,
    ObjectPage, PresignMethod, PresignedUrl, PutOptions, Result, UserId, UserStore, async_trait,
    byte_stream,
};
use isa_files::{FilesConfig, UserFiles};
use isa_storage::{
    db::Database,
    files::{LocalSigner, ObjectFileStore},
};

/// A memory store whose deletes fail while `failing` is set: a sweep that stops half way.
struct Flaky {
    inner: ObjectFileStore,
    failing: AtomicBool,
}

#[async_trait]
impl FileStore for Flaky {
    async fn put(&self, key: &FileKey, body: ByteStream, opts: PutOptions) -> Result<ObjectInfo> {
        self.inner.put(key, body, opts).await
    }
    async fn get(&self, key: &FileKey) -> Result<ByteStream> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &FileKey) -> Result<ObjectInfo> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &FileKey) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("the store went away".into()));
        }
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<ObjectPage> {
        self.inner.list(prefix, after, limit).await
    }
    async fn presign(
        &self,
        method: PresignMethod,
        key: &FileKey,
        expires_in: Duration,
    ) -> Result<PresignedUrl> {
        self.inner.presign(method, key, expires_in).await
    }
}

struct Setup {
    files: UserFiles,
    store: Arc<Flaky>,
    db: Database,
    user: UserId,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}", dir.path().join("isa.db").display()))
        .await
        .unwrap();
    let signer = LocalSigner::new(
        b"0123456789abcdef0123456789abcdef".to_vec(),
        "http://127.0.0.1:1/files",
    )
    .unwrap();
    let store = Arc::new(Flaky {
        inner: ObjectFileStore::memory(signer),
        failing: AtomicBool::new(false),
    });
    let files =
        UserFiles::new(store.clone(), Arc::new(db.clone()), FilesConfig::default()).unwrap();
    let user = UserId::new("alice").unwrap();
    db.ensure_user(&user, None, 0).await.unwrap();
    Setup {
        files,
        store,
        db,
        user,
        _dir: dir,
    }
}

/// A direct upload whose bytes arrived (written straight to the store, as its URL would).
async fn uploaded_but_not_completed(s: &Setup) -> FileRecord {
    let pending = s
        .files
        .begin_upload(&s.user, "later.txt", "text/plain")
        .await
        .unwrap()
        .file;
    let key = FileKey::parse(&pending.key).unwrap();
    s.store
        .put(&key, byte_stream("never completed"), PutOptions::default())
        .await
        .unwrap();
    pending
}

#[tokio::test]
async fn a_sweep_stopped_half_way_is_finished_by_the_next_and_the_upload_stays_uncompletable() {
    let s = setup().await;
    let pending = uploaded_but_not_completed(&s).await;
    let key = FileKey::parse(&pending.key).unwrap();

    s.store.failing.store(true, Ordering::SeqCst);
    assert!(s.files.sweep_abandoned(Duration::ZERO).await.is_err());
    // Claimed before its bytes were touched: it can no longer be completed.
    let late = s.files.complete_upload(&s.user, &pending.id).await;
    assert!(matches!(late, Err(Error::NotFound(_))), "{late:?}");
    assert!(
        s.db.find(&s.user, &pending.id, FileStatus::Ready)
            .await
            .unwrap()
            .is_none()
    );

    s.store.failing.store(false, Ordering::SeqCst);
    // The next sweep finishes it whatever its age.
    assert_eq!(
        s.files
            .sweep_abandoned(Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert!(matches!(s.store.head(&key).await, Err(Error::NotFound(_))));
    for status in [
        FileStatus::Pending,
        FileStatus::Abandoned,
        FileStatus::Ready,
    ] {
        assert!(
            s.db.find(&s.user, &pending.id, status)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn a_completed_upload_is_never_swept() {
    let s = setup().await;
    let pending = uploaded_but_not_completed(&s).await;
    let done = s.files.complete_upload(&s.user, &pending.id).await.unwrap();
    assert_eq!(s.files.sweep_abandoned(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(
        s.files.get(&s.user, &done.id).await.unwrap().sha256,
        done.sha256
    );
    assert!(
        s.store
            .head(&FileKey::parse(&done.key).unwrap())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_upload_past_its_abandonment_age_cannot_be_completed() {
    let s = setup().await;
    let pending = uploaded_but_not_completed(&s).await;
    // The same upload as if it had begun two days ago.
    s.db.remove(&s.user, &pending.id, FileStatus::Pending)
        .await
        .unwrap();
    let old = FileRecord {
        created_at: pending.created_at - chrono::Duration::days(2),
        ..pending.clone()
    };
    s.db.insert(&old, FileStatus::Pending).await.unwrap();
    let late = s.files.complete_upload(&s.user, &old.id).await;
    assert!(matches!(late, Err(Error::NotFound(_))), "{late:?}");
    assert!(
        s.db.find(&s.user, &old.id, FileStatus::Ready)
            .await
            .unwrap()
            .is_none()
    );
}
