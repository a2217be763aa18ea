//! Model providers: chat (streamed, with tool calls), embeddings and image generation.

use std::pin::Pin;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, JsonObject, Result, ToolSpec};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering an assistant's tool call.
    Tool,
}

impl Role {
    /// The role's name as OpenAI's chat format and isa's stores spell it (`system`, `user`,
    /// `assistant`, `tool`), the same as its serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, by URL (`https:` or `data:`).
    ImageUrl {
        /// The URL.
        url: String,
    },
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRequest {
    /// The provider's id for this call, echoed back in the tool message that answers it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Arguments as the model produced them.
    pub arguments: JsonObject,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The author.
    pub role: Role,
    /// The content parts.
    pub content: Vec<ContentPart>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRequest>,
    /// For a `Tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A text message.
    ///
    /// ```
    /// use isa_core::{ChatMessage, Role};
    /// let m = ChatMessage::text(Role::User, "hello");
    /// assert_eq!(m.text_content(), "hello");
    /// ```
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: vec![ContentPart::Text { text: text.into() }],
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The tool message answering call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, text: impl Into<String>) -> Self {
        ChatMessage {
            tool_call_id: Some(call_id.into()),
            ..ChatMessage::text(Role::Tool, text)
        }
    }

    /// All text parts joined.
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A chat completion request, provider-neutral.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model id at the provider (`gpt-4.1-mini`, `claude-sonnet-4-5`, …).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sequences that end generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The answer's shape: JSON, or JSON following a schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// The caller's id for this request, sent as `x-request-id` by providers that take one: an
    /// isa model service charges an id at most once, so a request sent again is not paid twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Whether the model may, must or must not call tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// A call of this tool.
    Tool(String),
}

/// The shape of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following `schema`.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The JSON Schema.
        schema: JsonObject,
        /// Whether the provider must follow the schema exactly.
        strict: bool,
    },
}

/// Token counts reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished its answer.
    Stop,
    /// The model wants tool calls answered.
    ToolCalls,
    /// `max_tokens` was reached.
    Length,
    /// The provider filtered the content.
    ContentFilter,
    /// Anything else the provider said.
    Other(String),
}

/// One event of a streamed chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// More text of the answer.
    TextDelta {
        /// The new text.
        text: String,
    },
    /// A tool call begins. Calls are numbered from 0 in the order they start, whatever the
    /// provider numbers its content blocks.
    ToolCallStart {
        /// The call's number in this answer.
        index: u32,
        /// The provider's id for the call (made up when the provider gives none).
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of a tool call's arguments: a piece of JSON text. The pieces of one call, joined,
    /// are its arguments object.
    ToolCallDelta {
        /// The call's number, as in its [`ChatEvent::ToolCallStart`].
        index: u32,
        /// The next piece.
        arguments: String,
    },
    /// Token usage, usually near the end.
    Usage {
        /// The counts.
        usage: Usage,
    },
    /// The credits the serving isa model service charged for this answer (its `billing`
    /// extension of the OpenAI format); no other provider sends it.
    Charged {
        /// Credits taken from the caller's balance.
        credits: u64,
    },
    /// The last event of a successful stream.
    Finish {
        /// Why it stopped.
        reason: FinishReason,
    },
}

/// A stream of chat events.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent>> + Send>>;

/// A complete chat answer, gathered from a [`ChatStream`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message, with text and tool calls.
    pub message: ChatMessage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Token usage, when reported.
    pub usage: Option<Usage>,
}

