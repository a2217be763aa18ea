//! The one error type shared by the traits in this crate.

use std::time::Duration;

/// Errors returned by isa's traits and their implementations.
///
/// Variants are grouped by what a caller should do: [`Error::is_retryable`] tells whether the same
/// request may succeed later (overload, timeouts, an upstream outage). The servers map each variant
/// to an HTTP status in one place; libraries never speak HTTP status codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was rejected before any work was done; the message says which field and why.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The named thing does not exist (or the caller may not know that it does).
    #[error("not found: {0}")]
    NotFound(String),
    /// A credential is missing or invalid.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The caller is known but may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A payload is larger than the configured limit (in bytes).
    #[error("too large: limit is {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },
    /// The content does not match an allowed or declared media type.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The backend does not offer this capability (a provider without image generation, say).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The user's credit balance does not cover the charge; nothing was charged.
    #[error("insufficient credits: {needed} needed, {balance} available")]
    InsufficientCredits {
        /// The charge.
        needed: i64,
        /// The balance at the time.
        balance: i64,
    },
    /// A bounded queue is full; try again after the given delay.
    #[error("overloaded; retry after {retry_after:?}")]
    Overloaded {
        /// A hint for when capacity is likely to be available again.
        retry_after: Duration,
    },
    /// The operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A remote service answered with an error.
    #[error("upstream {service} failed{}: {message}", status.map(|s| format!(" with status {s}")).unwrap_or_default())]
    Upstream {
        /// Which service (provider name, host).
        service: String,
        /// The HTTP status it answered with, when there was one.
        status: Option<u16>,
        /// What it said, without secrets.
        message: String,
        /// Whether the same request may succeed later.
        retryable: bool,
    },
    /// A dependency (database, model, object store) is not reachable or not ready.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Configuration is missing or contradictory; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
    /// A bug or an unexpected state; details are logged, not shown to remote callers.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether repeating the same request later may succeed.
    ///
    /// ```
    /// use isa_core::Error;
    /// use std::time::Duration;
    /// assert!(Error::Overloaded { retry_after: Duration::from_millis(50) }.is_retryable());
    /// assert!(!Error::InvalidInput("top_k must be positive".into()).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Overloaded { .. } | Error::Timeout(_) | Error::Unavailable(_) => true,
            Error::Upstream { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Error::Internal(message.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
