//! Users and their credits: a balance kept on the user's row and a ledger of every change, in
//! which a request id is charged at most once.

use chrono::{DateTime, Duration, Utc};
use isa_core::{Error, Result, UserId};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{Database, db_error, db_now, on_pool};

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

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: Option<String>,
    credits: i64,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = Error;
    fn try_from(row: UserRow) -> Result<Self> {
        Ok(User {
            id: UserId::new(row.id)?,
            email: row.email,
            credits: row.credits,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
        })
    }
}

/// One change of a balance: a grant (positive) or a charge (negative).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
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
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
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

enum Ledger {
    Changed,
    Replayed,
    Insufficient,
}

/// Largest page of a history.
pub const MAX_PAGE: usize = 1000;

const USER_COLUMNS: &str = "id, email, credits, created_at, last_seen_at";
const TRANSACTION_COLUMNS: &str =
    "id, request_id, amount, balance_after, operation, units, created_at";

fn check_label(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} must have 1 to 200 characters and no control characters"
        )));
    }
    Ok(())
}

impl Database {
    /// The user, created on first sight with `initial_credits` (recorded as a `signup`
    /// grant). Refreshes the email and the last-seen time.
    pub async fn ensure_user(
        &self,
        id: &UserId,
        email: Option<&str>,
        initial_credits: i64,
    ) -> Result<User> {
        let now = db_now();
        let created = on_pool!(self, pool => sqlx::query(
            "insert into users (id, email, credits, created_at, last_seen_at) values ($1, $2, 0, $3, $3) on conflict (id) do nothing",
        )
        .bind(id.as_str())
        .bind(email)
        .bind(now)
        .execute(pool)
        .await
        .map_err(db_error)?
        .rows_affected())
            == 1;
        if created && initial_credits > 0 {
            self.grant_credits(id, "signup", initial_credits, "signup")
                .await?;
        }
        if !created {
            on_pool!(self, pool => sqlx::query(
                "update users set last_seen_at = $2, email = coalesce($3, email) \
                 where id = $1 and (last_seen_at < $4 or ($3 is not null and (email is null or email <> $3)))",
            )
            .bind(id.as_str())
            .bind(now)
            .bind(email)
            .bind(now - Duration::minutes(1))
            .execute(pool)
            .await
            .map_err(db_error)?
            .rows_affected());
        }
        self.user(id)
            .await?
            .ok_or_else(|| Error::internal("a user vanished right after being stored"))
    }

    /// The user, if known.
    pub async fn user(&self, id: &UserId) -> Result<Option<User>> {
        let sql = format!("select {USER_COLUMNS} from users where id = $1");
        let row: Option<UserRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_error)?);
        row.map(User::try_from).transpose()
    }

    /// Adds credits (an administrator's grant). Idempotent per `request_id` like a charge.
    pub async fn grant_credits(
        &self,
        user: &UserId,
        request_id: &str,
        amount: i64,
        operation: &str,
    ) -> Result<Charge> {
        if amount <= 0 {
            return Err(Error::invalid("a grant must be positive"));
        }
        self.change_credits(user, request_id, amount, operation, None)
            .await
    }

    /// Takes credits for `request_id`. Charging the same request id again changes nothing and
    /// returns the first charge with `replayed: true`; a balance that does not cover the
    /// charge fails with [`Error::InsufficientCredits`] and records nothing.
    pub async fn consume_credits(
        &self,
        user: &UserId,
        request_id: &str,
        amount: i64,
        operation: &str,
        units: Option<i64>,
    ) -> Result<Charge> {
        if amount <= 0 {
            return Err(Error::invalid("a charge must be positive"));
        }
        if units.is_some_and(|u| u < 0) {
            return Err(Error::invalid("units cannot be negative"));
        }
        self.change_credits(user, request_id, -amount, operation, units)
            .await
    }

    /// One transaction: record the ledger row first (the unique request id makes a concurrent
    /// duplicate fail here), then move the balance only if it stays non-negative.
    async fn change_credits(
        &self,
        user: &UserId,
        request_id: &str,
        amount: i64,
        operation: &str,
        units: Option<i64>,
    ) -> Result<Charge> {
        check_label("request_id", request_id)?;
        check_label("operation", operation)?;
        let id = Uuid::now_v7().to_string();
        let now = db_now();
        let outcome: std::result::Result<Ledger, sqlx::Error> = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "insert into credit_transactions (id, user_id, request_id, amount, balance_after, operation, units, created_at) \
                 values ($1, $2, $3, $4, 0, $5, $6, $7) on conflict (user_id, request_id) do nothing",
            )
            .bind(&id)
            .bind(user.as_str())
            .bind(request_id)
            .bind(amount)
            .bind(operation)
            .bind(units)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(Ledger::Replayed);
            }
            let balance: Option<i64> = sqlx::query_scalar(
                "update users set credits = credits + $2 where id = $1 and credits + $2 >= 0 returning credits",
            )
            .bind(user.as_str())
            .bind(amount)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(balance) = balance else {
                tx.rollback().await?;
                return Ok(Ledger::Insufficient);
            };
            sqlx::query("update credit_transactions set balance_after = $2 where id = $1")
                .bind(&id)
                .bind(balance)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ledger::Changed)
        }
        .await);
        match outcome.map_err(db_error)? {
            Ledger::Replayed => Ok(Charge {
                transaction: self.transaction(user, request_id).await?,
                replayed: true,
            }),
            Ledger::Insufficient => {
                let balance = match self.user(user).await? {
                    Some(u) => u.credits,
                    None => return Err(Error::NotFound(format!("user {user}"))),
                };
                Err(Error::InsufficientCredits {
                    needed: -amount,
                    balance,
                })
            }
            Ledger::Changed => Ok(Charge {
                transaction: self.transaction(user, request_id).await?,
                replayed: false,
            }),
        }
    }

    async fn transaction(&self, user: &UserId, request_id: &str) -> Result<CreditTransaction> {
        let sql = format!(
            "select {TRANSACTION_COLUMNS} from credit_transactions where user_id = $1 and request_id = $2"
        );
        on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user.as_str())
            .bind(request_id)
            .fetch_one(pool)
            .await
            .map_err(db_error))
    }

    /// The user's transactions, newest first, `limit` per page, continuing before the
    /// transaction id `before`.
    pub async fn credit_history(
        &self,
        user: &UserId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CreditTransaction>> {
        let sql = format!(
            "select {TRANSACTION_COLUMNS} from credit_transactions \
             where user_id = $1 and ($2 is null or id < $2) order by id desc limit $3"
        );
        on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user.as_str())
            .bind(before)
            .bind(limit.clamp(1, MAX_PAGE) as i64)
            .fetch_all(pool)
            .await
            .map_err(db_error))
    }

    /// What the user consumed per operation between `since` and `until`.
    pub async fn usage(
        &self,
        user: &UserId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<UsageTotal>> {
        on_pool!(self, pool => sqlx::query_as(
            "select operation, count(*) as requests, cast(coalesce(sum(-amount), 0) as bigint) as credits, \
             cast(coalesce(sum(units), 0) as bigint) as units from credit_transactions \
             where user_id = $1 and amount < 0 and created_at >= $2 and created_at < $3 \
             group by operation order by operation",
        )
        .bind(user.as_str())
        .bind(since)
        .bind(until)
        .fetch_all(pool)
        .await
        .map_err(db_error))
    }
}
