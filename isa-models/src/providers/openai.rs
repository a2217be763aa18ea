//! OpenAI's chat completions, embeddings and images, and every server that speaks the same
//! format by base URL (vLLM, Ollama, TEI, LM Studio, Hugging Face's router).

use std::collections::HashMap;

use async_trait::async_trait;
use base64::Engine;
use isa_core::{
    Capabilities, ChatEvent, ChatMessage, ChatRequest, ChatStream, ContentPart, EmbeddingRequest,
    EmbeddingResponse, Error, FinishReason, GeneratedImage, ImageRequest, ModelProvider,
    ResponseFormat, Result, ToolChoice, Usage,
};
use serde_json::{Map, Value, json};

use super::{
    http::Endpoint,
    stream::{StreamDecoder, decode_sse},
};

/// OpenAI's API base.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A provider speaking OpenAI's format.
#[derive(Debug, Clone)]
pub struct OpenAi {
    endpoint: Endpoint,
    api_key: Option<String>,
    /// Headers sent with every request besides the key.
    headers: reqwest::header::HeaderMap,
    /// OpenAI itself takes `max_completion_tokens`; compatible servers know `max_tokens`.
    native: bool,
    capabilities: Capabilities,
}

impl OpenAi {
    /// OpenAI at `base_url` (normally [`OPENAI_BASE_URL`]).
    pub fn new(name: &str, base_url: &str, api_key: Option<String>) -> Result<Self> {
        Ok(OpenAi {
            endpoint: Endpoint::new(name, base_url)?,
            api_key,
            headers: reqwest::header::HeaderMap::new(),
            native: true,
            capabilities: Capabilities {
                chat: true,
                tools: true,
                embeddings: true,
                images: true,
            },
        })
    }

    /// A server that speaks OpenAI's format (vLLM, Ollama, TEI, LM Studio, …) at `base_url`;
    /// it is asked for chat and embeddings, not images.
    pub fn compatible(name: &str, base_url: &str, api_key: Option<String>) -> Result<Self> {
        let mut provider = OpenAi::new(name, base_url, api_key)?;
        provider.native = false;
        provider.capabilities.images = false;
        Ok(provider)
    }

    /// The same provider, sharing its connections, authenticating with `api_key` instead: how
    /// a service calls another on behalf of each of its callers.
    pub fn with_api_key(&self, api_key: Option<String>) -> Self {
        OpenAi {
            api_key,
            ..self.clone()
        }
    }

    /// The same provider sending the header `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self> {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| Error::Config(format!("header name {name:?}: {e}")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|e| Error::Config(format!("header value for {name}: {e}")))?;
        self.headers.insert(name, value);
        Ok(self)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .endpoint
            .client
            .post(self.endpoint.url(path))
            .headers(self.headers.clone());
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// The request body for a streamed chat completion.
    fn chat_body(&self, request: &ChatRequest) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        let messages: Vec<Value> = request.messages.iter().map(message_to_wire).collect();
        body.insert("messages".into(), Value::Array(messages));
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.input_schema,
                }})
            });
            body.insert("tools".into(), Value::Array(tools.collect()));
        }
        if let Some(choice) = &request.tool_choice {
            body.insert("tool_choice".into(), tool_choice_to_wire(choice));
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if let Some(max) = request.max_tokens {
            let field = if self.native {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(field.into(), json!(max));
        }
        if !request.stop.is_empty() {
            body.insert("stop".into(), json!(request.stop));
        }
        if let Some(format) = &request.response_format {
            body.insert("response_format".into(), response_format_to_wire(format));
        }
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        Value::Object(body)
    }
}

/// A message in OpenAI's shape.
pub(crate) fn message_to_wire(message: &ChatMessage) -> Value {
    let role = message.role.as_str();
    let only_text = message
        .content
        .iter()
        .all(|p| matches!(p, ContentPart::Text { .. }));
    let content = if only_text {
        json!(message.text_content())
    } else {
        let parts = message.content.iter().map(|part| match part {
            ContentPart::Text { text } => json!({"type": "text", "text": text}),
            ContentPart::ImageUrl { url } => {
                json!({"type": "image_url", "image_url": {"url": url}})
            }
        });
        Value::Array(parts.collect())
    };
    let mut wire = json!({"role": role, "content": content});
    if !message.tool_calls.is_empty() {
        let calls = message.tool_calls.iter().map(|call| {
            json!({"id": call.id, "type": "function", "function": {
                "name": call.name, "arguments": Value::Object(call.arguments.clone()).to_string(),
            }})
        });
        wire["tool_calls"] = Value::Array(calls.collect());
        if message.text_content().is_empty() {
            wire["content"] = Value::Null;
        }
    }
    if let Some(id) = &message.tool_call_id {
        wire["tool_call_id"] = json!(id);
    }
    wire
}

