//! Google Gemini: `streamGenerateContent?alt=sse` (one `GenerateContentResponse` per event, no
//! `[DONE]`, function calls whole and often without an id) and `batchEmbedContents`.

use async_trait::async_trait;
use isa_core::{
    Capabilities, ChatEvent, ChatRequest, ChatStream, ContentPart, EmbeddingRequest,
    EmbeddingResponse, Error, FinishReason, ModelProvider, ResponseFormat, Result, Role,
    ToolChoice, Usage,
};
use serde_json::{Map, Value, json};

use super::{
    http::Endpoint,
    openai::made_up_call_id,
    stream::{StreamDecoder, decode_sse},
};

/// Gemini's API base.
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// Google's Gemini API.
#[derive(Debug, Clone)]
pub struct Gemini {
    endpoint: Endpoint,
    api_key: String,
}

impl Gemini {
    /// Gemini at `base_url` (normally [`GEMINI_BASE_URL`]).
    pub fn new(name: &str, base_url: &str, api_key: String) -> Result<Self> {
        Ok(Gemini {
            endpoint: Endpoint::new(name, base_url)?,
            api_key,
        })
    }

    fn post(&self, path: String) -> reqwest::RequestBuilder {
        self.endpoint
            .client
            .post(self.endpoint.url(&path))
            .header("x-goog-api-key", &self.api_key)
    }
}

/// The `generateContent` request for a chat request.
pub(crate) fn generate_body(request: &ChatRequest) -> Result<Value> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for message in &request.messages {
        let (role, mut parts) = match message.role {
            Role::System => {
                system.push(json!({"text": message.text_content()}));
                continue;
            }
            Role::User => ("user", parts_of(&message.content)?),
            Role::Assistant => {
                let mut parts = parts_of(&message.content)?;
                for call in &message.tool_calls {
                    parts.push(json!({"functionCall": {"id": call.id, "name": call.name, "args": call.arguments}}));
                }
                ("model", parts)
            }
            Role::Tool => {
                let id = message
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| Error::invalid("a tool message needs tool_call_id"))?;
                // Gemini matches a result to its call by the function's name.
                let name = request
                    .messages
                    .iter()
                    .flat_map(|m| &m.tool_calls)
                    .find(|c| c.id == id)
                    .map(|c| c.name.clone())
                    .ok_or_else(|| Error::invalid(format!("tool result for unknown call {id}")))?;
                let text = message.text_content();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => Value::Object(object),
                    _ => json!({"result": text}),
                };
                (
                    "user",
                    vec![
                        json!({"functionResponse": {"id": id, "name": name, "response": response}}),
                    ],
                )
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.append(&mut parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if !request.tools.is_empty() {
        let declarations = request.tools.iter().map(|t| {
            json!({"name": t.name, "description": t.description, "parametersJsonSchema": t.input_schema})
        });
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations.collect::<Vec<_>>()}]),
        );
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    let mut generation = Map::new();
    if let Some(t) = request.temperature {
        generation.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        generation.insert("topP".into(), json!(p));
    }
    if let Some(max) = request.max_tokens {
        generation.insert("maxOutputTokens".into(), json!(max));
    }
    if !request.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(request.stop));
    }
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
            generation.insert("responseJsonSchema".into(), Value::Object(schema.clone()));
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(body))
}

fn parts_of(content: &[ContentPart]) -> Result<Vec<Value>> {
    let mut parts = Vec::new();
    for part in content {
        match part {
            ContentPart::Text { text } if text.is_empty() => {}
            ContentPart::Text { text } => parts.push(json!({"text": text})),
            ContentPart::ImageUrl { url } => match url.strip_prefix("data:") {
                Some(rest) => {
                    let (mime, data) = rest
                        .split_once(";base64,")
                        .ok_or_else(|| Error::invalid("an image data URL must be base64"))?;
                    parts.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                }
                None => parts.push(json!({"fileData": {"fileUri": url}})),
            },
        }
    }
    Ok(parts)
}

/// Reads Gemini's stream: each event a whole response; the last one carries `finishReason`.
#[derive(Default)]
struct ResponseReader {
    calls: u32,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
}

