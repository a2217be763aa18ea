//! isa-auth against tokens minted by PyJWT (not our implementation) and by `jsonwebtoken`,
//! with the JWKS served by a local HTTP server, through an axum app with the auth layer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{process::Command, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::Path,
    http::{Request, StatusCode, header},
    routing::get,
};
use isa_auth::{
    ApiKeys, Authenticator, IssuerConfig, JwksOptions, JwtVerifier, KeySource, MemoryKeyStore,
    require_auth,
};
use isa_core::{Identity, UserId, http::ApiResult};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tower::ServiceExt;

const ISSUER: &str = "https://issuer.test/";
/// How long the fixture trusts fetched keys.
const JWKS_MAX_AGE: Duration = Duration::from_millis(400);
const AUDIENCE: &str = "https://api.test/mcp";
const SUPABASE_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";

struct Fixture {
    app: Router,
    tokens: Value,
    jwks: Arc<RwLock<Value>>,
    rotated: Value,
    keys: ApiKeys,
}

fn mint() -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mint_tokens.py");
    match Command::new("python3")
        .args([script, ISSUER, AUDIENCE, SUPABASE_SECRET])
        .output()
    {
        Ok(out) if out.status.success() => Some(serde_json::from_slice(&out.stdout).unwrap()),
        other => {
            assert!(
                std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "python3 with PyJWT and cryptography is required: {other:?}"
            );
            eprintln!("skipped: cannot mint tokens with PyJWT");
            None
        }
    }
}