impl ChatResponse {
    /// Gathers a stream into one answer; `provider` names the source in errors. Tool-call
    /// arguments must join into a JSON object.
    pub async fn gather(provider: &str, mut stream: ChatStream) -> Result<ChatResponse> {
        let mut text = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut usage = None;
        let mut finish_reason = None;
        let malformed = |message: String| Error::Upstream {
            service: provider.to_string(),
            status: None,
            message,
            retryable: false,
        };
        while let Some(event) = stream.next().await {
            match event? {
                ChatEvent::TextDelta { text: delta } => text.push_str(&delta),
                ChatEvent::ToolCallStart { index, id, name } => {
                    if index as usize != calls.len() {
                        return Err(malformed(format!("tool call {index} started out of order")));
                    }
                    calls.push((id, name, String::new()));
                }
                ChatEvent::ToolCallDelta { index, arguments } => {
                    let call = calls.get_mut(index as usize).ok_or_else(|| {
                        malformed(format!("arguments for unknown tool call {index}"))
                    })?;
                    call.2.push_str(&arguments);
                }
                ChatEvent::Usage { usage: u } => usage = Some(u),
                ChatEvent::Finish { reason } => finish_reason = Some(reason),
                ChatEvent::Charged { .. } => {}
            }
        }
        let finish_reason = finish_reason.ok_or_else(|| Error::Upstream {
            service: provider.to_string(),
            status: None,
            message: "stream ended without a finish event".into(),
            retryable: true,
        })?;
        let mut message = ChatMessage::text(Role::Assistant, text);
        for (id, name, arguments) in calls {
            let arguments = if arguments.trim().is_empty() {
                JsonObject::new()
            } else {
                serde_json::from_str(&arguments).map_err(|e| {
                    malformed(format!(
                        "arguments of tool call {name} are not a JSON object: {e}"
                    ))
                })?
            };
            message.tool_calls.push(ToolCallRequest {
                id,
                name,
                arguments,
            });
        }
        Ok(ChatResponse {
            message,
            finish_reason,
            usage,
        })
    }
}

/// An embeddings request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The model id at the provider.
    pub model: String,
    /// Texts to embed.
    pub input: Vec<String>,
    /// The length of the vectors, for models that can shorten them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// An embeddings response: one vector per input, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// The vectors.
    pub embeddings: Vec<Vec<f32>>,
    /// Token usage, when reported.
    pub usage: Option<Usage>,
}

/// An image generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRequest {
    /// The model id at the provider.
    pub model: String,
    /// What to draw.
    pub prompt: String,
    /// Size such as `1024x1024`, when the provider takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// How many images.
    #[serde(default = "one")]
    pub n: u32,
    /// Provider-specific extra inputs (Replicate's model inputs, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

fn one() -> u32 {
    1
}

/// A generated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GeneratedImage {
    /// A URL where the provider serves it.
    Url {
        /// The URL.
        url: String,
    },
    /// The bytes, base64-encoded.
    Base64 {
        /// Base64 data.
        data: String,
        /// Its media type.
        mime_type: String,
    },
}

/// What a provider can do, so a router can skip providers without a capability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Chat completions (streamed).
    pub chat: bool,
    /// Tool calls in chat.
    pub tools: bool,
    /// Embeddings.
    pub embeddings: bool,
    /// Image generation.
    pub images: bool,
}

/// A model provider: OpenAI (and compatible), Anthropic, Gemini, Replicate, Hugging Face, local.
///
/// Chat is streamed: [`ModelProvider::chat_stream`] is the required method and
/// [`ModelProvider::chat`] gathers the stream. Embeddings and images are optional capabilities
/// whose default answers [`Error::Unsupported`]. Errors say whether a retry (or failover to another
/// provider) may help via [`Error::is_retryable`].
///
/// ```
/// use futures::stream;
/// use isa_core::*;
///
/// /// Answers every request with "pong".
/// struct Pong;
///
/// #[async_trait]
/// impl ModelProvider for Pong {
///     fn name(&self) -> &str {
///         "pong"
///     }
///     fn capabilities(&self) -> Capabilities {
///         Capabilities { chat: true, ..Default::default() }
///     }
///     async fn chat_stream(&self, _request: ChatRequest) -> Result<ChatStream> {
///         Ok(Box::pin(stream::iter([
///             Ok(ChatEvent::TextDelta { text: "po".into() }),
///             Ok(ChatEvent::TextDelta { text: "ng".into() }),
///             Ok(ChatEvent::Finish { reason: FinishReason::Stop }),
///         ])))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let request = ChatRequest {
///     model: "any".into(),
///     messages: vec![ChatMessage::text(Role::User, "ping")],
///     ..Default::default()
/// };
/// let answer = Pong.chat(request).await.unwrap();
/// assert_eq!(answer.message.text_content(), "pong");
/// let err = Pong.embed(EmbeddingRequest::default()).await.unwrap_err();
/// assert!(matches!(err, Error::Unsupported(_)));
/// # });
/// ```
#[async_trait]
pub trait ModelProvider: Send + Sync {
    /// A short name for logs, metrics and failover order (`openai`, `anthropic`, …).
    fn name(&self) -> &str;

