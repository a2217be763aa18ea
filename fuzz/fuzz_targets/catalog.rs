//! Any text imported as a catalog: refused with an error, or parsed into tools with unique ids
//! that a server registers, lists and discovers. Never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use isa_core::{
    CallContext, ItemKind, Tool, ToolSpec,
    mcp::{McpConfig, McpServer},
};
use isa_tools::{
    catalog::{CatalogTool, parse_catalog},
    select::LocalSelector,
};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|text: &str| {
    let Ok(entries) = parse_catalog(text, "fuzz") else {
        return;
    };
    let mut ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "repeated ids were accepted");
    let tools: Vec<Arc<dyn Tool>> = entries
        .into_iter()
        .map(|(id, spec)| {
            Arc::new(CatalogTool::new(ToolSpec { name: id, ..spec })) as Arc<dyn Tool>
        })
        .collect();
    runtime().block_on(async {
        let server = McpServer::builder(McpConfig::default())
            .selector(Arc::new(LocalSelector::lexical()))
            .build();
        if server.add_tools(tools).await.is_ok() {
            let ctx = CallContext::default();
            let _ = server.tool_specs(&ctx);
            let _ = server
                .discover("find a tool", 5, &[ItemKind::Tool], &ctx)
                .await;
        }
    });
});
