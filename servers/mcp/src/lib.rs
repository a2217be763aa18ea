//! The smart MCP server's library part: the user and event services it serves beside the MCP
//! endpoint, so that tests and other binaries can mount them too.

pub mod api;
