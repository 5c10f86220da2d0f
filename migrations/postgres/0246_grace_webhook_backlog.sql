-- A bounded webhook backlog per guild (SQLite's 0246 explains): the
-- summary message's count, audit-event range and last event time.
alter table webhook_delivery add column skipped_count bigint;
alter table webhook_delivery add column skipped_first_event bigint;
alter table webhook_delivery add column skipped_last_event bigint;
alter table webhook_delivery add column skipped_last_at bigint;

-- Queuing counts the guild's pending messages on every event: from them alone.
create index webhook_delivery_pending_guild on webhook_delivery (guild_id, webhook_delivery_id)
    where state = 'pending';
