-- A direct upload the sweeper has claimed: it can no longer be completed, and a sweep that
-- stopped half way finds it again.
alter table files drop constraint if exists files_status_check;
alter table files add constraint files_status_check
    check (status in ('pending', 'ready', 'abandoned'));
create index if not exists files_unfinished on files (status, created_at) where status <> 'ready';
