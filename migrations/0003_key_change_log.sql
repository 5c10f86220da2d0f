-- Which keys changed, in commit order. A running listener that sees another
-- process commit (the operator CLI, a second instance) applies just the keys
-- named here since it last looked, instead of reloading every key: with a
-- million keys a reload takes seconds, and a second instance's last-used
-- flush, which changes nothing the index holds, used to cost one each time.
--
-- Filled by triggers, so every writer records its changes whatever its
-- version; only the columns the index holds count (not last_used_at,
-- use_count or updated_at). The newest 10,000 entries are kept: a listener
-- that falls further behind than that reloads whole.
create table key_change (
    seq        integer primary key autoincrement,
    api_key_id text not null
);

create trigger key_change_on_insert after insert on api_key
begin
    insert into key_change (api_key_id) values (new.api_key_id);
end;

create trigger key_change_on_update
after update of api_key_id, guild_id, name, key_hash, prefix, environment, scopes, expires_at, revoked_at,
    rate_limit_per_minute, allowed_ips, previous_hash, previous_hash_expires_at on api_key
begin
    insert into key_change (api_key_id) values (old.api_key_id);
    insert into key_change (api_key_id) select new.api_key_id where new.api_key_id <> old.api_key_id;
end;

create trigger key_change_on_delete after delete on api_key
begin
    insert into key_change (api_key_id) values (old.api_key_id);
end;

create trigger key_change_keep_newest after insert on key_change
begin
    delete from key_change where seq <= new.seq - 10000;
end;