impl StreamDecoder for ResponseReader {
    fn read(
        &mut self,
        endpoint: &Endpoint,
        _name: Option<&str>,
        data: &Value,
        out: &mut Vec<ChatEvent>,
    ) -> Result<()> {
        if let Some(error) = data.get("error") {
            let status = error["code"].as_u64().map(|c| c as u16);
            return Err(Error::Upstream {
                service: endpoint.name.clone(),
                status,
                message: error["message"]
                    .as_str()
                    .unwrap_or("error in stream")
                    .to_owned(),
                retryable: status.is_none_or(|s| s == 429 || s >= 500),
            });
        }
        if let Some(usage) = data.get("usageMetadata") {
            self.usage = Some(Usage {
                input_tokens: usage["promptTokenCount"].as_u64().unwrap_or(0),
                output_tokens: usage["candidatesTokenCount"].as_u64().unwrap_or(0)
                    + usage["thoughtsTokenCount"].as_u64().unwrap_or(0),
            });
        }
        if let Some(reason) = data["promptFeedback"]["blockReason"].as_str() {
            self.finish = Some(FinishReason::ContentFilter);
            tracing::debug!(reason, "Gemini blocked the prompt");
        }
        let Some(candidate) = data["candidates"].as_array().and_then(|c| c.first()) else {
            return Ok(());
        };
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if part["thought"].as_bool() == Some(true) {
                continue;
            }
            if let Some(call) = part.get("functionCall") {
                let index = self.calls;
                self.calls += 1;
                let id = match call["id"].as_str() {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => made_up_call_id(),
                };
                let name = call["name"]
                    .as_str()
                    .ok_or_else(|| endpoint.malformed("functionCall: no name"))?;
                out.push(ChatEvent::ToolCallStart {
                    index,
                    id,
                    name: name.to_owned(),
                });
                let args = match &call["args"] {
                    Value::Null => "{}".to_owned(),
                    args => args.to_string(),
                };
                out.push(ChatEvent::ToolCallDelta {
                    index,
                    arguments: args,
                });
            } else if let Some(text) = part["text"].as_str().filter(|t| !t.is_empty()) {
                out.push(ChatEvent::TextDelta {
                    text: text.to_owned(),
                });
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            self.finish = Some(match reason {
                "STOP" if self.calls > 0 => FinishReason::ToolCalls,
                "STOP" => FinishReason::Stop,
                "MAX_TOKENS" => FinishReason::Length,
                "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => {
                    FinishReason::ContentFilter
                }
                other => FinishReason::Other(other.to_lowercase()),
            });
        }
        Ok(())
    }

    fn finish(&mut self, endpoint: &Endpoint, out: &mut Vec<ChatEvent>) -> Result<()> {
        let reason = self.finish.take().ok_or_else(|| Error::Upstream {
            service: endpoint.name.clone(),
            status: None,
            message: "stream ended before a finishReason".into(),
            retryable: true,
        })?;
        if let Some(usage) = self.usage.take() {
            out.push(ChatEvent::Usage { usage });
        }
        out.push(ChatEvent::Finish { reason });
        Ok(())
    }
}

#[async_trait]
impl ModelProvider for Gemini {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            tools: true,
            embeddings: true,
            images: false,
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = generate_body(&request)?;
        let path = format!("/models/{}:streamGenerateContent?alt=sse", request.model);
        let response = self.endpoint.send(self.post(path).json(&body)).await?;
        Ok(decode_sse(
            self.endpoint.clone(),
            response,
            ResponseReader::default(),
        ))
    }

    async fn embed(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        let model = format!("models/{}", request.model);
        let requests: Vec<Value> = request
            .input
            .iter()
            .map(|text| {
                let mut one = json!({"model": model, "content": {"parts": [{"text": text}]}});
                if let Some(d) = request.dimensions {
                    one["outputDimensionality"] = json!(d);
                }
                one
            })
            .collect();
        let path = format!("/{model}:batchEmbedContents");
        let answer: Value = self
            .endpoint
            .send_json(self.post(path).json(&json!({"requests": requests})))
            .await?;
        let embeddings = answer["embeddings"]
            .as_array()
            .ok_or_else(|| self.endpoint.malformed("embeddings answer"))?
            .iter()
            .map(|e| super::float_vector(&e["values"]))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.endpoint.malformed("embedding values"))?;
        if embeddings.len() != request.input.len() {
            return Err(self
                .endpoint
                .malformed("embeddings answer: count differs from inputs"));
        }
        Ok(EmbeddingResponse {
            embeddings,
            usage: None,
        })
    }
}
