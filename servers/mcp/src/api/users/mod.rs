//! The user service (port 8100): the caller's account and API keys, their files, and their
//! credits. Every `/api/users/*` route needs a bearer token or API key; routes naming a user
//! serve that user or an administrator, and answer 403 to anyone else.

mod account;
mod credits;
mod files;

pub use account::VERIFY_SCOPE;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    middleware::from_fn_with_state,
    routing::{delete, get, post},
};
use isa_auth::{ApiKeys, Authenticator, require_auth};
use isa_core::{
    CreditLedger, Error, EventSink, FileStore, HealthCheck, Identity, User, UserId, UserStore,
    http::{ApiResult, Health, limit_body, limit_concurrency, no_route},
};
use isa_files::UserFiles;
use isa_storage::{
    files::{FileStoreHealth, LocalSigner},
    presigned::presigned_router,
};

/// Largest JSON request body, in bytes.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// What the user service works with.
#[derive(Clone)]
pub struct UsersService {
    /// Users, made on first sight.
    pub users: Arc<dyn UserStore>,
    /// Their credits.
    pub ledger: Arc<dyn CreditLedger>,
    /// What `/health` checks besides the file store (the database).
    pub checks: Vec<Arc<dyn HealthCheck>>,
    /// Users' files.
    pub files: UserFiles,
    /// The file store under `files` (the presigned routes of a local store read and write it).
    pub store: Arc<dyn FileStore>,
    /// The signer of a local store's URLs, whose `/files/*` URLs this service then serves.
    pub signer: Option<LocalSigner>,
    /// API keys.
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
        let mut checks = self.checks.clone();
        checks.push(Arc::new(FileStoreHealth(self.store.clone())));
        let health = Health::new(checks);
        let protected = Router::new()
            .route("/api/users/me", get(account::me))
            .route(
                "/api/users/me/api-keys",
                get(account::list_keys).post(account::create_key),
            )
            .route(
                "/api/users/me/api-keys/{key_id}",
                delete(account::revoke_key),
            )
            .route(
                "/api/users/{user_id}/files",
                get(files::list_files).post(files::upload),
            )
            .route(
                "/api/users/{user_id}/files/uploads",
                post(files::begin_upload),
            )
            .route(
                "/api/users/{user_id}/files/{file_id}",
                get(files::get_file).delete(files::delete_file),
            )
            .route(
                "/api/users/{user_id}/files/{file_id}/complete",
                post(files::complete_upload),
            )
            .route("/api/users/{user_id}/credits", get(credits::balance))
            .route(
                "/api/users/{user_id}/credits/consume",
                post(credits::consume),
            )
            .route("/api/users/{user_id}/credits/grant", post(credits::grant))
            .route(
                "/api/users/{user_id}/credits/history",
                get(credits::history),
            )
            .route("/api/users/{user_id}/usage", get(credits::usage))
            .route("/api/auth/verify", post(account::verify))
            .layer(from_fn_with_state(auth.clone(), require_auth));
        let presigned = self.signer.clone().map(|signer| {
            presigned_router(self.store.clone(), signer, self.files.config().max_size)
        });
        let app = Router::new()
            .merge(protected)
            // Also under the service's own prefix, where a load balancer sends it.
            .route(
                "/openapi.json",
                get(|| async { Json(crate::api::openapi::users()) }),
            )
            .route(
                "/api/users/openapi.json",
                get(|| async { Json(crate::api::openapi::users()) }),
            )
            .with_state(Arc::new(Service { inner: self, auth }))
            .merge(presigned.unwrap_or_default())
            .merge(health.router(&["/health"]))
            .fallback(no_route);
        // JSON bodies are small; uploads stream and are bounded by the file size limit.
        limit_concurrency(limit_body(app, MAX_JSON_BODY), concurrency)
    }
}

pub(super) struct Service {
    pub(super) inner: UsersService,
    pub(super) auth: Authenticator,
}

type Shared = State<Arc<Service>>;

impl Service {
    /// The identity's account (made on first sight), after checking they may act for `user`.
    pub(super) async fn account_of(&self, identity: &Identity, user: &str) -> ApiResult<UserId> {
        let user = UserId::new(user)?;
        identity.authorize_user(&user)?;
        if user == identity.user_id {
            self.ensure(identity).await?;
        } else if self.inner.users.user(&user).await?.is_none() {
            return Err(Error::NotFound(format!("user {user}")).into());
        }
        Ok(user)
    }

    pub(super) async fn ensure(&self, identity: &Identity) -> ApiResult<User> {
        Ok(self
            .inner
            .users
            .ensure_user(
                &identity.user_id,
                identity.email.as_deref(),
                self.inner.initial_credits,
            )
            .await?)
    }
}
