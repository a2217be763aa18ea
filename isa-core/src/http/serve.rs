//! Listening, serving and stopping: one way for every service.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    middleware::Next,
    response::IntoResponse,
    serve::ListenerExt,
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, BodyLimit};
use crate::{Error, Result};

/// Binds `addr`, naming it in the error when that fails.
pub async fn listen(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))
}

/// Serves `app` on `listener` until `stop` completes, then stops accepting connections and
/// returns once the requests in flight are answered.
///
/// Every accepted socket has `TCP_NODELAY` set: a small answer written in pieces (an SSE event,
/// a streamed chunk) would otherwise wait for the client's delayed ACK, about 40 ms each.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = listener.tap_io(|socket| {
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| Error::Unavailable(format!("serving HTTP: {e}")))
}

/// Completes on SIGINT or SIGTERM: the signal every server stops on.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// A stop token cancelled on SIGINT or SIGTERM (needs a Tokio runtime): what a server's
/// `main` passes to its app's `serve`.
pub fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    stop
}

/// Requests a service works on at once by default; more are refused at once with 503.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// Refuses requests beyond `max` at once with 503 and `Retry-After`, rather than queueing
/// them without bound.
pub fn limit_concurrency(app: Router, max: usize) -> Router {
    let permits = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    app.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let permits = permits.clone();
            async move {
                match permits.try_acquire_owned() {
                    Ok(_permit) => next.run(request).await,
                    Err(_) => ApiError(Error::Overloaded {
                        retry_after: Duration::from_secs(1),
                    })
                    .into_response(),
                }
            }
        },
    ))
}

/// Answers 403 to a request whose `Host` names none of `allowed` (host names, or `host:port`
/// for one port only), against DNS rebinding: a page a browser loaded from elsewhere cannot
/// reach a loopback service through a name it controls. An empty list accepts every host; a
/// request without a `Host` (which no browser sends) passes.
pub fn allow_hosts(app: Router, allowed: Vec<String>) -> Router {
    if allowed.is_empty() {
        return app;
    }
    let allowed: Arc<Vec<(String, Option<u16>)>> =
        Arc::new(allowed.iter().filter_map(|a| authority(a)).collect());
    app.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let allowed = allowed.clone();
            async move {
                let host = request
                    .headers()
                    .get(axum::http::header::HOST)
                    .map(|h| h.to_str().ok().and_then(authority))
                    .or_else(|| request.uri().authority().map(|a| authority(a.as_str())));
                match host {
                    None => next.run(request).await,
                    Some(Some((name, port)))
                        if allowed.iter().any(|(a, a_port)| {
                            *a == name && a_port.is_none_or(|p| Some(p) == port)
                        }) =>
                    {
                        next.run(request).await
                    }
                    Some(_) => ApiError(Error::Forbidden(
                        "this Host is not served here (add it to the allowed hosts)".into(),
                    ))
                    .into_response(),
                }
            }
        },
    ))
}

/// A host and port as compared: lower case, without the brackets of an IPv6 address.
fn authority(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (host, port) = match axum::http::uri::Authority::try_from(text) {
        Ok(a) => (a.host().to_owned(), a.port_u16()),
        Err(_) => (text.to_owned(), None),
    };
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        port,
    ))
}

/// The header naming a request, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A request's id: the caller's `x-request-id` when it is a sensible one (1 to 128 visible
/// ASCII characters), else a fresh UUIDv7. It is answered in `x-request-id`, names the
/// request's tracing span, and is what a ledger charges at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    fn of(request: &Request) -> Self {
        let given = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()));
        RequestId(match given {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::now_v7().to_string(),
        })
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<RequestId>() {
            Some(id) => id.clone(),
            None => RequestId(uuid::Uuid::now_v7().to_string()),
        })
    }
}

/// The header naming the service that answered (`mcp`, `users`, `events`, `model`, `agent`),
/// so that through a load balancer it is plain which one did.
pub const SERVICE_HEADER: &str = "x-isa-service";

