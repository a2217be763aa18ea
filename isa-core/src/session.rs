//! The agent's conversations: sessions, each belonging to one user, and their messages. The
//! database adapters (`isa-storage`) implement [`SessionStore`] on PostgreSQL and SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{ChatMessage, Result, UserId};

/// Longest session id a store accepts.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// Largest page of a session listing.
pub const MAX_SESSION_PAGE: usize = 200;

/// One conversation with the agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSession {
    /// The id the client chose (or was given).
    pub id: String,
    /// Whose it is.
    pub user_id: UserId,
    /// The start of its first message.
    pub title: Option<String>,
    /// Messages stored.
    pub messages: i64,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// When a message was last added.
    pub updated_at: DateTime<Utc>,
}

/// A stored message of a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredMessage {
    /// Its id (UUIDv7: ids sort in the order the messages were added).
    pub id: String,
    /// The message.
    pub message: ChatMessage,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Checks a client's session id: 1 to [`MAX_SESSION_ID_LEN`] visible ASCII characters.
pub fn check_session_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_SESSION_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(crate::Error::invalid(format!(
            "session_id must be 1 to {MAX_SESSION_ID_LEN} visible ASCII characters"
        )));
    }
    Ok(())
}

/// The agent's sessions. Every operation names the user acting: a session of another user is
/// never read, changed or deleted, and answers as if it did not exist, except
/// [`SessionStore::open`], which answers [`Error::Forbidden`](crate::Error::Forbidden) because
/// the id is taken.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The session `id` of `user`, created (titled `title`) when new.
    async fn open(&self, user: &UserId, id: &str, title: &str) -> Result<AgentSession>;

    /// Adds `messages` to the end of `user`'s session `id`, in order, in one transaction.
    async fn append(&self, user: &UserId, id: &str, messages: &[ChatMessage]) -> Result<()>;

    /// `user`'s session `id` and its messages, oldest first;
    /// [`Error::NotFound`](crate::Error::NotFound) when `user` has no such session.
    async fn session(&self, user: &UserId, id: &str) -> Result<(AgentSession, Vec<StoredMessage>)>;

    /// `user`'s sessions, the most recently updated first, at most `limit` (up to
    /// [`MAX_SESSION_PAGE`]).
    async fn sessions(&self, user: &UserId, limit: usize) -> Result<Vec<AgentSession>>;

    /// Deletes `user`'s session `id` and its messages; `false` when `user` had no such session.
    async fn delete(&self, user: &UserId, id: &str) -> Result<bool>;
}
