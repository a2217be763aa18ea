//! Tools: what a plugin implements, and the values that cross a tool call.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    ClientCapability, ClientChannel, Elicited, Identity, Result, Root, Sampled, SamplingRequest,
    TaskSupport, UserId, ask,
};

/// JSON object, as used for tool arguments and JSON Schemas.
pub type JsonObject = Map<String, Value>;

/// Hints about a tool's behaviour, as in MCP's `ToolAnnotations`. All optional; clients treat them
/// as hints, never as guarantees.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    /// A human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The tool does not change its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// The tool may make destructive changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    /// Calling the tool twice with the same arguments has no further effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    /// The tool talks to an open world (the web), not a closed domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

/// Everything a client and a selector need to know about a tool.
///
/// Serialises in the shape of an MCP `Tool` (`inputSchema`, `outputSchema`), plus `tags` used for
/// filtering and `requiredScope`, the scope a caller must hold to see or call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    /// Unique name within a registry, such as `web_search` or `github/create_issue`.
    pub name: String,
    /// What the tool does, written for a model choosing among tools.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments; always an object schema.
    #[serde(default = "empty_object_schema")]
    pub input_schema: JsonObject,
    /// JSON Schema of `structuredContent`, when the tool returns structured results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<JsonObject>,
    /// Behaviour hints.
    #[serde(default, skip_serializing_if = "is_default")]
    pub annotations: ToolAnnotations,
    /// Free-form categories for filtering (`web`, `files`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The scope a caller needs to see and call this tool; `None` means any authenticated caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    /// Whether the user must confirm each call before the tool runs (a deletion, a purchase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<Confirmation>,
    /// What the client must be able to answer for the tool to run at all; a client that did
    /// not declare one of them is refused before the tool starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_client_capabilities: Vec<ClientCapability>,
    /// Whether a call may run as a task (see [`CallContext::continue_as_task`]).
    #[serde(default, skip_serializing_if = "is_forbidden")]
    pub task_support: TaskSupport,
}

fn is_forbidden(support: &TaskSupport) -> bool {
    *support == TaskSupport::Forbidden
}

/// How a tool that needs the user's confirmation treats a client that cannot ask the user
/// (one that did not declare elicitation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    /// Refuse the call: nothing runs unconfirmed.
    Required,
    /// Run it unconfirmed: asking is a courtesy where the client can.
    WhenPossible,
}

fn is_default(a: &ToolAnnotations) -> bool {
    a == &ToolAnnotations::default()
}

fn empty_object_schema() -> JsonObject {
    let mut schema = JsonObject::new();
    schema.insert("type".into(), Value::String("object".into()));
    schema
}

impl ToolSpec {
    /// A spec with a name, a description and an empty object input schema.
    ///
    /// ```
    /// use isa_core::ToolSpec;
    /// let spec = ToolSpec::new("echo", "Repeats its input")
    ///     .with_input_schema(serde_json::json!({
    ///         "type": "object",
    ///         "properties": {"text": {"type": "string", "description": "What to repeat"}},
    ///         "required": ["text"]
    ///     }))
    ///     .with_tags(["demo"]);
    /// assert_eq!(spec.parameters().collect::<Vec<_>>(), vec![("text", "What to repeat")]);
    /// ```
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            input_schema: empty_object_schema(),
            output_schema: None,
            annotations: ToolAnnotations::default(),
            tags: Vec::new(),
            required_scope: None,
            confirmation: None,
            required_client_capabilities: Vec::new(),
            task_support: TaskSupport::Forbidden,
        }
    }

    /// Sets the input schema. A value that is not a JSON object is replaced by an empty object
    /// schema, since MCP requires an object.
    pub fn with_input_schema(mut self, schema: Value) -> Self {
        self.input_schema = match schema {
            Value::Object(map) => map,
            _ => empty_object_schema(),
        };
        self
    }

    /// Sets the output schema that `structuredContent` must satisfy.
    pub fn with_output_schema(mut self, schema: Value) -> Self {
        self.output_schema = match schema {
            Value::Object(map) => Some(map),
            _ => None,
        };
        self
    }

    /// Sets the tags.
    pub fn with_tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the annotations.
    pub fn with_annotations(mut self, annotations: ToolAnnotations) -> Self {
        self.annotations = annotations;
        self
    }

    /// Requires a scope to see and call the tool.
    pub fn with_required_scope(mut self, scope: impl Into<String>) -> Self {
        self.required_scope = Some(scope.into());
        self
    }

    /// Makes every call wait for the user's confirmation, asked through the client.
    pub fn with_confirmation(mut self, confirmation: Confirmation) -> Self {
        self.confirmation = Some(confirmation);
        self
    }

    /// Lets calls run as tasks.
    pub fn with_task_support(mut self, support: TaskSupport) -> Self {
        self.task_support = support;
        self
    }

    /// Refuses callers whose client does not declare `capability`.
    pub fn requiring_client(mut self, capability: ClientCapability) -> Self {
        if !self.required_client_capabilities.contains(&capability) {
            self.required_client_capabilities.push(capability);
        }
        self
    }

    /// The top-level parameters of the input schema as `(name, description)` pairs, in schema
    /// order. Selectors index them; a missing description is the empty string.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.input_schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|props| props.iter())
            .map(|(name, schema)| {
                let description = schema
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                (name.as_str(), description)
            })
    }
}

