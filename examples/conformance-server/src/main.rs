//! The fixture server of the official MCP conformance suite, built on `isa-core` alone.
//!
//! The suite calls tools, prompts and resources by fixed names (`test_simple_text`,
//! `test://static-text`, `test_prompt_with_arguments`, …); this binary registers them through
//! the same plugin API any isa user has, and serves them with `McpServer::router`.
//!
//! ```text
//! cargo run --bin conformance-server -- --port 3001
//! conformance server --url http://127.0.0.1:3001/mcp --requirements 2026-07-28
//! ```

mod asking;
mod tasks;

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use clap::Parser;
use isa_core::{
    Content, Error, PromptMessage, PromptRole, PromptSpec, ResourceContent, ResourceSpec,
    ToolOutput, ToolSpec,
    mcp::{McpConfig, McpServer},
    prompt_fn, resource_fn, tool_fn,
};
use serde_json::json;

/// A 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV file with a header and no samples.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=";

#[derive(Parser)]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 3001)]
    port: u16,
}

fn simple(name: &str, description: &str, content: Vec<Content>) -> Arc<dyn isa_core::Tool> {
    tool_fn(ToolSpec::new(name, description), move |_, _| {
        let content = content.clone();
        async move {
            Ok(ToolOutput {
                content,
                ..Default::default()
            })
        }
    })
}

fn text_resource(uri: &str, mime: &str, text: &str) -> Content {
    Content::Resource {
        uri: uri.into(),
        mime_type: Some(mime.into()),
        text: Some(text.into()),
        blob: None,
    }
}

async fn fixtures(server: &McpServer) -> Result<()> {
    let image = || Content::Image {
        data: PNG.into(),
        mime_type: "image/png".into(),
    };
    let tools = vec![
        simple(
            "test_simple_text",
            "Returns a simple text",
            vec![Content::text("This is a simple text response for testing.")],
        ),
        simple("test_image_content", "Returns an image", vec![image()]),
        simple(
            "test_audio_content",
            "Returns audio",
            vec![Content::Audio {
                data: WAV.into(),
                mime_type: "audio/wav".into(),
            }],
        ),
        simple(
            "test_embedded_resource",
            "Returns an embedded resource",
            vec![text_resource(
                "test://embedded-resource",
                "text/plain",
                "This is an embedded resource content.",
            )],
        ),
        simple(
            "test_multiple_content_types",
            "Returns text, an image and a resource",
            vec![
                Content::text("Multiple content types test:"),
                image(),
                text_resource(
                    "test://mixed-content-resource",
                    "application/json",
                    r#"{"test":"data","value":123}"#,
                ),
            ],
        ),
        tool_fn(ToolSpec::new("test_error_handling", "Always fails"), |_, _| async {
            Err(Error::invalid("This tool intentionally returns an error for testing"))
        }),
        tool_fn(
            ToolSpec::new("test_tool_with_logging", "Logs three messages while it runs"),
            |_, ctx| async move {
                ctx.log("info", "Tool execution started").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                ctx.log("info", "Tool processing data").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                ctx.log("info", "Tool execution completed").await;
                Ok(ToolOutput::text("Logging tool finished"))
            },
        ),
        tool_fn(
            ToolSpec::new("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100"),
            |_, ctx| async move {
                for (step, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                    if step > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    ctx.progress(progress, Some(100.0), None).await;
                }
                Ok(ToolOutput::text("Progress tool finished"))
            },
        ),
        tool_fn(
            ToolSpec::new("test_header_param", "Echoes a region also sent as the Mcp-Param-Region header")
                .with_input_schema(json!({
                    "type": "object",
                    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
                    "required": ["region"],
                })),
            |args, _| async move {
                Ok(ToolOutput::text(format!("region {}", args["region"])))
            },
        ),
        tool_fn(
            ToolSpec::new("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features").with_input_schema(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
                "properties": {
                    "name": {"type": "string"},
                    "address": {"$ref": "#/$defs/address"},
                    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                    "phone": {"type": "string"},
                    "email": {"type": "string"}
                },
                "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                "then": {"required": ["phone"]},
                "else": {"required": ["email"]},
                "additionalProperties": false
            })),
            |args, _| async move { Ok(ToolOutput::text(format!("received {}", serde_json::Value::Object(args)))) },
        ),
    ];
    for tool in tools {
        server.add_tool(tool).await?;
    }
    add_list_change_triggers(server).await?;
    asking::add(server).await?;
    tasks::add(server).await?;

    server
        .add_resource(resource_fn(
            ResourceSpec::new(
                "test://static-text",
                "static-text",
                "A static text resource",
            )
            .with_mime_type("text/plain"),
            |uri, _, _| async move {
                Ok(vec![ResourceContent::text(
                    uri,
                    "text/plain",
                    "This is the content of the static text resource.",
                )])
            },
        ))
        .await?;
    server
        .add_resource(resource_fn(
            ResourceSpec::new(
                "test://static-binary",
                "static-binary",
                "A static binary resource",
            )
            .with_mime_type("image/png"),
            |uri, _, _| async move { Ok(vec![ResourceContent::blob(uri, "image/png", PNG)]) },
        ))
        .await?;
    server
        .add_resource(resource_fn(
            ResourceSpec::new(
                "test://watched-resource",
                "watched-resource",
                "A resource clients subscribe to",
            )
            .with_mime_type("text/plain"),
            |uri, _, _| async move {
                Ok(vec![ResourceContent::text(
                    uri,
                    "text/plain",
                    "Watched resource content.",
                )])
            },
        ))
        .await?;
    server
        .add_resource(resource_fn(
            ResourceSpec::new(
                "test://template/{id}/data",
                "template-data",
                "Data for an id",
            )
            .with_mime_type("application/json"),
            |uri, vars, _| async move {
                let id = vars.get("id").cloned().unwrap_or_default();
                let text =
                    json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")})
                        .to_string();
                Ok(vec![ResourceContent::text(uri, "application/json", text)])
            },
        ))
        .await?;

    let prompts = vec![
        prompt_fn(
            PromptSpec::new("test_simple_prompt", "A prompt without arguments"),
            |_, _| async {
                Ok(vec![PromptMessage::user(
                    "This is a simple prompt for testing.",
                )])
            },
        ),
        prompt_fn(
            PromptSpec::new("test_prompt_with_arguments", "A prompt with two arguments")
                .with_argument("arg1", "First test argument", true)
                .with_argument("arg2", "Second test argument", true),
            |args, _| async move {
                let arg = |name: &str| {
                    args.get(name)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                Ok(vec![PromptMessage::user(format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    arg("arg1"),
                    arg("arg2")
                ))])
            },
        ),
        prompt_fn(
            PromptSpec::new(
                "test_prompt_with_embedded_resource",
                "A prompt that embeds a resource",
            )
            .with_argument("resourceUri", "URI of the resource to embed", true),
            |args, _| async move {
                let uri = args
                    .get("resourceUri")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                Ok(vec![
                    PromptMessage {
                        role: PromptRole::User,
                        content: text_resource(
                            &uri,
                            "text/plain",
                            "Embedded resource content for testing.",
                        ),
                    },
                    PromptMessage::user("Please process the embedded resource above."),
                ])
            },
        ),
        prompt_fn(
            PromptSpec::new("test_prompt_with_image", "A prompt with an image"),
            |_, _| async {
                Ok(vec![
                    PromptMessage {
                        role: PromptRole::User,
                        content: Content::Image {
                            data: PNG.into(),
                            mime_type: "image/png".into(),
                        },
                    },
                    PromptMessage::user("Please analyze the image above."),
                ])
            },
        ),
    ];
    for prompt in prompts {
        server.add_prompt(prompt).await?;
    }
    Ok(())
}

