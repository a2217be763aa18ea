//! The two ways a run is streamed: isa's envelope (`{type, content, timestamp, session_id,
//! data?}`, the format the frontends of the deployment isa replaces read) and the Vercel AI
//! SDK's UI message stream (v1, `?protocol=ai-sdk`). Both are SSE, one `data: {json}` frame per
//! item, ending with `data: [DONE]`.

use std::collections::HashMap;

use isa_core::{ChatMessage, Error, Role};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{AgentEvent, RunSummary};

/// What a run cost, as both protocols report it at its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Billing {
    /// Whether the run ended with an answer.
    pub success: bool,
    /// Model calls made.
    pub model_calls: u32,
    /// Tool calls made.
    pub tool_calls: u32,
    /// Credits charged for the run: its model calls and its tool calls.
    pub total_credits: i64,
    /// The balance after the run.
    pub credits_remaining: i64,
    /// Why the run failed, in words fit for the caller.
    pub error_message: Option<String>,
}

/// What was kept of the run in its session.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Memory {
    /// Messages this run added (the user's, the model's, the tools').
    pub messages_stored: usize,
    /// Messages the session holds now.
    pub session_messages: i64,
}

/// Writes a run's items in one protocol.
pub(crate) trait Wire: Send {
    /// The response's extra header, if the protocol has one.
    fn header(&self) -> Option<(&'static str, &'static str)>;
    /// The first items.
    fn start(&mut self, model: &str, run_id: &str) -> Vec<Value>;
    /// The items for one event of the run (never its last, `Finished` or `Failed`).
    fn event(&mut self, event: &AgentEvent) -> Vec<Value>;
    /// The last items of a run that answered.
    fn finished(&mut self, summary: &RunSummary, memory: Memory, billing: &Billing) -> Vec<Value>;
    /// The last items of a run that failed.
    fn failed(&mut self, error: &Error, billing: &Billing) -> Vec<Value>;
}

/// One SSE frame.
pub(crate) fn frame(item: &Value) -> String {
    format!("data: {item}\n\n")
}

/// The frame that ends every stream.
pub(crate) const DONE: &str = "data: [DONE]\n\n";

/// A message as both protocols show it.
pub(crate) fn message_json(message: &ChatMessage) -> Value {
    let role = message.role.as_str();
    let calls: Vec<Value> = message
        .tool_calls
        .iter()
        .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments}))
        .collect();
    let mut shown = json!({"role": role, "content": message.text_content()});
    if !calls.is_empty() {
        shown["tool_calls"] = Value::Array(calls);
    }
    if let Some(id) = &message.tool_call_id {
        shown["tool_call_id"] = json!(id);
    }
    shown
}

/// isa's envelope.
pub(crate) struct Envelope {
    session_id: String,
    /// Calls of the current turn, for "(2/3)" in progress lines.
    turn_calls: usize,
    started_calls: usize,
}

impl Envelope {
    pub(crate) fn new(session_id: &str) -> Self {
        Envelope {
            session_id: session_id.to_owned(),
            turn_calls: 0,
            started_calls: 0,
        }
    }

    fn item(&self, kind: &str, content: Value, data: Option<Value>) -> Value {
        let mut item = json!({
            "type": kind,
            "content": content,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "session_id": self.session_id,
        });
        if let Some(data) = data {
            item["data"] = data;
        }
        item
    }

    fn progress(&self, line: String) -> Value {
        self.item(
            "custom_stream",
            json!({"type": "progress", "data": line}),
            None,
        )
    }

    fn billing(&self, billing: &Billing) -> Value {
        let content = format!(
            "{} credits for {} model and {} tool calls",
            billing.total_credits, billing.model_calls, billing.tool_calls
        );
        self.item("billing", json!(content), Some(json!(billing)))
    }
}