/// Answers every response of `app` with [`SERVICE_HEADER`]: `name`.
pub fn name_service(app: Router, name: &'static str) -> Router {
    app.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| async move {
            response
                .headers_mut()
                .insert(SERVICE_HEADER, axum::http::HeaderValue::from_static(name));
            response
        },
    ))
}

/// Gives every request a [`RequestId`] (an extension handlers can extract), runs it in a
/// tracing span that names it, and answers it in `x-request-id`.
pub fn with_request_ids(app: Router) -> Router {
    app.layer(axum::middleware::from_fn(
        |mut request: Request, next: Next| async move {
            let id = RequestId::of(&request);
            request.extensions_mut().insert(id.clone());
            let span = tracing::info_span!("request", request_id = %id.0, method = %request.method(), path = %request.uri().path());
            let mut response = tracing::Instrument::instrument(next.run(request), span).await;
            if let Ok(value) = axum::http::HeaderValue::from_str(&id.0) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            response
        },
    ))
}

/// Accepts request bodies of at most `bytes`; [`ApiJson`](super::ApiJson) answers a larger
/// one with 413 naming the limit.
pub fn limit_body(app: Router, bytes: usize) -> Router {
    app.layer(axum::middleware::from_fn(
        move |mut request: Request, next: Next| async move {
            request.extensions_mut().insert(BodyLimit(bytes));
            next.run(request).await
        },
    ))
    .layer(DefaultBodyLimit::max(bytes))
}

/// The tasks of a process that serves several services: they share one stop signal, and the
/// process ends only when every one of them has ended.
///
/// When one task fails, the others are told to stop too, and [`ServiceSet::join`] still waits
/// for each to drain (an event service must write what it accepted) before returning the
/// first failure.
pub struct ServiceSet {
    stop: CancellationToken,
    tasks: JoinSet<(String, Result<()>)>,
}

impl Default for ServiceSet {
    fn default() -> Self {
        ServiceSet::new(CancellationToken::new())
    }
}

impl ServiceSet {
    /// A set stopped by `stop` (cancel it on a signal).
    pub fn new(stop: CancellationToken) -> Self {
        ServiceSet {
            stop,
            tasks: JoinSet::new(),
        }
    }

    /// The token that stops every task.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` in the set; it should end soon after [`ServiceSet::stop_token`] fires.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let name = name.into();
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Serves `app` on `listener` until the set stops, then runs `after` (flushing what the
    /// service accepted, say).
    pub fn serve(
        &mut self,
        name: impl Into<String>,
        listener: TcpListener,
        app: Router,
        after: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let stopped = self.stop.clone().cancelled_owned();
        self.spawn(name, async move {
            let served = serve(listener, app, stopped).await;
            let flushed = after.await;
            served.and(flushed)
        });
    }

    /// Waits until every task has ended; the first failure stops the rest and is returned once
    /// they have all ended.
    pub async fn join(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let (name, outcome) = match joined {
                Ok(done) => done,
                Err(e) => ("a task".to_owned(), Err(Error::internal(e))),
            };
            if let Err(error) = outcome {
                tracing::error!(service = %name, %error, "stopped with an error; stopping the rest");
                self.stop.cancel();
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn one_failure_stops_the_rest_and_every_task_finishes_first() {
        let mut set = ServiceSet::default();
        let flushed = Arc::new(AtomicBool::new(false));
        let stop = set.stop_token();
        let done = flushed.clone();
        set.spawn("events", async move {
            stop.cancelled().await;
            tokio::task::yield_now().await;
            done.store(true, Ordering::SeqCst);
            Ok(())
        });
        set.spawn("users", async { Err(Error::Config("port taken".into())) });
        let outcome = set.join().await;
        assert!(matches!(outcome, Err(Error::Config(_))), "{outcome:?}");
        assert!(
            flushed.load(Ordering::SeqCst),
            "join returned before the flush"
        );
    }
}