/// Tools that change the tool and prompt lists at run time, so the suite can watch the
/// `list_changed` notifications; and one that logs, for the log-level checks.
async fn add_list_change_triggers(server: &McpServer) -> Result<()> {
    let for_tools = server.clone();
    server
        .add_tool(tool_fn(
            ToolSpec::new(
                "test_trigger_tool_change",
                "Adds or removes the tool test_dynamic_tool",
            ),
            move |_, _| {
                let server = for_tools.clone();
                async move {
                    if !server.remove_tool("test_dynamic_tool").await? {
                        server
                            .add_tool(simple(
                                "test_dynamic_tool",
                                "Appears and disappears",
                                vec![Content::text("here")],
                            ))
                            .await?;
                    }
                    Ok(ToolOutput::text("tool list changed"))
                }
            },
        ))
        .await?;
    let for_prompts = server.clone();
    server
        .add_tool(tool_fn(
            ToolSpec::new(
                "test_trigger_prompt_change",
                "Adds or replaces the prompt test_dynamic_prompt",
            ),
            move |_, _| {
                let server = for_prompts.clone();
                async move {
                    server
                        .add_prompt(prompt_fn(
                            PromptSpec::new("test_dynamic_prompt", "Added at run time"),
                            |_, _| async { Ok(vec![PromptMessage::user("dynamic")]) },
                        ))
                        .await?;
                    Ok(ToolOutput::text("prompt list changed"))
                }
            },
        ))
        .await?;
    server
        .add_tool(tool_fn(
            ToolSpec::new("test_logging_tool", "Logs at every level it is allowed to"),
            |_, ctx| async move {
                for level in ["debug", "info", "warning", "error"] {
                    ctx.log(level, &format!("a {level} message")).await;
                }
                Ok(ToolOutput::text("logged"))
            },
        ))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let server = McpServer::builder(McpConfig {
        name: "isa-conformance-fixture".into(),
        ..McpConfig::default()
    })
    .build();
    fixtures(&server).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    eprintln!(
        "conformance fixture on http://{}/mcp",
        listener.local_addr()?
    );
    axum::serve(listener, server.router()).await?;
    Ok(())
}
