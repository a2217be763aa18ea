//! Prompts and resources: the two other things an MCP server offers besides tools.

use std::{future::Future, pin::Pin, sync::Arc};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{CallContext, Content, IndexItem, ItemKind, Result};

/// One argument a prompt takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptArgument {
    /// The argument's name.
    pub name: String,
    /// What it means.
    #[serde(default)]
    pub description: String,
    /// Whether the prompt needs it.
    #[serde(default)]
    pub required: bool,
}

/// What clients and selectors know about a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSpec {
    /// Unique name within a registry.
    pub name: String,
    /// What the prompt is for.
    #[serde(default)]
    pub description: String,
    /// Its arguments.
    #[serde(default)]
    pub arguments: Vec<PromptArgument>,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl PromptSpec {
    /// A prompt spec with no arguments.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        PromptSpec {
            name: name.into(),
            description: description.into(),
            arguments: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// Adds an argument.
    pub fn with_argument(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        required: bool,
    ) -> Self {
        self.arguments.push(PromptArgument {
            name: name.into(),
            description: description.into(),
            required,
        });
        self
    }

    /// The selector's index entry for this prompt.
    pub fn index_item(&self) -> IndexItem {
        IndexItem {
            id: self.name.clone(),
            kind: ItemKind::Prompt,
            name: self.name.clone(),
            description: self.description.clone(),
            params: self
                .arguments
                .iter()
                .map(|a| (a.name.clone(), a.description.clone()))
                .collect(),
            tags: self.tags.clone(),
        }
    }
}

/// Who speaks a prompt message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptRole {
    /// The user.
    User,
    /// The assistant.
    Assistant,
}

/// One message of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptMessage {
    /// Who says it.
    pub role: PromptRole,
    /// What is said.
    pub content: Content,
}

impl PromptMessage {
    /// A text message from the user.
    pub fn user(text: impl Into<String>) -> Self {
        PromptMessage {
            role: PromptRole::User,
            content: Content::text(text),
        }
    }
}

/// Prompt arguments as the client sent them.
pub type PromptArgs = serde_json::Map<String, serde_json::Value>;

/// A prompt template: a spec and a way to render it with arguments.
///
/// ```
/// use isa_core::{prompt_fn, PromptMessage, PromptSpec};
/// let greet = prompt_fn(
///     PromptSpec::new("greet", "Greets someone").with_argument("name", "Who", true),
///     |args, _ctx| async move {
///         let name = args.get("name").and_then(|v| v.as_str()).unwrap_or("you").to_owned();
///         Ok(vec![PromptMessage::user(format!("Say hello to {name}."))])
///     },
/// );
/// # use isa_core::Prompt;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let args = serde_json::from_str(r#"{"name": "Ada"}"#).unwrap();
/// let messages = greet.render(args, &Default::default()).await.unwrap();
/// assert_eq!(messages, vec![PromptMessage::user("Say hello to Ada.")]);
/// # });
/// ```
#[async_trait]
pub trait Prompt: Send + Sync {
    /// The prompt's specification.
    fn spec(&self) -> &PromptSpec;
    /// Renders the prompt. Required arguments are checked by the server before this is called.
    async fn render(&self, args: PromptArgs, ctx: &CallContext) -> Result<Vec<PromptMessage>>;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type PromptBody =
    dyn Fn(PromptArgs, CallContext) -> BoxFuture<Result<Vec<PromptMessage>>> + Send + Sync;

struct FnPrompt {
    spec: PromptSpec,
    body: Box<PromptBody>,
}

/// Makes a [`Prompt`] from a spec and an async closure.
pub fn prompt_fn<F, Fut>(spec: PromptSpec, body: F) -> Arc<dyn Prompt>
where
    F: Fn(PromptArgs, CallContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<PromptMessage>>> + Send + 'static,
{
    Arc::new(FnPrompt {
        spec,
        body: Box::new(move |args, ctx| Box::pin(body(args, ctx))),
    })
}

#[async_trait]
impl Prompt for FnPrompt {
    fn spec(&self) -> &PromptSpec {
        &self.spec
    }
    async fn render(&self, args: PromptArgs, ctx: &CallContext) -> Result<Vec<PromptMessage>> {
        (self.body)(args, ctx.clone()).await
    }
}
