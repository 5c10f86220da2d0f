-- Guarding a guild against its own keys.
--
-- allowed_roles: the roles a `roles.write` key may add or remove, as
-- comma-separated role ids; empty = any role that passes guildkey's own
-- safety rules (never one with a dangerous permission, a managed role,
-- @everyone, or one at or above the bot's top role). The rules apply
-- whatever this column says.
alter table api_key add column allowed_roles text not null default '';

-- suspended_at: a reversible stop (`/apikey suspend`, `keys suspend`, the
-- circuit breaker). Unlike revoked_at it can be cleared again; a suspended
-- key still counts against the guild's active-key limit, since resuming it
-- must not go over.
alter table api_key add column suspended_at integer;

-- The circuit breaker on destructive writes: how many bans and role changes
-- a key may make in 10 minutes before guildkey suspends it. Null = the
-- configured default (keys.default_ban_budget, keys.default_role_budget).
alter table api_key add column ban_budget integer check (ban_budget > 0);
alter table api_key add column role_budget integer check (role_budget > 0);

-- The index holds all of these, so the change log must see them change: the update
-- trigger of 0003 is rebuilt with the new columns in its list.
drop trigger key_change_on_update;
create trigger key_change_on_update
after update of api_key_id, guild_id, name, key_hash, prefix, environment, scopes, expires_at, revoked_at,
    rate_limit_per_minute, allowed_ips, previous_hash, previous_hash_expires_at, allowed_roles, suspended_at,
    ban_budget, role_budget on api_key
begin
    insert into key_change (api_key_id) values (old.api_key_id);
    insert into key_change (api_key_id) select new.api_key_id where new.api_key_id <> old.api_key_id;
end;

-- guildkey itself becomes an actor ('system'): it pauses Discord calls for a
-- guild that keeps getting refused. SQLite cannot change a check constraint
-- in place, so audit_event is rebuilt with the same columns and indexes.
create table audit_event_new (
    audit_event_id integer primary key autoincrement,
    guild_id       integer not null,
    created_at     integer not null,
    action         text not null,
    actor_kind     text not null check (actor_kind in ('user', 'api_key', 'cli', 'system')),
    actor_user_id  integer,
    api_key_id     text,
    key_name       text,
    key_prefix     text,
    test           integer not null default 0,
    details        text not null default '{}',
    posted_at      integer
);
insert into audit_event_new
    select audit_event_id, guild_id, created_at, action, actor_kind, actor_user_id, api_key_id, key_name,
           key_prefix, test, details, posted_at
    from audit_event;
drop table audit_event;
alter table audit_event_new rename to audit_event;
create index audit_event_guild on audit_event (guild_id, audit_event_id);
create index audit_event_unposted on audit_event (audit_event_id) where posted_at is null;

-- The leak guard: the Discord AutoMod rule guildkey created in the guild to
-- block messages holding one of its keys; null when the guard is off.
alter table guild_setting add column leak_guard_rule_id integer;
