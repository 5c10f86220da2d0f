-- Usage you can see: per-key request counters, the request log, and the
-- refusal-spike alert's state (see src/service/usage.rs).
--
-- No foreign keys to api_key: counters are flushed in batches after the
-- requests they count, and a key deleted meanwhile must not fail the whole
-- batch. Deleting a key forgets its rows; retention drops the rest.

-- Requests per key and hour (hours since the Unix epoch, UTC), by method,
-- route template ("/v1/guilds/{guild_id}/bans/{user_id}", or "(no route)"),
-- status and outcome (ok, a 4xx reason, rate_limited, 5xx): `count` is the
-- hour's total, `minutes` its 60 minute buckets (a JSON array), the sum of
-- which it is. A flush adds a minute's counts to both at once (`last_minute`
-- says which minute the statement adds to). After
-- usage.minute_retention_hours (48) the minutes are dropped and the total
-- stays; after usage.hour_retention_days (90) the row goes.
--
-- The hour leads the key, so a minute's flush updates rows that sit
-- together (this hour's) rather than one page per key; reads by key go
-- through usage_hour_by_key, which changes only when a key starts an hour.
create table usage_hour (
    hour         integer not null,
    api_key_id   text not null,
    method       text not null,
    route        text not null,
    status       integer not null,
    outcome      text not null,
    count        integer not null,
    last_minute  integer not null,
    minutes      text,
    primary key (hour, api_key_id, method, route, status, outcome)
) without rowid;
create index usage_hour_by_key on usage_hour (api_key_id, hour);

-- Requests per key, hour and client IP ('other' past the cap of IPs kept
-- per key and minute). Kept as long as the hour buckets.
create table usage_ip_hour (
    hour        integer not null,
    api_key_id  text not null,
    ip          text not null,
    count       integer not null,
    primary key (hour, api_key_id, ip)
) without rowid;
create index usage_ip_hour_by_key on usage_ip_hour (api_key_id, hour);

-- The newest usage.request_log_per_key (200) requests of each key, except
-- successful verifications (counted, not logged). Never a token or a
-- header value. Kept at most usage.hour_retention_days.
create table request_log (
    request_log_id  integer primary key autoincrement,
    api_key_id      text not null,
    at              integer not null,
    method          text not null,
    route           text not null,
    status          integer not null,
    reason          text,
    ip              text not null,
    latency_us      integer not null,
    target_user_id  integer,
    target_role_id  integer
);
create index request_log_by_key on request_log (api_key_id, request_log_id);
create index request_log_by_time on request_log (at);

-- The refusal-spike alert: when a key was last alerted about, and when it
-- was last seen spiking (a new spike needs a quiet gap, and an hour since
-- the last alert).
create table usage_alert (
    api_key_id  text primary key,
    alerted_at  integer not null,
    spiking_at  integer not null
);
