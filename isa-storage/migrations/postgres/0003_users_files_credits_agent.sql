-- Users, their files, their credits, and the agent's sessions.
create table if not exists users (
    id text primary key,
    email text,
    credits bigint not null default 0 check (credits >= 0),
    created_at timestamptz not null,
    last_seen_at timestamptz not null
);

create table if not exists files (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    key text not null unique,
    name text not null,
    size bigint not null,
    content_type text not null,
    sha256 text,
    year integer not null,
    month integer not null,
    status text not null check (status in ('pending', 'ready')),
    created_at timestamptz not null
);
create index if not exists files_user_month on files (user_id, year, month, id);

-- Every change of a balance: grants are positive, consumption negative. A request id is
-- charged at most once per user.
create table if not exists credit_transactions (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    request_id text not null,
    amount bigint not null,
    balance_after bigint not null,
    operation text not null,
    units bigint,
    created_at timestamptz not null,
    unique (user_id, request_id)
);
create index if not exists credit_transactions_user on credit_transactions (user_id, id);

create table if not exists agent_sessions (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    title text,
    created_at timestamptz not null,
    updated_at timestamptz not null
);
create index if not exists agent_sessions_user on agent_sessions (user_id, updated_at);

create table if not exists agent_messages (
    id text primary key,
    session_id text not null references agent_sessions (id) on delete cascade,
    role text not null,
    content jsonb not null,
    created_at timestamptz not null
);
create index if not exists agent_messages_session on agent_messages (session_id, id);