/// One piece of a tool's result, in the content kinds MCP defines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Content {
    /// Plain text or markdown.
    Text {
        /// The text.
        text: String,
    },
    /// An image, base64-encoded as MCP carries it.
    Image {
        /// Base64 of the image bytes.
        data: String,
        /// `image/png`, `image/jpeg`, …
        #[serde(rename = "mimeType")]
        mime_type: String,
    },
    /// Audio, base64-encoded.
    Audio {
        /// Base64 of the audio bytes.
        data: String,
        /// `audio/wav`, `audio/mpeg`, …
        #[serde(rename = "mimeType")]
        mime_type: String,
    },
    /// A resource embedded in the result.
    Resource {
        /// The resource's URI.
        uri: String,
        /// Its media type, when known.
        #[serde(rename = "mimeType", skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
        /// Text content (for text resources).
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Base64 content (for binary resources).
        #[serde(skip_serializing_if = "Option::is_none")]
        blob: Option<String>,
    },
}

impl Content {
    /// A text content item.
    pub fn text(text: impl Into<String>) -> Self {
        Content::Text { text: text.into() }
    }
}

/// The result of a tool call that reached the tool.
///
/// A tool that fails in a way the model should see (a 404 from a fetched page, a search that found
/// nothing usable) returns `ToolOutput` with `is_error: true`: the model reads it and can try
/// something else. A call that never reached the tool (unknown tool, invalid arguments, overload)
/// is an [`Error`](crate::Error) instead, which MCP reports as a protocol error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolOutput {
    /// The content shown to the model.
    pub content: Vec<Content>,
    /// Structured result; checked against the tool's output schema when one is declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Value>,
    /// Whether this is an error result.
    #[serde(default)]
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result with one text item.
    pub fn text(text: impl Into<String>) -> Self {
        ToolOutput {
            content: vec![Content::text(text)],
            ..Default::default()
        }
    }

    /// A successful result carrying JSON both as structured content and as its text rendering,
    /// so clients that ignore `structuredContent` still see it.
    pub fn json(value: Value) -> Self {
        ToolOutput {
            content: vec![Content::text(value.to_string())],
            structured_content: Some(value),
            is_error: false,
        }
    }

    /// An error result with a message for the model.
    pub fn error(message: impl Into<String>) -> Self {
        ToolOutput {
            content: vec![Content::text(message)],
            structured_content: None,
            is_error: true,
        }
    }
}

/// Who is calling a tool, passed to every call.
#[derive(Clone, Default)]
pub struct CallContext {
    /// The caller, when the call is authenticated.
    pub identity: Option<Identity>,
    /// An id for logs and idempotency, unique per call (a UUIDv7 the server makes, never the
    /// client's JSON-RPC id).
    pub request_id: Option<String>,
    /// Where progress and log messages go (the MCP client, when it asked for them).
    pub reporter: Option<Arc<dyn Reporter>>,
    /// The way to ask the client for input; `None` when the call did not come from an MCP
    /// client, and then every question is refused.
    pub client: Option<Arc<dyn ClientChannel>>,
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("identity", &self.identity)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl CallContext {
    /// A context for a call made as `identity`.
    pub fn of(identity: Identity) -> Self {
        CallContext {
            identity: Some(identity),
            ..Default::default()
        }
    }

    /// The calling user, when the call is authenticated.
    pub fn user(&self) -> Option<&UserId> {
        self.identity.as_ref().map(|i| &i.user_id)
    }

    /// Whether the caller holds `scope` (by [`Identity::has_scope`]'s rule).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.identity.as_ref().is_some_and(|i| i.has_scope(scope))
    }

    /// Whether the caller may see and call a tool that requires `scope` (`None`: anyone may).
    pub fn may_use(&self, required_scope: Option<&str>) -> bool {
        required_scope.is_none_or(|scope| self.has_scope(scope))
    }

