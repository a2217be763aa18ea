//! Behaviour every [`KeyStore`] must have, checked through [`ApiKeys`] as the services use it.

use std::sync::Arc;

use isa_auth::{ApiKeys, KeyStore};

use super::fresh_user;

/// Keys are stored as hashes, verified (recording their use), listed newest first per user,
/// and revoked only by their owner; a tampered, revoked or expired key never authenticates.
pub async fn keys_are_issued_verified_listed_and_revoked(name: &str, store: Arc<dyn KeyStore>) {
    let keys = ApiKeys::new(store.clone());
    let (alice, mallory) = (fresh_user("keys"), fresh_user("keys"));
    let (key, record) = keys
        .issue(&alice, "laptop", vec!["files:read".into()])
        .await
        .unwrap();
    let (_, second) = keys.issue(&alice, "ci", vec![]).await.unwrap();

    let identity = keys.verify(&key).await.unwrap();
    assert_eq!(identity.user_id, alice, "{name}");
    assert_eq!(identity.scopes, vec!["files:read".to_owned()], "{name}");
    let stored = store.get(&record.id).await.unwrap().unwrap();
    assert!(stored.last_used_at.is_some(), "{name}: last use recorded");
    assert_ne!(stored.secret_hash, key, "{name}: only a hash is stored");
    assert!(
        !stored.secret_hash.is_empty() && !key.contains(&stored.secret_hash),
        "{name}"
    );
    assert!(store.get("no-such-key").await.unwrap().is_none(), "{name}");

    let listed = store.list(&alice).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str(), record.id.as_str()],
        "{name}: newest first"
    );
    assert!(store.list(&mallory).await.unwrap().is_empty(), "{name}");

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
    assert!(keys.verify(&key).await.is_ok(), "{name}");
    assert!(
        store
            .revoke(&alice, &record.id, chrono::Utc::now())
            .await
            .unwrap(),
        "{name}"
    );
    assert!(
        keys.verify(&key).await.is_err(),
        "{name}: a revoked key never authenticates"
    );

    let now = chrono::Utc::now();
    let (expired, _) = keys
        .issue_until(
            &alice,
            "expired",
            vec![],
            Some(now - chrono::Duration::seconds(1)),
        )
        .await
        .unwrap();
    assert!(
        keys.verify(&expired).await.is_err(),
        "{name}: an expired key never authenticates"
    );
    let end = chrono::SubsecRound::trunc_subsecs(now + chrono::Duration::hours(1), 0);
    let (expiring, record) = keys
        .issue_until(&alice, "expiring", vec![], Some(end))
        .await
        .unwrap();
    assert!(keys.verify(&expiring).await.is_ok(), "{name}");
    assert_eq!(
        store.get(&record.id).await.unwrap().unwrap().expires_at,
        Some(end),
        "{name}: the expiry reads back"
    );
}
