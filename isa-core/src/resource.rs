//! Resources: data a client can read by URI, fixed (`docs://readme`) or templated
//! (`users://{id}/profile`).

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{CallContext, IndexItem, ItemKind, Result};

/// What clients and selectors know about a resource or a resource template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// The URI, or a URI template (RFC 6570 level 1: `{name}` stands for one variable) when
    /// it contains `{`.
    pub uri: String,
    /// A short name.
    pub name: String,
    /// What the resource holds.
    #[serde(default)]
    pub description: String,
    /// Media type of its contents, when fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ResourceSpec {
    /// A resource spec; `uri` may be a template.
    pub fn new(
        uri: impl Into<String>,
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        ResourceSpec {
            uri: uri.into(),
            name: name.into(),
            description: description.into(),
            mime_type: None,
            tags: Vec::new(),
        }
    }

    /// Sets the media type.
    pub fn with_mime_type(mut self, mime: impl Into<String>) -> Self {
        self.mime_type = Some(mime.into());
        self
    }

    /// Whether the URI is a template.
    pub fn is_template(&self) -> bool {
        self.uri.contains('{')
    }

    /// The variables of `uri` if it matches this spec's URI (or template).
    ///
    /// ```
    /// use isa_core::ResourceSpec;
    /// let spec = ResourceSpec::new("test://template/{id}/data", "data", "");
    /// let vars = spec.matches("test://template/42/data").unwrap();
    /// assert_eq!(vars["id"], "42");
    /// assert!(spec.matches("test://template/4/2/data").is_none());
    /// assert!(spec.matches("test://other").is_none());
    /// ```
    pub fn matches(&self, uri: &str) -> Option<BTreeMap<String, String>> {
        let mut vars = BTreeMap::new();
        let mut rest = uri;
        let mut template = self.uri.as_str();
        while let Some(open) = template.find('{') {
            let literal = &template[..open];
            rest = rest.strip_prefix(literal)?;
            let close = template[open..].find('}')? + open;
            let name = &template[open + 1..close];
            template = &template[close + 1..];
            // A variable runs to the next literal character of the template (or the end) and
            // never spans a `/`, so one variable is one path segment.
            let end = match template.chars().next() {
                Some(next) => rest.find(next)?,
                None => rest.len(),
            };
            let value = &rest[..end];
            if value.is_empty() || value.contains('/') {
                return None;
            }
            vars.insert(name.to_owned(), value.to_owned());
            rest = &rest[end..];
        }
        (rest == template).then_some(vars)
    }

    /// The selector's index entry for this resource.
    pub fn index_item(&self) -> IndexItem {
        IndexItem {
            id: self.uri.clone(),
            kind: ItemKind::Resource,
            name: self.name.clone(),
            description: self.description.clone(),
            params: Vec::new(),
            tags: self.tags.clone(),
        }
    }
}

/// The contents of one resource read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceContent {
    /// The URI that was read.
    pub uri: String,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Text, for text resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Base64 bytes, for binary resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

impl ResourceContent {
    /// Text contents.
    pub fn text(
        uri: impl Into<String>,
        mime_type: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        ResourceContent {
            uri: uri.into(),
            mime_type: Some(mime_type.into()),
            text: Some(text.into()),
            blob: None,
        }
    }

    /// Binary contents, already base64-encoded.
    pub fn blob(
        uri: impl Into<String>,
        mime_type: impl Into<String>,
        base64: impl Into<String>,
    ) -> Self {
        ResourceContent {
            uri: uri.into(),
            mime_type: Some(mime_type.into()),
            text: None,
            blob: Some(base64.into()),
        }
    }
}

/// Template variables extracted from a read URI.
pub type ResourceVars = BTreeMap<String, String>;

/// A resource (or resource template) a server offers.
///
/// ```
/// use isa_core::{resource_fn, ResourceContent, ResourceSpec};
/// let readme = resource_fn(
///     ResourceSpec::new("docs://{page}", "docs", "Project documentation").with_mime_type("text/markdown"),
///     |uri, vars, _ctx| async move {
///         Ok(vec![ResourceContent::text(uri, "text/markdown", format!("# {}", vars["page"]))])
///     },
/// );
/// # use isa_core::Resource;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let vars = readme.spec().matches("docs://intro").unwrap();
/// let got = readme.read("docs://intro".into(), vars, &Default::default()).await.unwrap();
/// assert_eq!(got[0].text.as_deref(), Some("# intro"));
/// # });
/// ```
#[async_trait]
pub trait Resource: Send + Sync {
    /// The resource's specification.
    fn spec(&self) -> &ResourceSpec;
    /// Reads the resource at `uri`, which matched the spec with `vars`.
    async fn read(
        &self,
        uri: String,
        vars: ResourceVars,
        ctx: &CallContext,
    ) -> Result<Vec<ResourceContent>>;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ResourceBody = dyn Fn(String, ResourceVars, CallContext) -> BoxFuture<Result<Vec<ResourceContent>>>
    + Send
    + Sync;

struct FnResource {
    spec: ResourceSpec,
    body: Box<ResourceBody>,
}

/// Makes a [`Resource`] from a spec and an async closure.
pub fn resource_fn<F, Fut>(spec: ResourceSpec, body: F) -> Arc<dyn Resource>
where
    F: Fn(String, ResourceVars, CallContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<ResourceContent>>> + Send + 'static,
{
    Arc::new(FnResource {
        spec,
        body: Box::new(move |uri, vars, ctx| Box::pin(body(uri, vars, ctx))),
    })
}

#[async_trait]
impl Resource for FnResource {
    fn spec(&self) -> &ResourceSpec {
        &self.spec
    }
    async fn read(
        &self,
        uri: String,
        vars: ResourceVars,
        ctx: &CallContext,
    ) -> Result<Vec<ResourceContent>> {
        (self.body)(uri, vars, ctx.clone()).await
    }
}
