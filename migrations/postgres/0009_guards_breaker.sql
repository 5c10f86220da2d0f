-- The circuit breaker's counts (as SQLite's 0013_guards_breaker.sql), in the database so
-- every instance sharing it, and every restart, spends one budget: a key
-- with a ban budget of 5 makes 5 bans in 10 minutes however many
-- listeners serve it or however often they restart.
--
-- breaker_key: one row per key and kind ('ban', 'role'); a spend first
-- upserts it, which on PostgreSQL locks it to the end of the transaction,
-- so concurrent spends of one key take turns (SQLite's one writer already
-- serialises them) and each counts what the last committed.
create table breaker_key (
    api_key_id text not null,
    kind       text not null,
    touched_at bigint not null,
    primary key (api_key_id, kind)
);

-- breaker_write: one row per write spent (milliseconds since the epoch);
-- rows older than the window are deleted by the key's next spend, so a key
-- keeps at most its budget of rows.
create table breaker_write (
    api_key_id text not null,
    kind       text not null,
    spent_at   bigint not null
);

create index breaker_write_key on breaker_write (api_key_id, kind, spent_at);
