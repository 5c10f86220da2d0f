-- A key's rate limit across instances sharing one database (as SQLite's
-- 0006_rate_lease.sql).
--
-- rate_lease: how much of a key's budget for one minute window (window_start
-- in milliseconds since the epoch, a multiple of 60000) instances have taken
-- in chunks. An instance takes a chunk with one upsert that caps taken at
-- the key's limit; granted is what that last statement handed out (the row
-- lock makes "last" well defined), read back with `returning`. Windows
-- older than the previous one are deleted by the listeners' upkeep.
create table rate_lease (
    api_key_id   text not null,
    window_start bigint not null,
    taken        bigint not null,
    granted      bigint not null,
    primary key (api_key_id, window_start)
);

create index rate_lease_window on rate_lease (window_start);

-- The listeners running now, each beating every few seconds: how many
-- there are sizes the chunks (see README, "Rate limits across instances").
create table rate_instance (
    instance_id text primary key,
    seen_at     bigint not null
);
