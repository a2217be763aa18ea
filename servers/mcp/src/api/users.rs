//! The user service (port 8100): the caller's account and API keys, their files, and their
//! credits. Every `/api/users/*` route needs a bearer token or API key; routes naming a user
//! serve that user or an administrator, and answer 403 to anyone else.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use isa_auth::{ApiKeys, Authenticator, require_auth};
use isa_core::{
    ADMIN_SCOPE, ByteStream, Error, Event, EventSink, FileKey, FileStore, HealthCheck, Identity,
    PresignMethod, PutOptions, UserId,
    http::{ApiJson, ApiQuery, ApiResult, Health, limit_body, limit_concurrency, no_route},
};
use isa_storage::{
    db::Database,
    files::{FileStoreHealth, LocalSigner},
    user_files::{FileFilter, FileRecord, UserFiles},
    users::Charge,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Largest JSON request body, in bytes.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// What the user service works with.
#[derive(Clone)]
pub struct UsersService {
    /// Users, keys, file metadata and credits.
    pub db: Database,
    /// Users' files.
    pub files: UserFiles,
    /// The file store under `files` (the presigned routes of a local store read and write it).
    pub store: Arc<dyn FileStore>,
    /// The signer of a local store's URLs, whose `/files/*` URLs this service then serves.
    pub signer: Option<LocalSigner>,
    /// API keys (kept in `db`).
    pub keys: ApiKeys,
    /// Credits a new user starts with.
    pub initial_credits: i64,
    /// Where a `credits.charged` event goes for every charge.
    pub events: Arc<dyn EventSink>,
    /// Requests served at once; more are refused with 503.
    pub concurrency: usize,
}

impl UsersService {
    /// The service's routes; `auth` checks the credentials of `/api/users/*`.
    pub fn router(self, auth: Authenticator) -> Router {
        let concurrency = self.concurrency;
        let health = Health::new(vec![
            Arc::new(self.db.clone()) as Arc<dyn HealthCheck>,
            Arc::new(FileStoreHealth(self.store.clone())),
        ]);
        let protected = Router::new()
            .route("/api/users/me", get(me))
            .route("/api/users/me/api-keys", get(list_keys).post(create_key))
            .route("/api/users/me/api-keys/{key_id}", delete(revoke_key))
            .route("/api/users/{user_id}/files", get(list_files).post(upload))
            .route("/api/users/{user_id}/files/uploads", post(begin_upload))
            .route(
                "/api/users/{user_id}/files/{file_id}",
                get(get_file).delete(delete_file),
            )
            .route(
                "/api/users/{user_id}/files/{file_id}/complete",
                post(complete_upload),
            )
            .route("/api/users/{user_id}/credits", get(balance))
            .route("/api/users/{user_id}/credits/consume", post(consume))
            .route("/api/users/{user_id}/credits/grant", post(grant))
            .route("/api/users/{user_id}/credits/history", get(history))
            .route("/api/users/{user_id}/usage", get(usage))
            .layer(from_fn_with_state(auth.clone(), require_auth));
        let app = Router::new()
            .merge(protected)
            .route("/api/auth/verify", post(verify))
            .route("/files/{*key}", get(serve_signed).put(serve_signed))
            .route(
                "/openapi.json",
                get(|| async { Json(super::openapi::users()) }),
            )
            .with_state(Arc::new(Service { inner: self, auth }))
            .merge(health.router(&["/health"]))
            .fallback(no_route);
        // JSON bodies are small; uploads stream and are bounded by the file size limit.
        limit_concurrency(limit_body(app, MAX_JSON_BODY), concurrency)
    }
}

struct Service {
    inner: UsersService,
    auth: Authenticator,
}

type Shared = State<Arc<Service>>;

impl Service {
    /// The identity's account (made on first sight), after checking they may act for `user`.
    async fn account_of(&self, identity: &Identity, user: &str) -> ApiResult<UserId> {
        let user = UserId::new(user)?;
        identity.authorize_user(&user)?;
        if user == identity.user_id {
            self.ensure(identity).await?;
        } else if self.inner.db.user(&user).await?.is_none() {
            return Err(Error::NotFound(format!("user {user}")).into());
        }
        Ok(user)
    }

    async fn ensure(&self, identity: &Identity) -> ApiResult<isa_storage::users::User> {
        Ok(self
            .inner
            .db
            .ensure_user(
                &identity.user_id,
                identity.email.as_deref(),
                self.inner.initial_credits,
            )
            .await?)
    }
}

async fn me(State(service): Shared, identity: Identity) -> ApiResult<Json<Value>> {
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
struct NewKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn create_key(
    State(service): Shared,
    identity: Identity,
    ApiJson(new): ApiJson<NewKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    service.ensure(&identity).await?;
    // A key never grants more than its maker holds.
    if let Some(scope) = new.scopes.iter().find(|s| !identity.has_scope(s)) {
        return Err(Error::Forbidden(format!("you do not hold the scope {scope:?}")).into());
    }
    let (key, record) = service
        .inner
        .keys
        .issue(&identity.user_id, &new.name, new.scopes)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"key": key, "api_key": record})),
    ))
}

