create table if not exists events (
    id uuid primary key,
    time timestamptz not null,
    user_id text,
    kind text not null,
    payload jsonb not null
);
create index if not exists events_user_time on events (user_id, id);
create index if not exists events_kind_time on events (kind, id);
