//! Discovery through the MCP service never offers a tool the caller may not use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use isa_core::{
    AuthMethod, CallContext, Identity, ItemKind, ToolOutput, ToolSpec, UserId,
    mcp::{McpConfig, McpServer},
    tool_fn,
};
use isa_tools::select::LocalSelector;

#[tokio::test]
async fn discover_tools_hides_tools_that_need_a_scope_the_caller_lacks() {
    let server = McpServer::builder(McpConfig::default())
        .selector(Arc::new(LocalSelector::lexical()))
        .build();
    let open = ToolSpec::new("list_invoices", "List the invoices of a customer");
    let admin = ToolSpec::new("delete_invoices", "Delete all invoices of a customer")
        .with_required_scope("billing:admin");
    server
        .add_tool(tool_fn(open, |_, _| async { Ok(ToolOutput::text("[]")) }))
        .await
        .unwrap();
    server
        .add_tool(tool_fn(admin, |_, _| async {
            Ok(ToolOutput::text("deleted"))
        }))
        .await
        .unwrap();

    let anonymous = CallContext::default();
    let found = server
        .discover(
            "delete invoices of a customer",
            5,
            &[ItemKind::Tool],
            &anonymous,
        )
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["list_invoices"]
    );
    let via_tool = server
        .call_tool(
            "discover_tools",
            Some(serde_json::from_str(r#"{"query": "delete invoices"}"#).unwrap()),
            &anonymous,
        )
        .await
        .unwrap();
    assert!(!format!("{:?}", via_tool.structured_content).contains("delete_invoices"));

    let billing = CallContext::of(
        Identity::new(UserId::new("clerk").unwrap(), AuthMethod::Trusted)
            .with_scopes(["billing:admin"]),
    );
    let found = server
        .discover(
            "delete invoices of a customer",
            5,
            &[ItemKind::Tool],
            &billing,
        )
        .await
        .unwrap();
    assert_eq!(found[0].id, "delete_invoices");
}
