//! `current_time`: the server's clock, in UTC.

use std::sync::Arc;

use isa_core::{ToolAnnotations, ToolOutput, ToolSpec, tool_fn};
use serde_json::json;

/// A tool returning the current UTC time as RFC 3339 and Unix seconds: models do not know
/// what day it is.
pub fn current_time() -> Arc<dyn isa_core::Tool> {
    let spec = ToolSpec::new("current_time", "Get the current date and time (UTC)")
        .with_output_schema(json!({
            "type": "object",
            "properties": {"utc": {"type": "string"}, "unix": {"type": "integer"}},
            "required": ["utc", "unix"]
        }))
        .with_annotations(ToolAnnotations {
            read_only_hint: Some(true),
            ..Default::default()
        })
        .with_tags(["time"]);
    tool_fn(spec, |_, _| async {
        let now = chrono::Utc::now();
        Ok(ToolOutput::json(json!({
            "utc": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "unix": now.timestamp(),
        })))
    })
}
