//! The smart MCP server as a library: its settings ([`settings`]), its composition root
//! ([`app`]: components and routers) and the user and event services it serves beside the MCP
//! endpoint ([`api`]), so tests and other binaries build exactly what `isa-mcp serve` runs.

pub mod api;
pub mod app;
pub mod settings;
