//! A plugin crate: the `word_count` tool, written against `isa-core` alone. Add it to any
//! `isa_core::mcp::McpServer` (feature `mcp`) with `server.add_tool(Arc::new(WordCount::new()))`.

use isa_core::{
    CallContext, Error, JsonObject, Result, Tool, ToolAnnotations, ToolOutput, ToolSpec,
    async_trait,
};
use serde_json::json;

/// Counts words, lines and characters of a text.
pub struct WordCount {
    spec: ToolSpec,
}

impl WordCount {
    /// The tool with its spec: one required string argument, a structured result.
    pub fn new() -> Self {
        let spec = ToolSpec::new("word_count", "Count the words, lines and characters in a text")
            .with_input_schema(json!({
                "type": "object",
                "properties": {"text": {"type": "string", "description": "The text to count"}},
                "required": ["text"],
                "additionalProperties": false
            }))
            .with_output_schema(json!({
                "type": "object",
                "properties": {
                    "words": {"type": "integer"}, "lines": {"type": "integer"}, "characters": {"type": "integer"}
                },
                "required": ["words", "lines", "characters"]
            }))
            .with_annotations(ToolAnnotations {
                read_only_hint: Some(true),
                ..Default::default()
            })
            .with_tags(["text"]);
        WordCount { spec }
    }
}

impl Default for WordCount {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for WordCount {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: JsonObject, _ctx: &CallContext) -> Result<ToolOutput> {
        // The server validated the arguments against the schema, so `text` is a string.
        let text = args
            .get("text")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::invalid("text must be a string"))?;
        Ok(ToolOutput::json(json!({
            "words": text.split_whitespace().count(),
            "lines": text.lines().count(),
            "characters": text.chars().count(),
        })))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn counts_words_lines_and_characters() {
        let args: JsonObject = serde_json::from_value(json!({"text": "one two\nthree é"})).unwrap();
        let out = WordCount::new()
            .call(args, &CallContext::default())
            .await
            .unwrap();
        assert_eq!(
            out.structured_content,
            Some(json!({"words": 4, "lines": 2, "characters": 15}))
        );
    }
}
