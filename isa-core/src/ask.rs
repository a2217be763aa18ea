//! What a running tool (or prompt, or resource) can ask the client that called it: the user,
//! through an elicitation; the client's model, through sampling; the client's roots.
//!
//! A tool asks through its [`CallContext`](crate::CallContext) (`ctx.elicit`, `ctx.sample`,
//! `ctx.roots`) and the same code works in both MCP revisions: over a 2025-11-25 session the
//! question is a request from server to client and the call waits for the answer; over
//! 2026-07-28 the call ends with an input-required result and runs again, from the start,
//! when the client calls back with the answers. So a tool should ask before it acts: what it
//! did before asking is done again on every round.
//!
//! Each question has a key, unique within the call: the answer to a key is reused when the
//! call runs again, and keys name the questions on the wire.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{Error, PromptRole, Result};

/// A capability the client declares when it can answer a kind of question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCapability {
    /// Asking the user (`elicitation/create`).
    Elicitation,
    /// Asking the client's model (`sampling/createMessage`).
    Sampling,
    /// Listing the client's roots (`roots/list`).
    Roots,
}

impl ClientCapability {
    /// The capability's name in MCP's `ClientCapabilities`.
    pub fn name(self) -> &'static str {
        match self {
            ClientCapability::Elicitation => "elicitation",
            ClientCapability::Sampling => "sampling",
            ClientCapability::Roots => "roots",
        }
    }

    fn method(self) -> &'static str {
        match self {
            ClientCapability::Elicitation => "elicitation/create",
            ClientCapability::Sampling => "sampling/createMessage",
            ClientCapability::Roots => "roots/list",
        }
    }
}

/// One question for the client, in MCP's wire shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRequest {
    /// What kind of question it is.
    pub capability: ClientCapability,
    /// The request's `params`, as MCP defines them for its method.
    pub params: Value,
}

impl ClientRequest {
    /// The JSON-RPC method that carries it (`elicitation/create`, …).
    pub fn method(&self) -> &'static str {
        self.capability.method()
    }

    /// `{"method": …, "params": …}`, the shape of an entry of `inputRequests`.
    pub fn to_json(&self) -> Value {
        json!({"method": self.method(), "params": self.params})
    }
}

/// The way to the client that made a call; the MCP service gives one to every call it serves.
#[async_trait]
pub trait ClientChannel: Send + Sync {
    /// Whether the client declared `capability`.
    fn supports(&self, capability: ClientCapability) -> bool;

    /// Asks the client and returns its answer (the JSON-RPC result). Over 2026-07-28, when the
    /// answer is not known yet, the question is recorded and this fails with
    /// [`Error::Suspended`], which the tool should return as it is.
    async fn ask(&self, key: &str, request: ClientRequest) -> Result<Value>;

    /// Where the call goes on as a task when the client accepts tasks: fails with
    /// [`Error::Suspended`] in the request, which then answers with the task, and returns at
    /// once in the task (and wherever the call cannot become one).
    async fn continue_as_task(&self) -> Result<()> {
        Ok(())
    }
}

/// What the user did with an elicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElicitAction {
    /// Answered; the content holds the answer.
    Accept,
    /// Said no.
    Decline,
    /// Dismissed the question without choosing.
    Cancel,
}

/// The user's answer to an elicitation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Elicited {
    /// Whether the user answered, declined or dismissed the question.
    pub action: ElicitAction,
    /// The answer, matching the requested schema, when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Map<String, Value>>,
}

impl Elicited {
    /// The answer's field `name`, when the user accepted and gave it.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self.action {
            ElicitAction::Accept => self.content.as_ref()?.get(name),
            _ => None,
        }
    }
}

/// A request to the client's model.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRequest {
    /// The conversation so far; text messages.
    pub messages: Vec<(PromptRole, String)>,
    /// The most tokens the answer may have.
    pub max_tokens: u32,
    /// A system prompt the client may use.
    pub system_prompt: Option<String>,
}

impl SamplingRequest {
    /// One user message.
    pub fn user(text: impl Into<String>, max_tokens: u32) -> Self {
        SamplingRequest {
            messages: vec![(PromptRole::User, text.into())],
            max_tokens,
            system_prompt: None,
        }
    }

    fn params(&self) -> Value {
        let messages: Vec<Value> = self
            .messages
            .iter()
            .map(|(role, text)| json!({"role": role, "content": {"type": "text", "text": text}}))
            .collect();
        let mut params = json!({"messages": messages, "maxTokens": self.max_tokens});
        if let Some(system) = &self.system_prompt {
            params["systemPrompt"] = json!(system);
        }
        params
    }
}

/// The client model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sampled {
    /// The model that answered, as the client names it.
    #[serde(default)]
    pub model: String,
    /// Why it stopped (`endTurn`, `maxTokens`, …), when the client says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The answer's content (a text, image or audio block, or a list of them).
    pub content: Value,
}

impl Sampled {
    /// The answer's text: its text blocks joined.
    pub fn text(&self) -> String {
        let blocks = match &self.content {
            Value::Array(blocks) => blocks.iter().collect(),
            block => vec![block],
        };
        blocks
            .into_iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One of the client's roots: a directory or place it lets servers work in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Root {
    /// The root's URI (`file:///home/me/project`).
    pub uri: String,
    /// Its name for people, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Asks through `channel`, refusing at once what the client did not declare, and reads the
/// answer as `T`.
pub(crate) async fn ask<T: serde::de::DeserializeOwned>(
    channel: Option<&dyn ClientChannel>,
    key: &str,
    request: ClientRequest,
) -> Result<T> {
    let capability = request.capability;
    let Some(channel) = channel else {
        return Err(Error::Unsupported(format!(
            "this call has no client to ask ({} needs an MCP client)",
            capability.method()
        )));
    };
    if !channel.supports(capability) {
        return Err(Error::Unsupported(format!(
            "the client did not declare the {} capability",
            capability.name()
        )));
    }
    let answer = channel.ask(key, request).await?;
    serde_json::from_value(answer).map_err(|e| {
        Error::invalid(format!(
            "the client's answer to {key:?} is not a {} result: {e}",
            capability.method()
        ))
    })
}

pub(crate) fn elicitation(message: &str, schema: Value) -> ClientRequest {
    ClientRequest {
        capability: ClientCapability::Elicitation,
        params: json!({"message": message, "requestedSchema": schema}),
    }
}

pub(crate) fn sampling(request: &SamplingRequest) -> ClientRequest {
    ClientRequest {
        capability: ClientCapability::Sampling,
        params: request.params(),
    }
}

pub(crate) fn roots() -> ClientRequest {
    ClientRequest {
        capability: ClientCapability::Roots,
        params: json!({}),
    }
}

#[derive(Deserialize)]
pub(crate) struct RootList {
    pub roots: Vec<Root>,
}
