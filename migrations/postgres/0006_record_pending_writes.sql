-- Record first, then act (SQLite's 0010): an API write to Discord is
-- written as a pending event before Discord is asked, and settled after.
--
-- outcome: null for every other event; 'pending' while the Discord write is
-- in flight (neither listed, posted nor sent to webhooks); 'done' once
-- Discord made the change; 'failed' when it did not (kept for the record,
-- never listed, posted or sent). pending_until: until when the writer may
-- settle the event itself; after it, the reconcile reads Discord and
-- settles it (an instance killed mid-write). Null once settled.
alter table audit_event add column outcome text check (outcome in ('pending', 'done', 'failed'));
alter table audit_event add column pending_until bigint;

create index audit_event_pending on audit_event (pending_until) where outcome = 'pending';

-- A settled write wakes every instance's outbox, as a new event does.
create trigger audit_event_on_settle after update of outcome on audit_event
    for each statement execute function guildkey_audit_recorded();
