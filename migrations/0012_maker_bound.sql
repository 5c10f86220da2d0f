-- No key outranks its maker (issue 22).
--
-- maker_id: the Discord user whose powers bound the key. A key made with
-- /apikey create is bounded by its creator: each scope needs the maker's own
-- Discord permission, and a roles.write key never reaches a role at or
-- above the maker's highest role. guildkey re-checks the maker's powers
-- (gateway events, and a periodic read) and suspends a key whose maker
-- left or lost a needed power; an admin who holds the powers may adopt it
-- (becoming its maker). Null = no maker's bound: a key made by the
-- operator CLI, which stays trusted.
--
-- It is not created_by: that records who made the key, for good; the maker
-- changes when the key is adopted.
--
-- Keys made through the bot before this migration are bounded by their
-- creator from now on (created_by holds a Discord user id for those): the
-- first check suspends any whose creator lacks the powers, with an Adopt
-- button, rather than let a key outrank its maker silently. A number that
-- would not fit a signed 64-bit integer is no Discord id and is left alone.
--
-- Not in the key change log's trigger list: the in-memory index does not
-- hold it (adopting also clears suspended_at, which is in the list).
alter table api_key add column maker_id integer;

update api_key set maker_id = cast(created_by as integer)
where created_by <> '' and created_by not glob '*[^0-9]*'
  and (length(created_by) < 19 or (length(created_by) = 19 and created_by <= '9223372036854775807'));

-- The keys a maker's change touches, and the periodic check's scan.
create index api_key_maker on api_key (guild_id, maker_id) where maker_id is not null and revoked_at is null;
