//! Anthropic's Messages shapes at the service's second front door (`POST /api/v1/messages`):
//! requests read field by field into the neutral form (an error names the field), answers and
//! stream events written the way Anthropic's SDKs read them. Whatever provider answers, a
//! client of Anthropic's API sees Anthropic's shapes.

use bytes::Bytes;
use isa_core::{
    ChatEvent, ChatMessage, ChatRequest, ContentPart, Error, FinishReason, JsonObject, Result,
    Role, ToolCallRequest, ToolChoice, ToolSpec, Usage,
};
use serde_json::{Map, Value, json};

use super::{ChatWire, field, flag, string};

/// A Messages request as read from the wire.
pub struct MessagesCall {
    /// The neutral request (its `model` is the name the caller asked for).
    pub request: ChatRequest,
    /// `stream: true`.
    pub stream: bool,
}

fn unit_number(body: &Map<String, Value>, name: &str) -> Result<Option<f32>> {
    match field(body, name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if (0.0..=1.0).contains(&n) => Ok(Some(n as f32)),
            _ => Err(Error::invalid(format!(
                "{name} must be a number from 0 to 1"
            ))),
        },
    }
}

/// Reads `POST /v1/messages`. Fields the neutral form has no place for (`metadata`, `top_k`,
/// `thinking`, …) are not passed on.
pub fn messages_call(body: Value) -> Result<MessagesCall> {
    let Value::Object(body) = body else {
        return Err(Error::invalid("the body must be a JSON object"));
    };
    let model = string(
        field(&body, "model").ok_or_else(|| Error::invalid("model is required"))?,
        "model",
    )?;
    let max_tokens = field(&body, "max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
        .ok_or_else(|| Error::invalid("max_tokens is required: a positive integer"))?
        as u32;
    let mut messages = match field(&body, "system") {
        None => Vec::new(),
        Some(Value::String(text)) => vec![ChatMessage::text(Role::System, text.clone())],
        Some(Value::Array(blocks)) => {
            let text = blocks
                .iter()
                .enumerate()
                .map(|(i, b)| text_block(b, &format!("system[{i}]")))
                .collect::<Result<Vec<_>>>()?
                .concat();
            vec![ChatMessage::text(Role::System, text)]
        }
        Some(_) => {
            return Err(Error::invalid(
                "system must be a string or an array of text blocks",
            ));
        }
    };
    let turns = field(&body, "messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::invalid("messages must be a non-empty array"))?;
    for (i, turn) in turns.iter().enumerate() {
        read_turn(turn, &format!("messages[{i}]"), &mut messages)?;
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
    let stop = match field(&body, "stop_sequences") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| string(s, "stop_sequences[]"))
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::invalid("stop_sequences must be an array of strings")),
    };
    let stream = flag(&body, "stream")?;
    Ok(MessagesCall {
        request: ChatRequest {
            model,
            messages,
            tools,
            tool_choice,
            temperature: unit_number(&body, "temperature")?,
            top_p: unit_number(&body, "top_p")?,
            max_tokens: Some(max_tokens),
            stop,
            response_format: None,
            request_id: None,
        },
        stream,
    })
}

fn text_block(value: &Value, path: &str) -> Result<String> {
    if value.get("type").and_then(Value::as_str) != Some("text") {
        return Err(Error::invalid(format!("{path}.type must be text")));
    }
    string(&value["text"], &format!("{path}.text"))
}

fn image_block(value: &Value, path: &str) -> Result<ContentPart> {
    let source = &value["source"];
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = string(&source["media_type"], &format!("{path}.source.media_type"))?;
            let data = string(&source["data"], &format!("{path}.source.data"))?;
            Ok(ContentPart::ImageUrl {
                url: format!("data:{media_type};base64,{data}"),
            })
        }
        Some("url") => Ok(ContentPart::ImageUrl {
            url: string(&source["url"], &format!("{path}.source.url"))?,
        }),
        _ => Err(Error::invalid(format!(
            "{path}.source.type must be base64 or url"
        ))),
    }
}

