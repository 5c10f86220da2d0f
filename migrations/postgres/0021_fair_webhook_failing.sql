-- Webhooks disabled after failing for long enough (SQLite's 0021): when
-- the webhook's attempts began to fail with no success since; cleared by a
-- success and by `set`.
alter table webhook add column failing_since bigint;
