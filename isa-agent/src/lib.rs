//! # isa-agent
//!
//! The agent loop, as a library: an [`Agent`] is a chat [`ModelProvider`] (the model service
//! over HTTP, or a provider in the same process) with a system prompt and [`Limits`]; a run
//! gives it a conversation and a [`ToolSource`] acting for one caller ([`McpTools`]: an MCP
//! server reached with the caller's own credential).
//!
//! Each run first asks the tool source for the tools that fit the conversation's last user
//! message (`discover_tools`, not the whole catalog) and offers only those. Then, turn by turn,
//! the model answers or asks for tool calls; the calls of one turn run at once, each within the
//! tool deadline, their results (cut to [`Limits::max_tool_result_chars`]) go back to the model,
//! and the loop goes on until the model answers, or the turn limit or the run's deadline stops
//! it. A call of a tool that was not offered is answered with an error result the model can
//! read, never run.
//!
//! [`Agent::run`] answers at once with an [`AgentRun`], a stream of [`AgentEvent`]s. Dropping
//! it stops the run where it is: the model's stream and the tool calls in flight are dropped
//! with it.
//!
//! With feature `service`, the module `service` is the agent service's router
//! (`POST /api/chat` and the routes beside it), which `servers/agent` serves.

#[cfg(feature = "service")]
pub mod service;
pub mod tools;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use isa_core::{
    ChatEvent, ChatMessage, ChatRequest, Error, JsonObject, ModelProvider, Result, Role,
    ToolCallRequest, ToolSpec, Usage,
};
use tokio::sync::mpsc;

pub use tools::{McpConnector, McpTools, ToolReply, ToolSource};

/// What stops a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Model turns at most (10 by default).
    pub max_turns: u32,
    /// The whole run at most (two minutes by default).
    pub run_deadline: Duration,
    /// One tool call at most (30 s by default).
    pub tool_deadline: Duration,
    /// Characters of one tool result given back to the model at most (16,000 by default); the
    /// rest is cut, and the model is told so.
    pub max_tool_result_chars: usize,
    /// Tools discovered and offered for a run at most (5 by default).
    pub tools_offered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_turns: 10,
            run_deadline: Duration::from_secs(120),
            tool_deadline: Duration::from_secs(30),
            max_tool_result_chars: 16_000,
            tools_offered: 5,
        }
    }
}

/// An agent: a model, what it is told first, and its limits.
#[derive(Clone)]
pub struct Agent {
    model: Arc<dyn ModelProvider>,
    model_name: String,
    system_prompt: Option<String>,
    limits: Limits,
}

/// What a run reports, in order.
#[derive(Debug)]
pub enum AgentEvent {
    /// The tools discovered and offered to the model for this run.
    ToolsOffered {
        /// Their names, best first.
        names: Vec<String>,
    },
    /// A model turn begins (counted from 1).
    TurnStarted {
        /// The turn's number.
        turn: u32,
    },
    /// More of the model's text.
    TextDelta {
        /// The new text.
        text: String,
    },
    /// A whole message added to the conversation: the model's (with its tool calls) or a tool's
    /// result.
    Message(ChatMessage),
    /// A tool call starts.
    ToolCallStarted {
        /// The model's id for the call.
        id: String,
        /// The tool.
        name: String,
    },
    /// A tool call ended.
    ToolCallFinished {
        /// The model's id for the call.
        id: String,
        /// The tool.
        name: String,
        /// Whether the result is an error (the tool failed, timed out, or was not offered).
        is_error: bool,
        /// Characters of the result as the tool gave it, before any cut.
        chars: usize,
        /// How long the call took.
        elapsed: Duration,
    },
    /// The run ended with the model's answer.
    Finished(RunSummary),
    /// The run stopped: a limit, or a model or tool source that failed. Always the last event.
    Failed {
        /// Why.
        error: Error,
        /// What the run did until then.
        summary: RunSummary,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// The final answer's text (empty when the run failed).
    pub answer: String,
    /// Model turns taken.
    pub model_calls: u32,
    /// Tool calls run, failed ones included.
    pub tool_calls: u32,
    /// Tokens the model reported.
    pub usage: Usage,
    /// Credits the model service reported charging for the model calls (0 from providers that
    /// do not charge).
    pub model_credits: u64,
}

impl Agent {
    /// An agent asking `model_name` of `model`.
    pub fn new(model: Arc<dyn ModelProvider>, model_name: impl Into<String>) -> Self {
        Agent {
            model,
            model_name: model_name.into(),
            system_prompt: None,
            limits: Limits::default(),
        }
    }

