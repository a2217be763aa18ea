//! API keys: `isa_<id>_<secret>`, stored only as a SHA-256 hash of the secret, compared in
//! constant time, with scopes, revocation, an optional expiry and last-used time.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use isa_core::{Error, Result, UserId};
use parking_lot::Mutex;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use isa_core::{AuthMethod, Identity};

/// Every key starts with this, so leaked keys are easy to recognise and scan for.
pub const KEY_PREFIX: &str = "isa_";

/// A stored key: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// Public identifier (the part after `isa_`), shown in listings.
    pub id: String,
    /// Owner.
    pub user_id: UserId,
    /// A label chosen by the owner.
    pub name: String,
    /// SHA-256 of the secret part, hex.
    #[serde(skip)]
    pub secret_hash: String,
    /// Scopes the key grants.
    pub scopes: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used to authenticate.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked key never authenticates again.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Where key records live. The storage crate implements it on PostgreSQL and SQLite;
/// [`MemoryKeyStore`] serves tests and single-process use.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new record.
    async fn insert(&self, record: ApiKeyRecord) -> Result<()>;
    /// The record with this id.
    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>>;
    /// The user's keys, newest first.
    async fn list(&self, user: &UserId) -> Result<Vec<ApiKeyRecord>>;
    /// Marks a key of `user` revoked; `false` when there is no such key.
    async fn revoke(&self, user: &UserId, id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Records a use.
    async fn touch(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
}

/// Keys in memory.
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<HashMap<String, ApiKeyRecord>>,
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn insert(&self, record: ApiKeyRecord) -> Result<()> {
        self.keys.lock().insert(record.id.clone(), record);
        Ok(())
    }
    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        Ok(self.keys.lock().get(id).cloned())
    }
    async fn list(&self, user: &UserId) -> Result<Vec<ApiKeyRecord>> {
        let mut keys: Vec<_> = self
            .keys
            .lock()
            .values()
            .filter(|k| &k.user_id == user)
            .cloned()
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        Ok(keys)
    }
    async fn revoke(&self, user: &UserId, id: &str, at: DateTime<Utc>) -> Result<bool> {
        Ok(match self.keys.lock().get_mut(id) {
            Some(key) if &key.user_id == user => {
                key.revoked_at.get_or_insert(at);
                true
            }
            _ => false,
        })
    }
    async fn touch(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        if let Some(key) = self.keys.lock().get_mut(id) {
            key.last_used_at = Some(at);
        }
        Ok(())
    }
}

/// Issues and verifies API keys over a [`KeyStore`].
#[derive(Clone)]
pub struct ApiKeys {
    store: Arc<dyn KeyStore>,
    cache: Option<Arc<KeyCache>>,
}

/// Records recently read from the store, so that a busy service does not read the store for
/// every request. A revoked key keeps working until its cached record is older than `ttl`.
struct KeyCache {
    ttl: std::time::Duration,
    records: parking_lot::Mutex<lru::LruCache<String, (ApiKeyRecord, std::time::Instant)>>,
}

/// The most records a key cache holds.
const KEY_CACHE_CAPACITY: usize = 10_000;

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

impl ApiKeys {
    /// Keys kept in `store`.
    pub fn new(store: Arc<dyn KeyStore>) -> Self {
        ApiKeys { store, cache: None }
    }

    /// The same keys with records kept in memory for up to `ttl` after they are read: a busy
    /// service then reads the store about once per key and `ttl`, and a revocation reaches it
    /// within `ttl`.
    pub fn with_cache(mut self, ttl: std::time::Duration) -> Self {
        let capacity =
            std::num::NonZeroUsize::new(KEY_CACHE_CAPACITY).unwrap_or(std::num::NonZeroUsize::MIN);
        self.cache = Some(Arc::new(KeyCache {
            ttl,
            records: parking_lot::Mutex::new(lru::LruCache::new(capacity)),
        }));
        self
    }

