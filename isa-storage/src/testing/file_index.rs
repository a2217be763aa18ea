//! Behaviour every [`FileIndex`] must have.

use chrono::{DateTime, TimeZone, Utc};
use isa_core::{Error, FileFilter, FileIndex, FileRecord, FileStatus, UserId, UserStore};

use super::fresh_user;

/// A fresh user, made in `users` (files belong to existing users).
async fn owner(users: &dyn UserStore) -> UserId {
    let user = fresh_user("files");
    users.ensure_user(&user, None, 0).await.unwrap();
    user
}

fn record(user: &UserId, created_at: DateTime<Utc>, name: &str) -> FileRecord {
    let id = uuid::Uuid::now_v7().to_string();
    FileRecord {
        key: format!(
            "users/{user}/files/{}/{id}-{name}",
            created_at.format("%Y/%m")
        ),
        id,
        user_id: user.clone(),
        name: name.to_owned(),
        size: 0,
        content_type: "text/plain".into(),
        sha256: None,
        created_at,
    }
}

/// A file is seen only by its owner and only in its status; a pending file becomes ready once,
/// with what was checked (its key included); removal is per owner and status. A file stored twice is a conflict,
/// and one of a user that does not exist invalid input.
pub async fn files_are_indexed_per_user_and_status(
    name: &str,
    index: &dyn FileIndex,
    users: &dyn UserStore,
) {
    let (alice, mallory) = (owner(users).await, owner(users).await);
    let long_ago = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();
    let pending = record(&alice, long_ago, "report.txt");
    index.insert(&pending, FileStatus::Pending).await.unwrap();

    // Writes that contradict what is stored are the caller's mistake, not an outage.
    let again = index.insert(&pending, FileStatus::Pending).await;
    assert!(
        matches!(again, Err(Error::Conflict(_))),
        "{name}: the same file twice: {again:?}"
    );
    let orphan = record(&fresh_user("nobody"), long_ago, "orphan.txt");
    let refused = index.insert(&orphan, FileStatus::Ready).await;
    assert!(
        matches!(refused, Err(Error::InvalidInput(_))),
        "{name}: a file of a user that does not exist: {refused:?}"
    );

    let find = |user: UserId, status| {
        let id = pending.id.clone();
        async move { index.find(&user, &id, status).await.unwrap() }
    };
    assert_eq!(
        find(alice.clone(), FileStatus::Pending).await.as_ref(),
        Some(&pending),
        "{name}: reads back exactly"
    );
    assert_eq!(find(alice.clone(), FileStatus::Ready).await, None, "{name}");
    assert_eq!(
        find(mallory.clone(), FileStatus::Pending).await,
        None,
        "{name}: another user sees nothing"
    );
    assert!(
        index
            .list(&alice, &FileFilter::default())
            .await
            .unwrap()
            .files
            .is_empty(),
        "{name}: pending files are not listed"
    );
    let checked = FileRecord {
        key: format!("{}-checked", pending.key),
        size: 11,
        content_type: "text/markdown".into(),
        sha256: Some("ab".repeat(32)),
        ..pending.clone()
    };
    let not_hers = FileRecord {
        user_id: mallory.clone(),
        ..checked.clone()
    };
    assert!(!index.mark_ready(&not_hers).await.unwrap(), "{name}");
    assert!(index.mark_ready(&checked).await.unwrap(), "{name}");
    assert!(
        !index.mark_ready(&checked).await.unwrap(),
        "{name}: only a pending file becomes ready"
    );
    assert_eq!(
        find(alice.clone(), FileStatus::Ready).await.as_ref(),
        Some(&checked),
        "{name}"
    );

    assert!(
        !index
            .remove(&mallory, &pending.id, FileStatus::Ready)
            .await
            .unwrap(),
        "{name}: not mallory's file"
    );
    assert!(
        !index
            .remove(&alice, &pending.id, FileStatus::Pending)
            .await
            .unwrap(),
        "{name}: not pending any more"
    );
    assert!(
        index
            .remove(&alice, &pending.id, FileStatus::Ready)
            .await
            .unwrap(),
        "{name}"
    );
    assert_eq!(find(alice, FileStatus::Ready).await, None, "{name}");
}

