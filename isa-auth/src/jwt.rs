//! JWT verification that fails closed.
//!
//! Each issuer is configured with the algorithms it uses; a token's `alg` header only selects
//! among those, never widens them. So `alg: none` is refused, an HS256 token is only ever
//! checked against a shared secret (never against an RSA public key used as an HMAC secret),
//! and RS256/ES256 tokens only against keys from the issuer's JWKS.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use isa_core::{Error, Result, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;

use isa_core::{AuthMethod, Identity};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where an issuer's verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// A shared HMAC secret (HS256), as Supabase signs its tokens.
    Secret(Vec<u8>),
    /// A JWKS URL (RS256, ES256), as Auth0 publishes its keys.
    Jwks(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(..)"),
            KeySource::Jwks(url) => write!(f, "Jwks({url})"),
        }
    }
}

/// One trusted token issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// A name for logs (`supabase`, `auth0`).
    pub name: String,
    /// Expected `iss`; checked when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values; a token must name one of them. Never empty: a token without the
    /// right audience was meant for someone else.
    pub audiences: Vec<String>,
    /// The algorithms this issuer signs with.
    pub algorithms: Vec<Algorithm>,
    /// Its keys.
    pub keys: KeySource,
    /// Clock skew tolerated for `exp` and `nbf`.
    pub leeway: Duration,
}

impl IssuerConfig {
    /// Supabase: HS256 with the project's JWT secret, audience `authenticated`.
    pub fn supabase(secret: impl Into<Vec<u8>>) -> Self {
        IssuerConfig {
            name: "supabase".into(),
            issuer: None,
            audiences: vec!["authenticated".into()],
            algorithms: vec![Algorithm::HS256],
            keys: KeySource::Secret(secret.into()),
            leeway: Duration::from_secs(30),
        }
    }

    /// Auth0: RS256/ES256 from `https://{domain}/.well-known/jwks.json`, issuer
    /// `https://{domain}/`, the API's audience.
    pub fn auth0(domain: &str, audience: impl Into<String>) -> Self {
        let domain = domain.trim_start_matches("https://").trim_end_matches('/');
        IssuerConfig {
            name: "auth0".into(),
            issuer: Some(format!("https://{domain}/")),
            audiences: vec![audience.into()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            keys: KeySource::Jwks(format!("https://{domain}/.well-known/jwks.json")),
            leeway: Duration::from_secs(30),
        }
    }
}

/// Keys of a JWKS, refetched on an unknown `kid` at most once per `min_refresh`.
type Keys = HashMap<String, (DecodingKey, Option<Algorithm>)>;

/// An issuer's published keys. Keys live `max_age`; for another `max_age` a stale key is
/// still accepted while a refresh runs in the background; after that it is used only once a
/// fetch confirms it. A key the issuer withdraws thus stops working within twice `max_age`.
struct JwksCache {
    url: String,
    client: reqwest::Client,
    keys: Mutex<(Keys, Option<Instant>)>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    refreshing: AtomicBool,
    min_refresh: Duration,
    max_age: Duration,
}

impl JwksCache {
    /// The key `kid` and how long ago it was fetched.
    fn cached(&self, kid: &str) -> Option<((DecodingKey, Option<Algorithm>), Duration)> {
        let keys = self.keys.lock();
        let fetched = keys.1?;
        keys.0.get(kid).map(|key| (key.clone(), fetched.elapsed()))
    }

    async fn key(self: &Arc<Self>, kid: &str) -> Result<(DecodingKey, Option<Algorithm>)> {
        match self.cached(kid) {
            Some((key, age)) if age < self.max_age => return Ok(key),
            Some((key, age)) if age < 2 * self.max_age => {
                if !self.refreshing.swap(true, Ordering::SeqCst) {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.refresh().await;
                        this.refreshing.store(false, Ordering::SeqCst);
                    });
                }
                return Ok(key);
            }
            _ => {}
        }
        // Unknown or expired: only a fetch can vouch for it.
        self.refresh().await;
        match self.cached(kid) {
            Some((key, age)) if age < 2 * self.max_age => Ok(key),
            _ => Err(Error::Unauthenticated),
        }
    }

    /// Fetches the key set: one fetch at a time, and not more often than `min_refresh`,
    /// however many tokens with unknown kids arrive. A failed fetch keeps the keys it has,
    /// which then expire.
    async fn refresh(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => *self.keys.lock() = (keys, Some(Instant::now())),
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; tokens with unknown or expired keys are refused")
            }
        }
    }

    async fn fetch(&self) -> Result<Keys> {
        let set: JwkSet = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| Error::Unavailable(format!("JWKS: {e}")))?
            .json()
            .await
            .map_err(|e| Error::Unavailable(format!("JWKS is not a key set: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.insert(kid, (key, alg));
        }
        Ok(keys)
    }
}

struct Issuer {
    config: IssuerConfig,
    secret: Option<DecodingKey>,
    jwks: Option<Arc<JwksCache>>,
}

/// Verifies bearer JWTs against the configured issuers.
#[derive(Clone)]
pub struct JwtVerifier {
    issuers: Arc<Vec<Issuer>>,
}