/// Reads one turn into neutral messages. A user turn's `tool_result` blocks become tool
/// messages, ahead of the rest of the turn, which is where Anthropic requires them.
fn read_turn(value: &Value, path: &str, into: &mut Vec<ChatMessage>) -> Result<()> {
    let role = match value.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        _ => {
            return Err(Error::invalid(format!(
                "{path}.role must be user or assistant"
            )));
        }
    };
    let blocks = match value.get("content") {
        Some(Value::String(text)) => {
            into.push(ChatMessage::text(role, text.clone()));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(Error::invalid(format!(
                "{path}.content must be a string or an array of blocks"
            )));
        }
    };
    let mut turn = ChatMessage {
        content: Vec::new(),
        ..ChatMessage::text(role, "")
    };
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("{path}.content[{i}]");
        match (role, block.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => turn.content.push(ContentPart::Text {
                text: text_block(block, &at)?,
            }),
            (Role::User, Some("image")) => turn.content.push(image_block(block, &at)?),
            (Role::User, Some("tool_result")) => {
                let id = string(&block["tool_use_id"], &format!("{at}.tool_use_id"))?;
                let text = match &block["content"] {
                    Value::Null => String::new(),
                    Value::String(text) => text.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .enumerate()
                        .map(|(j, p)| text_block(p, &format!("{at}.content[{j}]")))
                        .collect::<Result<Vec<_>>>()?
                        .concat(),
                    _ => {
                        return Err(Error::invalid(format!(
                            "{at}.content must be a string or an array of text blocks"
                        )));
                    }
                };
                into.push(ChatMessage::tool_result(id, text));
            }
            (Role::Assistant, Some("tool_use")) => {
                let arguments = match &block["input"] {
                    Value::Object(input) => input.clone(),
                    Value::Null => JsonObject::new(),
                    _ => return Err(Error::invalid(format!("{at}.input must be an object"))),
                };
                turn.tool_calls.push(ToolCallRequest {
                    id: string(&block["id"], &format!("{at}.id"))?,
                    name: string(&block["name"], &format!("{at}.name"))?,
                    arguments,
                });
            }
            // Another provider can do nothing with Anthropic's reasoning blocks.
            (Role::Assistant, Some("thinking" | "redacted_thinking")) => {}
            (Role::User, _) => {
                return Err(Error::invalid(format!(
                    "{at}.type must be text, image or tool_result"
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{at}.type must be text or tool_use"
                )));
            }
        }
    }
    if !turn.content.is_empty() || !turn.tool_calls.is_empty() {
        into.push(turn);
    }
    Ok(())
}

fn tool(value: &Value, path: &str) -> Result<ToolSpec> {
    if let Some(kind) = value.get("type").and_then(Value::as_str)
        && kind != "custom"
    {
        return Err(Error::invalid(format!(
            "{path}.type {kind} is one of Anthropic's own tools: only custom tools are served"
        )));
    }
    let name = string(&value["name"], &format!("{path}.name"))?;
    let mut spec = ToolSpec::new(name, value["description"].as_str().unwrap_or_default());
    match &value["input_schema"] {
        Value::Object(schema) => spec.input_schema = schema.clone(),
        _ => {
            return Err(Error::invalid(format!(
                "{path}.input_schema must be a JSON Schema object"
            )));
        }
    }
    Ok(spec)
}

fn tool_choice(value: &Value) -> Result<ToolChoice> {
    match value.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(ToolChoice::Auto),
        Some("any") => Ok(ToolChoice::Required),
        Some("none") => Ok(ToolChoice::None),
        Some("tool") => Ok(ToolChoice::Tool(string(
            &value["name"],
            "tool_choice.name",
        )?)),
        _ => Err(Error::invalid(
            "tool_choice.type must be auto, any, none or tool",
        )),
    }
}

/// Anthropic's name for why generation stopped.
pub fn stop_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Length => "max_tokens",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Other(other) => other,
    }
}