    /// Reports progress to the caller, if it asked for progress; otherwise does nothing.
    pub async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        if let Some(reporter) = &self.reporter {
            reporter.progress(progress, total, message).await;
        }
    }

    /// Whether the client that made this call can answer questions of this kind.
    pub fn client_supports(&self, capability: ClientCapability) -> bool {
        self.client.as_ref().is_some_and(|c| c.supports(capability))
    }

    /// Asks the user, through the client, for what `schema` (a flat object schema, as MCP's
    /// elicitation allows) describes. `key` names the question within this call (see
    /// [`crate::ask`]'s rules); a refusal comes back as `Ok` with the user's action.
    pub async fn elicit(&self, key: &str, message: &str, schema: Value) -> Result<Elicited> {
        ask::ask(
            self.client.as_deref(),
            key,
            ask::elicitation(message, schema),
        )
        .await
    }

    /// Asks the client's model.
    pub async fn sample(&self, key: &str, request: &SamplingRequest) -> Result<Sampled> {
        ask::ask(self.client.as_deref(), key, ask::sampling(request)).await
    }

    /// The client's roots.
    pub async fn roots(&self, key: &str) -> Result<Vec<Root>> {
        let list: ask::RootList = ask::ask(self.client.as_deref(), key, ask::roots()).await?;
        Ok(list.roots)
    }

    /// Marks where a long call goes on as a task, for a tool with
    /// [`TaskSupport`]: when the client accepts tasks the request answers here with a task
    /// the client polls, and the call runs again from the start in the background, where this
    /// returns at once (answers given before are reused, so questions asked before this are
    /// asked in the request, and those after it while the task waits). Elsewhere it returns at
    /// once and the call goes on in the request. Return its error as it is.
    pub async fn continue_as_task(&self) -> Result<()> {
        match &self.client {
            Some(client) => client.continue_as_task().await,
            None => Ok(()),
        }
    }

    /// Sends a log message to the caller (levels as in syslog: `debug`, `info`, `warning`,
    /// `error`, …); does nothing when no client listens.
    pub async fn log(&self, level: &str, message: &str) {
        if let Some(reporter) = &self.reporter {
            reporter.log(level, message).await;
        }
    }
}

/// Receives a running tool's progress and log messages; the MCP service forwards them to the
/// client as notifications.
#[async_trait]
pub trait Reporter: Send + Sync {
    /// Progress so far, out of `total` when known.
    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>);
    /// A log message.
    async fn log(&self, level: &str, message: &str);
}

/// A tool: the unit a plugin implements.
///
/// The server validates arguments against [`ToolSpec::input_schema`] before calling, applies the
/// per-tool timeout and concurrency limit, and turns an `Err` into an error result, so a tool only
/// does its work.
///
/// ```
/// use isa_core::{async_trait, CallContext, JsonObject, Result, Tool, ToolOutput, ToolSpec};
///
/// struct Shout {
///     spec: ToolSpec,
/// }
///
/// #[async_trait]
/// impl Tool for Shout {
///     fn spec(&self) -> &ToolSpec {
///         &self.spec
///     }
///     async fn call(&self, args: JsonObject, _ctx: &CallContext) -> Result<ToolOutput> {
///         let text = args.get("text").and_then(|v| v.as_str()).unwrap_or_default();
///         Ok(ToolOutput::text(text.to_uppercase()))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let tool = Shout { spec: ToolSpec::new("shout", "Upper-cases text") };
/// let mut args = JsonObject::new();
/// args.insert("text".into(), "hi".into());
/// let out = tool.call(args, &CallContext::default()).await.unwrap();
/// assert_eq!(out, ToolOutput::text("HI"));
/// # });
/// ```
#[async_trait]
pub trait Tool: Send + Sync {
    /// The tool's specification. Must not change while the tool is registered; register a new
    /// tool to change it.
    fn spec(&self) -> &ToolSpec;

    /// Runs the tool with arguments that already passed schema validation.
    async fn call(&self, args: JsonObject, ctx: &CallContext) -> Result<ToolOutput>;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ToolFnBody = dyn Fn(JsonObject, CallContext) -> BoxFuture<Result<ToolOutput>> + Send + Sync;

/// A tool made from a spec and an async closure; see [`tool_fn`].
pub struct FnTool {
    spec: ToolSpec,
    body: Box<ToolFnBody>,
}

impl fmt::Debug for FnTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool").field("spec", &self.spec).finish()
    }
}

/// Makes a [`Tool`] from a spec and an async closure, for tools too small for their own type.
///
/// ```
/// use isa_core::{tool_fn, CallContext, JsonObject, Tool, ToolOutput, ToolSpec};
/// let add = tool_fn(ToolSpec::new("add", "Adds a and b"), |args, _ctx| async move {
///     let a = args.get("a").and_then(|v| v.as_f64()).unwrap_or(0.0);
///     let b = args.get("b").and_then(|v| v.as_f64()).unwrap_or(0.0);
///     Ok(ToolOutput::json(serde_json::json!({ "sum": a + b })))
/// });
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let args: JsonObject = serde_json::from_str(r#"{"a": 2, "b": 3}"#).unwrap();
/// let out = add.call(args, &CallContext::default()).await.unwrap();
/// assert_eq!(out.structured_content, Some(serde_json::json!({"sum": 5.0})));
/// # });
/// ```
pub fn tool_fn<F, Fut>(spec: ToolSpec, body: F) -> Arc<FnTool>
where
    F: Fn(JsonObject, CallContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ToolOutput>> + Send + 'static,
{
    Arc::new(FnTool {
        spec,
        body: Box::new(move |args, ctx| Box::pin(body(args, ctx))),
    })
}

#[async_trait]
impl Tool for FnTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: JsonObject, ctx: &CallContext) -> Result<ToolOutput> {
        (self.body)(args, ctx.clone()).await
    }
}
