create table if not exists events (
    id text primary key,
    time text not null,
    user_id text,
    kind text not null,
    payload text not null
);
create index if not exists events_user_time on events (user_id, id);
create index if not exists events_kind_time on events (kind, id);
