//! MCP tools over a [`BrowserDriver`]: read a page, take a screenshot, click and fill.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use isa_core::{
    ActionOutput, BrowserAction, BrowserDriver, BrowserTask, CallContext, Content, Error,
    JsonObject, Result, TaskSupport, Tool, ToolAnnotations, ToolOutput, ToolSpec, async_trait,
};
use serde_json::{Value, json};

const TASK_TIMEOUT: Duration = Duration::from_secs(30);

/// `browser_read_page`, `browser_screenshot` and `browser_interact` on `driver`.
pub fn browser_tools(driver: Arc<dyn BrowserDriver>) -> Vec<Arc<dyn Tool>> {
    let url = json!({"type": "string", "description": "The http or https page to open"});
    let annotations = ToolAnnotations {
        open_world_hint: Some(true),
        ..Default::default()
    };
    let spec = |name: &str, description: &str, schema: Value| {
        ToolSpec::new(name, description)
            .with_input_schema(schema)
            .with_annotations(annotations.clone())
            .with_tags(["browser", "web"])
    };
    [
        (
            Kind::Read,
            spec(
                "browser_read_page",
                "Open a page in a real browser (JavaScript runs) and return its visible text",
                json!({"type": "object", "properties": {
                    "url": url,
                    "selector": {"type": "string", "description": "CSS selector of the part to read; the whole page when absent"}
                }, "required": ["url"], "additionalProperties": false}),
            ),
        ),
        (
            Kind::Screenshot,
            spec(
                "browser_screenshot",
                "Open a page in a real browser and return a PNG screenshot of it",
                json!({"type": "object", "properties": {"url": url}, "required": ["url"], "additionalProperties": false}),
            ),
        ),
        (
            Kind::Interact,
            spec(
                "browser_interact",
                "Open a page, then click elements and fill form fields in order, and return the resulting page's text",
                json!({"type": "object", "properties": {
                    "url": url,
                    "steps": {"type": "array", "maxItems": 20, "items": {"type": "object", "properties": {
                        "action": {"type": "string", "enum": ["click", "fill", "wait_for"]},
                        "selector": {"type": "string", "description": "CSS selector of the element"},
                        "value": {"type": "string", "description": "Text to type (fill only)"}
                    }, "required": ["action", "selector"]}},
                    "screenshot": {"type": "boolean", "default": false, "description": "Also return a screenshot at the end"}
                }, "required": ["url", "steps"], "additionalProperties": false}),
            )
            // Up to 20 steps in a real browser: long enough to be worth a task.
            .with_task_support(TaskSupport::Optional),
        ),
    ]
    .into_iter()
    .map(|(kind, spec)| {
        Arc::new(BrowserTool {
            spec,
            kind,
            driver: driver.clone(),
        }) as Arc<dyn Tool>
    })
    .collect()
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Screenshot,
    Interact,
}

struct BrowserTool {
    spec: ToolSpec,
    kind: Kind,
    driver: Arc<dyn BrowserDriver>,
}

fn steps(args: &JsonObject) -> Result<Vec<BrowserAction>> {
    let mut actions = Vec::new();
    for step in args
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let selector = step["selector"].as_str().unwrap_or_default().to_owned();
        actions.push(match step["action"].as_str() {
            Some("click") => BrowserAction::Click { selector },
            Some("wait_for") => BrowserAction::WaitFor { selector },
            Some("fill") => BrowserAction::Fill {
                selector,
                value: step["value"]
                    .as_str()
                    .ok_or_else(|| Error::invalid("a fill step needs `value`"))?
                    .to_owned(),
            },
            other => return Err(Error::invalid(format!("unknown step action {other:?}"))),
        });
    }
    Ok(actions)
}

#[async_trait]
impl Tool for BrowserTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: JsonObject, ctx: &CallContext) -> Result<ToolOutput> {
        if let Kind::Interact = self.kind {
            ctx.continue_as_task().await?;
        }
        let url = args
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let actions = match self.kind {
            Kind::Read => vec![BrowserAction::ReadText {
                selector: args
                    .get("selector")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }],
            Kind::Screenshot => vec![BrowserAction::Screenshot],
            Kind::Interact => {
                let mut actions = steps(&args)?;
                actions.push(BrowserAction::ReadText { selector: None });
                if args.get("screenshot").and_then(Value::as_bool) == Some(true) {
                    actions.push(BrowserAction::Screenshot);
                }
                actions
            }
        };
        let outcome = self
            .driver
            .run(BrowserTask {
                url,
                actions,
                timeout: TASK_TIMEOUT,
            })
            .await?;
        let mut content = vec![Content::text(format!(
            "{} ({})",
            outcome.title, outcome.final_url
        ))];
        for output in outcome.outputs {
            match output {
                ActionOutput::Text { text } => content.push(Content::text(text)),
                ActionOutput::Screenshot { png } => content.push(Content::Image {
                    data: base64::engine::general_purpose::STANDARD.encode(png),
                    mime_type: "image/png".into(),
                }),
                _ => {}
            }
        }
        Ok(ToolOutput {
            content,
            ..Default::default()
        })
    }
}
