-- Record first, then act: an API write to Discord (a ban, an unban, a role
-- added or removed) is written here as a pending event before Discord is
-- asked, and settled after.
--
-- outcome: null for every other event (it records a change already made);
-- 'pending' while the Discord write is in flight (neither listed, posted nor
-- sent to webhooks); 'done' once Discord made the change; 'failed' when it
-- did not (Discord refused, or the reconcile found no change): kept for the
-- record, but never listed, posted or sent, as no change was made.
-- pending_until: until when the writer may still settle the event itself;
-- after it, the reconcile reads the ban or member on Discord and settles it
-- (a process killed mid-write). Null once settled.
alter table audit_event add column outcome text check (outcome in ('pending', 'done', 'failed'));
alter table audit_event add column pending_until integer;

create index audit_event_pending on audit_event (pending_until) where outcome = 'pending';
