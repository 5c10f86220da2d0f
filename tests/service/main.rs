//! Direct tests of the service rules (SPEC §3, §5 and the hot path of §6) on
//! a real temporary SQLite file, or with `GUILDKEY_TEST_BACKEND=postgres` a
//! fresh PostgreSQL database (see `tests/support/db.rs`): limits under concurrency, revoke, rotate,
//! delete, expiry, lookups, audit events, verification from memory and the
//! batched last-used times.
//!
//! Two `Store`/`KeyService` pairs opened on one file stand in for two
//! processes (a running listener and the operator CLI, or two instances).
//! Set `TEST_LOG=1` to see the service's logs.
//!
//! Also here: the in-memory key index (`index`), the circuit breaker's
//! shared counts (`breaker`) and random input for every parser
//! (`properties`). One module per feature; `helpers` is shared.

mod audit;
mod breaker;
#[path = "../support/db.rs"]
mod db;
mod helpers;
mod index;
mod issue;
mod lifecycle;
mod limit;
mod makers;
mod properties;
mod rate_limits;
mod reminders;
mod roblox_links;
mod roblox_push;
mod rotations;
mod usage;
mod verification;
