//! Where an agent's tools come from: a [`ToolSource`], and [`McpTools`], the one that reaches
//! an MCP server over Streamable HTTP with the caller's own credential.

use std::sync::Arc;

use isa_core::{ACT_FOR_HEADER, Error, JsonObject, Result, ToolSpec, UserId, async_trait};
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig, GetPromptRequestParams},
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

/// The name of the MCP server's discovery tool.
pub const DISCOVER_TOOLS: &str = "discover_tools";

/// What a tool answered, as the model reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolReply {
    /// The result's text (structured results as JSON).
    pub text: String,
    /// Whether the tool reported a failure.
    pub is_error: bool,
}

/// The tools an agent may use. Implementations act for one caller.
#[async_trait]
pub trait ToolSource: Send + Sync {
    /// At most `limit` tools that fit `task`, best first.
    async fn discover(&self, task: &str, limit: usize) -> Result<Vec<ToolSpec>>;

    /// Calls the tool `name` with `arguments`. A failure of the tool itself is a reply with
    /// `is_error`; `Err` means the source could not be asked.
    async fn call(&self, name: &str, arguments: JsonObject) -> Result<ToolReply>;
}

/// Opens sessions with one MCP server for many callers, over one pool of connections.
#[derive(Clone)]
pub struct McpConnector {
    url: String,
    http: reqwest::Client,
}

impl McpConnector {
    /// A connector to the MCP endpoint `url` (such as `http://127.0.0.1:8081/mcp`).
    pub fn new(url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            // A credential is sent with every request: never to where a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("an HTTP client for {url}: {e}")))?;
        Ok(McpConnector {
            url: url.to_owned(),
            http,
        })
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A session as the holder of `credential` (sent as `Authorization: Bearer`), or, with an
    /// administrator's credential, acting as `user` ([`ACT_FOR_HEADER`]): per-user tools then
    /// act for that user.
    pub async fn connect(
        &self,
        credential: Option<&str>,
        user: Option<&UserId>,
    ) -> Result<McpTools> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.clone());
        if let Some(credential) = credential {
            config = config.auth_header(credential.to_owned());
        }
        if let Some(user) = user {
            let value = HeaderValue::from_str(user.as_str())
                .map_err(|_| Error::invalid("a user id that is not a header value"))?;
            config = config.custom_headers(
                [(HeaderName::from_static(ACT_FOR_HEADER), value)]
                    .into_iter()
                    .collect(),
            );
        }
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let client = ClientConfig::default()
            .serve(transport)
            .await
            .map_err(|e| Error::Unavailable(format!("MCP server {}: {e}", self.url)))?;
        Ok(McpTools {
            client: Arc::new(client),
        })
    }
}

/// An MCP server's tools, found with its `discover_tools` tool and called with `tools/call`,
/// over one Streamable HTTP session that carries the caller's credential: per-user tools (files)
/// act for that caller only.
pub struct McpTools {
    client: Arc<RunningService<RoleClient, ClientConfig>>,
}

impl McpTools {
    /// Connects to the MCP endpoint `url` (such as `http://127.0.0.1:8081/mcp`) as the holder
    /// of `credential` (a bearer token or API key, sent as `Authorization: Bearer`).
    pub async fn connect(url: &str, credential: Option<&str>) -> Result<Self> {
        McpConnector::new(url)?.connect(credential, None).await
    }

    /// How many tools the server lists to this caller.
    pub async fn count_tools(&self) -> Result<usize> {
        let tools = self
            .client
            .peer()
            .list_all_tools()
            .await
            .map_err(|e| Error::Unavailable(format!("MCP tools/list: {e}")))?;
        Ok(tools.len())
    }

    /// The text of the server's prompt `name` filled with `arguments`: its messages' text,
    /// one paragraph each. A prompt the server does not have, or arguments it refuses, are
    /// invalid input.
    pub async fn prompt(&self, name: &str, arguments: JsonObject) -> Result<String> {
        let params = GetPromptRequestParams::new(name).with_arguments(arguments);
        let prompt = self
            .client
            .peer()
            .get_prompt(params)
            .await
            .map_err(|e| match e {
                rmcp::ServiceError::McpError(e) => {
                    Error::invalid(format!("prompt {name:?}: {}", e.message))
                }
                other => Error::Unavailable(format!("MCP prompts/get {name}: {other}")),
            })?;
        let texts: Vec<&str> = prompt
            .messages
            .iter()
            .filter_map(|m| m.content.as_text().map(|t| t.text.as_str()))
            .collect();
        Ok(texts.join("\n\n"))
    }

    async fn call_tool(&self, name: &str, arguments: JsonObject) -> Result<CallToolResult> {
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
        self.client
            .peer()
            .call_tool(params)
            .await
            .map_err(|e| Error::Unavailable(format!("MCP tools/call {name}: {e}")))
    }
}

/// A result's text: its text items joined, or its structured content as JSON.
fn reply_text(result: &CallToolResult) -> String {
    let texts: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    if texts.is_empty() {
        result
            .structured_content
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
    } else {
        texts.join("\n")
    }
}

#[async_trait]
impl ToolSource for McpTools {
    async fn discover(&self, task: &str, limit: usize) -> Result<Vec<ToolSpec>> {
        // The task is the last user message alone, which in a conversation often lacks what it
        // is about ("yes, do that", a bare URL): relevance judged on it would withhold tools the
        // conversation needs, so the model is offered the best and chooses.
        let arguments = match json!({"query": task, "top_k": limit, "min_relevance": 0}) {
            Value::Object(arguments) => arguments,
            _ => unreachable!("an object literal"),
        };
        let result = self.call_tool(DISCOVER_TOOLS, arguments).await?;
        if result.is_error.unwrap_or(false) {
            return Err(Error::Unavailable(format!(
                "{DISCOVER_TOOLS} failed: {}",
                reply_text(&result)
            )));
        }
        let found = match &result.structured_content {
            Some(structured) => structured.clone(),
            None => serde_json::from_str(&reply_text(&result)).map_err(|e| {
                Error::Unavailable(format!("{DISCOVER_TOOLS} answered no JSON: {e}"))
            })?,
        };
        let tools = found["tools"].as_array().cloned().unwrap_or_default();
        Ok(tools
            .into_iter()
            .filter_map(|tool| serde_json::from_value::<ToolSpec>(tool).ok())
            .filter(|spec| spec.name != DISCOVER_TOOLS)
            .collect())
    }

    async fn call(&self, name: &str, arguments: JsonObject) -> Result<ToolReply> {
        let result = self.call_tool(name, arguments).await?;
        Ok(ToolReply {
            text: reply_text(&result),
            is_error: result.is_error.unwrap_or(false),
        })
    }
}
