-- Expiry reminders (SQLite's 0009): one row per key and threshold already
-- reminded of, written with the reminder's audit event; the primary key is
-- the claim that lets one instance announce each threshold once per key.
-- Less urgent thresholds passed over for a more urgent one get rows without
-- an event (audit_event_id null).
create table key_expiry_reminder (
    api_key_id        text not null references api_key (api_key_id) on delete cascade,
    threshold_seconds bigint not null check (threshold_seconds > 0),
    expires_at        bigint not null,
    sent_at           bigint not null,
    audit_event_id    bigint,
    primary key (api_key_id, threshold_seconds)
);

create index api_key_expiring on api_key (expires_at) where expires_at is not null and revoked_at is null;