async fn list_keys(State(service): Shared, identity: Identity) -> ApiResult<Json<Value>> {
    let keys = service.inner.keys.store().list(&identity.user_id).await?;
    Ok(Json(json!({ "api_keys": keys })))
}

async fn revoke_key(
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
struct TokenToVerify {
    token: String,
}

/// For other services: is this token (or API key) valid, and whose is it?
async fn verify(
    State(service): Shared,
    ApiJson(body): ApiJson<TokenToVerify>,
) -> ApiResult<Json<Value>> {
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

/// A file as the API shows it: metadata and a fresh presigned download URL.
async fn file_json(service: &Service, file: FileRecord) -> ApiResult<Value> {
    let file = service.inner.files.with_download_url(file).await?;
    Ok(serde_json::to_value(file).map_err(Error::internal)?)
}

/// `POST /api/users/{user_id}/files`: multipart with the content in the field `file`.
async fn upload(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = service.account_of(&identity, &user_id).await?;
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| Error::invalid("expected a multipart/form-data body"))?;
    let max = service.inner.files.config().max_size;
    // The whole body may carry a little more than the file: part headers, other fields.
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(max.saturating_add(64 * 1024))
            .per_field(max.saturating_add(1)),
    );
    let body = request.into_body().into_data_stream();
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error(max))? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or("file").to_owned();
        let declared = field.content_type().map(|m| m.essence_str().to_owned());
        let stream: ByteStream = Box::pin(field.map_err(multipart_error(max)));
        let file = service
            .inner
            .files
            .upload(&user, &name, declared.as_deref(), stream)
            .await?;
        return Ok((StatusCode::CREATED, Json(file_json(&service, file).await?)));
    }
    Err(Error::invalid("the multipart body has no field named \"file\"").into())
}

fn multipart_error(limit: u64) -> impl Fn(multer::Error) -> Error + Clone {
    move |e| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Error::TooLarge { limit }
        }
        other => Error::invalid(format!("multipart body: {other}")),
    }
}

async fn list_files(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiQuery(filter): ApiQuery<FileFilter>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let page = service.inner.files.list(&user, &filter).await?;
    Ok(Json(serde_json::to_value(page).map_err(Error::internal)?))
}

async fn get_file(
    State(service): Shared,
    identity: Identity,
    Path((user_id, file_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let file = service.inner.files.get(&user, &file_id).await?;
    Ok(Json(file_json(&service, file).await?))
}

async fn delete_file(
    State(service): Shared,
    identity: Identity,
    Path((user_id, file_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = service.account_of(&identity, &user_id).await?;
    service.inner.files.delete(&user, &file_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NewUpload {
    name: String,
    content_type: String,
}

async fn begin_upload(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiJson(new): ApiJson<NewUpload>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = service.account_of(&identity, &user_id).await?;
    if !isa_storage::media::ALLOWED_TYPES.contains(&new.content_type.as_str()) {
        return Err(Error::UnsupportedMediaType(format!(
            "{} is not an accepted file type",
            new.content_type
        ))
        .into());
    }
    let pending = service
        .inner
        .files
        .begin_upload(&user, &new.name, &new.content_type)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "file": pending.file,
            "url": pending.url.url,
            "url_expires_at": pending.url.expires_at,
            "method": "PUT",
        })),
    ))
}

async fn complete_upload(
    State(service): Shared,
    identity: Identity,
    Path((user_id, file_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let file = service.inner.files.complete_upload(&user, &file_id).await?;
    Ok(Json(file_json(&service, file).await?))
}

#[derive(Deserialize)]
struct Signed {
    method: String,
    expires: i64,
    signature: String,
}

/// `GET`/`PUT /files/{key}`: a local store's presigned URLs, checked (signature in constant
/// time, then expiry) before any byte moves. Downloads are served as attachments, so a
/// user's HTML never runs on this origin.
async fn serve_signed(
    State(service): Shared,
    method: Method,
    Path(key): Path<String>,
    ApiQuery(q): ApiQuery<Signed>,
    body: Body,
) -> ApiResult<Response> {
    let Some(signer) = &service.inner.signer else {
        return Err(Error::NotFound("presigned URLs are served by the object store".into()).into());
    };
    let presign_method = match (method.as_str(), q.method.as_str()) {
        ("GET", "GET") => PresignMethod::Get,
        ("PUT", "PUT") => PresignMethod::Put,
        _ => return Err(Error::Forbidden("the URL was signed for another method".into()).into()),
    };
    signer.verify(presign_method, &key, q.expires, &q.signature)?;
    let file_key = FileKey::parse(&key)?;
    let store = &service.inner.store;
    match presign_method {
        PresignMethod::Get => {
            let stream = store.get(&file_key).await?;
            let file_name = key.rsplit('/').next().unwrap_or("file");
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{file_name}\""),
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                ],
                Body::from_stream(stream),
            )
                .into_response())
        }
        PresignMethod::Put => {
            let stream: ByteStream = Box::pin(
                body.into_data_stream()
                    .map_err(|e| Error::invalid(format!("upload body: {e}"))),
            );
            let opts = PutOptions {
                content_type: None,
                max_size: Some(service.inner.files.config().max_size),
            };
            store.put(&file_key, stream, opts).await?;
            Ok(StatusCode::OK.into_response())
        }
    }
}

