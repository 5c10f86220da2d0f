-- Webhooks disabled after failing for long enough (issue 21): when the
-- webhook's attempts began to fail with no success since (null while the
-- last attempt succeeded, or none failed). Set by the first failed attempt
-- after a success, cleared by a success and by `set`; an attempt that
-- fails once it is DISABLE_AFTER_FAILING old disables the webhook.
alter table webhook add column failing_since integer;
