//! Tool calls as tasks (MCP's tasks extension, 2026-07-28): creation where a tool continues
//! as a task, the background run, and `tasks/get`, `tasks/update`, `tasks/cancel`.
//!
//! A task's state is in the [`TaskStore`], read and written by whichever instance serves the
//! request: the one that creates a task runs it, any instance answers `tasks/get`, and the
//! one that receives the last answer of a task waiting for input runs it on (from the start,
//! with every answer given so far, as calls that ask always do). Cancellation is written to
//! the store; the running instance stops the tool when it sees it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::Mutex;
use rmcp::{
    ErrorData as McpError,
    model::{
        ClientCapabilities, CreateTaskResult, DetailedTask, GetTaskResult, InputRequests, Task,
        TaskPayload,
    },
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    McpServer, convert,
    input::{RoundTrip, TaskPhase},
};
use crate::{CallContext, Error, Identity, Result, TaskRecord, TaskStatus, TaskStore};

/// How often a running task looks for a cancellation made through another instance.
const CANCEL_POLL: Duration = Duration::from_millis(500);
/// The polling interval suggested to clients.
const POLL_INTERVAL_MS: u64 = 500;
/// How often a change is tried again when another instance changed the task meanwhile.
const WRITE_ATTEMPTS: usize = 8;

/// Tasks held in this process: the MCP service's store when it is given none. Fine for one
/// instance; instances behind a load balancer share a database's store instead.
#[derive(Default)]
pub struct MemoryTaskStore {
    tasks: Mutex<HashMap<String, TaskRecord>>,
}