/// Listings hold the owner's ready files in upload order, filtered by year and month, in
/// pages that cover each once.
pub async fn file_listings_filter_and_page(
    name: &str,
    index: &dyn FileIndex,
    users: &dyn UserStore,
) {
    let (alice, bob) = (owner(users).await, owner(users).await);
    let mut mine = Vec::new();
    for (year, month) in [(2025, 12), (2026, 1), (2026, 1), (2026, 2), (2026, 1)] {
        let at = Utc.with_ymd_and_hms(year, month, 9, 10, 0, 0).unwrap();
        let file = record(&alice, at, "notes.txt");
        index.insert(&file, FileStatus::Ready).await.unwrap();
        mine.push(file);
    }
    index
        .insert(
            &record(&bob, mine[0].created_at, "b.txt"),
            FileStatus::Ready,
        )
        .await
        .unwrap();

    let all = index.list(&alice, &FileFilter::default()).await.unwrap();
    assert_eq!(all.files, mine, "{name}: upload order, only alice's");
    assert_eq!(all.next, None, "{name}");

    let january = FileFilter {
        year: Some(2026),
        month: Some(1),
        ..FileFilter::default()
    };
    let ids = |files: &[FileRecord]| files.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&index.list(&alice, &january).await.unwrap().files),
        ids(&[mine[1].clone(), mine[2].clone(), mine[4].clone()]),
        "{name}"
    );
    let of_2026 = FileFilter {
        year: Some(2026),
        ..FileFilter::default()
    };
    assert_eq!(
        index.list(&alice, &of_2026).await.unwrap().files.len(),
        4,
        "{name}"
    );

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = index
            .list(
                &alice,
                &FileFilter {
                    after: after.clone(),
                    limit: Some(2),
                    ..FileFilter::default()
                },
            )
            .await
            .unwrap();
        assert!(page.files.len() <= 2, "{name}");
        paged.extend(page.files);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, mine, "{name}: pages cover everything once");
}

/// Unfinished uploads are found across users once older than the cutoff, and abandoned ones at
/// any age; an abandoned upload can no longer become ready, and a completed one cannot be
/// abandoned.
pub async fn abandoned_uploads_are_found_and_can_no_longer_be_completed(
    name: &str,
    index: &dyn FileIndex,
    users: &dyn UserStore,
) {
    let (alice, bob) = (owner(users).await, owner(users).await);
    let long_ago = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();
    let old = record(&alice, long_ago, "old.txt");
    let recent = record(&bob, Utc::now(), "recent.txt");
    let done = record(&bob, long_ago, "done.txt");
    for (file, status) in [
        (&old, FileStatus::Pending),
        (&recent, FileStatus::Pending),
        (&done, FileStatus::Ready),
    ] {
        index.insert(file, status).await.unwrap();
    }
    let found = |cutoff| async move {
        index
            .unfinished_before(cutoff, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect::<Vec<_>>()
    };
    let before = found(long_ago + chrono::Duration::seconds(1)).await;
    assert!(before.contains(&old.id), "{name}: an old pending upload");
    assert!(!before.contains(&recent.id), "{name}: not a recent one");
    assert!(!before.contains(&done.id), "{name}: never a ready file");
    assert!(
        !found(long_ago).await.contains(&old.id),
        "{name}: only uploads begun before the cutoff"
    );

    assert!(
        !index.abandon(&bob, &old.id).await.unwrap(),
        "{name}: not bob's"
    );
    assert!(
        !index.abandon(&bob, &done.id).await.unwrap(),
        "{name}: ready"
    );
    assert!(index.abandon(&bob, &recent.id).await.unwrap(), "{name}");
    assert!(
        index.abandon(&bob, &recent.id).await.unwrap(),
        "{name}: abandoning again is harmless"
    );
    assert!(
        found(long_ago).await.contains(&recent.id),
        "{name}: an abandoned upload is found at any age"
    );
    let completed = FileRecord {
        size: 3,
        sha256: Some("cd".repeat(32)),
        ..recent.clone()
    };
    assert!(
        !index.mark_ready(&completed).await.unwrap(),
        "{name}: an abandoned upload cannot become ready"
    );
    assert_eq!(
        index
            .find(&bob, &recent.id, FileStatus::Abandoned)
            .await
            .unwrap()
            .map(|f| f.id),
        Some(recent.id.clone()),
        "{name}"
    );
    assert!(
        index
            .remove(&bob, &recent.id, FileStatus::Abandoned)
            .await
            .unwrap(),
        "{name}"
    );
    index
        .remove(&alice, &old.id, FileStatus::Pending)
        .await
        .unwrap();
    index
        .remove(&bob, &done.id, FileStatus::Ready)
        .await
        .unwrap();
}