async fn serve_jwks(jwks: Arc<RwLock<Value>>) -> String {
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || async move { Json(jwks.read().clone()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn issuers(jwks_url: String) -> Vec<IssuerConfig> {
    let mut auth0 = IssuerConfig::auth0("issuer.test", AUDIENCE);
    auth0.keys = KeySource::Jwks(jwks_url);
    vec![auth0, IssuerConfig::supabase(SUPABASE_SECRET)]
}

async fn user_thing(identity: Identity, Path(user): Path<String>) -> ApiResult<Json<Value>> {
    identity.authorize_user(&UserId::new(user)?)?;
    Ok(Json(
        json!({"caller": identity.user_id, "scopes": identity.scopes}),
    ))
}

async fn fixture() -> Option<Fixture> {
    let minted = mint()?;
    let jwks = Arc::new(RwLock::new(minted["jwks"].clone()));
    let url = serve_jwks(jwks.clone()).await;
    let options = JwksOptions {
        timeout: Duration::from_secs(2),
        min_refresh: Duration::ZERO,
        max_age: JWKS_MAX_AGE,
    };
    let verifier = JwtVerifier::new(issuers(url), options).unwrap();
    let keys = ApiKeys::new(Arc::new(MemoryKeyStore::default()));
    let auth = Authenticator::new(AUDIENCE, Some(verifier), Some(keys.clone()));
    let app = Router::new()
        .route("/api/users/{user}/thing", get(user_thing))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            require_auth,
        ))
        .merge(auth.metadata_router());
    Some(Fixture {
        app,
        tokens: minted["tokens"].clone(),
        jwks,
        rotated: minted["jwks_rotated"].clone(),
        keys,
    })
}

async fn get_as(
    app: &Router,
    path: &str,
    bearer: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::get(path);
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        challenge,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn valid_tokens_from_pyjwt_and_jsonwebtoken_are_accepted() {
    let Some(f) = fixture().await else { return };
    for (token, user) in [
        ("valid_rs256", "alice"),
        ("valid_es256", "carol"),
        ("valid_supabase", "bob"),
    ] {
        let (status, _, body) = get_as(
            &f.app,
            &format!("/api/users/{user}/thing"),
            f.tokens[token].as_str(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{token}: {body}");
        assert_eq!(body["caller"], user);
    }
    let (_, _, body) = get_as(
        &f.app,
        "/api/users/alice/thing",
        f.tokens["valid_rs256"].as_str(),
    )
    .await;
    assert_eq!(body["scopes"], json!(["files:read"]));

    // A Supabase-style token made by jsonwebtoken.
    let claims =
        json!({"sub": "erin", "aud": "authenticated", "exp": chrono::Utc::now().timestamp() + 600});
    let ours = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SUPABASE_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, _, _) = get_as(&f.app, "/api/users/erin/thing", Some(&ours)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_credentials_are_all_401_never_500_and_say_nothing_about_why() {
    let Some(f) = fixture().await else { return };
    let (_, revoked_record) = f
        .keys
        .issue(&UserId::new("alice").unwrap(), "old", vec![])
        .await
        .unwrap();
    let (live_key, _) = f
        .keys
        .issue(&UserId::new("alice").unwrap(), "live", vec![])
        .await
        .unwrap();
    let (revoked_key, _) = {
        let (key, record) = f
            .keys
            .issue(&UserId::new("alice").unwrap(), "revoked", vec![])
            .await
            .unwrap();
        f.keys
            .store()
            .revoke(&record.user_id, &record.id, chrono::Utc::now())
            .await
            .unwrap();
        (key, record)
    };
    let _ = revoked_record;
    let mut tampered = live_key.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();

    let mut cases: Vec<(String, String)> = [
        "alg_none",
        "hs_rs_confusion",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "supabase_wrong_audience",
        "bad_signature",
        "unknown_kid",
        "malformed_header",
        "huge",
    ]
    .iter()
    .map(|name| {
        (
            name.to_string(),
            f.tokens[*name].as_str().unwrap().to_owned(),
        )
    })
    .collect();
    cases.push(("revoked API key".into(), revoked_key));
    cases.push(("API key with one character changed".into(), tampered));
    cases.push(("garbage".into(), "not-a-token".into()));

    assert!(f.tokens["huge"].as_str().unwrap().len() > 100_000);
    for (name, credential) in &cases {
        let (status, challenge, body) =
            get_as(&f.app, "/api/users/alice/thing", Some(credential)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        let challenge = challenge.unwrap_or_else(|| panic!("{name}: no WWW-Authenticate"));
        assert!(
            challenge.starts_with("Bearer ")
                && challenge.contains(
                    "resource_metadata=\"https://api.test/.well-known/oauth-protected-resource\""
                ),
            "{challenge}"
        );
        let text = body.to_string().to_lowercase();
        for leak in [
            "signature",
            "expired",
            "audience",
            "issuer",
            "kid",
            "algorithm",
        ] {
            assert!(
                !text.contains(leak),
                "{name}: the body reveals {leak:?}: {text}"
            );
        }
    }
    let (status, _, _) = get_as(&f.app, "/api/users/alice/thing", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no credential");
    let (status, _, _) = get_as(&f.app, "/api/users/alice/thing", Some(&live_key)).await;
    assert_eq!(status, StatusCode::OK, "the untouched key still works");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_from_the_jwks() {
    let Some(f) = fixture().await else { return };
    let rotated = f.tokens["rotated_rs256"].as_str().unwrap();
    let (status, _, _) = get_as(&f.app, "/api/users/dave/thing", Some(rotated)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "rsa-2 is not published yet"
    );
    *f.jwks.write() = f.rotated.clone();
    let (status, _, _) = get_as(&f.app, "/api/users/dave/thing", Some(rotated)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the unknown kid triggered a refetch"
    );
}

#[tokio::test]
async fn a_key_the_issuer_withdraws_stops_working() {
    let Some(f) = fixture().await else { return };
    let token = f.tokens["valid_rs256"].as_str().unwrap();
    let (status, _, _) = get_as(&f.app, "/api/users/alice/thing", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    // The issuer publishes rsa-2 and withdraws rsa-1, which signed the token.
    let mut withdrawn = f.rotated.clone();
    withdrawn["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != "rsa-1");
    *f.jwks.write() = withdrawn;
    // Past twice the keys' lifetime, only a fetch can vouch for rsa-1, and it does not.
    tokio::time::sleep(2 * JWKS_MAX_AGE + Duration::from_millis(100)).await;
    let (status, _, _) = get_as(&f.app, "/api/users/alice/thing", Some(token)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a withdrawn key was still trusted"
    );
    let rotated = f.tokens["rotated_rs256"].as_str().unwrap();
    let (status, _, _) = get_as(&f.app, "/api/users/dave/thing", Some(rotated)).await;
    assert_eq!(status, StatusCode::OK, "the key that replaced it works");
}

#[tokio::test]
async fn an_unreachable_jwks_fails_closed() {
    let Some(minted) = mint() else { return };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let verifier = JwtVerifier::new(
        issuers(format!("http://{closed}/jwks.json")),
        JwksOptions::default(),
    )
    .unwrap();
    let error = verifier
        .verify(minted["tokens"]["valid_rs256"].as_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, isa_core::Error::Unauthenticated));
}

#[tokio::test]
async fn a_user_may_act_only_for_themselves_unless_admin() {
    let Some(f) = fixture().await else { return };
    let alice = f.tokens["valid_rs256"].as_str();
    let (status, _, body) = get_as(&f.app, "/api/users/bob/thing", alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _, _) = get_as(
        &f.app,
        "/api/users/bob/thing",
        f.tokens["valid_admin"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "admin scope");
}

#[tokio::test]
async fn the_metadata_names_this_resource() {
    let Some(f) = fixture().await else { return };
    let (status, _, body) = get_as(&f.app, "/.well-known/oauth-protected-resource", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["resource"], AUDIENCE);
}

#[test]
fn misconfigured_issuers_are_refused() {
    let mut mixed = IssuerConfig::supabase(SUPABASE_SECRET);
    mixed.algorithms.push(jsonwebtoken::Algorithm::RS256);
    let refused = JwtVerifier::new(vec![mixed], JwksOptions::default()).map(drop);
    assert!(
        matches!(&refused, Err(isa_core::Error::Config(m)) if m.contains("never a mix")),
        "a shared secret with a public-key algorithm: {refused:?}"
    );
    let mut mixed_jwks = IssuerConfig::auth0("example.auth0.com", "https://api.example");
    mixed_jwks.algorithms.push(jsonwebtoken::Algorithm::HS256);
    assert!(JwtVerifier::new(vec![mixed_jwks], JwksOptions::default()).is_err());
    let mut none = IssuerConfig::supabase(SUPABASE_SECRET);
    none.algorithms.clear();
    assert!(JwtVerifier::new(vec![none], JwksOptions::default()).is_err());
    assert!(
        JwtVerifier::new(
            vec![IssuerConfig::supabase(SUPABASE_SECRET)],
            JwksOptions::default()
        )
        .is_ok()
    );
    assert!(
        JwtVerifier::new(
            vec![IssuerConfig::supabase("short")],
            JwksOptions::default()
        )
        .is_err()
    );
    let mut no_audience = IssuerConfig::supabase(SUPABASE_SECRET);
    no_audience.audiences.clear();
    assert!(JwtVerifier::new(vec![no_audience], JwksOptions::default()).is_err());
}

/// Keys in memory whose last-use writes fail, as a database that refuses writes would.
struct NoBookkeeping(MemoryKeyStore);

#[isa_core::async_trait]
impl isa_auth::KeyStore for NoBookkeeping {
    async fn insert(&self, record: isa_auth::ApiKeyRecord) -> isa_core::Result<()> {
        self.0.insert(record).await
    }
    async fn get(&self, id: &str) -> isa_core::Result<Option<isa_auth::ApiKeyRecord>> {
        self.0.get(id).await
    }
    async fn list(&self, user: &UserId) -> isa_core::Result<Vec<isa_auth::ApiKeyRecord>> {
        self.0.list(user).await
    }
    async fn revoke(
        &self,
        user: &UserId,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> isa_core::Result<bool> {
        self.0.revoke(user, id, at).await
    }
    async fn touch(&self, _: &str, _: chrono::DateTime<chrono::Utc>) -> isa_core::Result<()> {
        Err(isa_core::Error::Unavailable("read-only database".into()))
    }
}

#[tokio::test]
async fn a_failed_last_use_write_never_refuses_a_valid_key() {
    let keys = ApiKeys::new(Arc::new(NoBookkeeping(MemoryKeyStore::default())));
    let (key, _) = keys
        .issue(&UserId::new("alice").unwrap(), "ci", vec![])
        .await
        .unwrap();
    let identity = keys.verify(&key).await.unwrap();
    assert_eq!(identity.user_id.as_str(), "alice");
}

/// Keys in memory that count reads and writes.
#[derive(Default)]
struct Counted {
    keys: MemoryKeyStore,
    reads: std::sync::atomic::AtomicUsize,
    touches: std::sync::atomic::AtomicUsize,
}

#[isa_core::async_trait]
impl isa_auth::KeyStore for Counted {
    async fn insert(&self, record: isa_auth::ApiKeyRecord) -> isa_core::Result<()> {
        self.keys.insert(record).await
    }
    async fn get(&self, id: &str) -> isa_core::Result<Option<isa_auth::ApiKeyRecord>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.keys.get(id).await
    }
    async fn list(&self, user: &UserId) -> isa_core::Result<Vec<isa_auth::ApiKeyRecord>> {
        self.keys.list(user).await
    }
    async fn revoke(
        &self,
        user: &UserId,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> isa_core::Result<bool> {
        self.keys.revoke(user, id, at).await
    }
    async fn touch(&self, id: &str, at: chrono::DateTime<chrono::Utc>) -> isa_core::Result<()> {
        self.touches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.keys.touch(id, at).await
    }
}

#[tokio::test]
async fn the_last_use_is_written_once_a_minute_and_a_cache_spares_reads_until_its_ttl() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = Arc::new(Counted::default());
    let alice = UserId::new("alice").unwrap();

    let uncached = ApiKeys::new(store.clone());
    let (key, record) = uncached.issue(&alice, "ci", vec![]).await.unwrap();
    for _ in 0..5 {
        uncached.verify(&key).await.unwrap();
    }
    assert_eq!(
        (store.reads.load(SeqCst), store.touches.load(SeqCst)),
        (5, 1),
        "every verify reads; one write a minute"
    );

    let ttl = std::time::Duration::from_millis(300);
    let cached = ApiKeys::new(store.clone()).with_cache(ttl);
    for _ in 0..5 {
        cached.verify(&key).await.unwrap();
    }
    assert_eq!(store.reads.load(SeqCst), 6, "one read, then the cache");
    assert_eq!(store.touches.load(SeqCst), 1);

    isa_auth::KeyStore::revoke(store.as_ref(), &alice, &record.id, chrono::Utc::now())
        .await
        .unwrap();
    assert!(
        cached.verify(&key).await.is_ok(),
        "a revocation reaches a cache within its ttl, not at once"
    );
    assert!(
        uncached.verify(&key).await.is_err(),
        "without a cache, at once"
    );
    tokio::time::sleep(ttl).await;
    assert!(
        cached.verify(&key).await.is_err(),
        "after the ttl the revocation holds"
    );
    assert!(cached.verify("isa_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000").await.is_err());
}
