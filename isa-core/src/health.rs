//! Readiness checks, reported by every service's `/health`.

use async_trait::async_trait;

use crate::Result;

/// A readiness check: the database answers, the embedder embeds, the object store responds.
///
/// Checks run on every `/health` request, so each must be cheap: one query, one HEAD, never a
/// listing.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Name shown in the health report (`embedder`, `database`, …).
    fn name(&self) -> &str;
    /// `Ok` when ready; the error explains what is not (it is logged, not sent to callers).
    async fn check(&self) -> Result<()>;
    /// Whether the service is unready (503) while this check fails. Optional parts, such as
    /// an upstream MCP server, are reported without taking the service out of rotation.
    fn required(&self) -> bool {
        true
    }
}