    /// What the model is told first in every run.
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Starts a run over `conversation` (the session so far, ending with the user's message)
    /// with the tools of `tools`. Needs a Tokio runtime.
    pub fn run(&self, conversation: Vec<ChatMessage>, tools: Arc<dyn ToolSource>) -> AgentRun {
        self.start(None, conversation, tools)
    }

    /// [`Agent::run`] under the request id `request_id`: model turn N is sent as request
    /// `{request_id}:model:{N}`, so a model service that charges an id once does not charge
    /// a run sent again.
    pub fn run_with_id(
        &self,
        request_id: &str,
        conversation: Vec<ChatMessage>,
        tools: Arc<dyn ToolSource>,
    ) -> AgentRun {
        self.start(Some(request_id.to_owned()), conversation, tools)
    }

    fn start(
        &self,
        request_id: Option<String>,
        conversation: Vec<ChatMessage>,
        tools: Arc<dyn ToolSource>,
    ) -> AgentRun {
        // Room for a turn's worth of events; a slow reader slows the run, never grows memory.
        let (sender, events) = mpsc::channel(64);
        let agent = self.clone();
        let task = tokio::spawn(async move {
            let mut run = Run {
                agent: &agent,
                tools,
                sender: &sender,
                request_id,
                summary: RunSummary::default(),
            };
            let deadline = agent.limits.run_deadline;
            let outcome = match tokio::time::timeout(deadline, run.go(conversation)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Timeout(deadline)),
            };
            let summary = std::mem::take(&mut run.summary);
            let last = match outcome {
                Ok(answer) => AgentEvent::Finished(RunSummary { answer, ..summary }),
                Err(error) => AgentEvent::Failed { error, summary },
            };
            let _ = sender.send(last).await;
        });
        AgentRun { events, task }
    }
}

/// A run's events as a stream. Dropping it stops the run.
pub struct AgentRun {
    events: mpsc::Receiver<AgentEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for AgentRun {
    type Item = AgentEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One run in progress.
struct Run<'a> {
    agent: &'a Agent,
    tools: Arc<dyn ToolSource>,
    sender: &'a mpsc::Sender<AgentEvent>,
    request_id: Option<String>,
    summary: RunSummary,
}

/// A tool call as the model streamed it: id, name, argument text.
type PendingCall = (String, String, String);

impl Run<'_> {
    async fn emit(&self, event: AgentEvent) -> Result<()> {
        self.sender
            .send(event)
            .await
            .map_err(|_| Error::Unavailable("the run's reader went away".into()))
    }

    /// The loop; the final answer.
    async fn go(&mut self, conversation: Vec<ChatMessage>) -> Result<String> {
        let limits = self.agent.limits;
        let mut messages = Vec::with_capacity(conversation.len() + 1);
        if let Some(prompt) = &self.agent.system_prompt {
            messages.push(ChatMessage::text(Role::System, prompt.clone()));
        }
        messages.extend(conversation);
        let task = messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(ChatMessage::text_content)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| Error::invalid("the conversation has no user message to act on"))?;
        let offered = self.tools.discover(&task, limits.tools_offered).await?;
        self.emit(AgentEvent::ToolsOffered {
            names: offered.iter().map(|t| t.name.clone()).collect(),
        })
        .await?;
        for turn in 1..=limits.max_turns {
            self.emit(AgentEvent::TurnStarted { turn }).await?;
            let (text, calls) = self.ask_model(&messages, &offered).await?;
            let calls: Vec<ToolCallRequest> = calls
                .into_iter()
                .map(|(id, name, arguments)| ToolCallRequest {
                    id,
                    name,
                    arguments: parse_arguments(&arguments),
                })
                .collect();
            let reply = ChatMessage {
                tool_calls: calls.clone(),
                ..ChatMessage::text(Role::Assistant, text.clone())
            };
            messages.push(reply.clone());
            self.emit(AgentEvent::Message(reply)).await?;
            if calls.is_empty() {
                return Ok(text);
            }
            self.summary.tool_calls += calls.len() as u32;
            let results =
                futures::future::join_all(calls.iter().map(|call| self.call_tool(call, &offered)))
                    .await;
            for result in results {
                let result = result?;
                messages.push(result.clone());
                self.emit(AgentEvent::Message(result)).await?;
            }
        }
        Err(Error::invalid(format!(
            "the turn limit ({}) was reached before the model answered",
            limits.max_turns
        )))
    }

