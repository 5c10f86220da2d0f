-- A bounded webhook backlog per guild (issue 21; numbered clear of the
-- other helpers' numbers). Past webhooks.max_pending_per_guild pending
-- messages for a guild, further events are not queued one by one: they
-- are folded into one summary message (event type events.skipped) at the
-- end of the guild's queue, sent in order once the backlog drains. These
-- columns are the summary's, null on every other message: how many events
-- it stands for, the range of audit events among them (see the audit
-- log), and when the last one came. Its body is built from them when it
-- is first claimed; from then on nothing more is folded into it.
alter table webhook_delivery add column skipped_count integer;
alter table webhook_delivery add column skipped_first_event integer;
alter table webhook_delivery add column skipped_last_event integer;
alter table webhook_delivery add column skipped_last_at integer;

-- Queuing counts the guild's pending messages (and finds the newest) on
-- every event: read from the pending ones alone, not the delivery log.
create index webhook_delivery_pending_guild on webhook_delivery (guild_id, webhook_delivery_id)
    where state = 'pending';
