-- An audit entry the outbox gave up posting (issue 25): Discord refused it
-- as written and again without its details, or the post failed otherwise
-- (the channel gone, a missing permission, Discord down). posted_at still
-- says when the outbox finished with the event, so it is not tried again;
-- post_failure, when set, says it was NOT posted and why (Discord's answer),
-- so a failed post is never taken for a posted one.
alter table audit_event add column post_failure text;
