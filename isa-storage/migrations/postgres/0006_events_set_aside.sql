-- Events the store refused for good (a value it cannot hold), kept for an operator instead of
-- holding up the events behind them. The payload is JSON text.
create table if not exists events_set_aside (
    id text primary key,
    time text not null,
    user_id text,
    kind text not null,
    payload text not null,
    reason text not null
);
