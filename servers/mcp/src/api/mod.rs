//! The HTTP services served beside the MCP endpoint, as on the seed deployment's first host:
//! the user service ([`users`], port 8100) and the event service ([`events`], port 8101).
//! Both answer errors as `{"error": code, "message": text}` with the status [`ApiError`]
//! chooses, and describe themselves at `GET /openapi.json`.

pub mod events;
mod openapi;
pub mod users;

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use isa_core::Error;
use serde::de::DeserializeOwned;
use serde_json::json;

/// An [`Error`] answered over HTTP. The one place where errors become status codes.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<isa_auth::AuthError> for ApiError {
    fn from(e: isa_auth::AuthError) -> Self {
        ApiError(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Error::InsufficientCredits { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
            }
            Error::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Upstream { .. } => (StatusCode::BAD_GATEWAY, "upstream"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = if status.is_server_error() {
            // Details of our own failures go to the log, not to callers.
            tracing::error!(error = %self.0, "request failed");
            match &self.0 {
                Error::Overloaded { .. } => "busy; retry shortly".to_owned(),
                Error::Unavailable(_) => "a dependency is unavailable; retry shortly".to_owned(),
                _ => "the request could not be completed".to_owned(),
            }
        } else {
            self.0.to_string()
        };
        let mut response =
            (status, Json(json!({"error": code, "message": message}))).into_response();
        if let Error::Overloaded { retry_after } = &self.0 {
            let seconds = retry_after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A JSON body whose rejections are answered like every other error.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError(Error::invalid(rejection.body_text()))),
        }
    }
}

/// A query string whose rejections are answered like every other error.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError(Error::invalid(rejection.body_text()))),
        }
    }
}

/// Answers of the handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// Requests a service works on at once by default; more are refused at once with 503.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// Refuses requests beyond `max` at once with 503 and `Retry-After`, rather than queueing
/// them without bound.
pub fn limit_concurrency(app: axum::Router, max: usize) -> axum::Router {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    app.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let permits = permits.clone();
            async move {
                match permits.try_acquire_owned() {
                    Ok(_permit) => next.run(request).await,
                    Err(_) => ApiError(Error::Overloaded {
                        retry_after: std::time::Duration::from_secs(1),
                    })
                    .into_response(),
                }
            }
        },
    ))
}

/// Serves `app` on `listener` until `stop` completes, then lets requests in flight finish.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
