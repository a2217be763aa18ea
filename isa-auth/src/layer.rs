//! axum integration: a layer that requires a credential and puts the caller's [`Identity`] into
//! the request, and the OAuth protected-resource metadata (RFC 9728) MCP clients look for.

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use std::sync::Arc;

use isa_core::{ACT_FOR_HEADER, Error, Event, EventSink, Identity, UserId, http::ApiError};
use serde_json::json;

use crate::{ApiKeys, JwtVerifier, apikey::is_api_key};

/// Path of the protected-resource metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The credential a request was authenticated with (a JWT or an API key, however it was sent),
/// put into the request's extensions by [`require_auth`] beside the [`Identity`], so a service
/// that calls another on the caller's behalf forwards it as a bearer token without reading the
/// headers again. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Credential(String);

impl Credential {
    /// The JWT or API key, to be sent as `Authorization: Bearer …`.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(…)")
    }
}

/// Checks credentials: bearer JWTs, and API keys (as a bearer token or `X-API-Key`).
#[derive(Clone)]
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    keys: Option<ApiKeys>,
    events: Option<Arc<dyn EventSink>>,
    /// This server's resource URL (for the metadata and `WWW-Authenticate`).
    resource: String,
    authorization_servers: Vec<String>,
}

impl Authenticator {
    /// An authenticator for the resource at `resource` (such as `https://mcp.example.com/mcp`).
    pub fn new(
        resource: impl Into<String>,
        jwt: Option<JwtVerifier>,
        keys: Option<ApiKeys>,
    ) -> Self {
        Authenticator {
            jwt,
            keys,
            events: None,
            resource: resource.into(),
            authorization_servers: Vec::new(),
        }
    }

    /// Records an `auth.api_key_used` event in `sink` for every request an API key
    /// authenticates.
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// Authorization servers named in the metadata (issuer URLs).
    pub fn with_authorization_servers(mut self, servers: Vec<String>) -> Self {
        self.authorization_servers = servers;
        self
    }

    /// The URL of the metadata document, derived from the resource URL's origin.
    pub fn metadata_url(&self) -> String {
        let origin = match self
            .resource
            .find("://")
            .and_then(|s| self.resource[s + 3..].find('/').map(|p| p + s + 3))
        {
            Some(path_start) => &self.resource[..path_start],
            None => self.resource.as_str(),
        };
        format!("{origin}{METADATA_PATH}")
    }

    /// Verifies the credential of a request.
    pub async fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<Identity, Error> {
        self.verify(headers).await.map(|(identity, _)| identity)
    }

    /// Verifies the credential of a request and returns it with the identity it proves.
    async fn verify(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<(Identity, Credential), Error> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map_err(|_| Error::Unauthenticated))
            .transpose()?
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(str::trim)
                    .ok_or(Error::Unauthenticated)
            })
            .transpose()?;
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let (identity, secret) = match (bearer, api_key) {
            (Some(token), _) if is_api_key(token) => (self.verify_key(token).await?, token),
            (Some(token), _) => match &self.jwt {
                Some(jwt) => (jwt.verify(token).await?, token),
                None => return Err(Error::Unauthenticated),
            },
            (None, Some(key)) => (self.verify_key(key).await?, key),
            (None, None) => return Err(Error::Unauthenticated),
        };
        let credential = Credential(secret.to_owned());
        let Some(named) = headers.get(ACT_FOR_HEADER) else {
            return Ok((identity, credential));
        };
        let user = named
            .to_str()
            .map_err(|_| Error::invalid(format!("{ACT_FOR_HEADER} must be a user id")))
            .and_then(|u| UserId::new(u.to_owned()))?;
        let acting = identity.acting_for(user)?;
        if let Some(events) = &self.events {
            let payload = json!({"by": identity.user_id});
            let event = Event::now("auth.acted_for", Some(acting.user_id.clone()), payload);
            events.emit(event).await;
        }
        Ok((acting, credential))
    }

    async fn verify_key(&self, key: &str) -> Result<Identity, Error> {
        let identity = match &self.keys {
            Some(keys) => keys.verify(key).await?,
            None => return Err(Error::Unauthenticated),
        };
        if let Some(events) = &self.events {
            let payload = json!({"scopes": identity.scopes});
            let event = Event::now("auth.api_key_used", Some(identity.user_id.clone()), payload);
            events.emit(event).await;
        }
        Ok(identity)
    }

    /// The 401 answer: `WWW-Authenticate` names the metadata, the body says nothing about why.
    pub fn challenge(&self) -> Response {
        let mut response = ApiError(Error::Unauthenticated).into_response();
        let value = format!(
            "Bearer realm=\"isa\", error=\"invalid_token\", resource_metadata=\"{}\"",
            self.metadata_url()
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    /// A router serving the protected-resource metadata; merge it into the app.
    pub fn metadata_router(&self) -> Router {
        let body = json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "isa MCP server",
        });
        Router::new().route(METADATA_PATH, get(move || async move { Json(body) }))
    }
}

/// Middleware requiring a valid credential; puts the caller's [`Identity`] and its [`Credential`]
/// into the request's extensions, where handlers and the MCP service find them. Use with
/// `axum::middleware::from_fn_with_state(authenticator, require_auth)`.
pub async fn require_auth(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.verify(request.headers()).await {
        Ok((identity, credential)) => {
            request.extensions_mut().insert(identity);
            request.extensions_mut().insert(credential);
            next.run(request).await
        }
        Err(Error::Unauthenticated) => auth.challenge(),
        // A store that cannot answer is not the caller's fault, but still no access.
        Err(other) => ApiError(other).into_response(),
    }
}
