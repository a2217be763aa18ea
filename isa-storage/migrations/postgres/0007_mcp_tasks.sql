-- MCP tool calls running as tasks: the whole task as JSON, its version for conditional
-- updates, and when it may be removed.
create table if not exists mcp_tasks (
    id text primary key,
    version bigint not null,
    expires_at timestamptz not null,
    task jsonb not null
);
create index if not exists mcp_tasks_expires_at on mcp_tasks (expires_at);
