//! The fixtures that ask the client for input: elicitation, sampling and roots. Each is written
//! once with `CallContext`'s questions and serves both revisions: a 2025-11-25 session gets
//! requests from the server, a 2026-07-28 client gets input-required results.

use std::sync::Arc;

use anyhow::Result;
use isa_core::{
    CallContext, ClientCapability, Elicited, JsonObject, PromptMessage, PromptSpec,
    SamplingRequest, Tool, ToolOutput, ToolSpec, mcp::McpServer, prompt_fn, tool_fn,
};
use serde_json::{Value, json};

fn string_field(name: &str) -> Value {
    json!({"type": "object", "properties": {name: {"type": "string"}}, "required": [name]})
}

fn describe(answer: &Elicited) -> String {
    format!(
        "action={}, content={}",
        serde_json::to_value(answer.action).unwrap_or_default(),
        answer
            .content
            .clone()
            .map(Value::Object)
            .unwrap_or_default()
    )
}

fn argument(args: &JsonObject, name: &str) -> String {
    args.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A tool without arguments whose body only asks.
fn asking_tool<F, Fut>(name: &str, description: &str, body: F) -> Arc<dyn Tool>
where
    F: Fn(CallContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = isa_core::Result<ToolOutput>> + Send + 'static,
{
    tool_fn(ToolSpec::new(name, description), move |_, ctx| body(ctx))
}

/// `{"const", "title"}` choices of an enum with titles.
fn titled(pairs: &[(&str, &str)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(value, title)| json!({"const": value, "title": title}))
        .collect()
}

/// A tool that asks for what `schema` describes and reports the answer.
fn reported_elicitation(name: &str, description: &str, schema: Value) -> Arc<dyn Tool> {
    asking_tool(name, description, move |ctx| {
        let schema = schema.clone();
        async move {
            let answer = ctx.elicit("answer", "Your answer, please", schema).await?;
            Ok(ToolOutput::text(format!(
                "Elicitation completed: {}",
                describe(&answer)
            )))
        }
    })
}

pub async fn add(server: &McpServer) -> Result<()> {
    let tools: Vec<Arc<dyn Tool>> = vec![
        tool_fn(
            ToolSpec::new("test_sampling", "Asks the client's model").with_input_schema(json!({
                "type": "object",
                "properties": {"prompt": {"type": "string"}},
                "required": ["prompt"],
            })),
            |args, ctx| async move {
                let request = SamplingRequest::user(argument(&args, "prompt"), 100);
                let answer = ctx.sample("answer", &request).await?;
                Ok(ToolOutput::text(format!("LLM response: {}", answer.text())))
            },
        ),
        tool_fn(
            ToolSpec::new("test_elicitation", "Asks the user for a name and an email")
                .with_input_schema(json!({
                    "type": "object",
                    "properties": {"message": {"type": "string"}},
                    "required": ["message"],
                })),
            |args, ctx| async move {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "username": {"type": "string", "description": "User's response"},
                        "email": {"type": "string", "description": "User's email address"},
                    },
                    "required": ["username", "email"],
                });
                let answer = ctx
                    .elicit("user_info", &argument(&args, "message"), schema)
                    .await?;
                Ok(ToolOutput::text(format!(
                    "User response: {}",
                    describe(&answer)
                )))
            },
        ),
        reported_elicitation(
            "test_elicitation_sep1034_defaults",
            "Asks with a default for every primitive type",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "default": "John Doe"},
                    "age": {"type": "integer", "default": 30},
                    "score": {"type": "number", "default": 95.5},
                    "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                    "verified": {"type": "boolean", "default": true},
                },
            }),
        ),
        reported_elicitation(
            "test_elicitation_sep1330_enums",
            "Asks with every kind of enum",
            json!({
                "type": "object",
                "properties": {
                    "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    "titledSingle": {"type": "string", "oneOf": titled(&[
                        ("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option")])},
                    "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"]},
                    "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                    "titledMulti": {"type": "array", "items": {"anyOf": titled(&[
                        ("value1", "First Choice"), ("value2", "Second Choice"), ("value3", "Third Choice")])}},
                },
            }),
        ),
        asking_tool(
            "test_input_required_result_elicitation",
            "Asks the user's name and greets them",
            |ctx| async move {
                let answer = ctx
                    .elicit("user_name", "What is your name?", string_field("name"))
                    .await?;
                let name = answer
                    .field("name")
                    .and_then(Value::as_str)
                    .unwrap_or("you");
                Ok(ToolOutput::text(format!("Hello, {name}!")))
            },
        ),
        asking_tool(
            "test_streaming_elicitation",
            "Asks the user's name",
            |ctx| async move {
                let answer = ctx
                    .elicit("user_name", "What is your name?", string_field("name"))
                    .await?;
                Ok(ToolOutput::text(describe(&answer)))
            },
        ),
        asking_tool(
            "test_input_required_result_sampling",
            "Asks the client's model a question",
            |ctx| async move {
                let request = SamplingRequest::user("What is the capital of France?", 100);
                let answer = ctx.sample("capital_question", &request).await?;
                Ok(ToolOutput::text(format!(
                    "The model says: {}",
                    answer.text()
                )))
            },
        ),
        asking_tool(
            "test_input_required_result_list_roots",
            "Lists the client's roots",
            |ctx| async move {
                let roots = ctx.roots("client_roots").await?;
                let uris: Vec<_> = roots.iter().map(|r| r.uri.as_str()).collect();
                Ok(ToolOutput::text(format!("Roots: {}", uris.join(", "))))
            },
        ),
        confirming_tool("test_input_required_result_request_state"),
        confirming_tool("test_input_required_result_tampered_state"),
        asking_tool(
            "test_input_required_result_multiple_inputs",
            "Asks for a name, a greeting and the roots at once",
            |ctx| async move {
                let greeting = SamplingRequest::user("Generate a greeting", 50);
                let (name, greeting, roots) = futures::join!(
                    ctx.elicit("user_name", "What is your name?", string_field("name")),
                    ctx.sample("greeting", &greeting),
                    ctx.roots("client_roots"),
                );
                let (name, greeting, roots) = (name?, greeting?, roots?);
                Ok(ToolOutput::text(format!(
                    "{} {}; {} roots",
                    greeting.text(),
                    name.field("name").and_then(Value::as_str).unwrap_or("you"),
                    roots.len()
                )))
            },
        ),
        asking_tool(
            "test_input_required_result_multi_round",
            "Asks two questions, one after the other",
            |ctx| async move {
                let name = ctx
                    .elicit("step1", "Step 1: What is your name?", string_field("name"))
                    .await?;
                let color = ctx
                    .elicit(
                        "step2",
                        "Step 2: What is your favorite color?",
                        string_field("color"),
                    )
                    .await?;
                Ok(ToolOutput::text(format!(
                    "{} likes {}",
                    name.field("name")
                        .and_then(Value::as_str)
                        .unwrap_or("someone"),
                    color
                        .field("color")
                        .and_then(Value::as_str)
                        .unwrap_or("no color")
                )))
            },
        ),
        asking_tool(
            "test_input_required_result_capabilities",
            "Asks only what the client declared it can answer",
            |ctx| async move {
                let mut answers = Vec::new();
                if ctx.client_supports(ClientCapability::Elicitation) {
                    let answer = ctx
                        .elicit("user_name", "What is your name?", string_field("name"))
                        .await;
                    answers.push(answer.map(|a| describe(&a)));
                }
                if ctx.client_supports(ClientCapability::Sampling) {
                    let request = SamplingRequest::user("Say hello", 50);
                    answers.push(ctx.sample("hello", &request).await.map(|a| a.text()));
                }
                let answers = answers.into_iter().collect::<isa_core::Result<Vec<_>>>()?;
                Ok(ToolOutput::text(answers.join("; ")))
            },
        ),
        tool_fn(
            ToolSpec::new("test_missing_capability", "Needs the client's model")
                .requiring_client(ClientCapability::Sampling),
            |_, ctx| async move {
                let request = SamplingRequest::user("Say hello", 50);
                let answer = ctx.sample("hello", &request).await?;
                Ok(ToolOutput::text(answer.text()))
            },
        ),
    ];
    for tool in tools {
        server.add_tool(tool).await?;
    }
    server
        .add_prompt(prompt_fn(
            PromptSpec::new(
                "test_input_required_result_prompt",
                "A prompt that asks the user for its context",
            ),
            |_, ctx| async move {
                let answer = ctx
                    .elicit(
                        "user_context",
                        "What context should the prompt use?",
                        string_field("context"),
                    )
                    .await?;
                let context = answer
                    .field("context")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Ok(vec![PromptMessage::user(format!(
                    "Answer with this context in mind: {context}"
                ))])
            },
        ))
        .await?;
    Ok(())
}

/// Asks the user to confirm (the request-state scenarios send `{"ok": true}`).
fn confirming_tool(name: &str) -> Arc<dyn Tool> {
    asking_tool(name, "Asks the user to confirm", |ctx| async move {
        let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]});
        let answer = ctx.elicit("confirm", "Please confirm", schema).await?;
        let confirmed = answer.field("ok") == Some(&Value::Bool(true));
        Ok(ToolOutput::text(if confirmed {
            "confirmed"
        } else {
            "not confirmed"
        }))
    })
}
