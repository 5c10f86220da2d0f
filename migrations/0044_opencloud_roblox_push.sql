-- Bans pushed into live Roblox games, and keys delivered into Secrets
-- (issue "Roblox games that know their players", items 3 and 4).
--
-- roblox_push: a guild's push setting (one universe per guild). mode is
-- publish, restrict or both; topic the MessagingService topic. The Open
-- Cloud key is the guild's open_cloud credential (guild_credential).
create table roblox_push (
    guild_id     integer primary key,
    universe_id  integer not null,
    mode         text not null,
    topic        text not null,
    created_at   integer not null,
    updated_at   integer not null
) without rowid;

-- roblox_push_event: the push outbox. A ban or unban the gateway reported
-- for a member with a known Roblox id is written here first, one row per
-- kind of push (publish, restrict), then claimed and sent by a worker
-- (claimed_until: a second worker leaves it alone), so it goes out once.
-- state: pending, done, failed (given up). sent_at: when a restriction
-- update was last sent (Roblox allows 2 a minute per user).
create table roblox_push_event (
    roblox_push_event_id integer primary key autoincrement,
    guild_id        integer not null,
    universe_id     integer not null,
    kind            text not null,
    roblox_id       integer not null,
    discord_id      integer not null,
    action          text not null,
    origin          text not null,
    key_prefix      text,
    created_at      integer not null,
    state           text not null default 'pending',
    next_attempt_at integer not null,
    claimed_until   integer,
    attempts        integer not null default 0,
    last_error      text,
    sent_at         integer,
    done_at         integer
);
create index roblox_push_event_due on roblox_push_event (state, next_attempt_at);
create index roblox_push_event_user on roblox_push_event (universe_id, roblox_id, kind);

-- roblox_key_delivery: the universe and secret name a key is delivered
-- into (its rotation updates that secret).
create table roblox_key_delivery (
    api_key_id    text primary key,
    guild_id      integer not null,
    universe_id   integer not null,
    secret_name   text not null,
    delivered_at  integer not null
) without rowid;
