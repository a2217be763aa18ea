create table if not exists api_keys (
    id text primary key,
    user_id text not null,
    name text not null,
    secret_hash text not null,
    scopes text not null,
    created_at text not null,
    last_used_at text,
    revoked_at text
);
create index if not exists api_keys_user on api_keys (user_id, created_at);
