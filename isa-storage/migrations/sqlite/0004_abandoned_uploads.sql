-- A direct upload the sweeper has claimed: it can no longer be completed, and a sweep that
-- stopped half way finds it again. SQLite cannot change a check constraint in place, so the
-- table is rebuilt.
create table files_next (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    key text not null unique,
    name text not null,
    size integer not null,
    content_type text not null,
    sha256 text,
    year integer not null,
    month integer not null,
    status text not null check (status in ('pending', 'ready', 'abandoned')),
    created_at text not null
);
insert into files_next (id, user_id, key, name, size, content_type, sha256, year, month, status, created_at)
    select id, user_id, key, name, size, content_type, sha256, year, month, status, created_at from files;
drop table files;
alter table files_next rename to files;
create index if not exists files_user_month on files (user_id, year, month, id);
create index if not exists files_unfinished on files (status, created_at) where status <> 'ready';
