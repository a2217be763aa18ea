//! The model service's OpenAPI 3.1 description, served at `/openapi.json` and shown at `/docs`.

use isa_core::http::openapi::{document, json_body, object, op, reference};
use serde_json::{Value, json};

/// The description; `port` names the default server.
pub fn description(port: u16) -> Value {
    let errors = ["400", "401", "402", "404", "413", "502", "503", "504"];
    let message = object(
        json!({
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"type": ["string", "array", "null"], "description": "Text, or parts of type text and image_url"},
            "tool_calls": {"type": "array", "items": reference("ToolCall")},
            "tool_call_id": {"type": "string"},
        }),
        &["role"],
    );
    let chat_request = object(
        json!({
            "model": {"type": "string", "description": "A name from GET /api/v1/models: an alias, or provider/model"},
            "messages": {"type": "array", "items": message, "minItems": 1},
            "tools": {"type": "array", "items": object(json!({"type": {"const": "function"}, "function": object(json!({"name": {"type": "string"}, "description": {"type": "string"}, "parameters": {"type": "object"}}), &["name"])}), &["type", "function"])},
            "tool_choice": {"description": "auto, none, required, or {\"type\":\"function\",\"function\":{\"name\":…}}"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "stop": {"type": ["string", "array"]},
            "response_format": {"type": "object", "description": "text, json_object, or json_schema with a schema"},
            "n": {"const": 1},
            "stream": {"type": "boolean", "description": "Answer as server-sent events of chat.completion.chunk, ending with [DONE]; a failure after the first event ends the stream with an {\"error\"} event"},
            "stream_options": object(json!({"include_usage": {"type": "boolean"}}), &[]),
        }),
        &["model", "messages"],
    );
    let completion = object(
        json!({
            "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": object(json!({"index": {"type": "integer"}, "message": message_out(), "finish_reason": {"type": "string"}}), &["index", "message", "finish_reason"])},
            "usage": reference("Usage"),
            "billing": reference("Billing"),
        }),
        &["id", "object", "choices"],
    );
    let messages_request = object(
        json!({
            "model": {"type": "string", "description": "A name from GET /api/v1/models: an alias, or provider/model"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "system": {"type": ["string", "array"], "description": "Text, or blocks of type text"},
            "messages": {"type": "array", "minItems": 1, "items": object(json!({
                "role": {"type": "string", "enum": ["user", "assistant"]},
                "content": {"type": ["string", "array"], "description": "Text, or blocks: text, image and tool_result (user), text and tool_use (assistant)"},
            }), &["role", "content"])},
            "tools": {"type": "array", "items": object(json!({"name": {"type": "string"}, "description": {"type": "string"}, "input_schema": {"type": "object"}}), &["name", "input_schema"])},
            "tool_choice": object(json!({"type": {"type": "string", "enum": ["auto", "any", "none", "tool"]}, "name": {"type": "string"}}), &["type"]),
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "stream": {"type": "boolean", "description": "Answer as Anthropic's server-sent events, message_start to message_stop; a failure after the first event ends the stream with an error event"},
        }),
        &["model", "max_tokens", "messages"],
    );
    let message_answer = object(
        json!({
            "id": {"type": "string"}, "type": {"const": "message"}, "role": {"const": "assistant"}, "model": {"type": "string"},
            "content": {"type": "array", "items": object(json!({"type": {"type": "string", "enum": ["text", "tool_use"]}, "text": {"type": "string"}, "id": {"type": "string"}, "name": {"type": "string"}, "input": {"type": "object"}}), &["type"])},
            "stop_reason": {"type": "string", "enum": ["end_turn", "tool_use", "max_tokens", "refusal"]},
            "usage": object(json!({"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}}), &["input_tokens", "output_tokens"]),
            "billing": reference("Billing"),
        }),
        &["id", "type", "content", "stop_reason", "usage"],
    );
    let embeddings_request = object(
        json!({
            "model": {"type": "string"},
            "input": {"type": ["string", "array"], "items": {"type": "string"}, "description": "A text or up to 2048 texts"},
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
        }),
        &["model", "input"],
    );
    let embeddings = object(
        json!({
            "object": {"const": "list"}, "model": {"type": "string"},
            "data": {"type": "array", "items": object(json!({"object": {"const": "embedding"}, "index": {"type": "integer"}, "embedding": {"type": ["array", "string"], "items": {"type": "number"}, "description": "Floats, or little-endian f32 in base64"}}), &["index", "embedding"])},
            "usage": reference("Usage"), "billing": reference("Billing"),
        }),
        &["object", "data"],
    );
    let images_request = object(
        json!({"model": {"type": "string"}, "prompt": {"type": "string"}, "n": {"type": "integer", "minimum": 1, "maximum": 10}, "size": {"type": "string", "description": "WIDTHxHEIGHT"}}),
        &["model", "prompt"],
    );
    let images = object(
        json!({"created": {"type": "integer"}, "data": {"type": "array", "items": object(json!({"url": {"type": "string"}, "b64_json": {"type": "string"}}), &[])}, "billing": reference("Billing")}),
        &["data"],
    );
    let models = object(
        json!({"object": {"const": "list"}, "data": {"type": "array", "items": object(json!({"id": {"type": "string"}, "object": {"const": "model"}, "owned_by": {"type": "string"}, "kind": {"type": "string", "enum": ["chat", "embeddings", "images"]}}), &["id", "object"])}}),
        &["object", "data"],
    );
    let paths = json!({
        "/api/v1/chat/completions": {"post": op("A chat completion, streamed or not, with tools", &[], Some(json_body(chat_request)), ("200", completion), &errors)},
        "/api/v1/messages": {"post": op("The same chat in Anthropic's Messages shapes, for Anthropic's SDKs", &[], Some(json_body(messages_request)), ("200", message_answer), &errors)},
        "/api/v1/embeddings": {"post": op("Embeddings of texts", &[], Some(json_body(embeddings_request)), ("200", embeddings), &errors)},
        "/api/v1/images/generations": {"post": op("Images from a prompt", &[], Some(json_body(images_request)), ("200", images), &errors)},
        "/api/v1/models": {"get": op("The model names served", &[], None, ("200", models), &["401"])},
    });
    let schemas = json!({
        "ToolCall": object(json!({"id": {"type": "string"}, "type": {"const": "function"}, "function": object(json!({"name": {"type": "string"}, "arguments": {"type": "string", "description": "A JSON object, as text"}}), &["name", "arguments"])}), &["id", "type", "function"]),
        "Usage": object(json!({"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}), &["prompt_tokens", "total_tokens"]),
        "Billing": object(json!({
            "model": {"type": "string"}, "deployment": {"type": "string", "description": "provider/model that answered"},
            "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}, "images": {"type": "integer"},
            "cost_usd": {"type": "number"}, "credits": {"type": "integer"},
        }), &["model", "deployment", "cost_usd"]),
    });
    document(
        "isa model service",
        "One OpenAI-compatible API over OpenAI, Anthropic, Gemini, Replicate, Hugging Face and a local embedder, with fallbacks and metering, and Anthropic's Messages API as a second front door to the same chat. Every answer carries `billing`; streamed chats carry it in the usage chunk (OpenAI) or in `message_delta` (Anthropic).",
        port,
        paths,
        schemas,
    )
}

fn message_out() -> Value {
    object(
        json!({"role": {"const": "assistant"}, "content": {"type": ["string", "null"]}, "tool_calls": {"type": "array", "items": reference("ToolCall")}}),
        &["role", "content"],
    )
}
