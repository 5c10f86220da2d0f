-- No key outranks its maker (SQLite's 0012_maker_bound, which explains it):
-- maker_id is the Discord user whose powers bound the key, null for a key
-- made by the operator CLI. Keys made through the bot before this migration
-- are bounded by their creator (created_by) from now on.
alter table api_key add column maker_id bigint;

update api_key set maker_id = cast(created_by as bigint)
where created_by ~ '^[0-9]{1,19}$'
  and (length(created_by) < 19 or created_by <= '9223372036854775807');

create index api_key_maker on api_key (guild_id, maker_id) where maker_id is not null and revoked_at is null;
