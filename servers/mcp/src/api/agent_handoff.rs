//! Events handed to the agent service: an event of a chosen kind (a watched page changed, a
//! schedule fired) becomes a run of the agent for the event's user, in that user's system
//! session `events-{user_id}`, and the run's outcome is recorded as an `agent.event_handled`
//! event naming the event it answers (`event_id`).
//!
//! The event service calls the agent with an administrator's API key, naming the user, so the
//! run acts as that user everywhere (their files, their credits). Each run is sent with the
//! request id `event-{event id}`, so an event handed over twice is not charged twice. Runs wait
//! in a bounded queue; when it is full the event is still recorded but not handed over, which
//! the log and `agent_handoffs_dropped` in `/metrics` say.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use isa_core::{Event, EventSink};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

/// Events waiting for a run at most.
const QUEUE: usize = 256;

/// Where and what to hand over.
#[derive(Debug, Clone, clap::Args)]
pub struct HandoffSettings {
    /// The agent service (`http://host:8080`) that handles events of `--agent-event-kinds`.
    #[arg(long, env = "ISA_AGENT_URL")]
    pub agent_url: Option<String>,
    /// An administrator's API key with which events are handed to the agent service.
    #[arg(long, env = "ISA_AGENT_API_KEY", hide_env_values = true)]
    pub agent_api_key: Option<String>,
    /// Event kinds handed to the agent service as runs for the event's user.
    #[arg(long, env = "ISA_AGENT_EVENT_KINDS", value_delimiter = ',')]
    pub agent_event_kinds: Vec<String>,
    /// Runs of handed-over events at once.
    #[arg(long, env = "ISA_AGENT_EVENT_RUNS", default_value_t = 4)]
    pub agent_event_runs: usize,
}

/// Hands events of chosen kinds to the agent service.
pub struct AgentHandoff {
    kinds: HashSet<String>,
    queue: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

impl AgentHandoff {
    /// A hand-off as `settings` say, or `None` when they name no agent, key or kind. Its
    /// outcomes are recorded in `sink`.
    pub fn spawn(settings: &HandoffSettings, sink: Arc<dyn EventSink>) -> Option<Arc<Self>> {
        let (Some(url), Some(key)) = (&settings.agent_url, &settings.agent_api_key) else {
            return None;
        };
        if settings.agent_event_kinds.is_empty() {
            return None;
        }
        let (queue, mut waiting) = mpsc::channel::<Event>(QUEUE);
        let runner = Arc::new(Runner {
            chat_url: format!("{}/api/chat", url.trim_end_matches('/')),
            key: key.clone(),
            client: reqwest::Client::new(),
            sink,
        });
        let runs = Arc::new(Semaphore::new(settings.agent_event_runs.max(1)));
        tokio::spawn(async move {
            while let Some(event) = waiting.recv().await {
                let Ok(place) = runs.clone().acquire_owned().await else {
                    return;
                };
                let runner = runner.clone();
                tokio::spawn(async move {
                    runner.run(event).await;
                    drop(place);
                });
            }
        });
        Some(Arc::new(AgentHandoff {
            kinds: settings.agent_event_kinds.iter().cloned().collect(),
            queue,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues a run for each of `events` of a chosen kind that concerns a user.
    pub fn offer(&self, events: &[Event]) {
        for event in events {
            if event.user.is_none() || !self.kinds.contains(&event.kind) {
                continue;
            }
            if self.queue.try_send(event.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(event_id = %event.id, kind = %event.kind, "the agent hand-off queue is full; the event is recorded but not handed over");
            }
        }
    }

    /// Events not handed over because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Runner {
    chat_url: String,
    key: String,
    client: reqwest::Client,
    sink: Arc<dyn EventSink>,
}

impl Runner {
    /// Runs one event through the agent and records what came of it.
    async fn run(&self, event: Event) {
        let Some(user) = event.user.clone() else {
            return;
        };
        let session_id: String = format!("events-{user}").chars().take(128).collect();
        let message = format!(
            "An event arrived for you to handle: {} at {}.\nDetails: {}",
            event.kind,
            event.time.to_rfc3339(),
            event.payload
        );
        let body = json!({"message": message, "user_id": user.as_str(), "session_id": session_id});
        let outcome = self
            .client
            .post(&self.chat_url)
            .bearer_auth(&self.key)
            .header("x-request-id", format!("event-{}", event.id))
            .timeout(Duration::from_secs(600))
            .json(&body)
            .send()
            .await;
        let mut result =
            json!({"event_id": event.id, "event_kind": event.kind, "session_id": session_id});
        match outcome {
            Ok(response) if response.status().is_success() => match response.text().await {
                Ok(text) => read_run(&text, &mut result),
                Err(e) => result["error"] = json!(format!("reading the agent's answer: {e}")),
            },
            Ok(response) => {
                let status = response.status();
                let answer: Value = response.json().await.unwrap_or_default();
                result["error"] = json!(format!(
                    "the agent service answered {status}: {}",
                    answer["error"]["message"].as_str().unwrap_or("")
                ));
            }
            Err(e) => result["error"] = json!(format!("the agent service: {e}")),
        }
        if let Some(error) = result.get("error") {
            tracing::warn!(event_id = %event.id, %error, "an event handed to the agent was not handled");
        }
        self.sink
            .emit(Event::now("agent.event_handled", Some(user), result))
            .await;
    }
}

/// The answer, billing and error of a run's envelope stream, into `result`.
fn read_run(stream: &str, result: &mut Value) {
    for item in stream
        .split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
    {
        match item["type"].as_str() {
            Some("end") => result["answer"] = item["content"].clone(),
            Some("billing") => result["billing"] = item["data"].clone(),
            Some("error") => result["error"] = item["content"].clone(),
            _ => {}
        }
    }
}
