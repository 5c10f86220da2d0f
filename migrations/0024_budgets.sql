-- Budgets that hold for the whole bot (issue "Every server alone").
--
-- discord_refusal: Discord's invalid answers (401, 403, 429) per instance,
-- guild (0 for a call for no guild) and minute since the epoch. Discord
-- counts them per IP, so every instance of one bot counts together: each
-- adds its own here as they come, reads the others' over the last
-- 10 minutes, and pauses guilds on the sum (see README, "Guarding a
-- server"). An instance that restarts writes under a new instance_id, so
-- what it counted before still counts. Rows older than the window are
-- deleted by the instances' upkeep.
create table discord_refusal (
    minute      integer not null,
    instance_id text not null,
    guild_id    integer not null,
    count       integer not null,
    primary key (minute, instance_id, guild_id)
) without rowid;

-- The request log keeps the refusals that matter (an IP outside the
-- allow-list, a missing scope, a suspended key, a leaked one) apart from
-- the rest: each kind is trimmed to its own newest rows, so no flood of
-- other requests (unknown paths, say) pushes them out.
alter table request_log add column notable integer not null default 0;
create index request_log_notable on request_log (api_key_id, notable, request_log_id);

-- Requests per key, day (since the epoch, UTC) and client address block,
-- as usage_ip_hour per hour: what reports over 7 and 30 days read, so they
-- add up 101 rows a day rather than 101 an hour. Like the hours, each
-- key's day keeps its 100 busiest blocks and sums the rest as 'other'.
create table usage_ip_day (
    day         integer not null,
    api_key_id  text not null,
    ip          text not null,
    count       integer not null,
    primary key (day, api_key_id, ip)
) without rowid;
create index usage_ip_day_by_key on usage_ip_day (api_key_id, day);
