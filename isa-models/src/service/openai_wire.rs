//! OpenAI's request and answer shapes at the service's front door: requests read field by
//! field (an error names the field), answers and stream chunks written the way OpenAI's SDKs
//! read them.

use bytes::Bytes;
use isa_core::{
    ChatEvent, ChatMessage, ChatRequest, ContentPart, Error, FinishReason, JsonObject,
    ResponseFormat, Result, Role, ToolCallRequest, ToolChoice, ToolSpec, Usage,
};
use serde_json::{Map, Value, json};

use super::{field, flag, string};

/// A chat completion request as read from the wire.
pub struct ChatCall {
    /// The neutral request (its `model` is the name the caller asked for).
    pub request: ChatRequest,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

fn number(
    body: &Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f32>> {
    match field(body, name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if range.contains(&n) => Ok(Some(n as f32)),
            _ => Err(Error::invalid(format!(
                "{name} must be a number from {} to {}",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// Reads `POST /chat/completions`.
pub fn chat_call(body: Value) -> Result<ChatCall> {
    let Value::Object(body) = body else {
        return Err(Error::invalid("the body must be a JSON object"));
    };
    let model = string(
        field(&body, "model").ok_or_else(|| Error::invalid("model is required"))?,
        "model",
    )?;
    let messages = field(&body, "messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::invalid("messages must be a non-empty array"))?
        .iter()
        .enumerate()
        .map(|(i, m)| message(m, &format!("messages[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    if let Some(n) = field(&body, "n")
        && n.as_u64() != Some(1)
    {
        return Err(Error::invalid(
            "n must be 1: one choice per request is served",
        ));
    }
    let tools = match field(&body, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, &format!("tools[{i}]")))
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::invalid("tools must be an array")),
    };
    let tool_choice = field(&body, "tool_choice").map(tool_choice).transpose()?;
    let max_tokens =
        match field(&body, "max_completion_tokens").or_else(|| field(&body, "max_tokens")) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                    .ok_or_else(|| Error::invalid("max_tokens must be a positive integer"))?
                    as u32,
            ),
        };
    let stop = match field(&body, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| string(s, "stop[]"))
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::invalid(
                "stop must be a string or an array of strings",
            ));
        }
    };
    let response_format = field(&body, "response_format")
        .map(response_format)
        .transpose()?;
    let stream = flag(&body, "stream")?;
    let include_usage = field(&body, "stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ChatCall {
        request: ChatRequest {
            model,
            messages,
            tools,
            tool_choice,
            temperature: number(&body, "temperature", 0.0..=2.0)?,
            top_p: number(&body, "top_p", 0.0..=1.0)?,
            max_tokens,
            stop,
            response_format,
            request_id: None,
        },
        stream,
        include_usage,
    })
}

fn message(value: &Value, path: &str) -> Result<ChatMessage> {
    let role = match value.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        _ => {
            return Err(Error::invalid(format!(
                "{path}.role must be one of system, developer, user, assistant, tool"
            )));
        }
    };
    let content = match value.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![ContentPart::Text { text: text.clone() }],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| content_part(p, &format!("{path}.content[{i}]")))
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::invalid(format!(
                "{path}.content must be a string or an array of parts"
            )));
        }
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = value.get("tool_calls").filter(|v| !v.is_null()) {
        let calls = calls
            .as_array()
            .ok_or_else(|| Error::invalid(format!("{path}.tool_calls must be an array")))?;
        for (i, call) in calls.iter().enumerate() {
            let at = format!("{path}.tool_calls[{i}]");
            let id = string(&call["id"], &format!("{at}.id"))?;
            let name = string(&call["function"]["name"], &format!("{at}.function.name"))?;
            let arguments = match &call["function"]["arguments"] {
                Value::String(text) if text.trim().is_empty() => JsonObject::new(),
                Value::String(text) => serde_json::from_str::<JsonObject>(text).map_err(|_| {
                    Error::invalid(format!(
                        "{at}.function.arguments must be a JSON object in a string"
                    ))
                })?,
                _ => {
                    return Err(Error::invalid(format!(
                        "{at}.function.arguments must be a string"
                    )));
                }
            };
            tool_calls.push(ToolCallRequest {
                id,
                name,
                arguments,
            });
        }
    }
    let tool_call_id = match value.get("tool_call_id").filter(|v| !v.is_null()) {
        Some(id) => Some(string(id, &format!("{path}.tool_call_id"))?),
        None if role == Role::Tool => {
            return Err(Error::invalid(format!(
                "{path}.tool_call_id is required for a tool message"
            )));
        }
        None => None,
    };
    Ok(ChatMessage {
        role,
        content,
        tool_calls,
        tool_call_id,
    })
}

