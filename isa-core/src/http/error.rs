//! [`ApiError`]: the one place where an [`Error`] becomes an HTTP status and a JSON body.

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{Error, Identity};

/// An [`Error`] answered over HTTP, as
/// `{"error": {"code": "not_found", "message": "not found: file 42"}}`.
///
/// The status follows the error's variant (the table in `docs/architecture.md`). Failures of
/// our own (5xx) answer a generic message and log the details: a database's or an object
/// store's error text never reaches a caller. [`Error::Overloaded`] and [`Error::Unavailable`]
/// answer 503 with `Retry-After`.
///
/// ```
/// use axum::response::IntoResponse;
/// use isa_core::{Error, http::ApiError};
/// let response = ApiError::from(Error::NotFound("file 42".into())).into_response();
/// assert_eq!(response.status(), 404);
/// ```
#[derive(Debug)]
pub struct ApiError(pub Error);

/// Answers of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        status_and_code(&self.0).0
    }
}

/// The status and the envelope's `code` for an error.
fn status_and_code(error: &Error) -> (StatusCode, &'static str) {
    let status = match error {
        Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Unauthenticated => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
        Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Overloaded { .. } | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, error.code())
}

/// How long a caller should wait before trying again, for errors that pass.
fn retry_after(error: &Error) -> Option<Duration> {
    match error {
        Error::Overloaded { retry_after } => Some(*retry_after),
        Error::Unavailable(_) => Some(Duration::from_secs(1)),
        _ => None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = status_and_code(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, code, "request failed");
        }
        let message = self.0.public_message();
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if let Some(wait) = retry_after(&self.0)
            && let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// The fallback of every service's router: an unknown path is a 404 in the common envelope.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError(Error::NotFound(format!("no route {}", uri.path())))
}

/// The request body limit a router was given by [`limit_body`](super::limit_body), so a
/// rejection can name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// A body over the limit is 413; any other rejection is the caller's malformed input (400).
fn body_rejection(status: StatusCode, text: String, limit: Option<BodyLimit>) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(Error::TooLarge {
            limit: limit.map_or(0, |l| l.0 as u64),
        })
    } else {
        ApiError(Error::invalid(text))
    }
}

/// A JSON body whose rejections are answered like every other error: 400 for malformed
/// JSON, 413 for a body over the limit.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().copied();
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection, limit)),
        }
    }
}

fn json_rejection(rejection: JsonRejection, limit: Option<BodyLimit>) -> ApiError {
    body_rejection(rejection.status(), rejection.body_text(), limit)
}

/// A query string whose rejections are answered like every other error (400).
#[derive(Debug)]
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

/// The caller's [`Identity`], put into the request by an authentication layer (`isa-auth`'s
/// `require_auth`); 401 in the common envelope where there is none.
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or(ApiError(Error::Unauthenticated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[tokio::test]
    async fn server_side_details_never_reach_the_body() {
        let secret = "relation \"users\" does not exist at postgres://db.internal/isa";
        for error in [
            Error::Unavailable(secret.into()),
            Error::Internal(secret.into()),
            Error::Upstream {
                service: "openai".into(),
                status: Some(500),
                message: secret.into(),
                retryable: true,
            },
        ] {
            let response = ApiError(error).into_response();
            assert!(response.status().is_server_error());
            let body = body_of(response).await;
            let text = body.to_string();
            assert!(!text.contains("postgres"), "{text}");
            assert!(body["error"]["code"].is_string(), "{text}");
        }
    }

    #[tokio::test]
    async fn passing_failures_carry_retry_after() {
        let busy = ApiError(Error::Overloaded {
            retry_after: Duration::from_secs(3),
        })
        .into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "3");
        let down = ApiError(Error::Unavailable("db".into())).into_response();
        assert_eq!(down.headers()[header::RETRY_AFTER], "1");
        let bad = ApiError(Error::invalid("x")).into_response();
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
    }
}
