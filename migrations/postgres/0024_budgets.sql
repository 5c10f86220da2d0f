-- Budgets that hold for the whole bot (as SQLite's 0024_budgets.sql).
--
-- discord_refusal: Discord's invalid answers (401, 403, 429) per instance,
-- guild (0 for a call for no guild) and minute since the epoch. Discord
-- counts them per IP, so every instance of one bot counts together: each
-- adds its own here as they come, reads the others' over the last
-- 10 minutes, and pauses guilds on the sum. An instance that restarts
-- writes under a new instance_id, so what it counted before still counts.
-- Rows older than the window are deleted by the instances' upkeep.
create table discord_refusal (
    minute      bigint not null,
    instance_id text not null,
    guild_id    bigint not null,
    count       bigint not null,
    primary key (minute, instance_id, guild_id)
);

-- The request log keeps the refusals that matter (an IP outside the
-- allow-list, a missing scope, a suspended key, a leaked one) apart from
-- the rest: each kind is trimmed to its own newest rows.
alter table request_log add column notable boolean not null default false;
create index request_log_notable on request_log (api_key_id, notable, request_log_id);

-- Requests per key, day (since the epoch, UTC) and client address block,
-- as usage_ip_hour per hour: what reports over 7 and 30 days read. Each
-- key's day keeps its 100 busiest blocks and sums the rest as 'other'.
create table usage_ip_day (
    day         bigint not null,
    api_key_id  text not null,
    ip          text not null,
    count       bigint not null,
    primary key (day, api_key_id, ip)
);
create index usage_ip_day_by_key on usage_ip_day (api_key_id, day);
