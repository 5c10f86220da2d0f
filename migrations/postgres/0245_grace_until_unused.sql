-- Rotations that running servers survive (SQLite's 0245, which explains
-- the columns): how long the old secret may go unpresented, when it was
-- rotated out, and when and from which address it was last presented.
alter table api_key add column previous_idle_ms bigint;
alter table api_key add column previous_rotated_at bigint;
alter table api_key add column previous_seen_at bigint;
alter table api_key add column previous_seen_ip text;

create index api_key_rotation_until_unused on api_key (api_key_id) where previous_idle_ms is not null;
