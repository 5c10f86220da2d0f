//! Roblox games: `roblox:` ids resolved through the guild's linker
//! (`links.rs`), bans pushed into live games (`push.rs`) and keys delivered
//! into an experience's Secrets store (`delivery.rs`). Credentials are the
//! service's `credentials` (sealed under `secrets.key`).

pub mod delivery;
pub mod links;
pub mod push;
