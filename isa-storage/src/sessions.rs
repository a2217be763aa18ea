//! The agent's sessions on the database: [`SessionStore`] over `agent_sessions` and
//! `agent_messages`, each message kept whole as JSON.

use chrono::{DateTime, Utc};
use isa_core::{
    AgentSession, ChatMessage, Error, MAX_SESSION_PAGE, Result, SessionStore, StoredMessage,
    UserId, async_trait, check_session_id, now_to_the_microsecond,
};
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, db_error, on_pool};

/// Characters of the first message kept as a session's title.
const TITLE_CHARS: usize = 80;

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    user_id: String,
    title: Option<String>,
    messages: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SessionRow> for AgentSession {
    type Error = Error;
    fn try_from(row: SessionRow) -> Result<Self> {
        Ok(AgentSession {
            id: row.id,
            user_id: UserId::new(row.user_id)?,
            title: row.title,
            messages: row.messages,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    content: Json<ChatMessage>,
    created_at: DateTime<Utc>,
}

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.title, \
    (select count(*) from agent_messages m where m.session_id = s.id) as messages, \
    s.created_at, s.updated_at";

impl Database {
    /// The session `id` whoever owns it.
    async fn any_session(&self, id: &str) -> Result<Option<AgentSession>> {
        let sql = format!("select {SESSION_COLUMNS} from agent_sessions s where s.id = $1");
        let row: Option<SessionRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?);
        row.map(AgentSession::try_from).transpose()
    }

    /// `user`'s session `id`, or not found.
    async fn own_session(&self, user: &UserId, id: &str) -> Result<AgentSession> {
        match self.any_session(id).await? {
            Some(session) if session.user_id == *user => Ok(session),
            _ => Err(Error::NotFound(format!("session {id:?}"))),
        }
    }
}

#[async_trait]
impl SessionStore for Database {
    async fn open(&self, user: &UserId, id: &str, title: &str) -> Result<AgentSession> {
        check_session_id(id)?;
        let title: String = title.chars().take(TITLE_CHARS).collect();
        let now = now_to_the_microsecond();
        on_pool!(self, pool => sqlx::query(
            "insert into agent_sessions (id, user_id, title, created_at, updated_at) \
             values ($1, $2, $3, $4, $4) on conflict (id) do nothing",
        )
        .bind(id)
        .bind(user.as_str())
        .bind(&title)
        .bind(now)
        .execute(pool)
        .await
        .map_err(db_error)?
        .rows_affected());
        match self.any_session(id).await? {
            Some(session) if session.user_id == *user => Ok(session),
            Some(_) => Err(Error::Forbidden(format!(
                "session {id:?} belongs to another user"
            ))),
            None => Err(Error::internal(
                "a session vanished right after being stored",
            )),
        }
    }

    async fn append(&self, user: &UserId, id: &str, messages: &[ChatMessage]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = now_to_the_microsecond();
        let outcome: std::result::Result<bool, sqlx::Error> = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let touched = sqlx::query(
                "update agent_sessions set updated_at = $3 where id = $1 and user_id = $2",
            )
            .bind(id)
            .bind(user.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if touched == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            for message in messages {
                sqlx::query(
                    "insert into agent_messages (id, session_id, role, content, created_at) \
                     values ($1, $2, $3, $4, $5)",
                )
                // UUIDv7s made in one process increase, so ids keep the messages' order.
                .bind(Uuid::now_v7().to_string())
                .bind(id)
                .bind(message.role.as_str())
                .bind(Json(message))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        }
        .await);
        if outcome.map_err(db_error)? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("session {id:?}")))
        }
    }

    async fn session(&self, user: &UserId, id: &str) -> Result<(AgentSession, Vec<StoredMessage>)> {
        let session = self.own_session(user, id).await?;
        let rows: Vec<MessageRow> = on_pool!(self, pool => sqlx::query_as(
            "select id, content, created_at from agent_messages where session_id = $1 order by id",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(db_error)?);
        let messages = rows
            .into_iter()
            .map(|row| StoredMessage {
                id: row.id,
                message: row.content.0,
                created_at: row.created_at,
            })
            .collect();
        Ok((session, messages))
    }

    async fn sessions(&self, user: &UserId, limit: usize) -> Result<Vec<AgentSession>> {
        let sql = format!(
            "select {SESSION_COLUMNS} from agent_sessions s where s.user_id = $1 \
             order by s.updated_at desc, s.id desc limit $2"
        );
        let rows: Vec<SessionRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user.as_str())
            .bind(limit.clamp(1, MAX_SESSION_PAGE) as i64)
            .fetch_all(pool)
            .await
            .map_err(db_error)?);
        rows.into_iter().map(AgentSession::try_from).collect()
    }

    async fn delete(&self, user: &UserId, id: &str) -> Result<bool> {
        let deleted = on_pool!(self, pool => sqlx::query(
            "delete from agent_sessions where id = $1 and user_id = $2",
        )
        .bind(id)
        .bind(user.as_str())
        .execute(pool)
        .await
        .map_err(db_error)?
        .rows_affected());
        Ok(deleted == 1)
    }
}
