-- An audit entry the outbox gave up posting (as SQLite's
-- 0027_messages_post_failure.sql): posted_at says when the outbox finished
-- with the event; post_failure, when set, says it was NOT posted and why.
alter table audit_event add column post_failure text;
