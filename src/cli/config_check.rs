//! `guildkey config check`: the effective settings, secrets masked.

use clap::Subcommand;

use super::Failure;
use crate::config::{Config, ConfigSource};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print the settings in effect (secrets masked); exits 2 if it is bad
    Check,
}

pub fn run(cmd: ConfigCommand, config: &Config, source: &ConfigSource) -> Result<(), Failure> {
    match cmd {
        ConfigCommand::Check => {
            // Which file: on stderr, so that stdout stays the settings alone.
            match source.file() {
                Some(path) => eprintln!("config file: {}", path.display()),
                None => eprintln!("config file: none (no ./config.toml); built-in defaults, .env and the environment"),
            }
            println!("{}", config.describe());
            for warning in config.http.warnings() {
                eprintln!("warning: {warning}");
            }
            if config.discord.token.is_none() {
                eprintln!("note: discord.token (DISCORD_TOKEN) is not set; `guildkey run` needs it");
            }
            Ok(())
        }
    }
}
