//! Users and their credits: the ports every service reads accounts and charges through. The
//! database adapters (`isa-storage`) implement them on PostgreSQL and SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Result, UserId};

/// A user as the services know them: created on their first authenticated request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// The id from their token or API key.
    pub id: UserId,
    /// Email, when a token carried one.
    pub email: Option<String>,
    /// Credit balance.
    pub credits: i64,
    /// First seen.
    pub created_at: DateTime<Utc>,
    /// Last seen (updated at most once a minute, to keep reads from writing).
    pub last_seen_at: DateTime<Utc>,
}

/// One change of a balance: a grant (positive) or a charge (negative).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditTransaction {
    /// Transaction id (UUIDv7: ids sort by time).
    pub id: String,
    /// The caller's id for the request; the same id is never charged twice.
    pub request_id: String,
    /// Credits added (positive) or taken (negative).
    pub amount: i64,
    /// The balance right after.
    pub balance_after: i64,
    /// What it was for, such as `model.chat` or `signup`.
    pub operation: String,
    /// Units of work metered, such as tokens, when the caller gave them.
    pub units: Option<i64>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// The outcome of a charge or grant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Charge {
    /// The transaction: new, or the one recorded earlier for the same request id.
    pub transaction: CreditTransaction,
    /// `true` when the request id had been seen and nothing changed this time.
    pub replayed: bool,
}

/// What a user consumed for one operation over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageTotal {
    /// The operation.
    pub operation: String,
    /// How many charges.
    pub requests: i64,
    /// Credits spent.
    pub credits: i64,
    /// Units metered.
    pub units: i64,
}

/// Largest page of a credit history.
pub const MAX_HISTORY_PAGE: usize = 1000;

/// Users, made on first sight.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// The user, created with `initial_credits` (recorded as a `signup` grant) when new; the
    /// email is kept when given, and the last-seen time refreshed.
    async fn ensure_user(
        &self,
        id: &UserId,
        email: Option<&str>,
        initial_credits: i64,
    ) -> Result<User>;

    /// The user, if known.
    async fn user(&self, id: &UserId) -> Result<Option<User>>;
}

/// The ledger of users' credits: a balance and every change to it, in which a request id is
/// charged at most once.
///
/// A charge the balance does not cover fails with
/// [`Error::InsufficientCredits`](crate::Error::InsufficientCredits) and changes nothing; a
/// request id seen before answers the earlier transaction with `replayed: true`.
#[async_trait]
pub trait CreditLedger: Send + Sync {
    /// Adds `amount` (positive) credits.
    async fn grant(
        &self,
        user: &UserId,
        request_id: &str,
        amount: i64,
        operation: &str,
    ) -> Result<Charge>;

    /// Takes `amount` (positive) credits for `operation`, with the units of work metered.
    async fn charge(
        &self,
        user: &UserId,
        request_id: &str,
        amount: i64,
        operation: &str,
        units: Option<i64>,
    ) -> Result<Charge>;

    /// Transactions newest first, before the transaction id `before` when given, at most
    /// `limit` (up to [`MAX_HISTORY_PAGE`]).
    async fn history(
        &self,
        user: &UserId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CreditTransaction>>;

    /// Charges per operation in `[since, until)`.
    async fn usage(
        &self,
        user: &UserId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<UsageTotal>>;
}
