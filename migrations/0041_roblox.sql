-- Roblox games (issue "Roblox games that know their players").
--
-- guild_credential: a guild's third-party credentials (the account linker's
-- API key, the Open Cloud key), sealed under GUILDKEY_SECRETS_KEY
-- (service::credentials): never stored, shown or logged in clear. `kind`
-- names the credential (linker, open_cloud); `label` what the operator may
-- see of it (the linker's provider, the universe id), never the secret.
create table guild_credential (
    guild_id    integer not null,
    kind        text not null,
    label       text not null,
    sealed      text not null,
    created_at  integer not null,
    updated_at  integer not null,
    primary key (guild_id, kind)
) without rowid;

-- roblox_link: the Discord accounts a guild's linker answered for a Roblox
-- account, kept (a banned user has usually left the server, and the linker
-- may no longer answer for them). resolved_at: when the linker last said so.
create table roblox_link (
    guild_id    integer not null,
    roblox_id   integer not null,
    discord_id  integer not null,
    resolved_at integer not null,
    primary key (guild_id, roblox_id, discord_id)
) without rowid;
create index roblox_link_by_discord on roblox_link (guild_id, discord_id);