    /// What this provider supports.
    fn capabilities(&self) -> Capabilities;

    /// Starts a streamed chat completion.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream>;

    /// A complete chat answer, gathered from [`ModelProvider::chat_stream`].
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let stream = self.chat_stream(request).await?;
        ChatResponse::gather(self.name(), stream).await
    }

    /// Embeds texts. Default: unsupported.
    async fn embed(&self, _request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        Err(Error::Unsupported(format!(
            "{} does not offer embeddings",
            self.name()
        )))
    }

    /// Generates images. Default: unsupported.
    async fn generate_image(&self, _request: ImageRequest) -> Result<Vec<GeneratedImage>> {
        Err(Error::Unsupported(format!(
            "{} does not generate images",
            self.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn gather(events: Vec<Result<ChatEvent>>) -> Result<ChatResponse> {
        futures::executor::block_on(ChatResponse::gather("test", Box::pin(stream::iter(events))))
    }

    fn start(index: u32, name: &str) -> Result<ChatEvent> {
        Ok(ChatEvent::ToolCallStart {
            index,
            id: format!("c{index}"),
            name: name.into(),
        })
    }

    fn piece(index: u32, arguments: &str) -> Result<ChatEvent> {
        Ok(ChatEvent::ToolCallDelta {
            index,
            arguments: arguments.into(),
        })
    }

    #[test]
    fn pieces_of_parallel_calls_are_joined_per_call() {
        let finish = Ok(ChatEvent::Finish {
            reason: FinishReason::ToolCalls,
        });
        let answer = gather(vec![
            start(0, "a"),
            start(1, "b"),
            piece(1, "{\"y\":"),
            piece(0, "{\"x\""),
            piece(0, ":1}"),
            piece(1, "2}"),
            finish,
        ])
        .unwrap();
        let calls = &answer.message.tool_calls;
        assert_eq!(
            (calls[0].name.as_str(), &calls[0].arguments["x"]),
            ("a", &serde_json::json!(1))
        );
        assert_eq!(
            (calls[1].name.as_str(), &calls[1].arguments["y"]),
            ("b", &serde_json::json!(2))
        );
        assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    }

    #[test]
    fn broken_streams_are_errors() {
        let finish = || {
            Ok(ChatEvent::Finish {
                reason: FinishReason::Stop,
            })
        };
        let no_finish = gather(vec![Ok(ChatEvent::TextDelta { text: "hi".into() })]).unwrap_err();
        assert!(no_finish.is_retryable(), "a stream cut short may pass");
        let out_of_order = gather(vec![start(1, "a"), finish()]).unwrap_err();
        assert!(out_of_order.to_string().contains("out of order"));
        let unknown = gather(vec![piece(0, "{}"), finish()]).unwrap_err();
        assert!(unknown.to_string().contains("unknown tool call"));
        let not_json = gather(vec![start(0, "a"), piece(0, "{\"x\""), finish()]).unwrap_err();
        assert!(!not_json.is_retryable() && not_json.to_string().contains("not a JSON object"));
    }
}
