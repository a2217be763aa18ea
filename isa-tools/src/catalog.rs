//! Tools known only by their specs, imported from a catalog so they can be discovered.

use std::{path::Path, sync::Arc};

use isa_core::{CallContext, JsonObject, Result, Tool, ToolOutput, ToolSpec, async_trait};

use crate::select::eval::load_catalog_specs;

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