async fn balance(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let account = service
        .inner
        .db
        .user(&user)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {user}")))?;
    Ok(Json(json!({"user_id": user, "balance": account.credits})))
}

#[derive(Deserialize)]
struct Consumption {
    request_id: String,
    amount: i64,
    operation: String,
    units: Option<i64>,
}

/// Idempotent per request id: the same id charges once, and a replay answers 200 with the
/// first charge and `"replayed": true`.
async fn consume(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiJson(c): ApiJson<Consumption>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = service.account_of(&identity, &user_id).await?;
    let charge = service
        .inner
        .db
        .consume_credits(&user, &c.request_id, c.amount, &c.operation, c.units)
        .await?;
    if !charge.replayed {
        let payload = json!({
            "request_id": c.request_id,
            "amount": c.amount,
            "operation": c.operation,
            "units": c.units,
        });
        let event = Event::now("credits.charged", Some(user.clone()), payload);
        service.inner.events.emit(event).await;
    }
    charge_response(charge)
}

/// 201 for a new transaction, 200 for a replay of an earlier one.
fn charge_response(charge: Charge) -> ApiResult<(StatusCode, Json<Value>)> {
    let status = if charge.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(serde_json::to_value(charge).map_err(Error::internal)?),
    ))
}

#[derive(Deserialize)]
struct Grant {
    request_id: String,
    amount: i64,
    #[serde(default = "default_grant_reason")]
    reason: String,
}

fn default_grant_reason() -> String {
    "grant".to_owned()
}

/// Administrators only.
async fn grant(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiJson(g): ApiJson<Grant>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    identity.require_scope(ADMIN_SCOPE)?;
    let user = UserId::new(user_id)?;
    service
        .inner
        .db
        .ensure_user(&user, None, service.inner.initial_credits)
        .await?;
    let charge = service
        .inner
        .db
        .grant_credits(&user, &g.request_id, g.amount, &g.reason)
        .await?;
    charge_response(charge)
}

#[derive(Deserialize)]
struct HistoryPage {
    before: Option<String>,
    limit: Option<usize>,
}

async fn history(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryPage>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let limit = q
        .limit
        .unwrap_or(100)
        .clamp(1, isa_storage::users::MAX_PAGE);
    let transactions = service
        .inner
        .db
        .credit_history(&user, q.before.as_deref(), limit)
        .await?;
    let next = (transactions.len() == limit)
        .then(|| transactions.last().map(|t| t.id.clone()))
        .flatten();
    Ok(Json(json!({"transactions": transactions, "next": next})))
}

#[derive(Deserialize, Serialize)]
struct Period {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

async fn usage(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiQuery(q): ApiQuery<Period>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let until = q.until.unwrap_or_else(Utc::now);
    let since = q.since.unwrap_or(until - chrono::Duration::days(30));
    let totals = service.inner.db.usage(&user, since, until).await?;
    Ok(Json(
        json!({"since": since, "until": until, "operations": totals}),
    ))
}
