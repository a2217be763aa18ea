//! The caller's account and API keys, and token verification for other services.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
};
use chrono::{DateTime, Utc};
use isa_core::{
    AuthMethod, Error, Identity,
    http::{ApiJson, ApiResult},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;

pub(super) async fn me(State(service): Shared, identity: Identity) -> ApiResult<Json<Value>> {
    let user = service.ensure(&identity).await?;
    Ok(Json(json!({
        "id": user.id,
        "email": user.email,
        "credits": user.credits,
        "created_at": user.created_at,
        "last_seen_at": user.last_seen_at,
        "scopes": identity.scopes,
        "auth_method": identity.method,
    })))
}

#[derive(Deserialize)]
pub(super) struct NewKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// When the key stops working; never when absent.
    expires_at: Option<DateTime<Utc>>,
}

/// Makes an API key for the caller. Only a token holder may: a key made with another key
/// would outlive that key's revocation, so a stolen key could never be shut out. A key never
/// grants more than its maker holds.
pub(super) async fn create_key(
    State(service): Shared,
    identity: Identity,
    ApiJson(new): ApiJson<NewKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if identity.method == AuthMethod::ApiKey {
        return Err(Error::Forbidden(
            "API keys are made with a token, not with another API key".into(),
        )
        .into());
    }
    if let Some(scope) = new.scopes.iter().find(|s| !identity.has_scope(s)) {
        return Err(Error::Forbidden(format!("you do not hold the scope {scope:?}")).into());
    }
    if new.expires_at.is_some_and(|end| end <= Utc::now()) {
        return Err(Error::invalid("expires_at is in the past").into());
    }
    service.ensure(&identity).await?;
    let (key, record) = service
        .inner
        .keys
        .issue_until(&identity.user_id, &new.name, new.scopes, new.expires_at)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"key": key, "api_key": record})),
    ))
}

pub(super) async fn list_keys(
    State(service): Shared,
    identity: Identity,
) -> ApiResult<Json<Value>> {
    let keys = service.inner.keys.store().list(&identity.user_id).await?;
    Ok(Json(json!({ "api_keys": keys })))
}

pub(super) async fn revoke_key(
    State(service): Shared,
    identity: Identity,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    let revoked = service
        .inner
        .keys
        .store()
        .revoke(&identity.user_id, &key_id, Utc::now())
        .await?;
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("API key {key_id}")).into())
    }
}

#[derive(Deserialize)]
pub(super) struct TokenToVerify {
    token: String,
}

/// The scope of a service credential that may ask `POST /api/auth/verify` about other
/// credentials (an administrator holds it too).
pub const VERIFY_SCOPE: &str = "auth:verify";

/// For other services, holding [`VERIFY_SCOPE`]: is this token (or API key) valid, and whose
/// is it? Open to anyone, it would let a thief test stolen credentials and read whose they are.
pub(super) async fn verify(
    State(service): Shared,
    caller: Identity,
    ApiJson(body): ApiJson<TokenToVerify>,
) -> ApiResult<Json<Value>> {
    caller.require_scope(VERIFY_SCOPE)?;
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {}", body.token))
        .map_err(|_| Error::invalid("the token has characters a header cannot carry"))?;
    headers.insert(header::AUTHORIZATION, value);
    Ok(Json(match service.auth.authenticate(&headers).await {
        Ok(p) => json!({
            "valid": true,
            "user_id": p.user_id,
            "email": p.email,
            "scopes": p.scopes,
            "auth_method": p.method,
        }),
        Err(Error::Unauthenticated) => json!({"valid": false}),
        Err(other) => return Err(other.into()),
    }))
}
