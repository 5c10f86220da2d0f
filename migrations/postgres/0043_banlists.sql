-- Ban lists in memory (as SQLite's 0043_banlists.sql).
create table guild_ban (
    guild_id    bigint not null,
    user_id     bigint not null,
    reason      text,
    primary key (guild_id, user_id)
);

create table guild_ban_sync (
    guild_id    bigint primary key,
    complete    boolean not null default false,
    synced_at   bigint,
    sync_after  bigint,
    updated_at  bigint not null
);

-- Entries commit in the order of their numbers (as key_change's: each
-- writer first takes one transaction-scoped advisory lock), so a follower
-- reading past entry N never steps over one that commits later.
create table guild_ban_change (
    seq         bigserial primary key,
    guild_id    bigint not null,
    user_id     bigint,
    banned      boolean not null
);

create function guildkey_ban_changed() returns trigger language plpgsql as $$
declare
    newest bigint;
begin
    perform pg_advisory_xact_lock(1, 1);
    if tg_table_name = 'guild_ban_sync' then
        insert into guild_ban_change (guild_id, user_id, banned) values (new.guild_id, null, false)
            returning seq into newest;
    elsif tg_op = 'INSERT' then
        insert into guild_ban_change (guild_id, user_id, banned) values (new.guild_id, new.user_id, true)
            returning seq into newest;
    else
        insert into guild_ban_change (guild_id, user_id, banned) values (old.guild_id, old.user_id, false)
            returning seq into newest;
    end if;
    if newest % 1000 = 0 then
        delete from guild_ban_change where seq <= newest - 200000;
    end if;
    return null;
end
$$;

create trigger guild_ban_change_on_change after insert or delete on guild_ban
    for each row execute function guildkey_ban_changed();

create trigger guild_ban_change_on_sync_insert after insert on guild_ban_sync
    for each row execute function guildkey_ban_changed();

create trigger guild_ban_change_on_sync_update after update of complete on guild_ban_sync
    for each row when (new.complete <> old.complete) execute function guildkey_ban_changed();