fn content_part(value: &Value, path: &str) -> Result<ContentPart> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ContentPart::Text {
            text: string(&value["text"], &format!("{path}.text"))?,
        }),
        Some("image_url") => {
            let url = match &value["image_url"] {
                Value::String(url) => url.clone(),
                other => string(&other["url"], &format!("{path}.image_url.url"))?,
            };
            Ok(ContentPart::ImageUrl { url })
        }
        _ => Err(Error::invalid(format!(
            "{path}.type must be text or image_url"
        ))),
    }
}

fn tool(value: &Value, path: &str) -> Result<ToolSpec> {
    if value.get("type").and_then(Value::as_str) != Some("function") {
        return Err(Error::invalid(format!("{path}.type must be function")));
    }
    let function = &value["function"];
    let name = string(&function["name"], &format!("{path}.function.name"))?;
    let mut spec = ToolSpec::new(name, function["description"].as_str().unwrap_or_default());
    match &function["parameters"] {
        Value::Null => {}
        Value::Object(schema) => spec.input_schema = schema.clone(),
        _ => {
            return Err(Error::invalid(format!(
                "{path}.function.parameters must be a JSON Schema object"
            )));
        }
    }
    Ok(spec)
}

fn tool_choice(value: &Value) -> Result<ToolChoice> {
    match value {
        Value::String(s) if s == "auto" => Ok(ToolChoice::Auto),
        Value::String(s) if s == "none" => Ok(ToolChoice::None),
        Value::String(s) if s == "required" => Ok(ToolChoice::Required),
        Value::Object(_) => Ok(ToolChoice::Tool(string(
            &value["function"]["name"],
            "tool_choice.function.name",
        )?)),
        _ => Err(Error::invalid(
            "tool_choice must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\":…}}",
        )),
    }
}

fn response_format(value: &Value) -> Result<ResponseFormat> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = &value["json_schema"];
            let schema = spec["schema"].as_object().cloned().ok_or_else(|| {
                Error::invalid("response_format.json_schema.schema must be an object")
            })?;
            Ok(ResponseFormat::JsonSchema {
                name: spec["name"].as_str().unwrap_or("answer").to_owned(),
                schema,
                strict: spec["strict"].as_bool().unwrap_or(false),
            })
        }
        _ => Err(Error::invalid(
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

/// OpenAI's name for a finish reason.
pub fn finish_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(other) => other,
    }
}

/// OpenAI's usage object.
pub fn usage(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    })
}

/// The error a stream ends with, as OpenAI's SDKs read it from a `data:` line.
pub fn stream_error(error: &Error) -> Value {
    json!({"error": {"message": error.public_message(), "type": error.code(), "code": error.code()}})
}

/// One chat completion in OpenAI's shapes, whole or streamed.
pub struct Answer {
    /// The chunks' common fields.
    pub chunks: ChunkWriter,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
}

fn frame(value: &Value) -> String {
    format!("data: {value}\n\n")
}

impl super::ChatWire for Answer {
    fn whole(&self, events: &[ChatEvent], counted: Usage, billing: Value) -> Value {
        completion(&self.chunks, events, counted, billing)
    }

