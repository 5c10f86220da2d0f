//! Account linkers: Roblox id → the Discord ids linked to it in a guild.
