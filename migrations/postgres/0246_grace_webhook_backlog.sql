-- A bounded webhook backlog per guild (SQLite's 0246 explains): the
-- summary message's count, audit-event range and last event time.
alter table webhook_delivery add column skipped_count bigint;
alter table webhook_delivery add column skipped_first_event bigint;
alter table webhook_delivery add column skipped_last_event bigint;
alter table webhook_delivery add column skipped_last_at bigint;
