//! guildkey: a Discord bot with which server admins issue and manage API
//! keys, and an HTTP listener that external programs call with those keys.
//!
//! A tour, from the inside out:
//! - [`keys`]: the domain without I/O — token format, scopes, names,
//!   durations, IP allow-lists. Parse, don't validate.
//! - [`store`]: all SQL (SQLite, or PostgreSQL for several instances, via
//!   sqlx), migrations, change detection.
//! - [`audit`]: the audit events every change writes.
//! - [`service`]: every rule (limits, revoke/delete/rotate/suspend,
//!   verification from an in-memory index, batched last-used times, usage
//!   counters, the request log, refusal-spike alerts and expiry reminders,
//!   and the guard: which roles and members a key may touch, the circuit
//!   breaker, Discord's refusals and each guild's pause; webhooks: what is
//!   sent, signed, retried and refused). The one error type.
//! - Adapters, thin translations over the service: [`cli`] (clap).
//! - [`config`] and [`telemetry`]: settings and logging.

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
pub mod service;
pub mod store;
pub mod telemetry;