pub(crate) fn tool_choice_to_wire(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

pub(crate) fn response_format_to_wire(format: &ResponseFormat) -> Value {
    match format {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => json!({"type": "json_schema", "json_schema": {
            "name": name, "schema": schema, "strict": strict,
        }}),
    }
}

/// OpenAI's `finish_reason` in the neutral form.
pub(crate) fn finish_reason_from_wire(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Turns OpenAI's chunks into events: tool calls numbered in the order they start, the finish
/// reason held back until usage (which OpenAI sends after it) has had its chance.
#[derive(Default)]
struct ChunkReader {
    /// Upstream tool call index → ours.
    calls: HashMap<u64, u32>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// Credits an isa model service reported charging (`billing.credits`).
    charged: Option<u64>,
}

impl StreamDecoder for ChunkReader {
    fn read(
        &mut self,
        endpoint: &Endpoint,
        _event: Option<&str>,
        chunk: &Value,
        out: &mut Vec<ChatEvent>,
    ) -> Result<()> {
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error in stream");
            return Err(Error::Upstream {
                service: endpoint.name.clone(),
                status: None,
                message: message.to_owned(),
                retryable: true,
            });
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(Usage {
                input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        if let Some(credits) = chunk["billing"]["credits"].as_u64() {
            self.charged = Some(credits);
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            return Ok(());
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            out.push(ChatEvent::TextDelta {
                text: text.to_owned(),
            });
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let upstream = call["index"].as_u64().unwrap_or(self.calls.len() as u64);
            let index = match self.calls.get(&upstream) {
                Some(index) => *index,
                None => {
                    let index = self.calls.len() as u32;
                    self.calls.insert(upstream, index);
                    let name = call["function"]["name"].as_str().unwrap_or_default();
                    let id = match call["id"].as_str() {
                        Some(id) if !id.is_empty() => id.to_owned(),
                        _ => made_up_call_id(),
                    };
                    out.push(ChatEvent::ToolCallStart {
                        index,
                        id,
                        name: name.to_owned(),
                    });
                    index
                }
            };
            if let Some(arguments) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                out.push(ChatEvent::ToolCallDelta {
                    index,
                    arguments: arguments.to_owned(),
                });
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(finish_reason_from_wire(reason));
        }
        Ok(())
    }

    /// The events that end the stream, or an error if it ended before its finish.
    fn finish(&mut self, endpoint: &Endpoint, out: &mut Vec<ChatEvent>) -> Result<()> {
        let Some(reason) = self.finish.take() else {
            return Err(Error::Upstream {
                service: endpoint.name.clone(),
                status: None,
                message: "stream ended before its finish reason".into(),
                retryable: true,
            });
        };
        if let Some(usage) = self.usage.take() {
            out.push(ChatEvent::Usage { usage });
        }
        if let Some(credits) = self.charged.take() {
            out.push(ChatEvent::Charged { credits });
        }
        out.push(ChatEvent::Finish { reason });
        Ok(())
    }
}

/// A call id for providers that give none, in OpenAI's style.
pub(crate) fn made_up_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

#[async_trait]
impl ModelProvider for OpenAi {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.chat_body(&request);
        let mut post = self.post("/chat/completions").json(&body);
        if let Some(id) = &request.request_id {
            post = post.header("x-request-id", id);
        }
        let response = self.endpoint.send(post).await?;
        Ok(decode_sse(
            self.endpoint.clone(),
            response,
            ChunkReader::default(),
        ))
    }

    async fn embed(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        let mut body =
            json!({"model": request.model, "input": request.input, "encoding_format": "base64"});
        if let Some(dimensions) = request.dimensions {
            body["dimensions"] = json!(dimensions);
        }
        let answer: Value = self
            .endpoint
            .send_json(self.post("/embeddings").json(&body))
            .await?;
        let mut rows: Vec<(u64, Vec<f32>)> = Vec::new();
        for item in answer["data"].as_array().into_iter().flatten() {
            let index = item["index"].as_u64().unwrap_or(rows.len() as u64);
            let vector = match &item["embedding"] {
                Value::String(b64) => decode_base64_floats(b64)
                    .ok_or_else(|| self.endpoint.malformed("base64 embedding"))?,
                other => super::float_vector(other)
                    .ok_or_else(|| self.endpoint.malformed("embedding"))?,
            };
            rows.push((index, vector));
        }
        rows.sort_by_key(|(index, _)| *index);
        if rows.len() != request.input.len() {
            return Err(self.endpoint.malformed(format!(
                "answer: {} embeddings for {} inputs",
                rows.len(),
                request.input.len()
            )));
        }
        let tokens = answer["usage"]["prompt_tokens"].as_u64();
        Ok(EmbeddingResponse {
            embeddings: rows.into_iter().map(|(_, v)| v).collect(),
            usage: tokens.map(|input_tokens| Usage {
                input_tokens,
                output_tokens: 0,
            }),
        })
    }

    async fn generate_image(&self, request: ImageRequest) -> Result<Vec<GeneratedImage>> {
        if !self.capabilities.images {
            return Err(Error::Unsupported(format!(
                "{} does not generate images",
                self.name()
            )));
        }
        let mut body = json!({"model": request.model, "prompt": request.prompt, "n": request.n});
        if let Some(size) = &request.size {
            body["size"] = json!(size);
        }
        if let Some(Value::Object(extra)) = &request.extra {
            for (key, value) in extra {
                body[key] = value.clone();
            }
        }
        let answer: Value = self
            .endpoint
            .send_json(self.post("/images/generations").json(&body))
            .await?;
        let mut images = Vec::new();
        for item in answer["data"].as_array().into_iter().flatten() {
            if let Some(url) = item["url"].as_str() {
                images.push(GeneratedImage::Url {
                    url: url.to_owned(),
                });
            } else if let Some(data) = item["b64_json"].as_str() {
                images.push(GeneratedImage::Base64 {
                    data: data.to_owned(),
                    mime_type: "image/png".into(),
                });
            }
        }
        if images.is_empty() {
            return Err(self.endpoint.malformed("image answer: no images"));
        }
        Ok(images)
    }
}

/// Little-endian `f32`s from base64, as OpenAI sends embeddings with `encoding_format: base64`.
pub(crate) fn decode_base64_floats(b64: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}
