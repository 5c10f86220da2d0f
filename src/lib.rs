//! guildkey: a Discord bot with which server admins issue and manage API
//! keys, and an HTTP listener that external programs call with those keys.
//!
//! A tour of the house, from the inside out; every arrow points down this
//! list, never up:
//! - [`keys`]: the domain, no I/O: token format ([`keys::token`]), ids,
//!   names, scopes, durations, IP allow-lists, and the key record's own
//!   rules (may it be revoked, rotated, suspended: `KeyStatus::permits`).
//!   Parse, don't validate.
//! - [`audit`]: the audit events every change writes, as data.
//! - [`config`]: every setting written once (`config/sections.rs`), read by
//!   serde with unknown keys refused and each value validated as it is read
//!   (`config/values.rs`); environment overrides; `config check`'s lines.
//! - [`store`]: all SQL. Each statement once, in `$N` form, in
//!   `store/{keys,audit,webhooks,usage,alerts,limits}.rs`, run on either
//!   database by `db_run!`; `store/sqlite/` and `store/postgres/` hold only
//!   what truly differs (connecting, migrating, the change signal, and in
//!   `dialect.rs` the index scan, the last-used flush and the usage buckets).
//! - [`discord`]: the outbound port to Discord: the `GuildOps` trait
//!   (`port.rs`), permission rules, the invalid-request shield, the serenity
//!   implementation (`serenity_ops.rs`) and the REST view a listener alone
//!   uses (`rest.rs`), audit embeds and escaping.
//! - [`roblox`]: the outbound port to the services Roblox games need:
//!   account linkers (Bloxlink, RoVer) and Roblox Open Cloud.
//! - [`service`]: every rule, as `impl KeyService` blocks one concern a
//!   file: `keys.rs` (lifecycle), `verify.rs` (admission: the key, the
//!   shared lease, the local limiter, the budget), `actions.rs` (Discord
//!   writes) and `guard.rs` (which roles and members a key may touch, the
//!   breaker, each guild's pause), `audit.rs`, `leaks.rs`, `usage/` and
//!   `usage_report.rs`, `webhooks/` (events, signing, the address policy,
//!   one delivery), `index.rs` (the in-memory key index, dense by design),
//!   `lease.rs` (rate budgets shared between instances), `clock.rs` (what
//!   time it is for keys; tests set it), `health.rs` (the bot's state for
//!   `/healthz`), and `tasks/`, one file per background loop (index upkeep,
//!   lease heartbeats, the audit outbox, the reconcile of API writes left
//!   pending, webhook dispatch, expiry reminders).
//!   The one error type is `service/error.rs`.
//! - Adapters, thin translations over the service, each mapping the error
//!   once: [`http`] (axum behind a hyper front door, `front.rs`, dense by
//!   design; its fair places per guild in `places.rs`, its connection caps
//!   in `connections.rs`; `reason.rs` is the one list of error reasons), [`bot`] (poise
//!   slash commands and buttons), [`cli`] (clap).
//! - [`chart`]: pure rendering of usage charts.
//! - [`app`]: the wiring: opens the store, builds the service, starts the
//!   listener and the bot (kept connected by a supervisor), stops them on a
//!   signal; [`telemetry`]: logging.
//!
//! Tests: three integration binaries in `tests/` (`service`: the service
//! in-process on both backends; `cli`: the operator CLI black-box;
//! `blackbox`: the real binary's listener and bot against the Discord
//! double, scale-out on PostgreSQL), and the Discord double itself in
//! `tests/discord-double/`.

#![warn(clippy::self_named_module_files)]

pub mod app;
pub mod audit;
pub mod bot;
pub mod chart;
pub mod cli;
pub mod config;
pub mod discord;
pub mod http;
pub mod keys;
pub mod roblox;
pub mod service;
pub mod store;
pub mod telemetry;