    /// One model turn, streamed: its text and the tool calls it asked for.
    async fn ask_model(
        &mut self,
        messages: &[ChatMessage],
        offered: &[ToolSpec],
    ) -> Result<(String, Vec<PendingCall>)> {
        let request = ChatRequest {
            model: self.agent.model_name.clone(),
            messages: messages.to_vec(),
            tools: offered.to_vec(),
            request_id: self
                .request_id
                .as_ref()
                .map(|id| format!("{id}:model:{}", self.summary.model_calls + 1)),
            ..ChatRequest::default()
        };
        self.summary.model_calls += 1;
        let mut stream = self.agent.model.chat_stream(request).await?;
        let mut text = String::new();
        let mut calls: Vec<PendingCall> = Vec::new();
        while let Some(event) = stream.next().await {
            match event? {
                ChatEvent::TextDelta { text: delta } => {
                    text.push_str(&delta);
                    self.emit(AgentEvent::TextDelta { text: delta }).await?;
                }
                ChatEvent::ToolCallStart { id, name, .. } => {
                    calls.push((id, name, String::new()));
                }
                ChatEvent::ToolCallDelta { index, arguments } => {
                    if let Some(call) = calls.get_mut(index as usize) {
                        call.2.push_str(&arguments);
                    }
                }
                ChatEvent::Usage { usage } => {
                    self.summary.usage.input_tokens += usage.input_tokens;
                    self.summary.usage.output_tokens += usage.output_tokens;
                }
                ChatEvent::Charged { credits } => self.summary.model_credits += credits,
                ChatEvent::Finish { .. } => {}
            }
        }
        Ok((text, calls))
    }

    /// Runs one call within the tool deadline; the tool message that answers it. Only a tool
    /// source that cannot be reached fails the run; anything a tool does is a result.
    async fn call_tool(&self, call: &ToolCallRequest, offered: &[ToolSpec]) -> Result<ChatMessage> {
        let limits = self.agent.limits;
        self.emit(AgentEvent::ToolCallStarted {
            id: call.id.clone(),
            name: call.name.clone(),
        })
        .await?;
        let started = Instant::now();
        let reply = if offered.iter().any(|t| t.name == call.name) {
            let running = self.tools.call(&call.name, call.arguments.clone());
            match tokio::time::timeout(limits.tool_deadline, running).await {
                Ok(reply) => reply?,
                Err(_) => ToolReply {
                    text: format!(
                        "{} did not answer within {:?}",
                        call.name, limits.tool_deadline
                    ),
                    is_error: true,
                },
            }
        } else {
            ToolReply {
                text: format!(
                    "there is no tool {:?} here; use one of the tools offered",
                    call.name
                ),
                is_error: true,
            }
        };
        let chars = reply.text.chars().count();
        self.emit(AgentEvent::ToolCallFinished {
            id: call.id.clone(),
            name: call.name.clone(),
            is_error: reply.is_error,
            chars,
            elapsed: started.elapsed(),
        })
        .await?;
        let mut text = if reply.is_error {
            format!("Error: {}", reply.text)
        } else {
            reply.text
        };
        if chars > limits.max_tool_result_chars {
            text = text.chars().take(limits.max_tool_result_chars).collect();
            text.push_str(&format!(
                "\n[cut: the result had {chars} characters; the first {} are shown]",
                limits.max_tool_result_chars
            ));
        }
        Ok(ChatMessage::tool_result(call.id.clone(), text))
    }
}

/// A call's arguments: the JSON object the model wrote, or an empty one when it wrote none.
/// Arguments that are not an object are passed as `{"_raw": text}` so the tool's schema check
/// refuses them with a message the model can read.
fn parse_arguments(text: &str) -> JsonObject {
    if text.trim().is_empty() {
        return JsonObject::new();
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(arguments)) => arguments,
        _ => {
            let mut raw = JsonObject::new();
            raw.insert("_raw".into(), serde_json::Value::String(text.to_owned()));
            raw
        }
    }
}
