//! `web_search` on the Brave Search API (`GET /res/v1/web/search`, `X-Subscription-Token`).

use std::time::Duration;

use isa_core::{
    CallContext, Error, JsonObject, Result, Tool, ToolAnnotations, ToolOutput, ToolSpec,
    async_trait,
};
use serde::Deserialize;
use serde_json::json;

/// Brave's public endpoint.
pub const BRAVE_ENDPOINT: &str = "https://api.search.brave.com/res/v1/web/search";

/// Web search through Brave. Configure with `BRAVE_API_KEY` (and `BRAVE_SEARCH_URL` to point at
/// another endpoint speaking the same API).
pub struct WebSearch {
    spec: ToolSpec,
    client: reqwest::Client,
    endpoint: String,
    api_key: String,
}

#[derive(Deserialize)]
struct BraveResponse {
    #[serde(default)]
    web: Option<BraveWeb>,
}

#[derive(Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<BraveResult>,
}

#[derive(Deserialize)]
struct BraveResult {
    title: String,
    url: String,
    #[serde(default)]
    description: String,
}

impl WebSearch {
    /// A search tool using `api_key` at `endpoint`.
    pub fn new(api_key: impl Into<String>, endpoint: impl Into<String>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let spec = ToolSpec::new(
            "web_search",
            "Search the web and return the top results with title, URL and snippet",
        )
        .with_input_schema(json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "What to search for"},
                "count": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5,
                          "description": "How many results"}
            },
            "required": ["query"],
            "additionalProperties": false
        }))
        .with_annotations(ToolAnnotations {
            read_only_hint: Some(true),
            open_world_hint: Some(true),
            ..Default::default()
        })
        .with_tags(["web", "search"]);
        Ok(WebSearch {
            spec,
            client,
            endpoint: endpoint.into(),
            api_key: api_key.into(),
        })
    }

    /// From `BRAVE_API_KEY` and optionally `BRAVE_SEARCH_URL`; `None` without a key.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("BRAVE_API_KEY") {
            Ok(key) if !key.trim().is_empty() => {
                let endpoint =
                    std::env::var("BRAVE_SEARCH_URL").unwrap_or_else(|_| BRAVE_ENDPOINT.to_owned());
                Self::new(key.trim(), endpoint).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Searches; returns `(title, url, description)` triples, best first.
    pub async fn search(&self, query: &str, count: u64) -> Result<Vec<(String, String, String)>> {
        let mut url = reqwest::Url::parse(&self.endpoint).map_err(|e| {
            Error::Config(format!(
                "the search endpoint {:?} is not a URL: {e}",
                self.endpoint
            ))
        })?;
        url.query_pairs_mut()
            .append_pair("q", query)
            .append_pair("count", &count.to_string());
        let response = self
            .client
            .get(url)
            .header("Accept", "application/json")
            .header("X-Subscription-Token", &self.api_key)
            .send()
            .await
            .map_err(|e| Error::Upstream {
                service: "brave".into(),
                status: None,
                message: e.to_string(),
                retryable: true,
            })?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            return Err(Error::Overloaded {
                retry_after: Duration::from_secs(retry_after),
            });
        }
        if !status.is_success() {
            return Err(Error::Upstream {
                service: "brave".into(),
                status: Some(status.as_u16()),
                message: match status.as_u16() {
                    401 | 403 => "the API key was refused (check BRAVE_API_KEY)".into(),
                    _ => status.canonical_reason().unwrap_or("error").into(),
                },
                retryable: status.is_server_error(),
            });
        }
        let body: BraveResponse = response.json().await.map_err(|e| Error::Upstream {
            service: "brave".into(),
            status: None,
            message: format!("unexpected answer: {e}"),
            retryable: false,
        })?;
        Ok(body
            .web
            .map(|w| w.results)
            .unwrap_or_default()
            .into_iter()
            .take(count as usize)
            .map(|r| (r.title, r.url, r.description))
            .collect())
    }
}

#[async_trait]
impl Tool for WebSearch {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: JsonObject, _ctx: &CallContext) -> Result<ToolOutput> {
        let query = args
            .get("query")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let count = args.get("count").and_then(|v| v.as_u64()).unwrap_or(5);
        let results = self.search(query, count).await?;
        if results.is_empty() {
            return Ok(ToolOutput::error(format!("no results for {query:?}")));
        }
        let items: Vec<_> = results
            .iter()
            .map(|(title, url, description)| json!({"title": title, "url": url, "description": description}))
            .collect();
        let text = results
            .iter()
            .enumerate()
            .map(|(i, (title, url, description))| {
                format!("{}. {title}\n   {url}\n   {description}", i + 1)
            })
            .collect::<Vec<_>>()
            .join("\n");
        Ok(ToolOutput {
            content: vec![isa_core::Content::text(text)],
            structured_content: Some(json!({ "results": items })),
            is_error: false,
        })
    }
}
