//! `guildkey roblox linker set|show|remove --guild ID`: the guild's Roblox
//! account linker (Bloxlink or RoVer), which turns `roblox:<userId>` member
//! ids into Discord ids. Its key is sealed under `GUILDKEY_SECRETS_KEY`,
//! never printed; give it as `--key -` (read from stdin) or in
//! `GUILDKEY_LINKER_KEY` to keep it out of the shell's history. Audited as
//! "The operator CLI".

use std::io::Read;

use clap::Subcommand;

use super::keys::parse_snowflake;
use super::Failure;
use crate::audit::Actor;
use crate::config::Config;
use crate::service::roblox::links::Provider;
use crate::service::Error;

#[derive(Debug, Subcommand)]
pub enum RobloxCommand {
    /// The guild's account linker, for roblox:<userId> member ids
    #[command(subcommand)]
    Linker(LinkerCommand),
    /// Bans pushed into the guild's live Roblox games (MessagingService, Ban API)
    #[command(subcommand)]
    Push(super::roblox_push::PushCommand),
}

#[derive(Debug, Subcommand)]
pub enum LinkerCommand {
    /// Set the guild's account linker and its API key (stored encrypted, never shown back)
    #[command(after_help = SET_EXAMPLE)]
    Set {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
        /// bloxlink or rover
        #[arg(long, value_name = "PROVIDER")]
        provider: String,
        /// The linker's API key for this guild; `-` reads it from stdin
        #[arg(long, value_name = "KEY", env = "GUILDKEY_LINKER_KEY", hide_env_values = true)]
        key: String,
    },
    /// Show the guild's account linker (the provider, never the key)
    Show {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
    },
    /// Remove the guild's account linker and its key
    Remove {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
    },
}

/// Shown under `guildkey roblox linker set --help`.
const SET_EXAMPLE: &str = r#"Examples:
  printf %s "$BLOXLINK_KEY" | guildkey roblox linker set --guild 123456789012345678 --provider bloxlink --key -
  GUILDKEY_LINKER_KEY=... guildkey roblox linker set --guild 123456789012345678 --provider rover"#;

/// A bad option is named by its flag (exit 2), the rest as every other
/// command's.
fn failure(e: Error) -> Failure {
    match e {
        Error::Invalid(i) => Failure::usage(format!("--{}: {}", i.field.replace('_', "-"), i.message)),
        other => other.into(),
    }
}

pub async fn run(cmd: RobloxCommand, config: &Config) -> Result<(), Failure> {
    let cmd = match cmd {
        RobloxCommand::Linker(cmd) => cmd,
        RobloxCommand::Push(cmd) => return super::roblox_push::run(cmd, config).await,
    };
    // Typed values first, before the database or stdin.
    let cmd = match cmd {
        LinkerCommand::Set { guild, provider, key } => {
            let p = Provider::parse(&provider).ok_or_else(|| {
                Failure::usage(format!(
                    "--provider: must be bloxlink or rover, not '{}'",
                    provider.chars().take(40).collect::<String>()
                ))
            })?;
            let key = if key == "-" { read_stdin()? } else { key };
            if key.trim().is_empty() {
                return Err(Failure::usage("--key: the linker's API key is empty"));
            }
            LinkerCommand::Set { guild, provider: p.as_str().to_owned(), key }
        }
        other => other,
    };
    let operator = crate::app::Operator::open(config).await?;
    let result = execute(cmd, &operator.service).await;
    operator.close().await;
    result
}

fn read_stdin() -> Result<String, Failure> {
    let mut key = String::new();
    std::io::stdin()
        .take(8192)
        .read_to_string(&mut key)
        .map_err(|e| Failure::usage(format!("--key -: could not read the key from stdin: {e}")))?;
    Ok(key.trim().to_owned())
}

async fn execute(cmd: LinkerCommand, service: &crate::service::KeyService) -> Result<(), Failure> {
    match cmd {
        LinkerCommand::Set { guild, provider, key } => {
            let set = service.set_linker(guild, &provider, &key, &Actor::Cli).await.map_err(failure)?;
            eprintln!(
                "set the account linker of guild {guild} to {}; its key is stored encrypted and is never shown back",
                set.provider.display_name()
            );
        }
        LinkerCommand::Show { guild } => match service.linker(guild).await? {
            Some(l) => println!("{}", l.provider.as_str()),
            None => eprintln!("guild {guild} has no account linker (set one with: guildkey roblox linker set)"),
        },
        LinkerCommand::Remove { guild } => {
            if service.remove_linker(guild, &Actor::Cli).await? {
                eprintln!("removed the account linker of guild {guild}");
            } else {
                return Err(Failure::failed(format!("guild {guild} has no account linker")));
            }
        }
    }
    Ok(())
}
