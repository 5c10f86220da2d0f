-- guildkey's first schema. Applied migrations are never edited: add a new
-- numbered file instead.
--
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC): they sort
-- and compare correctly in SQL, whatever the client's text format.
-- Discord snowflakes (guild, user, channel ids) fit in SQLite's signed 64-bit
-- INTEGER until the year 2084.

-- One API key. The token itself is never stored: only its SHA-256.
create table api_key (
    api_key_id            text primary key,          -- public id, key_ + base62
    guild_id              integer not null,
    name                  text not null,
    key_hash              blob not null unique,      -- SHA-256 of the whole token
    prefix                text not null,             -- first 12 characters, for display
    environment           text not null check (environment in ('live', 'test')),
    scopes                text not null,             -- space-separated scope names
    created_at            integer not null,
    created_by            text not null,             -- Discord user id, or 'cli'
    last_used_at          integer,
    use_count             integer not null default 0,
    expires_at            integer,
    revoked_at            integer,
    rate_limit_per_minute integer not null check (rate_limit_per_minute > 0),
    allowed_ips           text not null default '',  -- comma-separated CIDRs; empty = any
    -- After a rotation with grace, the previous secret's hash keeps working
    -- until previous_hash_expires_at; then it is ignored.
    previous_hash            blob,
    previous_hash_expires_at integer,
    updated_at            integer not null
);

-- Listing a guild's keys and counting its active ones.
create index api_key_guild on api_key (guild_id, created_at);
-- Looking up the previous secret during a rotation's grace period.
create index api_key_previous_hash on api_key (previous_hash) where previous_hash is not null;
-- Resolving a key by its display prefix.
create index api_key_prefix on api_key (prefix);

-- Per-guild settings: for now, where audit entries are posted.
create table guild_setting (
    guild_id          integer primary key,
    audit_channel_id  integer,
    created_at        integer not null,
    updated_at        integer not null
);

-- One row per state change. Written in the same transaction as the change,
-- so an acknowledged change always has its entry and a failed one never does.
create table audit_event (
    audit_event_id integer primary key autoincrement,
    guild_id       integer not null,
    created_at     integer not null,
    action         text not null,     -- key.created, ban.added, ...
    actor_kind     text not null check (actor_kind in ('user', 'api_key', 'cli')),
    actor_user_id  integer,           -- set when actor_kind = 'user'
    api_key_id     text,              -- the key acted on, or the key acting
    key_name       text,
    key_prefix     text,
    test           integer not null default 0,  -- a test key's dry run
    details        text not null default '{}',  -- JSON object, never a secret
    -- The audit-channel outbox: when the entry was posted to Discord (or
    -- given up on). Null = still to post.
    posted_at      integer
);

create index audit_event_guild on audit_event (guild_id, audit_event_id);
create index audit_event_unposted on audit_event (audit_event_id) where posted_at is null;
