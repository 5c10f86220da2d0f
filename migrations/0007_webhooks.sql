-- Webhooks: one per guild, and the queue of signed deliveries to it.
--
-- The signing secret (whsec_…) is stored as is: guildkey must have it to
-- sign each delivery. It is shown once, when made, and never logged.
create table webhook (
    guild_id             integer primary key,
    url                  text not null,
    secret               text not null,
    -- Event types, space-separated (key.created ban.added …).
    events               text not null,
    enabled              integer not null default 1,
    -- When it was set or last re-enabled: earlier events are not sent.
    enabled_at           integer not null,
    disabled_at          integer,
    disabled_reason      text,
    -- Messages given up on in a row (every attempt failed); any success
    -- resets it. Three disable the webhook.
    failed_messages      integer not null default 0,
    created_at           integer not null,
    updated_at           integer not null
);

-- One message to a guild's webhook and its attempts. message_id is the
-- webhook-id header: unique per message, the same on every retry.
create table webhook_delivery (
    webhook_delivery_id  integer primary key autoincrement,
    message_id           text not null unique,
    guild_id             integer not null,
    event_type           text not null,
    audit_event_id       integer,
    body                 text not null,
    created_at           integer not null,
    state                text not null default 'pending'
                         check (state in ('pending', 'delivered', 'failed', 'dropped')),
    attempts             integer not null default 0,
    next_attempt_at      integer,
    -- A dispatcher holds a delivery while it attempts it (as the audit
    -- outbox claims events), so each attempt is made by one instance.
    claimed_until        integer,
    last_attempt_at      integer,
    last_status          integer,
    last_error           text,
    done_at              integer
);

create index webhook_delivery_due on webhook_delivery (next_attempt_at) where state = 'pending';
create index webhook_delivery_guild on webhook_delivery (guild_id, webhook_delivery_id);

-- Which audit events the webhook dispatcher has looked at (queued for the
-- guild's webhook, or not wanted there). Events from before this migration
-- count as looked at.
alter table audit_event add column webhook_checked_at integer;
update audit_event set webhook_checked_at = 0;
create index audit_event_webhook_unchecked on audit_event (audit_event_id) where webhook_checked_at is null;
