-- Usage you can see: per-key request counters, the request log, and the
-- refusal-spike alert's state (see src/service/usage.rs).
--
-- No foreign keys to api_key: counters are flushed in batches after the
-- requests they count, and a key deleted meanwhile must not fail the whole
-- batch. Deleting a key forgets its rows; retention drops the rest.

-- Requests per key, per minute (minutes since the Unix epoch, UTC), by
-- method, route template ("/v1/guilds/{guild_id}/bans/{user_id}", or
-- "(no route)"), status and outcome (ok, a 4xx reason, rate_limited, 5xx).
-- Kept usage.minute_retention_hours (48).
create table usage_minute (
    api_key_id  text not null,
    minute      integer not null,
    method      text not null,
    route       text not null,
    status      integer not null,
    outcome     text not null,
    count       integer not null,
    primary key (api_key_id, minute, method, route, status, outcome)
) without rowid;
create index usage_minute_by_minute on usage_minute (minute);

-- The same per hour (hours since the epoch), rolled up from the minutes:
-- every minute before usage_rollup's 'minutes_through' has been added.
-- Kept usage.hour_retention_days (90).
create table usage_hour (
    api_key_id  text not null,
    hour        integer not null,
    method      text not null,
    route       text not null,
    status      integer not null,
    outcome     text not null,
    count       integer not null,
    primary key (api_key_id, hour, method, route, status, outcome)
) without rowid;
create index usage_hour_by_hour on usage_hour (hour);

-- Requests per key, per hour and client IP ('other' past the cap of IPs a
-- key may have per minute). Kept as long as the hour buckets.
create table usage_ip_hour (
    api_key_id  text not null,
    hour        integer not null,
    ip          text not null,
    count       integer not null,
    primary key (api_key_id, hour, ip)
) without rowid;
create index usage_ip_hour_by_hour on usage_ip_hour (hour);

-- How far the hour buckets have been rolled up: name 'minutes_through',
-- value the first minute not yet added to usage_hour.
create table usage_rollup (
    name   text primary key,
    value  integer not null
);

-- The newest usage.request_log_per_key (200) requests of each key, except
-- successful verifications (counted, not logged). Never a token or a
-- header value.
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
