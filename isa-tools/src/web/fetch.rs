//! `web_fetch`: fetch a page and return its readable text or markdown.

use std::time::Duration;

use futures::StreamExt;
use isa_core::{
    CallContext, Error, JsonObject, Result, Tool, ToolAnnotations, ToolOutput, ToolSpec,
    async_trait,
};
use reqwest::{Url, header};
use serde_json::json;

use super::guard::SsrfGuard;

/// Limits of [`WebFetch`].
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Bodies larger than this are refused (the read stops there; nothing more is downloaded).
    pub max_bytes: usize,
    /// Whole request, redirects included.
    pub timeout: Duration,
    /// Redirects followed at most, each checked by the guard.
    pub max_redirects: usize,
    /// Characters of text returned at most; longer pages are cut and say so.
    pub max_chars: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_bytes: 5 * 1024 * 1024,
            timeout: Duration::from_secs(20),
            max_redirects: 5,
            max_chars: 100_000,
        }
    }
}

/// Fetches a web page through the [`SsrfGuard`] and turns HTML into markdown or plain text.
pub struct WebFetch {
    spec: ToolSpec,
    client: reqwest::Client,
    guard: SsrfGuard,
    config: FetchConfig,
}

impl WebFetch {
    /// The tool with its limits and guard.
    pub fn new(guard: SsrfGuard, config: FetchConfig) -> Result<Self> {
        let client = guard.http_client(
            reqwest::Client::builder()
                .timeout(config.timeout)
                .user_agent(concat!("isa-web-fetch/", env!("CARGO_PKG_VERSION"))),
            config.max_redirects,
        )?;
        let spec = ToolSpec::new(
            "web_fetch",
            "Fetch a web page by URL and return its readable content as markdown or plain text",
        )
        .with_input_schema(json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "The http or https URL to fetch"},
                "format": {"type": "string", "enum": ["markdown", "text"], "default": "markdown",
                           "description": "markdown lists link targets; text leaves them out"}
            },
            "required": ["url"],
            "additionalProperties": false
        }))
        .with_annotations(ToolAnnotations {
            read_only_hint: Some(true),
            open_world_hint: Some(true),
            ..Default::default()
        })
        .with_tags(["web"]);
        Ok(WebFetch {
            spec,
            client,
            guard,
            config,
        })
    }

    /// Fetches `url`: its final URL, media type and decoded text.
    pub async fn fetch(&self, url: &str, markdown: bool) -> Result<Fetched> {
        let url: Url = url
            .parse()
            .map_err(|e| Error::invalid(format!("{url:?} is not a URL: {e}")))?;
        self.guard.check_url(&url)?;
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| describe(&e, self.config.timeout))?;
        let final_url = response.url().to_string();
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Upstream {
                service: host_of(&final_url),
                status: Some(status.as_u16()),
                message: status.canonical_reason().unwrap_or("error").to_owned(),
                retryable: status.is_server_error(),
            });
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if let Some(length) = response.content_length()
            && length > self.config.max_bytes as u64
        {
            return Err(Error::TooLarge {
                limit: self.config.max_bytes as u64,
            });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| describe(&e, self.config.timeout))?;
            if body.len() + chunk.len() > self.config.max_bytes {
                return Err(Error::TooLarge {
                    limit: self.config.max_bytes as u64,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let is_html =
            content_type.contains("html") || (content_type.is_empty() && sniff_html(&body));
        if !is_html
            && !content_type.starts_with("text/")
            && !content_type.contains("json")
            && !content_type.contains("xml")
        {
            return Err(Error::UnsupportedMediaType(format!(
                "{final_url} is {content_type}, not text or HTML"
            )));
        }
        let text = decode(&body, &content_type, is_html);
        let text = if is_html {
            let width = 100;
            let rendered = if markdown {
                html2text::config::plain()
                    .link_footnotes(true)
                    .string_from_read(text.as_bytes(), width)
            } else {
                html2text::config::plain_no_decorate().string_from_read(text.as_bytes(), width)
            };
            rendered
                .map_err(|e| Error::invalid(format!("cannot read the HTML of {final_url}: {e}")))?
        } else {
            text
        };
        let (text, truncated) = match text.char_indices().nth(self.config.max_chars) {
            Some((cut, _)) => (text[..cut].to_owned(), true),
            None => (text, false),
        };
        Ok(Fetched {
            url: final_url,
            content_type,
            text,
            truncated,
        })
    }
}

/// What [`WebFetch::fetch`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The URL after redirects.
    pub url: String,
    /// The response's media type.
    pub content_type: String,
    /// Markdown, plain text, or the body as text for non-HTML types.
    pub text: String,
    /// Whether the text was cut at the character limit.
    pub truncated: bool,
}

fn host_of(url: &str) -> String {
    Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

fn sniff_html(body: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    head.contains("<html") || head.contains("<!doctype html")
}

/// Decodes with the charset of the Content-Type header, else of a `<meta charset>` near the
/// start of an HTML page, else UTF-8 (with a byte-order mark winning over both).
fn decode(body: &[u8], content_type: &str, is_html: bool) -> String {
    let from_header = content_type
        .split(';')
        .filter_map(|part| part.trim().strip_prefix("charset="))
        .next()
        .map(|c| c.trim_matches('"').to_owned());
    let from_meta = || {
        let head = String::from_utf8_lossy(&body[..body.len().min(2048)]).to_ascii_lowercase();
        let at = head.find("charset=")? + "charset=".len();
        let rest = head[at..].trim_start_matches(['"', '\'']);
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))?;
        Some(rest[..end].to_owned())
    };
    let label = from_header.or_else(|| if is_html { from_meta() } else { None });
    let encoding = label
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    let (text, _, _) = encoding.decode(body);
    text.into_owned()
}

/// A transport error in words, naming the guard's refusal when that was the cause.
fn describe(error: &reqwest::Error, timeout: Duration) -> Error {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut chain = Vec::new();
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    let message = chain.join(": ");
    // A refusal by the guard reaches us as the resolver's (or redirect policy's) error text
    // inside reqwest's error chain; its wording is the guard's own ("… address; requests
    // there are refused").
    if message.contains("refused") && message.contains("address") {
        Error::Forbidden(message)
    } else if error.is_timeout() {
        Error::Timeout(timeout)
    } else {
        Error::Upstream {
            service: error
                .url()
                .and_then(|u| u.host_str())
                .unwrap_or("web")
                .to_owned(),
            status: None,
            message,
            retryable: error.is_connect(),
        }
    }
}

#[async_trait]
impl Tool for WebFetch {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: JsonObject, _ctx: &CallContext) -> Result<ToolOutput> {
        let url = args.get("url").and_then(|v| v.as_str()).unwrap_or_default();
        let markdown = args.get("format").and_then(|v| v.as_str()) != Some("text");
        let fetched = self.fetch(url, markdown).await?;
        let mut text = fetched.text;
        if fetched.truncated {
            text.push_str(&format!(
                "\n\n[cut at {} characters]",
                self.config.max_chars
            ));
        }
        Ok(ToolOutput::text(format!(
            "Content of {}:\n\n{text}",
            fetched.url
        )))
    }
}
