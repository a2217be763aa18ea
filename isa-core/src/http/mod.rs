//! The HTTP edge every isa service is built on (feature `http`): one error envelope
//! ([`ApiError`]), one `/health` ([`Health`]), one overload, body-size and host policy
//! ([`limit_concurrency`], [`limit_body`], [`allow_hosts`]) and one way to listen, serve and stop
//! ([`listen`], [`serve`], [`ServiceSet`]).
//!
//! A service is a function from its components to an axum [`Router`](axum::Router); tests call
//! that router with `tower::ServiceExt::oneshot` and get exactly what production serves.

mod error;
mod health;
pub mod openapi;
mod serve;

pub use error::{ApiError, ApiJson, ApiQuery, ApiResult, no_route};
pub use health::{CHECK_TIMEOUT, CheckReport, Health, HealthReport};
pub use serve::{
    DEFAULT_CONCURRENCY, REQUEST_ID_HEADER, RequestId, SERVICE_HEADER, ServiceSet, allow_hosts,
    limit_body, limit_concurrency, listen, name_service, serve, shutdown_signal, stop_on_signal,
    with_request_ids,
};
