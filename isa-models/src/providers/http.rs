//! What every remote provider shares: one HTTP client per provider, errors mapped from
//! statuses (with `Retry-After`), bounded error bodies, and JSON requests.

use std::time::Duration;

use isa_core::{Error, Result};
use reqwest::{RequestBuilder, Response, StatusCode, header::HeaderMap};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an error body read, to find the provider's message.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// The wait suggested after a 429 without `Retry-After`.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// The client providers use: connect deadline, keep-alive, no overall timeout (streams can
/// last minutes; the gateway bounds the first byte and the gaps between chunks).
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))
}

/// A provider's HTTP endpoint: its name (for errors), base URL and client.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider's name.
    pub name: String,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// The shared client.
    pub client: reqwest::Client,
}

impl Endpoint {
    /// An endpoint at `base_url`.
    pub fn new(name: impl Into<String>, base_url: &str) -> Result<Self> {
        Ok(Endpoint {
            name: name.into(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            client: client()?,
        })
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends a request; a status other than 2xx becomes the matching [`Error`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.status_error(response).await)
    }

    /// Sends a request and reads a JSON answer.
    pub async fn send_json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.malformed(format!("answer: {e}")))
    }

    /// A failure to reach the provider or read its answer: worth retrying.
    pub fn transport_error(&self, e: reqwest::Error) -> Error {
        let what = if e.is_connect() {
            "could not connect"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "connection failed"
        };
        Error::Upstream {
            service: self.name.clone(),
            status: None,
            message: what.into(),
            retryable: true,
        }
    }

    /// An answer that does not follow the provider's documented format.
    pub fn malformed(&self, message: impl Into<String>) -> Error {
        Error::Upstream {
            service: self.name.clone(),
            status: None,
            message: format!("malformed {}", message.into()),
            retryable: false,
        }
    }

    /// The error for a non-2xx answer.
    pub async fn status_error(&self, response: Response) -> Error {
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = read_bounded(response).await;
        status_error(&self.name, status, wait, &body)
    }
}

/// An error for a provider's status: 429 is overload (with the provider's wait); 400, 404, 413
/// and 422 are the caller's request (the provider's message is kept: it says what is wrong);
/// 408, 409, 5xx and 529 may pass; anything else (401, 403: our credentials) does not.
pub fn status_error(
    service: &str,
    status: StatusCode,
    wait: Option<Duration>,
    body: &[u8],
) -> Error {
    let message = provider_message(body);
    match status.as_u16() {
        429 => Error::Overloaded {
            retry_after: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        },
        400 | 404 | 413 | 422 => Error::InvalidInput(format!("{service}: {message}")),
        code => Error::Upstream {
            service: service.to_owned(),
            status: Some(code),
            message,
            retryable: matches!(code, 408 | 409 | 500..=599),
        },
    }
}

/// The provider's own words from an error body: `error.message`, `message` or `error` as a
/// string, else the start of the text.
pub fn provider_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let found = value
            .pointer("/error/message")
            .or_else(|| value.get("message"))
            .or_else(|| value.get("detail"))
            .or_else(|| value.get("error"));
        if let Some(Value::String(text)) = found {
            return truncate(text);
        }
    }
    truncate(&String::from_utf8_lossy(body))
}

fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

async fn read_bounded(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_BYTES {
            body.truncate(ERROR_BODY_BYTES);
            break;
        }
    }
    body
}

/// The wait a provider asks for: OpenAI's `retry-after-ms`, or `Retry-After` in seconds or as
/// an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut dated = HeaderMap::new();
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        dated.insert("retry-after", past);
        assert_eq!(retry_after(&dated), Some(Duration::ZERO));
        dated.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&dated), None);
    }

    #[test]
    fn statuses_become_errors_a_router_can_act_on() {
        let body = br#"{"error":{"message":"model is required","type":"invalid_request_error"}}"#;
        let e = status_error("openai", StatusCode::BAD_REQUEST, None, body);
        assert!(matches!(&e, Error::InvalidInput(m) if m == "openai: model is required"));
        let e = status_error(
            "openai",
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"",
        );
        assert!(
            matches!(e, Error::Overloaded { retry_after } if retry_after == Duration::from_secs(3))
        );
        let e = status_error("anthropic", StatusCode::from_u16(529).unwrap(), None, b"{}");
        assert!(e.is_retryable());
        let e = status_error("openai", StatusCode::UNAUTHORIZED, None, b"bad key");
        assert!(
            !e.is_retryable()
                && matches!(
                    e,
                    Error::Upstream {
                        status: Some(401),
                        ..
                    }
                )
        );
    }
}
