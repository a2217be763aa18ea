//! Users and their credits on the database: [`UserStore`] and [`CreditLedger`] for PostgreSQL
//! and SQLite. A balance is kept on the user's row and a ledger of every change beside it, in
//! which a request id is charged at most once.

use chrono::{DateTime, Duration, Utc};
use isa_core::{
    Charge, CreditLedger, CreditTransaction, Error, MAX_HISTORY_PAGE, Result, UsageTotal, User,
    UserId, UserStore, async_trait, now_to_the_microsecond,
};
use uuid::Uuid;

use crate::db::{Database, db_error, on_pool};

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

/// A row of `credit_transactions`.
#[derive(sqlx::FromRow)]
struct TransactionRow {
    id: String,
    request_id: String,
    amount: i64,
    balance_after: i64,
    operation: String,
    units: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<TransactionRow> for CreditTransaction {
    fn from(row: TransactionRow) -> Self {
        CreditTransaction {
            id: row.id,
            request_id: row.request_id,
            amount: row.amount,
            balance_after: row.balance_after,
            operation: row.operation,
            units: row.units,
            created_at: row.created_at,
        }
    }
}

/// A row of the usage query.
#[derive(sqlx::FromRow)]
struct UsageRow {
    operation: String,
    requests: i64,
    credits: i64,
    units: i64,
}

impl From<UsageRow> for UsageTotal {
    fn from(row: UsageRow) -> Self {
        UsageTotal {
            operation: row.operation,
            requests: row.requests,
            credits: row.credits,
            units: row.units,
        }
    }
}

enum Ledger {
    Changed,
    Replayed,
    Insufficient,
}

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

#[async_trait]
impl UserStore for Database {
    async fn ensure_user(
        &self,
        id: &UserId,
        email: Option<&str>,
        initial_credits: i64,
    ) -> Result<User> {
        let now = now_to_the_microsecond();
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
            self.grant(id, "signup", initial_credits, "signup").await?;
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

    async fn user(&self, id: &UserId) -> Result<Option<User>> {
        let sql = format!("select {USER_COLUMNS} from users where id = $1");
        let row: Option<UserRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_error)?);
        row.map(User::try_from).transpose()
    }
}

#[async_trait]
impl CreditLedger for Database {
    async fn grant(
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

    async fn charge(
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

    async fn history(
        &self,
        user: &UserId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CreditTransaction>> {
        let sql = format!(
            "select {TRANSACTION_COLUMNS} from credit_transactions \
             where user_id = $1 and ($2 is null or id < $2) order by id desc limit $3"
        );
        let rows: Vec<TransactionRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user.as_str())
            .bind(before)
            .bind(limit.clamp(1, MAX_HISTORY_PAGE) as i64)
            .fetch_all(pool)
            .await
            .map_err(db_error))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn usage(
        &self,
        user: &UserId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<UsageTotal>> {
        let rows: Vec<UsageRow> = on_pool!(self, pool => sqlx::query_as(
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
        .map_err(db_error))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

impl Database {
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
        let now = now_to_the_microsecond();
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
            Ledger::Replayed => {
                let earlier = self.transaction(user, request_id).await?;
                if (earlier.amount, earlier.operation.as_str(), earlier.units)
                    != (amount, operation, units)
                {
                    return Err(Error::Conflict(format!(
                        "request id {request_id:?} was used for a different request"
                    )));
                }
                Ok(Charge {
                    transaction: earlier,
                    replayed: true,
                })
            }
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
        let row: TransactionRow = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user.as_str())
            .bind(request_id)
            .fetch_one(pool)
            .await
            .map_err(db_error))?;
        Ok(row.into())
    }
}
