//! Credits: balance, charges (once per request id), grants, history and usage.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use isa_core::{
    ADMIN_SCOPE, Charge, Error, Event, Identity, UserId,
    http::{ApiJson, ApiQuery, ApiResult},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Shared;

pub(super) async fn balance(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let account = service
        .inner
        .users
        .user(&user)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {user}")))?;
    Ok(Json(json!({"user_id": user, "balance": account.credits})))
}

#[derive(Deserialize)]
pub(super) struct Consumption {
    request_id: String,
    amount: i64,
    operation: String,
    units: Option<i64>,
}

/// Idempotent per request id: the same id charges once, and a replay answers 200 with the
/// first charge and `"replayed": true`; the id reused for a different request answers 409.
pub(super) async fn consume(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiJson(c): ApiJson<Consumption>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = service.account_of(&identity, &user_id).await?;
    let charge = service
        .inner
        .ledger
        .charge(&user, &c.request_id, c.amount, &c.operation, c.units)
        .await?;
    if !charge.replayed {
        let payload = json!({
            "request_id": c.request_id,
            "amount": c.amount,
            "operation": c.operation,
            "units": c.units,
        });
        let event = Event::now("credits.charged", Some(user.clone()), payload);
        service.inner.events.emit(event).await;
    }
    charge_response(charge)
}

/// 201 for a new transaction, 200 for a replay of an earlier one.
fn charge_response(charge: Charge) -> ApiResult<(StatusCode, Json<Value>)> {
    let status = if charge.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(serde_json::to_value(charge).map_err(Error::internal)?),
    ))
}

#[derive(Deserialize)]
pub(super) struct Grant {
    request_id: String,
    amount: i64,
    #[serde(default = "default_grant_reason")]
    reason: String,
}

fn default_grant_reason() -> String {
    "grant".to_owned()
}

/// Administrators only.
pub(super) async fn grant(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiJson(g): ApiJson<Grant>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    identity.require_scope(ADMIN_SCOPE)?;
    let user = UserId::new(user_id)?;
    service
        .inner
        .users
        .ensure_user(&user, None, service.inner.initial_credits)
        .await?;
    let charge = service
        .inner
        .ledger
        .grant(&user, &g.request_id, g.amount, &g.reason)
        .await?;
    charge_response(charge)
}

#[derive(Deserialize)]
pub(super) struct HistoryPage {
    before: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn history(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryPage>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, isa_core::MAX_HISTORY_PAGE);
    let transactions = service
        .inner
        .ledger
        .history(&user, q.before.as_deref(), limit)
        .await?;
    let next = (transactions.len() == limit)
        .then(|| transactions.last().map(|t| t.id.clone()))
        .flatten();
    Ok(Json(json!({"transactions": transactions, "next": next})))
}

#[derive(Deserialize, Serialize)]
pub(super) struct Period {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

pub(super) async fn usage(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiQuery(q): ApiQuery<Period>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let (since, until) = crate::api::period(q.since, q.until, chrono::Duration::days(30))?;
    let totals = service.inner.ledger.usage(&user, since, until).await?;
    Ok(Json(
        json!({"since": since, "until": until, "operations": totals}),
    ))
}
