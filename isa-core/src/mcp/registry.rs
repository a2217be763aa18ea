//! The tools, prompts and resources a server offers, changeable at run time.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast};

use crate::{Error, Prompt, Resource, Result, Tool};

/// Per-tool limits the server enforces around every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolLimits {
    /// A call running longer than this is abandoned and answered with a tool error.
    pub timeout: Duration,
    /// At most this many calls of the tool run at once; further calls get a "busy" tool error
    /// at once instead of queueing.
    pub max_concurrent: usize,
}

impl Default for ToolLimits {
    fn default() -> Self {
        ToolLimits {
            timeout: Duration::from_secs(60),
            max_concurrent: 64,
        }
    }
}

/// Which list changed, for `notifications/*/list_changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListChanged {
    /// `tools/list` changed.
    Tools,
    /// `prompts/list` changed.
    Prompts,
    /// `resources/list` or `resources/templates/list` changed.
    Resources,
}

/// A registered tool with what the server needs to call it safely.
pub(crate) struct ToolEntry {
    pub tool: Arc<dyn Tool>,
    pub input_validator: jsonschema::Validator,
    pub output_validator: Option<jsonschema::Validator>,
    pub limits: ToolLimits,
    pub permits: Arc<Semaphore>,
}

impl ToolEntry {
    pub fn new(tool: Arc<dyn Tool>, limits: ToolLimits) -> Result<Self> {
        let spec = tool.spec();
        if spec.name.is_empty() || spec.name.len() > 128 || spec.name.chars().any(char::is_control)
        {
            return Err(Error::invalid(format!(
                "tool name {:?} must be 1 to 128 characters without control characters",
                spec.name
            )));
        }
        let compile = |schema: &serde_json::Map<String, Value>, which: &str| {
            jsonschema::validator_for(&Value::Object(schema.clone())).map_err(|e| {
                Error::invalid(format!(
                    "tool {}: its {which} schema is not valid JSON Schema: {e}",
                    spec.name
                ))
            })
        };
        let input_validator = compile(&spec.input_schema, "input")?;
        let output_validator = spec
            .output_schema
            .as_ref()
            .map(|schema| compile(schema, "output"))
            .transpose()?;
        Ok(ToolEntry {
            input_validator,
            output_validator,
            permits: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            limits,
            tool,
        })
    }
}

/// Tools, prompts and resources by name (resources by URI), each kept in name order so pages
/// are stable across server instances.
pub(crate) struct Registry {
    pub tools: RwLock<BTreeMap<String, Arc<ToolEntry>>>,
    pub prompts: RwLock<BTreeMap<String, Arc<dyn Prompt>>>,
    pub resources: RwLock<BTreeMap<String, Arc<dyn Resource>>>,
    changes: broadcast::Sender<ListChanged>,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            tools: RwLock::default(),
            prompts: RwLock::default(),
            resources: RwLock::default(),
            changes: broadcast::channel(64).0,
        }
    }

    pub fn tool(&self, name: &str) -> Option<Arc<ToolEntry>> {
        self.tools.read().get(name).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ListChanged> {
        self.changes.subscribe()
    }

    pub fn announce(&self, change: ListChanged) {
        // No subscriber is not an error: nobody listens for changes right now.
        let _ = self.changes.send(change);
    }

    /// The resource whose URI or template matches `uri`; fixed URIs win over templates.
    pub fn resource_for(&self, uri: &str) -> Option<(Arc<dyn Resource>, crate::ResourceVars)> {
        let resources = self.resources.read();
        if let Some(fixed) = resources.get(uri) {
            return Some((fixed.clone(), Default::default()));
        }
        resources
            .values()
            .filter(|r| r.spec().is_template())
            .find_map(|r| r.spec().matches(uri).map(|vars| (r.clone(), vars)))
    }
}

/// One page of a name-ordered list: the items after `cursor` and the cursor of the next page.
///
/// The cursor is the last name of the page, so any server instance can continue a listing that
/// another one started.
pub(crate) fn page<T: Clone>(
    items: &BTreeMap<String, T>,
    cursor: Option<&str>,
    page_size: usize,
    mut keep: impl FnMut(&T) -> bool,
) -> (Vec<T>, Option<String>) {
    use std::ops::Bound::{Excluded, Unbounded};
    let start = match cursor {
        Some(c) => (Excluded(c.to_owned()), Unbounded),
        None => (Unbounded, Unbounded),
    };
    let mut out = Vec::new();
    let mut last = None;
    for (name, item) in items.range::<String, _>(start) {
        if !keep(item) {
            continue;
        }
        if out.len() == page_size {
            return (out, last);
        }
        out.push(item.clone());
        last = Some(name.clone());
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_item_once_and_end_without_cursor() {
        let items: BTreeMap<String, u32> = (0..7).map(|i| (format!("t{i}"), i)).collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page_items, next) = page(&items, cursor.as_deref(), 3, |_| true);
            assert!(page_items.len() <= 3);
            seen.extend(page_items);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_last_page_has_no_cursor() {
        let items: BTreeMap<String, u32> = (0..4).map(|i| (format!("t{i}"), i)).collect();
        let (first, next) = page(&items, None, 2, |_| true);
        assert_eq!(first, vec![0, 1]);
        let (second, next) = page(&items, next.as_deref(), 2, |_| true);
        assert_eq!(second, vec![2, 3]);
        assert_eq!(next, None);
    }

    #[test]
    fn hidden_items_do_not_count_towards_a_page() {
        let items: BTreeMap<String, u32> = (0..6).map(|i| (format!("t{i}"), i)).collect();
        let (got, _) = page(&items, None, 2, |i| i % 2 == 1);
        assert_eq!(got, vec![1, 3]);
    }
}
