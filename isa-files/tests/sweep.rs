//! Direct uploads and their sweep, over the real adapters (SQLite, a memory store): what a
//! completed upload recorded is what it serves, whatever reaches its upload key later; the
//! sweep removes such stray bytes; a sweep stopped half way leaves nothing the next sweep
//! cannot finish, and an abandoned upload can no longer be completed.

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
use isa_files::{FilesConfig, Swept, UserFiles};
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

const SENT: &str = "never completed";

/// A direct upload whose bytes arrived (written straight to the store, as its URL would).
async fn uploaded_but_not_completed(s: &Setup) -> FileRecord {
    let pending = s
        .files
        .begin_upload(&s.user, "later.txt", "text/plain", SENT.len() as u64)
        .await
        .unwrap()
        .file;
    send(s, &pending, SENT).await;
    pending
}

/// Writes `bytes` to the upload key of `pending`, as a PUT to its URL does.
async fn send(s: &Setup, pending: &FileRecord, bytes: &'static str) {
    let key = FileKey::parse(&pending.key).unwrap();
    s.store
        .put(&key, byte_stream(bytes), PutOptions::default())
        .await
        .unwrap();
}

/// How many objects the user has under their files and under the upload keys.
async fn objects(s: &Setup) -> (usize, usize) {
    let count = |prefix: String| async move {
        s.store
            .list(&prefix, None, 1000)
            .await
            .unwrap()
            .objects
            .len()
    };
    (
        count(FileKey::user_prefix(&s.user)).await,
        count(FileKey::UPLOADS_PREFIX.to_owned()).await,
    )
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
            .unwrap()
            .uploads,
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
    assert_eq!(
        s.files.sweep_abandoned(Duration::ZERO).await.unwrap(),
        Swept::default()
    );
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

#[tokio::test]
async fn bytes_sent_after_completion_are_never_served_and_are_swept() {
    let s = setup().await;
    let pending = uploaded_but_not_completed(&s).await;
    let done = s.files.complete_upload(&s.user, &pending.id).await.unwrap();
    assert_ne!(
        done.key, pending.key,
        "the file lives under a key of its own"
    );
    assert_eq!(objects(&s).await, (1, 0), "the upload key was emptied");
    let served = || async {
        s.store
            .get_bytes(&FileKey::parse(&done.key).unwrap())
            .await
            .unwrap()
    };

    // Another body of the same size through the same URL, after the check.
    send(&s, &pending, "<script>x</script>").await;
    assert_eq!(served().await, SENT);
    assert_eq!(s.files.get(&s.user, &done.id).await.unwrap(), done);
    assert_eq!(objects(&s).await, (1, 1));
    let swept = s.files.sweep_abandoned(Duration::ZERO).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            uploads: 0,
            stray_objects: 1
        }
    );
    assert_eq!(objects(&s).await, (1, 0));
    assert_eq!(served().await, SENT);

    // And after the file was deleted: nothing is recreated where files live.
    s.files.delete(&s.user, &done.id).await.unwrap();
    send(&s, &pending, SENT).await;
    assert_eq!(objects(&s).await, (0, 1));
    assert!(matches!(
        s.files.get(&s.user, &done.id).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        s.files
            .sweep_abandoned(Duration::ZERO)
            .await
            .unwrap()
            .stray_objects,
        1
    );
    assert_eq!(objects(&s).await, (0, 0));
}

#[tokio::test]
async fn a_recent_stray_object_waits_for_the_abandon_age() {
    let s = setup().await;
    let pending = uploaded_but_not_completed(&s).await;
    s.files.complete_upload(&s.user, &pending.id).await.unwrap();
    send(&s, &pending, SENT).await;
    let config = s.files.config().clone();
    let swept = s
        .files
        .sweep_abandoned(config.abandoned_after())
        .await
        .unwrap();
    assert_eq!(
        swept,
        Swept::default(),
        "its upload URL may still be in use"
    );
    assert_eq!(objects(&s).await, (1, 1));
}

#[tokio::test]
async fn completing_before_the_bytes_arrive_keeps_the_upload() {
    let s = setup().await;
    let pending = s
        .files
        .begin_upload(&s.user, "later.txt", "text/plain", SENT.len() as u64)
        .await
        .unwrap()
        .file;
    let early = s.files.complete_upload(&s.user, &pending.id).await;
    assert!(matches!(early, Err(Error::InvalidInput(_))), "{early:?}");
    send(&s, &pending, SENT).await;
    let done = s.files.complete_upload(&s.user, &pending.id).await.unwrap();
    assert_eq!(done.size, SENT.len() as u64);
    assert_eq!(objects(&s).await, (1, 0));
}

#[tokio::test]
async fn an_upload_larger_than_the_limit_is_refused_before_it_begins() {
    let s = setup().await;
    let limit = s.files.config().max_size;
    let refused = s
        .files
        .begin_upload(&s.user, "huge.bin", "text/plain", limit + 1)
        .await;
    assert!(
        matches!(refused, Err(Error::TooLarge { .. })),
        "{refused:?}"
    );
    assert_eq!(
        s.files.sweep_abandoned(Duration::ZERO).await.unwrap(),
        Swept::default(),
        "nothing was recorded"
    );
}

#[tokio::test]
async fn of_two_completions_at_once_one_keeps_the_file_and_the_other_leaves_nothing() {
    let s = setup().await;
    let pending = uploaded_but_not_completed(&s).await;
    let (a, b) = tokio::join!(
        s.files.complete_upload(&s.user, &pending.id),
        s.files.complete_upload(&s.user, &pending.id)
    );
    let (done, lost) = match (a, b) {
        (Ok(done), lost) | (lost, Ok(done)) => (done, lost),
        (a, b) => panic!("neither completed: {a:?} {b:?}"),
    };
    assert!(
        matches!(lost, Err(Error::NotFound(_) | Error::InvalidInput(_))),
        "{lost:?}"
    );
    assert_eq!(objects(&s).await, (1, 0));
    let served = s
        .store
        .get_bytes(&FileKey::parse(&done.key).unwrap())
        .await
        .unwrap();
    assert_eq!(served, SENT);
}
