//! `isa-mcp`: the smart MCP server and its command-line tools.

fn main() {}
