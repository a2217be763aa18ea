//! Catalog files, and tools known only by their specs, imported from a catalog so they can be
//! discovered.
//!
//! Catalog: `{"tools": [{"id", "name", "description", "inputSchema", "server"}]}`, the shape of
//! an MCP `tools/list` result (`id` defaults to `name`; names may repeat across servers, ids may
//! not).

use std::{collections::HashSet, path::Path, sync::Arc};

use isa_core::{
    CallContext, Error, IndexItem, JsonObject, Result, Tool, ToolOutput, ToolSpec, async_trait,
};
use serde::Deserialize;
use serde_json::Value;

/// A tool imported from a catalog file: searchable and listed, but with no implementation on
/// this server, so a call answers with an error result that says so.
pub struct CatalogTool {
    spec: ToolSpec,
}

impl CatalogTool {
    /// Wraps a spec.
    pub fn new(spec: ToolSpec) -> Self {
        CatalogTool { spec }
    }

    /// Every tool of a catalog file (the format of `isa-mcp tools import`), tagged `catalog`.
    pub fn load(path: &Path) -> Result<Vec<Arc<dyn Tool>>> {
        Ok(load_catalog_specs(path)?
            .into_iter()
            .map(|mut spec| {
                spec.tags.push("catalog".into());
                Arc::new(CatalogTool::new(spec)) as Arc<dyn Tool>
            })
            .collect())
    }
}

#[async_trait]
impl Tool for CatalogTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, _args: JsonObject, _ctx: &CallContext) -> Result<ToolOutput> {
        Ok(ToolOutput::error(format!(
            "{} was imported from a catalog for discovery; this server has no implementation of it",
            self.spec.name
        )))
    }
}

#[derive(Deserialize)]
struct CatalogFile {
    tools: Vec<Value>,
}

#[derive(Deserialize)]
struct CatalogEntry {
    id: Option<String>,
    #[serde(flatten)]
    spec: ToolSpec,
}

/// Reads a catalog file into index items (ids from the catalog). Fails naming the entry for a
/// malformed tool, and for an empty catalog or a repeated id.
pub fn load_catalog(path: &Path) -> Result<Vec<IndexItem>> {
    Ok(load_catalog_entries(path)?
        .into_iter()
        .map(|(id, spec)| IndexItem {
            id,
            ..IndexItem::from_tool(&spec)
        })
        .collect())
}

/// Reads a catalog file into tool specs named by their ids, as a server registers them.
pub fn load_catalog_specs(path: &Path) -> Result<Vec<ToolSpec>> {
    Ok(load_catalog_entries(path)?
        .into_iter()
        .map(|(id, spec)| ToolSpec { name: id, ..spec })
        .collect())
}

fn load_catalog_entries(path: &Path) -> Result<Vec<(String, ToolSpec)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read catalog {}: {e}", path.display())))?;
    parse_catalog(&text, &path.display().to_string())
}

/// Parses the text of a catalog into `(id, spec)` pairs; `origin` names it in errors (a file
/// name). What [`load_catalog`] does after reading the file.
pub fn parse_catalog(text: &str, origin: &str) -> Result<Vec<(String, ToolSpec)>> {
    let file: CatalogFile = serde_json::from_str(text).map_err(|e| {
        Error::invalid(format!(
            "{origin}:{}: not a catalog ({{\"tools\": [...]}}): {e}",
            e.line()
        ))
    })?;
    if file.tools.is_empty() {
        return Err(Error::invalid(format!(
            "{origin}: the catalog has no tools"
        )));
    }
    let mut ids = HashSet::new();
    let mut entries = Vec::with_capacity(file.tools.len());
    for (n, raw) in file.tools.into_iter().enumerate() {
        let entry: CatalogEntry = serde_json::from_value(raw)
            .map_err(|e| Error::invalid(format!("{origin}: tool #{} is malformed: {e}", n + 1)))?;
        let id = entry.id.unwrap_or_else(|| entry.spec.name.clone());
        if !ids.insert(id.clone()) {
            return Err(Error::invalid(format!(
                "{origin}: tool #{} repeats the id {id:?}",
                n + 1,
            )));
        }
        entries.push((id, entry.spec));
    }
    Ok(entries)
}