    fn opening(&mut self, _: Usage) -> Bytes {
        let first = self
            .chunks
            .chunk(json!({"role": "assistant", "content": ""}), None);
        Bytes::from(frame(&first))
    }

    fn event(&mut self, event: &ChatEvent) -> Option<Bytes> {
        self.chunks
            .event(event)
            .map(|chunk| Bytes::from(frame(&chunk)))
    }

    fn closing(&mut self, counted: Usage, billing: Value) -> Bytes {
        let mut tail = String::new();
        if self.include_usage {
            tail.push_str(&frame(&self.chunks.usage(counted, billing)));
        }
        tail.push_str("data: [DONE]\n\n");
        Bytes::from(tail)
    }

    fn failure(&mut self, error: &Error) -> Bytes {
        Bytes::from(frame(&stream_error(error)))
    }
}

/// Writes chunks of one streamed completion.
pub struct ChunkWriter {
    /// `chatcmpl-…`.
    pub id: String,
    /// The model name the caller asked for.
    pub model: String,
    /// Seconds since the epoch.
    pub created: i64,
}

impl ChunkWriter {
    /// A chunk with `delta` and `finish_reason`.
    pub fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    }

    /// The chunk for one event, if it makes one (usage is sent last, on its own).
    pub fn event(&self, event: &ChatEvent) -> Option<Value> {
        match event {
            ChatEvent::TextDelta { text } => Some(self.chunk(json!({"content": text}), None)),
            ChatEvent::ToolCallStart { index, id, name } => Some(self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
            )),
            ChatEvent::ToolCallDelta { index, arguments } => Some(self.chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                None,
            )),
            ChatEvent::Finish { reason } => Some(self.chunk(json!({}), Some(finish_reason(reason)))),
            ChatEvent::Usage { .. } | ChatEvent::Charged { .. } => None,
        }
    }

    /// The last chunk when usage was asked for: no choices, the usage, and what it cost.
    pub fn usage(&self, counted: Usage, billing: Value) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage(counted), "billing": billing,
        })
    }
}

/// A whole completion from its events.
pub fn completion(
    writer: &ChunkWriter,
    events: &[ChatEvent],
    counted: Usage,
    billing: Value,
) -> Value {
    let super::Gathered {
        text,
        calls,
        finish,
    } = super::gather(events);
    let finish = finish_reason(&finish);
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .into_iter()
            .map(|(id, name, arguments)| {
                let arguments = if arguments.is_empty() { "{}".to_owned() } else { arguments };
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
            })
            .collect();
    }
    json!({
        "id": writer.id, "object": "chat.completion", "created": writer.created, "model": writer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage(counted), "billing": billing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_reads_into_the_neutral_form() {
        let call = chat_call(json!({
            "model": "fast",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "max_completion_tokens": 50, "stop": "END", "stream": true,
            "stream_options": {"include_usage": true},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}}
        }))
        .unwrap();
        let r = &call.request;
        assert!(call.stream && call.include_usage);
        assert_eq!(r.messages[0].role, Role::System);
        assert!(
            matches!(&r.messages[1].content[1], ContentPart::ImageUrl { url } if url.starts_with("data:"))
        );
        assert_eq!(r.messages[2].tool_calls[0].arguments["a"], 1);
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.tool_choice, Some(ToolChoice::Tool("f".into())));
        assert_eq!(
            (r.max_tokens, r.stop.clone()),
            (Some(50), vec!["END".to_owned()])
        );
        assert!(matches!(
            r.response_format,
            Some(ResponseFormat::JsonSchema { strict: true, .. })
        ));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!([]), "JSON object"),
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model is required",
            ),
            (json!({"model": "m", "messages": []}), "messages must be"),
            (
                json!({"model": "m", "messages": [{"role": "robot"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
                "n must be 1",
            ),
            (
                json!({"model": "m", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}),
                "temperature",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
        ];
        for (body, expected) in cases {
            let error = chat_call(body.clone())
                .err()
                .unwrap_or_else(|| panic!("{body} was accepted"));
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
    }
}