    /// The record of key `id`: from the cache while fresh, else from the store.
    async fn record(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let Some(cache) = &self.cache else {
            return self.store.get(id).await;
        };
        if let Some((record, read_at)) = cache.records.lock().get(id)
            && read_at.elapsed() < cache.ttl
        {
            return Ok(Some(record.clone()));
        }
        let record = self.store.get(id).await?;
        match &record {
            Some(r) => {
                cache
                    .records
                    .lock()
                    .put(id.to_owned(), (r.clone(), std::time::Instant::now()));
            }
            None => {
                cache.records.lock().pop(id);
            }
        }
        Ok(record)
    }

    /// Notes a recorded use in the cached record, so the next minute's requests do not write.
    fn note_use(&self, id: &str, at: DateTime<Utc>) {
        if let Some(cache) = &self.cache
            && let Some((record, _)) = cache.records.lock().peek_mut(id)
        {
            record.last_used_at = Some(at);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Makes a key for `user`; returns the full key (shown once, never stored) and its record.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use isa_auth::{ApiKeys, MemoryKeyStore};
    /// use isa_core::UserId;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let keys = ApiKeys::new(Arc::new(MemoryKeyStore::default()));
    /// let alice = UserId::new("alice").unwrap();
    /// let (key, record) = keys.issue(&alice, "laptop", vec!["files".into()]).await.unwrap();
    /// assert!(key.starts_with("isa_"));
    /// assert_eq!(keys.verify(&key).await.unwrap().user_id, alice);
    /// keys.store().revoke(&alice, &record.id, chrono::Utc::now()).await.unwrap();
    /// assert!(keys.verify(&key).await.is_err());
    /// # });
    /// ```
    pub async fn issue(
        &self,
        user: &UserId,
        name: &str,
        scopes: Vec<String>,
    ) -> Result<(String, ApiKeyRecord)> {
        self.issue_until(user, name, scopes, None).await
    }

    /// [`ApiKeys::issue`] for a key that stops working at `expires_at` (never when `None`).
    pub async fn issue_until(
        &self,
        user: &UserId,
        name: &str,
        scopes: Vec<String>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(String, ApiKeyRecord)> {
        if name.len() > 100 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "a key name has at most 100 characters and no control characters",
            ));
        }
        let id = random_hex(8);
        let secret = random_hex(32);
        let record = ApiKeyRecord {
            id: id.clone(),
            user_id: user.clone(),
            name: name.to_owned(),
            secret_hash: hash(&secret),
            scopes,
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
            expires_at,
        };
        self.store.insert(record.clone()).await?;
        Ok((format!("{KEY_PREFIX}{id}_{secret}"), record))
    }

    /// Verifies a full key; every failure is [`Error::Unauthenticated`].
    pub async fn verify(&self, key: &str) -> Result<Identity> {
        let Some((id, secret)) = key
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.split_once('_'))
        else {
            return Err(Error::Unauthenticated);
        };
        if id.len() != 16 || secret.len() != 64 {
            return Err(Error::Unauthenticated);
        }
        let Some(record) = self.record(id).await? else {
            return Err(Error::Unauthenticated);
        };
        let matches: bool = hash(secret)
            .as_bytes()
            .ct_eq(record.secret_hash.as_bytes())
            .into();
        let now = Utc::now();
        if !matches
            || record.revoked_at.is_some()
            || record.expires_at.is_some_and(|end| end <= now)
        {
            return Err(Error::Unauthenticated);
        }
        // The last use is bookkeeping, written at most once a minute so that reads do not
        // become writes; failing to write it never refuses a valid key.
        let stale = record
            .last_used_at
            .is_none_or(|used| now - used >= LAST_USE_RESOLUTION);
        if stale {
            match self.store.touch(id, now).await {
                Ok(()) => self.note_use(id, now),
                Err(error) => tracing::warn!(key = id, %error, "could not record an API key's use"),
            }
        }
        Ok(Identity {
            user_id: record.user_id,
            email: None,
            scopes: record.scopes,
            organization: None,
            method: AuthMethod::ApiKey,
        })
    }
}

/// How precisely a key's last use is recorded.
const LAST_USE_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Whether a bearer credential looks like an API key rather than a JWT.
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}
