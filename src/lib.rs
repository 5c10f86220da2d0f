//! guildkey
