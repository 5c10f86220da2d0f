//! Black-box tests of the operator CLI (SPEC §1–§3, §5): the real `guildkey`
//! binary on a temporary SQLite file, judged by its exit code, its stdout and
//! stderr, and the rows it leaves in the database.
//!
//! Every command runs with a cleared environment in a fresh temporary
//! directory, so no stray `./config.toml`, `.env` or `DISCORD_TOKEN` of the
//! machine running the tests can change what is tested. Set `TEST_LOG=1` to
//! run the binary with `RUST_LOG=debug` and see its logs in failure messages.

mod bad_input;
mod broken_databases;
mod commands;
mod concurrency;
mod config_check;
mod create_list;
mod helpers;
mod lifecycle;
mod more_bad_input;
mod roblox_push;
mod secrets;
