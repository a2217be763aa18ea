//! Conversions between isa's types and rmcp's wire types.

use rmcp::model as wire;
use serde_json::{Value, json};

use crate::{
    Content, PromptMessage, PromptRole, PromptSpec, ResourceContent, ResourceSpec, ToolOutput,
    ToolSpec,
};

pub fn tool(spec: &ToolSpec) -> wire::Tool {
    let mut tool = wire::Tool::new(
        spec.name.clone(),
        spec.description.clone(),
        std::sync::Arc::new(spec.input_schema.clone()),
    );
    if let Some(output) = &spec.output_schema {
        tool = tool.with_raw_output_schema(std::sync::Arc::new(output.clone()));
    }
    let a = &spec.annotations;
    if a != &crate::ToolAnnotations::default() {
        let mut annotations = wire::ToolAnnotations::new();
        annotations.title = a.title.clone();
        annotations.read_only_hint = a.read_only_hint;
        annotations.destructive_hint = a.destructive_hint;
        annotations.idempotent_hint = a.idempotent_hint;
        annotations.open_world_hint = a.open_world_hint;
        tool = tool.with_annotations(annotations);
    }
    tool
}

pub fn content(content: &Content) -> wire::ContentBlock {
    match content {
        Content::Text { text } => wire::ContentBlock::text(text.clone()),
        Content::Image { data, mime_type } => {
            wire::ContentBlock::image(data.clone(), mime_type.clone())
        }
        Content::Audio { data, mime_type } => {
            wire::ContentBlock::audio(data.clone(), mime_type.clone())
        }
        Content::Resource {
            uri,
            mime_type,
            text,
            blob,
        } => wire::ContentBlock::resource(resource_contents(&ResourceContent {
            uri: uri.clone(),
            mime_type: mime_type.clone(),
            text: text.clone(),
            blob: blob.clone(),
        })),
    }
}

pub fn tool_result(output: ToolOutput) -> wire::CallToolResult {
    let blocks = output.content.iter().map(content).collect();
    let mut result = if output.is_error {
        wire::CallToolResult::error(blocks)
    } else {
        wire::CallToolResult::success(blocks)
    };
    result.structured_content = output.structured_content;
    result
}

pub fn resource_contents(c: &ResourceContent) -> wire::ResourceContents {
    let contents = match &c.blob {
        Some(blob) => wire::ResourceContents::blob(blob.clone(), c.uri.clone()),
        None => wire::ResourceContents::text(c.text.clone().unwrap_or_default(), c.uri.clone()),
    };
    match &c.mime_type {
        Some(mime) => contents.with_mime_type(mime.clone()),
        None => contents,
    }
}

pub fn prompt(spec: &PromptSpec) -> wire::Prompt {
    let arguments: Vec<Value> = spec
        .arguments
        .iter()
        .map(|a| json!({"name": a.name, "description": a.description, "required": a.required}))
        .collect();
    from_json(json!({
        "name": spec.name,
        "description": spec.description,
        "arguments": arguments,
    }))
}

pub fn prompt_message(message: &PromptMessage) -> wire::PromptMessage {
    let role = match message.role {
        PromptRole::User => wire::Role::User,
        PromptRole::Assistant => wire::Role::Assistant,
    };
    wire::PromptMessage::new(role, content(&message.content))
}

pub fn resource(spec: &ResourceSpec) -> wire::Resource {
    from_json(json!({
        "uri": spec.uri,
        "name": spec.name,
        "description": spec.description,
        "mimeType": spec.mime_type,
    }))
}

pub fn resource_template(spec: &ResourceSpec) -> wire::ResourceTemplate {
    from_json(json!({
        "uriTemplate": spec.uri,
        "name": spec.name,
        "description": spec.description,
        "mimeType": spec.mime_type,
    }))
}

/// Builds a wire type from JSON written in this module, whose shape matches the MCP schema; a
/// mismatch is a bug caught by the tests, not something input can cause.
fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(v) => v,
        Err(e) => unreachable!("wire type built from a fixed JSON shape: {e}"),
    }
}
