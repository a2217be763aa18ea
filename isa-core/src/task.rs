//! Tool calls that run as tasks (MCP's tasks extension): the client gets a task id at once and
//! polls it for the result. A task's state lives in a [`TaskStore`], so any instance sharing
//! the store answers for it: `isa-storage` implements it on PostgreSQL and SQLite, and the MCP
//! service keeps one in memory when given none.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Identity, Result};

/// Whether a tool may run as a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSupport {
    /// Never: every call answers in its request.
    #[default]
    Forbidden,
    /// When the client accepts tasks; otherwise the call answers in its request.
    Optional,
    /// Only as a task: a client that does not accept tasks is refused.
    Required,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// The tool is running.
    Working,
    /// The tool waits for the client's answers (given with `tasks/update`).
    InputRequired,
    /// The tool returned; its result (an error result among them) is kept.
    Completed,
    /// The call failed before it could return a result.
    Failed,
    /// The client cancelled it.
    Cancelled,
}

impl TaskStatus {
    /// Whether the task is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The status's name as stored and sent (`working`, `input_required`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Working => "working",
            TaskStatus::InputRequired => "input_required",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        serde_json::from_value(Value::String(name.to_owned()))
            .map_err(|_| crate::Error::internal(format!("unknown task status {name:?}")))
    }
}

/// A task as stored: the call it runs and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id (a UUIDv7 the server makes).
    pub id: String,
    /// Who made the call; only they may see or change the task.
    pub identity: Option<Identity>,
    /// The tool called.
    pub tool: String,
    /// Its arguments.
    pub arguments: Map<String, Value>,
    /// The client capabilities the call was made with (MCP's `ClientCapabilities`).
    pub client_capabilities: Value,
    /// Where it is.
    pub status: TaskStatus,
    /// The client's answers so far, by question key.
    pub answers: Map<String, Value>,
    /// The questions waiting for an answer, by key, in MCP's `inputRequests` shape.
    pub input_requests: Map<String, Value>,
    /// The tool's result (MCP's `CallToolResult`), once completed.
    pub result: Option<Value>,
    /// The JSON-RPC error, once failed.
    pub error: Option<Value>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// How long after its creation it is kept.
    pub ttl: Duration,
    /// Bumped at every change; an update names the version it read.
    pub version: i64,
}

impl TaskRecord {
    /// Whether `identity` may see it: the caller who made it (or anyone, for an anonymous
    /// call on a server without authentication).
    pub fn belongs_to(&self, identity: Option<&Identity>) -> bool {
        self.identity.as_ref().map(|i| &i.user_id) == identity.map(|i| &i.user_id)
    }

    /// Whether it has outlived its time to live.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        chrono::Duration::from_std(self.ttl).is_ok_and(|ttl| self.created_at + ttl <= now)
    }
}

/// Tasks, shared by every instance that answers for them.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task; it can be read as soon as this returns.
    async fn create(&self, task: &TaskRecord) -> Result<()>;

    /// The task `id`, if stored.
    async fn get(&self, id: &str) -> Result<Option<TaskRecord>>;

    /// Replaces the task with `task` (its version one more than `read_version`), unless it
    /// changed since it was read at `read_version`; returns whether it was written.
    async fn update(&self, task: &TaskRecord, read_version: i64) -> Result<bool>;

    /// Removes the tasks whose time to live ended before `now`; returns how many.
    async fn remove_expired(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Whether other processes write to this store too, so that a task running here must
    /// look in it for a cancellation they made.
    fn shared(&self) -> bool {
        true
    }
}