#[async_trait]
impl TaskStore for MemoryTaskStore {
    async fn create(&self, task: &TaskRecord) -> Result<()> {
        let mut tasks = self.tasks.lock();
        if tasks.contains_key(&task.id) {
            return Err(Error::Conflict(format!("task {} exists", task.id)));
        }
        tasks.insert(task.id.clone(), task.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<TaskRecord>> {
        Ok(self.tasks.lock().get(id).cloned())
    }

    async fn update(&self, task: &TaskRecord, read_version: i64) -> Result<bool> {
        let mut tasks = self.tasks.lock();
        match tasks.get_mut(&task.id) {
            Some(stored) if stored.version == read_version => {
                *stored = TaskRecord {
                    version: read_version + 1,
                    ..task.clone()
                };
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn remove_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut tasks = self.tasks.lock();
        let before = tasks.len();
        tasks.retain(|_, task| !task.expired(now));
        Ok((before - tasks.len()) as u64)
    }

    fn shared(&self) -> bool {
        false
    }
}

/// Who changes a task: the server running it, or a client, who may change only its own
/// tasks while they live.
#[derive(Clone, Copy)]
enum Changer<'a> {
    Server,
    Client(Option<&'a Identity>),
}

/// What became of a change.
enum Changed {
    /// No such task, or not one the client may see.
    Unknown,
    /// The change left the task as it was.
    Left,
    /// The task was written, with this status.
    Written(TaskStatus),
}

/// The tasks of one server: where they are stored and which of them run here.
pub(crate) struct Tasks {
    pub store: Arc<dyn TaskStore>,
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl Tasks {
    pub fn new(store: Arc<dyn TaskStore>) -> Self {
        Tasks {
            store,
            running: Mutex::new(HashMap::new()),
        }
    }
}

fn unknown(id: &str) -> McpError {
    McpError::invalid_params(format!("no task {id:?}"), None)
}

fn store_error(error: Error) -> McpError {
    tracing::error!(%error, "the task store failed");
    McpError::internal_error(error.public_message(), None)
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The task's base fields, as the wire carries them.
fn wire_task(record: &TaskRecord) -> Task {
    let status = serde_json::from_value(json!(record.status.as_str())).unwrap_or_default();
    Task::new(
        record.id.clone(),
        status,
        timestamp(record.created_at),
        timestamp(record.updated_at),
    )
    .with_ttl_ms(record.ttl.as_millis() as u64)
    .with_poll_interval_ms(POLL_INTERVAL_MS)
}

fn detailed(record: &TaskRecord) -> Result<DetailedTask> {
    let object = |value: &Option<Value>| match value {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let payload = match record.status {
        TaskStatus::Working => TaskPayload::Working,
        TaskStatus::InputRequired => TaskPayload::InputRequired {
            input_requests: serde_json::from_value::<InputRequests>(Value::Object(
                record.input_requests.clone(),
            ))
            .map_err(|e| Error::internal(format!("stored input requests: {e}")))?,
        },
        TaskStatus::Completed => TaskPayload::Completed {
            result: object(&record.result),
        },
        TaskStatus::Failed => TaskPayload::Failed {
            error: object(&record.error),
        },
        TaskStatus::Cancelled => TaskPayload::Cancelled,
    };
    Ok(DetailedTask::new(wire_task(record), payload))
}

impl McpServer {
    /// Makes a task of a call that continued as one, stored before this returns, and starts
    /// running it here.
    pub(crate) async fn create_task(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments: Map<String, Value>,
        declared: &ClientCapabilities,
        answers: Map<String, Value>,
    ) -> std::result::Result<CreateTaskResult, McpError> {
        let tasks = &self.inner.tasks;
        let now = Utc::now();
        if let Err(error) = tasks.store.remove_expired(now).await {
            tracing::warn!(%error, "expired tasks were not removed");
        }
        let record = TaskRecord {
            id: uuid::Uuid::now_v7().to_string(),
            identity: ctx.identity.clone(),
            tool: tool.to_owned(),
            arguments,
            client_capabilities: serde_json::to_value(declared).unwrap_or_default(),
            status: TaskStatus::Working,
            answers,
            input_requests: Map::new(),
            result: None,
            error: None,
            created_at: now,
            updated_at: now,
            ttl: self.inner.config.task_ttl,
            version: 0,
        };
        tasks.store.create(&record).await.map_err(store_error)?;
        self.spawn_task(record.id.clone());
        Ok(CreateTaskResult::new(wire_task(&record)))
    }

    fn spawn_task(&self, id: String) {
        let token = self.shutdown_token().child_token();
        self.inner
            .tasks
            .running
            .lock()
            .insert(id.clone(), token.clone());
        let server = self.clone();
        tokio::spawn(async move {
            if let Err(error) = server.run_task(&id, &token).await {
                tracing::error!(task = %id, %error, "a task could not be run");
            }
            server.inner.tasks.running.lock().remove(&id);
        });
    }

    /// Runs the task's call from the start with the answers it holds, and stores where it
    /// ended: a result, questions for the client, or a failure. A cancelled task is left as
    /// it is.
    async fn run_task(&self, id: &str, token: &CancellationToken) -> Result<()> {
        let store = &self.inner.tasks.store;
        let Some(record) = store.get(id).await? else {
            return Ok(());
        };
        if record.status != TaskStatus::Working {
            return Ok(());
        }
        let declared: ClientCapabilities =
            serde_json::from_value(record.client_capabilities.clone()).unwrap_or_default();
        let channel = Arc::new(RoundTrip::new(
            declared,
            record.answers.clone(),
            TaskPhase::Task,
        ));
        let ctx = CallContext {
            identity: record.identity.clone(),
            request_id: Some(record.id.clone()),
            reporter: None,
            client: Some(channel.clone()),
        };
        let run = self.call_tool_as_task(&record.tool, record.arguments.clone(), &ctx);
        let outcome = tokio::select! {
            outcome = run => outcome,
            _ = token.cancelled() => {
                if self.shutdown_token().is_cancelled() {
                    // Stopped by the server's shutdown, not by the client: say so rather than
                    // leave the task working forever.
                    self.change_task(id, Changer::Server, |task| {
                        if task.status != TaskStatus::Working {
                            return false;
                        }
                        task.status = TaskStatus::Failed;
                        task.error = Some(json!({"code": -32603,
                            "message": "the server stopped before the task finished; call again"}));
                        true
                    })
                    .await?;
                }
                return Ok(());
            }
            _ = cancelled_elsewhere(store.as_ref(), id), if store.shared() => return Ok(()),
        };
        let (status, result, error, input_requests) = match outcome {
            Ok(output) => {
                let result = serde_json::to_value(convert::tool_result(output))
                    .map_err(|e| Error::internal(e.to_string()))?;
                (TaskStatus::Completed, Some(result), None, Map::new())
            }
            Err(Error::Suspended) if !channel.pending().is_empty() => {
                (TaskStatus::InputRequired, None, None, channel.pending())
            }
            Err(error) => {
                tracing::warn!(task = %id, %error, "a task failed");
                let error = match &error {
                    Error::InvalidInput(_) | Error::NotFound(_) => json!({
                        "code": -32602, "message": error.public_message()}),
                    _ => json!({"code": -32603, "message": error.public_message()}),
                };
                (TaskStatus::Failed, None, Some(error), Map::new())
            }
        };
        self.change_task(id, Changer::Server, |task| {
            if task.status != TaskStatus::Working {
                return false; // cancelled meanwhile
            }
            task.status = status;
            task.result = result.clone();
            task.error = error.clone();
            task.input_requests = input_requests.clone();
            true
        })
        .await?;
        Ok(())
    }

    /// Reads the task, applies `change` (which says whether it changed anything) and writes
    /// it back, again from a fresh read when another instance wrote in between.
    async fn change_task(
        &self,
        id: &str,
        changer: Changer<'_>,
        mut change: impl FnMut(&mut TaskRecord) -> bool,
    ) -> Result<Changed> {
        let store = &self.inner.tasks.store;
        for _ in 0..WRITE_ATTEMPTS {
            let mut task = match (store.get(id).await?, changer) {
                (Some(task), Changer::Server) => task,
                (Some(task), Changer::Client(identity)) if visible(&task, identity) => task,
                _ => return Ok(Changed::Unknown),
            };
            let read_version = task.version;
            if !change(&mut task) {
                return Ok(Changed::Left);
            }
            task.updated_at = Utc::now();
            if store.update(&task, read_version).await? {
                return Ok(Changed::Written(task.status));
            }
        }
        Err(Error::Unavailable(format!(
            "task {id} kept changing; try again"
        )))
    }

    /// `tasks/get`.
    pub(crate) async fn get_task(
        &self,
        id: &str,
        identity: Option<&Identity>,
    ) -> std::result::Result<GetTaskResult, McpError> {
        match self.inner.tasks.store.get(id).await.map_err(store_error)? {
            Some(task) if visible(&task, identity) => {
                Ok(GetTaskResult::new(detailed(&task).map_err(store_error)?))
            }
            _ => Err(unknown(id)),
        }
    }

    /// `tasks/update`: answers to a task's open questions; once none is left open the task
    /// runs on, here. Answers to questions the task did not ask are ignored.
    pub(crate) async fn update_task(
        &self,
        id: &str,
        identity: Option<&Identity>,
        responses: Map<String, Value>,
    ) -> std::result::Result<(), McpError> {
        if let Some((key, _)) = responses.iter().find(|(_, answer)| !answer.is_object()) {
            return Err(McpError::invalid_params(
                format!("inputResponses.{key} must be an object"),
                None,
            ));
        }
        let changed = self
            .change_task(id, Changer::Client(identity), |task| {
                if task.status != TaskStatus::InputRequired {
                    return false;
                }
                let mut answered = false;
                for (key, answer) in &responses {
                    if task.input_requests.remove(key).is_some() {
                        task.answers.insert(key.clone(), answer.clone());
                        answered = true;
                    }
                }
                if task.input_requests.is_empty() {
                    task.status = TaskStatus::Working;
                }
                answered
            })
            .await
            .map_err(store_error)?;
        match changed {
            Changed::Unknown => Err(unknown(id)),
            // The last answer came: the task runs on here.
            Changed::Written(TaskStatus::Working) => {
                self.spawn_task(id.to_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `tasks/cancel`: a task that is not over is cancelled (and stopped where it runs); one
    /// that is over stays as it is.
    pub(crate) async fn cancel_task(
        &self,
        id: &str,
        identity: Option<&Identity>,
    ) -> std::result::Result<(), McpError> {
        let changed = self
            .change_task(id, Changer::Client(identity), |task| {
                if task.status.is_terminal() {
                    return false;
                }
                task.status = TaskStatus::Cancelled;
                task.input_requests.clear();
                true
            })
            .await
            .map_err(store_error)?;
        if let Changed::Unknown = changed {
            return Err(unknown(id));
        }
        if let Some(token) = self.inner.tasks.running.lock().get(id) {
            token.cancel();
        }
        Ok(())
    }
}

/// Whether the client with `identity` may see and change `task`.
fn visible(task: &TaskRecord, identity: Option<&Identity>) -> bool {
    task.belongs_to(identity) && !task.expired(Utc::now())
}

/// Returns once the task is found cancelled (or gone) in the store.
async fn cancelled_elsewhere(store: &dyn TaskStore, id: &str) {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        match store.get(id).await {
            Ok(Some(task)) if task.status != TaskStatus::Cancelled => {}
            Ok(_) => return,
            Err(error) => tracing::warn!(task = %id, %error, "task store unreachable"),
        }
    }
}
