//! API keys of isa-auth stored in PostgreSQL and SQLite: the same test on both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use isa_auth::{ApiKeys, KeyStore};
use isa_core::UserId;

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_issued_verified_listed_and_revoked_in_the_database() {
    for (name, db, _dir) in common::databases().await {
        let store: Arc<dyn KeyStore> = Arc::new(db);
        let keys = ApiKeys::new(store.clone());
        let alice = UserId::new(format!("keys-{}", uuid::Uuid::now_v7().simple())).unwrap();
        let mallory = UserId::new(format!("keys-{}", uuid::Uuid::now_v7().simple())).unwrap();
        let (key, record) = keys
            .issue(&alice, "laptop", vec!["files:read".into()])
            .await
            .unwrap();
        let (_, second) = keys.issue(&alice, "ci", vec![]).await.unwrap();

        let identity = keys.verify(&key).await.unwrap();
        assert_eq!(identity.user_id, alice, "{name}");
        assert_eq!(identity.scopes, vec!["files:read".to_owned()]);
        let stored = store.get(&record.id).await.unwrap().unwrap();
        assert!(stored.last_used_at.is_some(), "{name}: last use recorded");
        assert_ne!(stored.secret_hash, key, "{name}: only a hash is stored");
        assert!(!stored.secret_hash.is_empty() && !key.contains(&stored.secret_hash));

        let listed = store.list(&alice).await.unwrap();
        assert_eq!(
            listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            [second.id.as_str(), record.id.as_str()],
            "{name}: newest first"
        );

        let mut tampered = key.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert!(
            keys.verify(&String::from_utf8(tampered).unwrap())
                .await
                .is_err(),
            "{name}"
        );

        assert!(
            !store
                .revoke(&mallory, &record.id, chrono::Utc::now())
                .await
                .unwrap(),
            "{name}: not mallory's key"
        );
        assert!(keys.verify(&key).await.is_ok());
        assert!(
            store
                .revoke(&alice, &record.id, chrono::Utc::now())
                .await
                .unwrap()
        );
        assert!(
            keys.verify(&key).await.is_err(),
            "{name}: a revoked key never authenticates"
        );
    }
}
