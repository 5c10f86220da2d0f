-- Ban lists in memory (issue 24, service::ban_lists).
--
-- guild_ban: each guild's ban list as the bot last knew it (a sync of
-- Discord's GET /guilds/{id}/bans, then GUILD_BAN_ADD/REMOVE and this
-- deployment's own API bans). reason: Discord's, when known.
create table guild_ban (
    guild_id    integer not null,
    user_id     integer not null,
    reason      text,
    primary key (guild_id, user_id)
) without rowid;

-- guild_ban_sync: one row per guild whose list is kept. complete: a whole
-- sync finished, so checks answer from the list (0 again when the bot can
-- no longer hear ban events); synced_at: when the last one finished;
-- sync_after: a sync under way, the `after` of its next page (a restart
-- resumes there rather than from zero).
create table guild_ban_sync (
    guild_id    integer primary key,
    complete    integer not null default 0,
    synced_at   integer,
    sync_after  integer,
    updated_at  integer not null
);

-- guild_ban_change: which lists changed, in commit order, so a listener
-- without the gateway (`--only http`) follows the bot's lists as it
-- follows keys: user_id banned (1) or unbanned (0); user_id null: the
-- guild's guild_ban_sync row changed. The newest 200,000 entries are kept;
-- a follower that fell further behind loads the lists whole.
create table guild_ban_change (
    seq         integer primary key autoincrement,
    guild_id    integer not null,
    user_id     integer,
    banned      integer not null
);

create trigger guild_ban_change_on_insert after insert on guild_ban
begin
    insert into guild_ban_change (guild_id, user_id, banned) values (new.guild_id, new.user_id, 1);
end;

create trigger guild_ban_change_on_delete after delete on guild_ban
begin
    insert into guild_ban_change (guild_id, user_id, banned) values (old.guild_id, old.user_id, 0);
end;

create trigger guild_ban_change_on_sync_insert after insert on guild_ban_sync
begin
    insert into guild_ban_change (guild_id, user_id, banned) values (new.guild_id, null, 0);
end;

create trigger guild_ban_change_on_sync_update after update of complete on guild_ban_sync
    when new.complete <> old.complete
begin
    insert into guild_ban_change (guild_id, user_id, banned) values (new.guild_id, null, 0);
end;

create trigger guild_ban_change_keep_newest after insert on guild_ban_change
    when new.seq % 1000 = 0
begin
    delete from guild_ban_change where seq <= new.seq - 200000;
end;
