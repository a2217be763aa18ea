//! Anthropic's Messages API: system prompt apart, tool use and tool results as content blocks,
//! and a stream of typed events whose block `index` counts text blocks too.

use std::collections::HashMap;

use async_trait::async_trait;
use isa_core::{
    Capabilities, ChatEvent, ChatMessage, ChatRequest, ChatStream, ContentPart, Error,
    FinishReason, ModelProvider, ResponseFormat, Result, Role, ToolChoice, Usage,
};
use serde_json::{Map, Value, json};

use super::{
    http::Endpoint,
    stream::{StreamDecoder, decode_sse},
};

/// Anthropic's API base.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The API version sent in `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; this is sent when the caller gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Anthropic's Messages API.
#[derive(Debug, Clone)]
pub struct Anthropic {
    endpoint: Endpoint,
    api_key: String,
}

impl Anthropic {
    /// Anthropic at `base_url` (normally [`ANTHROPIC_BASE_URL`]).
    pub fn new(name: &str, base_url: &str, api_key: String) -> Result<Self> {
        Ok(Anthropic {
            endpoint: Endpoint::new(name, base_url)?,
            api_key,
        })
    }
}

/// The Messages request for a chat request.
pub(crate) fn messages_body(request: &ChatRequest) -> Result<Value> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for message in &request.messages {
        match message.role {
            Role::System => system.push(message.text_content()),
            Role::User => push_blocks(&mut messages, "user", content_blocks(message)?),
            Role::Assistant => {
                let mut blocks = content_blocks(message)?;
                for call in &message.tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}));
                }
                push_blocks(&mut messages, "assistant", blocks);
            }
            Role::Tool => {
                let id = message
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| Error::invalid("a tool message needs tool_call_id"))?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": message.text_content()});
                push_blocks(&mut messages, "user", vec![block]);
            }
        }
    }
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            system.push("Answer with one JSON object and nothing else.".into())
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => system.push(format!(
            "Answer with one JSON object and nothing else, following this JSON Schema: {}",
            Value::Object(schema.clone())
        )),
        Some(ResponseFormat::Text) | None => {}
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools = request.tools.iter().map(|t| {
            json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})
        });
        body.insert("tools".into(), Value::Array(tools.collect()));
    }
    if let Some(choice) = &request.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        body.insert("tool_choice".into(), choice);
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    body.insert("stream".into(), json!(true));
    Ok(Value::Object(body))
}

/// Messages must alternate: blocks for the same role as the last message join it (several
/// tool results answer one assistant turn in one user message).
fn push_blocks(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

fn content_blocks(message: &ChatMessage) -> Result<Vec<Value>> {
    let mut blocks = Vec::new();
    for part in &message.content {
        match part {
            ContentPart::Text { text } if text.is_empty() => {}
            ContentPart::Text { text } => blocks.push(json!({"type": "text", "text": text})),
            ContentPart::ImageUrl { url } => blocks.push(image_block(url)?),
        }
    }
    Ok(blocks)
}

fn image_block(url: &str) -> Result<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| Error::invalid("an image data URL must be base64"))?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// Anthropic's `stop_reason` in the neutral form.
pub(crate) fn stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Reads Anthropic's stream: block indexes of `tool_use` blocks become tool call numbers.
#[derive(Default)]
struct EventReader {
    /// Content block index → tool call number.
    tool_blocks: HashMap<u64, u32>,
    usage: Usage,
    finish: Option<FinishReason>,
    stopped: bool,
}

impl StreamDecoder for EventReader {
    fn read(
        &mut self,
        endpoint: &Endpoint,
        name: Option<&str>,
        data: &Value,
        out: &mut Vec<ChatEvent>,
    ) -> Result<()> {
        let kind = data["type"].as_str().or(name).unwrap_or_default();
        match kind {
            "message_start" => {
                let usage = &data["message"]["usage"];
                self.usage.input_tokens = usage["input_tokens"].as_u64().unwrap_or(0)
                    + usage["cache_read_input_tokens"].as_u64().unwrap_or(0)
                    + usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                self.usage.output_tokens = usage["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let block = &data["content_block"];
                let block_index = data["index"]
                    .as_u64()
                    .ok_or_else(|| endpoint.malformed("content_block_start: no index"))?;
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let index = self.tool_blocks.len() as u32;
                        self.tool_blocks.insert(block_index, index);
                        let id = block["id"]
                            .as_str()
                            .ok_or_else(|| endpoint.malformed("tool_use block: no id"))?;
                        let name = block["name"]
                            .as_str()
                            .ok_or_else(|| endpoint.malformed("tool_use block: no name"))?;
                        out.push(ChatEvent::ToolCallStart {
                            index,
                            id: id.to_owned(),
                            name: name.to_owned(),
                        });
                        // A block may start with its input whole; it starts as `{}` when streamed.
                        if let Some(input) = block["input"].as_object().filter(|i| !i.is_empty()) {
                            out.push(ChatEvent::ToolCallDelta {
                                index,
                                arguments: Value::Object(input.clone()).to_string(),
                            });
                        }
                    }
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(ChatEvent::TextDelta {
                                text: text.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(ChatEvent::TextDelta {
                                text: text.to_owned(),
                            });
                        }
                    }
                    Some("input_json_delta") => {
                        let block_index = data["index"].as_u64().unwrap_or(u64::MAX);
                        let index = *self
                            .tool_blocks
                            .get(&block_index)
                            .ok_or_else(|| endpoint.malformed(format!("input_json_delta for block {block_index}, which is not a tool_use block")))?;
                        if let Some(piece) =
                            delta["partial_json"].as_str().filter(|p| !p.is_empty())
                        {
                            out.push(ChatEvent::ToolCallDelta {
                                index,
                                arguments: piece.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.finish = Some(stop_reason(reason));
                }
                if let Some(output) = data["usage"]["output_tokens"].as_u64() {
                    self.usage.output_tokens = output;
                }
                if let Some(input) = data["usage"]["input_tokens"].as_u64().filter(|i| *i > 0) {
                    self.usage.input_tokens = input;
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let error = &data["error"];
                let class = error["type"].as_str().unwrap_or("error");
                return Err(Error::Upstream {
                    service: endpoint.name.clone(),
                    status: None,
                    message: format!("{class}: {}", error["message"].as_str().unwrap_or_default()),
                    retryable: matches!(
                        class,
                        "overloaded_error" | "api_error" | "rate_limit_error"
                    ),
                });
            }
            // `ping`, `content_block_stop` and types added later carry nothing to pass on.
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, endpoint: &Endpoint, out: &mut Vec<ChatEvent>) -> Result<()> {
        match self.finish.take() {
            Some(reason) if self.stopped => {
                out.push(ChatEvent::Usage { usage: self.usage });
                out.push(ChatEvent::Finish { reason });
                Ok(())
            }
            _ => Err(Error::Upstream {
                service: endpoint.name.clone(),
                status: None,
                message: "stream ended before message_stop".into(),
                retryable: true,
            }),
        }
    }
}

#[async_trait]
impl ModelProvider for Anthropic {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            tools: true,
            ..Default::default()
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = messages_body(&request)?;
        let http = self
            .endpoint
            .client
            .post(self.endpoint.url("/v1/messages"))
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&body);
        let response = self.endpoint.send(http).await?;
        Ok(decode_sse(
            self.endpoint.clone(),
            response,
            EventReader::default(),
        ))
    }
}