/// Settings of the JWKS fetches.
#[derive(Debug, Clone, Copy)]
pub struct JwksOptions {
    /// Timeout of one fetch.
    pub timeout: Duration,
    /// Least time between two fetches of one JWKS.
    pub min_refresh: Duration,
    /// How long fetched keys are trusted before a refresh; a withdrawn key stops working
    /// within twice this.
    pub max_age: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            timeout: Duration::from_secs(5),
            min_refresh: Duration::from_secs(30),
            max_age: Duration::from_secs(600),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Value>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    app_metadata: Option<Value>,
}

impl JwtVerifier {
    /// A verifier trusting `issuers`.
    pub fn new(issuers: Vec<IssuerConfig>, options: JwksOptions) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let issuers = issuers
            .into_iter()
            .map(|config| {
                if config.audiences.is_empty() {
                    return Err(Error::Config(format!("issuer {} needs at least one audience", config.name)));
                }
                let is_hmac = |a: &Algorithm| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
                let hmac = config.algorithms.iter().all(is_hmac);
                if config.algorithms.is_empty() || (!hmac && config.algorithms.iter().any(is_hmac)) {
                    return Err(Error::Config(format!(
                        "issuer {}: name its algorithms, either HMAC ones (with a shared secret) or public-key ones (with a JWKS), never a mix",
                        config.name
                    )));
                }
                let (secret, jwks) = match &config.keys {
                    KeySource::Secret(s) if hmac && s.len() >= 32 => (Some(DecodingKey::from_secret(s)), None),
                    KeySource::Secret(_) if hmac => {
                        return Err(Error::Config(format!("issuer {}: the shared secret must have at least 32 bytes", config.name)));
                    }
                    KeySource::Jwks(url) if !hmac => (
                        None,
                        Some(Arc::new(JwksCache {
                            url: url.clone(),
                            client: client.clone(),
                            keys: Mutex::default(),
                            last_fetch: tokio::sync::Mutex::new(None),
                            refreshing: AtomicBool::new(false),
                            min_refresh: options.min_refresh,
                            max_age: options.max_age,
                        })),
                    ),
                    _ => {
                        return Err(Error::Config(format!(
                            "issuer {}: HMAC algorithms need a shared secret and public-key algorithms a JWKS, never a mix",
                            config.name
                        )));
                    }
                };
                Ok(Issuer { config, secret, jwks })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(JwtVerifier {
            issuers: Arc::new(issuers),
        })
    }

    /// Verifies a token; any failure is [`Error::Unauthenticated`], whatever the reason (the
    /// reason is logged at debug level, never told to the caller).
    pub async fn verify(&self, token: &str) -> Result<Identity> {
        match self.verify_inner(token).await {
            Ok(identity) => Ok(identity),
            Err(why) => {
                tracing::debug!(%why, "token refused");
                Err(Error::Unauthenticated)
            }
        }
    }

    async fn verify_inner(&self, token: &str) -> std::result::Result<Identity, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("token of {} bytes", token.len()));
        }
        let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
        let mut last_error = String::from("no issuer accepts this algorithm");
        for issuer in self
            .issuers
            .iter()
            .filter(|i| i.config.algorithms.contains(&header.alg))
        {
            let key = match (&issuer.secret, &issuer.jwks) {
                (Some(secret), _) => secret.clone(),
                (None, Some(jwks)) => {
                    let kid = header.kid.as_deref().ok_or("no kid")?;
                    match jwks.key(kid).await {
                        Ok((key, alg)) if alg.is_none_or(|a| a == header.alg) => key,
                        Ok(_) => {
                            last_error = "the key is for another algorithm".into();
                            continue;
                        }
                        Err(_) => {
                            last_error = format!("{}: unknown kid {kid}", issuer.config.name);
                            continue;
                        }
                    }
                }
                (None, None) => continue,
            };
            // header.alg is one of the issuer's algorithms (filtered above).
            let mut validation = Validation::new(header.alg);
            validation.leeway = issuer.config.leeway.as_secs();
            validation.validate_nbf = true;
            validation.set_audience(&issuer.config.audiences);
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
            if let Some(iss) = &issuer.config.issuer {
                validation.set_issuer(&[iss]);
            }
            match decode::<Claims>(token, &key, &validation) {
                Ok(data) => return identity_of(data.claims),
                Err(e) => last_error = format!("{}: {e}", issuer.config.name),
            }
        }
        Err(last_error)
    }
}

fn identity_of(claims: Claims) -> std::result::Result<Identity, String> {
    let user_id = UserId::new(claims.sub).map_err(|e| format!("sub: {e}"))?;
    let mut scopes: Vec<String> = claims
        .scope
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_owned))
        .collect();
    match claims.scp {
        Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
        Some(Value::Array(items)) => {
            scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
        }
        _ => {}
    }
    scopes.extend(claims.permissions);
    scopes.extend(claims.roles);
    // Supabase: the database role (`authenticated`) is not a scope, but app_metadata roles are.
    if let Some(roles) = claims
        .app_metadata
        .as_ref()
        .and_then(|m| m.get("roles"))
        .and_then(Value::as_array)
    {
        scopes.extend(roles.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if claims.role.as_deref() == Some("service_role") {
        scopes.push(isa_core::ADMIN_SCOPE.into());
    }
    scopes.sort();
    scopes.dedup();
    Ok(Identity {
        user_id,
        email: claims.email,
        scopes,
        organization: claims.org_id,
        method: AuthMethod::Jwt,
    })
}
