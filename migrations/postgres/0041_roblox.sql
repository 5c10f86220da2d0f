-- Roblox games (as SQLite's 0041_roblox.sql).
--
-- guild_credential: a guild's third-party credentials (the account linker's
-- API key, the Open Cloud key), sealed under GUILDKEY_SECRETS_KEY
-- (service::credentials); `label` is what the operator may see of it.
create table guild_credential (
    guild_id    bigint not null,
    kind        text not null,
    label       text not null,
    sealed      text not null,
    created_at  bigint not null,
    updated_at  bigint not null,
    primary key (guild_id, kind)
);

-- roblox_link: the Discord accounts a guild's linker answered for a Roblox
-- account, kept (a banned user has usually left the server).
create table roblox_link (
    guild_id    bigint not null,
    roblox_id   bigint not null,
    discord_id  bigint not null,
    resolved_at bigint not null,
    primary key (guild_id, roblox_id, discord_id)
);
create index roblox_link_by_discord on roblox_link (guild_id, discord_id);
