//! [`Health`]: the one `/health` of every service.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::{Error, HealthCheck};

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A service's readiness checks, answered as one report: 200 when every required check
/// passes, 503 otherwise.
///
/// ```json
/// {"status": "ok", "checks": {"database": {"ready": true, "required": true, "latency_ms": 0.4}}}
/// ```
///
/// A failed check names the class of its failure (`"error": "unavailable"`, `"timeout"`);
/// what exactly failed is logged, not sent: `/health` answers without credentials.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Vec<Arc<dyn HealthCheck>>>,
}

/// What `/health` answers.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// Each check by name.
    pub checks: BTreeMap<String, CheckReport>,
}

/// One check in a [`HealthReport`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Whether it passed.
    pub ready: bool,
    /// Whether the service is out of rotation while it fails.
    pub required: bool,
    /// How long it took.
    pub latency_ms: f64,
    /// The class of the failure (`unavailable`, `timeout`, …), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

impl HealthReport {
    /// Whether every required check passed.
    pub fn is_ready(&self) -> bool {
        self.status == "ok"
    }
}

impl Health {
    /// A report over `checks`.
    pub fn new(checks: Vec<Arc<dyn HealthCheck>>) -> Self {
        Health {
            checks: Arc::new(checks),
        }
    }

    /// Runs every check at once, each bounded by [`CHECK_TIMEOUT`].
    pub async fn report(&self) -> HealthReport {
        let runs = self.checks.iter().map(|check| async move {
            let started = std::time::Instant::now();
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Timeout(CHECK_TIMEOUT)),
            };
            let latency_ms = started.elapsed().as_secs_f64() * 1e3;
            if let Err(error) = &outcome {
                tracing::warn!(check = check.name(), %error, "health check failed");
            }
            let report = CheckReport {
                ready: outcome.is_ok(),
                required: check.required(),
                latency_ms,
                error: outcome.as_ref().err().map(Error::code),
            };
            (check.name().to_owned(), report)
        });
        let checks: BTreeMap<String, CheckReport> =
            futures::future::join_all(runs).await.into_iter().collect();
        let ready = checks.values().all(|c| c.ready || !c.required);
        HealthReport {
            status: if ready { "ok" } else { "unavailable" },
            checks,
        }
    }

    /// A router answering `GET` on each of `paths` with the report.
    pub fn router(&self, paths: &[&str]) -> Router {
        let mut router = Router::new();
        for path in paths {
            let health = self.clone();
            router = router.route(path, get(move || async move { health.answer().await }));
        }
        router
    }

    async fn answer(&self) -> Response {
        let report = self.report().await;
        let status = if report.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(report)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Result, async_trait};

    struct Fixed(&'static str, bool, Option<Error>);

    #[async_trait]
    impl HealthCheck for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        async fn check(&self) -> Result<()> {
            match &self.2 {
                None => Ok(()),
                Some(_) => Err(Error::Unavailable("secret host db.internal:5432".into())),
            }
        }
        fn required(&self) -> bool {
            self.1
        }
    }

    struct Hangs;

    #[async_trait]
    impl HealthCheck for Hangs {
        fn name(&self) -> &str {
            "hangs"
        }
        async fn check(&self) -> Result<()> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn an_optional_failure_keeps_the_service_ready_a_required_one_does_not() {
        let down = || Some(Error::Unavailable(String::new()));
        let optional = Health::new(vec![
            Arc::new(Fixed("db", true, None)),
            Arc::new(Fixed("upstream", false, down())),
        ]);
        let report = optional.report().await;
        assert!(report.is_ready());
        assert_eq!(report.checks["upstream"].error, Some("unavailable"));
        let required = Health::new(vec![Arc::new(Fixed("db", true, down()))]);
        let report = required.report().await;
        assert!(!report.is_ready());
        let body = serde_json::to_string(&report).unwrap();
        assert!(!body.contains("db.internal"), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_check_fails_by_timeout() {
        let report = Health::new(vec![Arc::new(Hangs)]).report().await;
        assert!(!report.is_ready());
        assert_eq!(report.checks["hangs"].error, Some("timeout"));
    }
}