impl Wire for Envelope {
    fn header(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    fn start(&mut self, model: &str, run_id: &str) -> Vec<Value> {
        vec![self.item(
            "start",
            json!("Starting chat processing"),
            Some(json!({"model": model, "run_id": run_id})),
        )]
    }

    fn event(&mut self, event: &AgentEvent) -> Vec<Value> {
        match event {
            AgentEvent::ToolsOffered { names } => vec![self.progress(format!(
                "[discover_tools] {} tools offered: {}",
                names.len(),
                names.join(", ")
            ))],
            AgentEvent::TurnStarted { .. } => Vec::new(),
            AgentEvent::TextDelta { text } => {
                vec![self.item("custom_stream", json!({"custom_llm_chunk": text}), None)]
            }
            AgentEvent::Message(message) => {
                let mut items = vec![self.item("message_stream", message_json(message), None)];
                if message.role == Role::Assistant {
                    let next = if message.tool_calls.is_empty() {
                        "end"
                    } else {
                        "call_tool"
                    };
                    self.turn_calls = message.tool_calls.len();
                    self.started_calls = 0;
                    items.push(self.item(
                        "graph_update",
                        json!(format!("reason_model: {next}")),
                        Some(json!({"reason_model": {"next_action": next}})),
                    ));
                }
                items
            }
            AgentEvent::ToolCallStarted { name, .. } => {
                self.started_calls += 1;
                vec![self.progress(format!(
                    "[{name}] Starting execution ({}/{})",
                    self.started_calls,
                    self.turn_calls.max(self.started_calls)
                ))]
            }
            AgentEvent::ToolCallFinished {
                name,
                is_error,
                chars,
                ..
            } => {
                let outcome = if *is_error { "Failed" } else { "Completed" };
                vec![self.progress(format!("[{name}] {outcome} - {chars} chars result"))]
            }
            AgentEvent::Finished(_) | AgentEvent::Failed { .. } => Vec::new(),
        }
    }

    fn finished(&mut self, summary: &RunSummary, memory: Memory, billing: &Billing) -> Vec<Value> {
        vec![
            self.item(
                "memory_update",
                json!(format!("{} messages stored", memory.messages_stored)),
                Some(json!(memory)),
            ),
            self.billing(billing),
            self.item("end", json!(summary.answer), None),
        ]
    }

    fn failed(&mut self, error: &Error, billing: &Billing) -> Vec<Value> {
        vec![
            self.item(
                "error",
                json!(error.public_message()),
                Some(json!({"code": error.code()})),
            ),
            self.billing(billing),
            self.item("end", json!(""), None),
        ]
    }
}

/// The Vercel AI SDK's UI message stream, v1: steps, text parts, and tool parts (dynamic, as
/// the tools are found at run time).
pub(crate) struct AiSdk {
    session_id: String,
    step_open: bool,
    /// The id of the text part being streamed, if one is open.
    text: Option<String>,
    turn: u32,
    /// Whether each finished call failed, by call id, for its output part.
    failed_calls: HashMap<String, bool>,
}

impl AiSdk {
    pub(crate) fn new(session_id: &str) -> Self {
        AiSdk {
            session_id: session_id.to_owned(),
            step_open: false,
            text: None,
            turn: 0,
            failed_calls: HashMap::new(),
        }
    }

    fn close_text(&mut self, items: &mut Vec<Value>) {
        if let Some(id) = self.text.take() {
            items.push(json!({"type": "text-end", "id": id}));
        }
    }

    fn close_step(&mut self, items: &mut Vec<Value>) {
        self.close_text(items);
        if self.step_open {
            self.step_open = false;
            items.push(json!({"type": "finish-step"}));
        }
    }
}

impl Wire for AiSdk {
    fn header(&self) -> Option<(&'static str, &'static str)> {
        Some(("x-vercel-ai-ui-message-stream", "v1"))
    }

    fn start(&mut self, model: &str, run_id: &str) -> Vec<Value> {
        vec![json!({
            "type": "start",
            "messageId": run_id,
            "messageMetadata": {"model": model, "session_id": self.session_id},
        })]
    }

    fn event(&mut self, event: &AgentEvent) -> Vec<Value> {
        let mut items = Vec::new();
        match event {
            AgentEvent::TurnStarted { turn } => {
                self.close_step(&mut items);
                self.turn = *turn;
                self.step_open = true;
                items.push(json!({"type": "start-step"}));
            }
            AgentEvent::TextDelta { text } => {
                let id = match &self.text {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("text-{}", self.turn);
                        items.push(json!({"type": "text-start", "id": id}));
                        self.text = Some(id.clone());
                        id
                    }
                };
                items.push(json!({"type": "text-delta", "id": id, "delta": text}));
            }
            AgentEvent::Message(message) if message.role == Role::Assistant => {
                self.close_text(&mut items);
                for call in &message.tool_calls {
                    items.push(json!({
                        "type": "tool-input-available", "toolCallId": call.id,
                        "toolName": call.name, "input": call.arguments, "dynamic": true,
                    }));
                }
            }
            AgentEvent::Message(message) => {
                if let Some(id) = &message.tool_call_id {
                    let text = message.text_content();
                    if self.failed_calls.get(id).copied().unwrap_or(false) {
                        items.push(json!({
                            "type": "tool-output-error", "toolCallId": id,
                            "errorText": text, "dynamic": true,
                        }));
                    } else {
                        items.push(json!({
                            "type": "tool-output-available", "toolCallId": id,
                            "output": text, "dynamic": true,
                        }));
                    }
                }
            }
            AgentEvent::ToolCallFinished { id, is_error, .. } => {
                self.failed_calls.insert(id.clone(), *is_error);
            }
            AgentEvent::ToolsOffered { names } => {
                items.push(
                    json!({"type": "data-tools", "data": {"offered": names}, "transient": true}),
                );
            }
            AgentEvent::ToolCallStarted { .. }
            | AgentEvent::Finished(_)
            | AgentEvent::Failed { .. } => {}
        }
        items
    }

    fn finished(&mut self, _: &RunSummary, memory: Memory, billing: &Billing) -> Vec<Value> {
        let mut items = Vec::new();
        self.close_step(&mut items);
        items.push(json!({"type": "data-memory", "data": memory}));
        items.push(json!({"type": "data-billing", "data": billing}));
        items.push(json!({"type": "finish", "finishReason": "stop"}));
        items
    }

    fn failed(&mut self, error: &Error, billing: &Billing) -> Vec<Value> {
        let mut items = Vec::new();
        self.close_step(&mut items);
        items.push(json!({"type": "error", "errorText": error.public_message()}));
        items.push(json!({"type": "data-billing", "data": billing}));
        items.push(json!({"type": "finish", "finishReason": "error"}));
        items
    }
}
