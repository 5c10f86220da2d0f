-- Rotations that running servers survive (issue 24, item 5; numbered after
-- the issue and item, clear of the other helpers' numbers).
--
-- A rotation "until unused" keeps the old secret (previous_hash) working
-- until it has not been presented for previous_idle_ms, and at most until
-- previous_hash_expires_at (30 days after the rotation: the index enforces
-- that from memory). The listeners note each presentation of an old secret
-- in memory and write the latest here every half second (previous_seen_at,
-- and the client address it came from): the hot path writes nothing. A
-- background task on every instance retires the old secret once the
-- latest presentation any listener wrote is old enough, in one conditional
-- update with its key.rotation_completed audit entry, so two instances
-- record it once.
--
-- None of these columns is in the key_change triggers: a presentation
-- written here changes nothing the index holds and wakes nobody; the
-- retirement clears previous_hash, which the triggers do see.
alter table api_key add column previous_idle_ms integer;
alter table api_key add column previous_rotated_at integer;
alter table api_key add column previous_seen_at integer;
alter table api_key add column previous_seen_ip text;

-- The task's scan, every second on every instance, reads only the keys in
-- such a rotation (a handful), never the whole table.
create index api_key_rotation_until_unused on api_key (api_key_id) where previous_idle_ms is not null;
