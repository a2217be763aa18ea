//! The fixtures of the tasks scenarios: tools that continue as tasks when the client accepts
//! them (`CallContext::continue_as_task`), with the same code in both cases.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use isa_core::{Error, TaskSupport, Tool, ToolOutput, ToolSpec, mcp::McpServer, tool_fn};
use serde_json::{Value, json};

fn confirm_schema() -> Value {
    json!({"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]})
}

pub async fn add(server: &McpServer) -> Result<()> {
    let tools: Vec<Arc<dyn Tool>> = vec![
        tool_fn(
            ToolSpec::new("greet", "Greets someone, at once").with_input_schema(json!({
                "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
            })),
            |args, _| async move {
                let name = args["name"].as_str().unwrap_or("you").to_owned();
                Ok(ToolOutput::text(format!("Hello, {name}!")))
            },
        ),
        tool_fn(
            ToolSpec::new("slow_compute", "Works for `seconds` seconds")
                .with_input_schema(json!({
                    "type": "object",
                    "properties": {"seconds": {"type": "number"}, "label": {"type": "string"}},
                    "required": ["seconds"],
                }))
                .with_task_support(TaskSupport::Optional),
            |args, ctx| async move {
                ctx.continue_as_task().await?;
                let seconds = args["seconds"].as_f64().unwrap_or(0.0).clamp(0.0, 600.0);
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                let label = args["label"].as_str().unwrap_or("job");
                Ok(ToolOutput::text(format!("{label}: done after {seconds} s")))
            },
        ),
        tool_fn(
            ToolSpec::new("failing_job", "Fails after a second, always as a task")
                .with_task_support(TaskSupport::Required),
            |_, ctx| async move {
                ctx.continue_as_task().await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(Error::invalid("this job always fails"))
            },
        ),
        tool_fn(
            ToolSpec::new("protocol_error_job", "Crashes").with_task_support(TaskSupport::Optional),
            |_, ctx| async move {
                ctx.continue_as_task().await?;
                #[allow(clippy::panic)]
                {
                    panic!("protocol_error_job crashes on purpose");
                }
            },
        ),
        tool_fn(
            ToolSpec::new("confirm_delete", "Deletes a file once the user confirms")
                .with_input_schema(json!({
                    "type": "object", "properties": {"filename": {"type": "string"}},
                }))
                .with_task_support(TaskSupport::Optional),
            |args, ctx| async move {
                ctx.continue_as_task().await?;
                let name = args["filename"].as_str().unwrap_or("the file").to_owned();
                let answer = ctx
                    .elicit("confirm", &format!("Delete {name}?"), confirm_schema())
                    .await?;
                Ok(ToolOutput::text(match answer.field("confirm") {
                    Some(Value::Bool(true)) => format!("deleted {name}"),
                    _ => format!("kept {name}"),
                }))
            },
        ),
        tool_fn(
            ToolSpec::new("multi_input", "Asks two questions at once")
                .with_task_support(TaskSupport::Optional),
            |_, ctx| async move {
                ctx.continue_as_task().await?;
                let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
                let (first, second) = futures::join!(
                    ctx.elicit("first", "First name?", schema.clone()),
                    ctx.elicit("second", "Second name?", schema),
                );
                let (first, second) = (first?, second?);
                let name = |a: &isa_core::Elicited| {
                    a.field("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned()
                };
                Ok(ToolOutput::text(format!(
                    "{} and {}",
                    name(&first),
                    name(&second)
                )))
            },
        ),
        tool_fn(
            ToolSpec::new(
                "test_tool_with_task",
                "Asks a name in the request, then works as a task",
            )
            .with_task_support(TaskSupport::Required),
            |_, ctx| async move {
                let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
                let answer = ctx
                    .elicit("user_name", "What is your name?", schema)
                    .await?;
                ctx.continue_as_task().await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let name = answer
                    .field("name")
                    .and_then(Value::as_str)
                    .unwrap_or("you");
                Ok(ToolOutput::text(format!("Hello, {name}, from a task")))
            },
        ),
    ];
    for tool in tools {
        server.add_tool(tool).await?;
    }
    Ok(())
}
