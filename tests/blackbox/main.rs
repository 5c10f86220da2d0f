//! Black-box tests: the real `guildkey` binary on a temporary database, its
//! bot connected to the Discord test double, spoken to over loopback HTTP,
//! the gateway and its command line. One module per surface; `support`
//! starts the binary and the double, talks to both, and scans every log
//! line, database row, Discord REST body and response body for leaked
//! secrets when an app is dropped.
//!
//! - `http`: every SPEC §6 status row, rate limits, allow-lists,
//!   cross-process revocation, rotation grace, metrics, OpenAPI.
//! - `discord_routes`: guild info, bans, roles against the double, and the
//!   guard (protected roles and members, the breaker, hostile load).
//! - `bot`, `bot_bad_input`: the slash commands end to end.
//! - `webhooks`, `usage`, `roles` (`--only http`, `--only bot`),
//!   `scale_out` and `sharding` (several instances, one database).
//! - `budgets`: budgets that hold for the whole bot (Discord's refusals
//!   bot-wide and across instances, the address throttle, bounded usage
//!   and request log).
//! - `bad_input`, `hardening`, `limits` (resource exhaustion), `faults`
//!   (Discord 429 storms, 5xx, gateway drops), `crash` (kill -9 under load),
//!   `backup` (a clean stop, a lone CLI command, `guildkey backup` while running),
//!   `record_first` (API writes recorded before Discord is asked: PostgreSQL
//!   outages and kills mid-write leave Discord and the audit log agreeing),
//!   `postgres_tls` (a PostgreSQL of its own with TLS on, verify-full),
//!   `fairness` (one guild slow or hostile holds up no other).
//! - `ban_lists`: each guild's ban list synced, held in memory and
//!   followed by listeners; the bulk check and the export.
//! - `examples` (curl, Python, Node), `roblox` (the Luau client) and
//!   `newcomer` (the README's "Try it without Discord", run as written).

#[path = "../support/mod.rs"]
mod support;

mod backup;
mod bad_input;
mod ban_lists;
mod bot;
mod bot_bad_input;
mod budgets;
mod crash;
mod discord_routes;
mod examples;
mod fairness;
mod faults;
mod hardening;
mod http;
mod listener_limits;
mod newcomer;
mod postgres_tls;
mod record_first;
mod roblox;
mod roblox_delivery;
mod roblox_push;
mod roles;
mod scale_out;
mod sharding;
mod usage;
mod webhooks;
