-- Several instances on one database.
--
-- claimed_until: the audit-channel outbox claims an event before posting
-- it and sets posted_at after, so one instance posts each event; one that
-- dies between the two leaves the event to another once its claim runs out.
alter table audit_event add column claimed_until integer;
