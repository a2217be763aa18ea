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
    /// The request contradicts what is stored (a request id reused for a different request,
    /// say); repeating it will not help.
    #[error("conflict: {0}")]
    Conflict(String),
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
    /// The call stops here and goes on later: it waits for the client's answers to its
    /// questions (see [`crate::ask`]), or continues as a task
    /// ([`CallContext::continue_as_task`](crate::CallContext::continue_as_task)). Only a tool
    /// that asked or continued through its context sees it, and should return it as it is.
    #[error("the call is suspended until the client answers or polls its task")]
    Suspended,
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

    /// What a remote caller (an HTTP client, an MCP client, a model reading a tool result) is
    /// told. Errors that are the caller's to fix say what is wrong; failures of ours say only
    /// what kind they were, since their text can name databases, buckets, keys or SQL: log
    /// the error itself.
    ///
    /// ```
    /// use isa_core::Error;
    /// let outage = Error::Unavailable("database: connection to 10.0.0.5 refused".into());
    /// assert!(!outage.public_message().contains("10.0.0.5"));
    /// assert_eq!(Error::invalid("top_k must be positive").public_message(), "invalid input: top_k must be positive");
    /// ```
    pub fn public_message(&self) -> String {
        match self {
            Error::Unauthenticated => "a valid bearer token or API key is required".to_owned(),
            Error::Overloaded { .. } => "busy; retry shortly".to_owned(),
            Error::Unavailable(_) => "a dependency is unavailable; retry shortly".to_owned(),
            Error::Timeout(_) => "the request took too long".to_owned(),
            Error::Upstream {
                service, status, ..
            } => match status {
                Some(status) => format!("{service} failed with status {status}"),
                None => format!("{service} failed"),
            },
            Error::Config(_) | Error::Internal(_) => {
                "the request could not be completed".to_owned()
            }
            callers => callers.to_string(),
        }
    }

    /// The error's class as a stable name: the `code` of the HTTP error envelope and the
    /// `class` label of metrics (`invalid_input`, `overloaded`, `upstream`, …).
    ///
    /// ```
    /// assert_eq!(isa_core::Error::invalid("x").code(), "invalid_input");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::NotFound(_) => "not_found",
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::TooLarge { .. } => "too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::InsufficientCredits { .. } => "insufficient_credits",
            Error::Unsupported(_) => "unsupported",
            Error::Overloaded { .. } => "overloaded",
            Error::Timeout(_) => "timeout",
            Error::Unavailable(_) => "unavailable",
            Error::Upstream { .. } => "upstream",
            Error::Suspended => "suspended",
            Error::Config(_) | Error::Internal(_) => "internal",
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