fn sse(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

/// The block a stream is writing.
#[derive(Clone, Copy, PartialEq)]
enum Block {
    Text,
    ToolCall(u32),
}

/// Writes one Messages answer, whole or streamed. Blocks are numbered in the order they
/// start, text and tool calls alike, as Anthropic numbers them; tool calls keep their order.
pub struct Answer {
    id: String,
    model: String,
    open: Option<(Block, u32)>,
    started: Vec<Block>,
    stop: FinishReason,
}

impl Answer {
    /// An answer with id `msg_…` to a request for `model`.
    pub fn new(id: String, model: String) -> Self {
        Answer {
            id,
            model,
            open: None,
            started: Vec::new(),
            stop: FinishReason::Stop,
        }
    }

    fn usage(usage: Usage) -> Value {
        json!({"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens})
    }

    /// Closes the open block unless it is `block`, and starts `block` unless it was started;
    /// the index of `block`.
    fn enter(&mut self, block: Block, start: impl FnOnce() -> Value, out: &mut String) -> u32 {
        if let Some((open, index)) = self.open {
            if open == block {
                return index;
            }
            out.push_str(&sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            self.open = None;
        }
        if let Some(index) = self.started.iter().position(|b| *b == block) {
            // A call's arguments resumed after another block began: Anthropic's clients add
            // a delta to its block by index.
            return index as u32;
        }
        let index = self.started.len() as u32;
        self.started.push(block);
        self.open = Some((block, index));
        out.push_str(&sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start()}),
        ));
        index
    }
}

impl ChatWire for Answer {
    fn whole(&self, events: &[ChatEvent], counted: Usage, billing: Value) -> Value {
        let super::Gathered {
            text,
            calls,
            finish: stop,
        } = super::gather(events);
        let mut content = Vec::new();
        if !text.is_empty() || calls.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for (id, name, arguments) in calls {
            let input: Value = serde_json::from_str(&arguments).unwrap_or_else(|_| json!({}));
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": stop_reason(&stop), "stop_sequence": null,
            "usage": Self::usage(counted), "billing": billing,
        })
    }

    fn opening(&mut self, counted: Usage) -> Bytes {
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": Self::usage(counted),
        });
        Bytes::from(sse(
            "message_start",
            &json!({"type": "message_start", "message": message}),
        ))
    }

    fn event(&mut self, event: &ChatEvent) -> Option<Bytes> {
        let mut out = String::new();
        match event {
            ChatEvent::TextDelta { text } => {
                let index = self.enter(
                    Block::Text,
                    || json!({"type": "text", "text": ""}),
                    &mut out,
                );
                let delta = json!({"type": "text_delta", "text": text});
                out.push_str(&sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                ));
            }
            ChatEvent::ToolCallStart { index, id, name } => {
                self.enter(
                    Block::ToolCall(*index),
                    || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    &mut out,
                );
            }
            ChatEvent::ToolCallDelta { index, arguments } => {
                let block = self.enter(Block::ToolCall(*index), || json!({}), &mut out);
                let delta = json!({"type": "input_json_delta", "partial_json": arguments});
                out.push_str(&sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": block, "delta": delta}),
                ));
            }
            ChatEvent::Finish { reason } => self.stop = reason.clone(),
            ChatEvent::Usage { .. } | ChatEvent::Charged { .. } => {}
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn closing(&mut self, counted: Usage, billing: Value) -> Bytes {
        let mut out = String::new();
        if let Some((_, index)) = self.open.take() {
            out.push_str(&sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
        let delta = json!({"stop_reason": stop_reason(&self.stop), "stop_sequence": null});
        out.push_str(&sse(
            "message_delta",
            &json!({"type": "message_delta", "delta": delta, "usage": Self::usage(counted), "billing": billing}),
        ));
        out.push_str(&sse("message_stop", &json!({"type": "message_stop"})));
        Bytes::from(out)
    }

    fn failure(&mut self, error: &Error) -> Bytes {
        let kind = if error.is_retryable() {
            "overloaded_error"
        } else {
            "api_error"
        };
        Bytes::from(sse(
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": error.public_message()}}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_reads_into_the_neutral_form() {
        let call = messages_call(json!({
            "model": "fast", "max_tokens": 64, "stream": true,
            "system": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "calling"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "ok"}]}, {"type": "text", "text": "and now?"}]}
            ],
            "tools": [{"name": "f", "description": "does f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["END"], "temperature": 0.5, "metadata": {"user_id": "u"}
        }))
        .unwrap();
        let r = &call.request;
        assert!(call.stream);
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(r.messages[0].text_content(), "be brief");
        assert!(
            matches!(&r.messages[1].content[1], ContentPart::ImageUrl { url } if url == "data:image/png;base64,AA==")
        );
        assert_eq!(r.messages[2].text_content(), "calling");
        assert_eq!(r.messages[2].tool_calls[0].arguments["a"], 1);
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(r.messages[3].text_content(), "ok");
        assert_eq!(r.messages[4].text_content(), "and now?");
        assert_eq!(r.tools[0].input_schema["type"], "object");
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));
        assert_eq!(
            (r.max_tokens, r.stop.clone()),
            (Some(64), vec!["END".to_owned()])
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let user = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (json!([]), "JSON object"),
            (
                json!({"max_tokens": 5, "messages": user}),
                "model is required",
            ),
            (
                json!({"model": "m", "messages": user}),
                "max_tokens is required",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": []}),
                "messages must be",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_use"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
                "messages[0].content[0].tool_use_id",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "only custom tools",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "temperature": 1.5}),
                "temperature",
            ),
        ];
        for (body, expected) in cases {
            let error = messages_call(body.clone())
                .err()
                .unwrap_or_else(|| panic!("{body} was accepted"));
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
    }

    /// The SSE events of `events`, as (event name, data) pairs.
    fn streamed(events: &[ChatEvent]) -> Vec<(String, Value)> {
        let mut answer = Answer::new("msg_1".into(), "m".into());
        let mut text = String::from_utf8(answer.opening(Usage::default()).to_vec()).unwrap();
        for event in events {
            if let Some(bytes) = answer.event(event) {
                text.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
        let usage = Usage {
            input_tokens: 3,
            output_tokens: 4,
        };
        text.push_str(std::str::from_utf8(&answer.closing(usage, json!({}))).unwrap());
        text.split("\n\n")
            .filter(|frame| !frame.is_empty())
            .map(|frame| {
                let (event, data) = frame.split_once('\n').unwrap();
                (
                    event.strip_prefix("event: ").unwrap().to_owned(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_stream_numbers_text_and_tool_blocks_as_anthropic_does() {
        let call = |index: u32, id: &str, name: &str| ChatEvent::ToolCallStart {
            index,
            id: id.into(),
            name: name.into(),
        };
        let args = |index: u32, piece: &str| ChatEvent::ToolCallDelta {
            index,
            arguments: piece.into(),
        };
        let frames = streamed(&[
            ChatEvent::TextDelta {
                text: "Checking".into(),
            },
            ChatEvent::TextDelta { text: ".".into() },
            call(0, "c0", "get_weather"),
            args(0, "{\"city\":"),
            args(0, "\"Paris\"}"),
            call(1, "c1", "get_time"),
            args(1, "{}"),
            ChatEvent::Finish {
                reason: FinishReason::ToolCalls,
            },
        ]);
        let names: Vec<&str> = frames.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        for (event, data) in &frames {
            assert_eq!(data["type"], event.as_str(), "each event names its type");
        }
        assert_eq!(frames[1].1["content_block"]["type"], "text");
        assert_eq!(
            frames[5].1["index"], 1,
            "the first call is the second block"
        );
        assert_eq!(frames[5].1["content_block"]["id"], "c0");
        assert_eq!(frames[7].1["delta"]["partial_json"], "\"Paris\"}");
        assert_eq!(frames[9].1["index"], 2);
        assert_eq!(frames[9].1["content_block"]["name"], "get_time");
        assert_eq!(frames[12].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(frames[12].1["usage"]["output_tokens"], 4);
    }

    #[test]
    fn a_whole_answer_holds_text_then_tool_uses() {
        let answer = Answer::new("msg_1".into(), "m".into());
        let whole = answer.whole(
            &[
                ChatEvent::TextDelta { text: "ok".into() },
                ChatEvent::ToolCallStart {
                    index: 0,
                    id: "c0".into(),
                    name: "f".into(),
                },
                ChatEvent::ToolCallDelta {
                    index: 0,
                    arguments: "{\"a\":1}".into(),
                },
                ChatEvent::Finish {
                    reason: FinishReason::ToolCalls,
                },
            ],
            Usage {
                input_tokens: 1,
                output_tokens: 2,
            },
            json!({}),
        );
        assert_eq!(whole["content"][0], json!({"type": "text", "text": "ok"}));
        assert_eq!(whole["content"][1]["input"], json!({"a": 1}));
        assert_eq!(whole["stop_reason"], "tool_use");
        assert_eq!(whole["usage"]["output_tokens"], 2);
    }
}
