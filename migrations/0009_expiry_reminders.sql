-- Expiry reminders: the audit channel hears once that a key expires within
-- 7 days, and once more within 1 day.
--
-- One row per key and threshold already reminded of, written in the same
-- transaction as the reminder's audit event. The row is the claim: its
-- primary key lets one instance (of however many check at once, or one
-- restarted) write it, so each threshold is announced once per key. When a
-- more urgent threshold is announced first (a key created to expire in 12
-- hours), the less urgent ones get rows too, without an event
-- (audit_event_id null), so they are never announced after it.
--
-- A deleted key takes its rows with it; expires_at records the expiry the
-- reminder was about.
create table key_expiry_reminder (
    api_key_id        text not null references api_key (api_key_id) on delete cascade,
    threshold_seconds integer not null check (threshold_seconds > 0),
    expires_at        integer not null,
    sent_at           integer not null,
    audit_event_id    integer,
    primary key (api_key_id, threshold_seconds)
);

-- Finding the keys that expire soon, each minute, without reading every key.
create index api_key_expiring on api_key (expires_at) where expires_at is not null and revoked_at is null;
