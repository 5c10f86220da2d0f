//! `guildkey roblox push set|show|remove`: bans pushed into a guild's live
//! Roblox games (`service::roblox::push`). The Open Cloud key is read from
//! `--key`, or from stdin with `--key -`, stored sealed, never printed.

use std::io::Read as _;

use clap::Subcommand;

use super::Failure;
use crate::config::Config;
use crate::service::roblox::push::PushMode;

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Push the guild's bans and unbans into a Roblox universe
    Set {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = super::keys::parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
        /// The Roblox universe (experience) id
        #[arg(long, value_name = "ID")]
        universe: u64,
        /// The universe's Open Cloud API key, or - to read it from stdin
        #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
        key: String,
        /// publish (MessagingService), restrict (Roblox's ban), both, or none (the key kept for Secrets delivery)
        #[arg(long, value_name = "MODE", default_value = "publish")]
        mode: String,
        /// The MessagingService topic (at most 80 characters)
        #[arg(long, value_name = "TOPIC", default_value = crate::service::roblox::push::DEFAULT_TOPIC)]
        topic: String,
    },
    /// Show a guild's push setting and its latest pushes
    Show {
        #[arg(long, value_name = "ID", value_parser = super::keys::parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
    },
    /// Stop pushing a guild's bans and forget its Open Cloud key
    Remove {
        #[arg(long, value_name = "ID", value_parser = super::keys::parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
    },
}

pub async fn run(cmd: PushCommand, config: &Config) -> Result<(), Failure> {
    let (mode, key) = match &cmd {
        PushCommand::Set { mode, key, .. } => {
            let mode = PushMode::parse(mode)
                .ok_or_else(|| Failure::usage(format!("--mode: '{mode}' is not publish, restrict, both or none")))?;
            let key = if key == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::failed(format!("cannot read the key from stdin: {e}")))?;
                text.trim().to_owned()
            } else {
                key.clone()
            };
            (Some(mode), Some(key))
        }
        _ => (None, None),
    };
    let operator = crate::app::Operator::open(config).await?;
    let service = operator.service.clone();
    let result = async {
        match cmd {
            PushCommand::Set { guild, universe, topic, .. } => {
                let (mode, key) = (mode.expect("parsed above"), key.expect("read above"));
                let s = service.set_roblox_push(guild, universe, &key, mode, Some(&topic)).await?;
                eprintln!(
                    "guild {guild}: bans pushed into universe {} as {} (topic {}); the Open Cloud key is stored \
                     encrypted and never shown",
                    s.universe_id, s.mode, s.topic
                );
                Ok(())
            }
            PushCommand::Show { guild } => {
                match service.roblox_push_status(guild).await? {
                    None => println!("guild {guild}: no bans pushed into Roblox games"),
                    Some(st) => {
                        let s = &st.setting;
                        println!("guild {guild}: universe {}, mode {}, topic {}", s.universe_id, s.mode, s.topic);
                        for p in &st.recent {
                            println!(
                                "{}  {} {} roblox {} (discord {}) origin {}: {}{}",
                                p.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                                p.kind,
                                p.action,
                                p.roblox_id,
                                p.discord_id,
                                p.origin,
                                p.state,
                                p.last_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                            );
                        }
                    }
                }
                Ok(())
            }
            PushCommand::Remove { guild } => {
                if service.remove_roblox_push(guild).await? {
                    eprintln!("guild {guild}: bans are no longer pushed; its Open Cloud key is forgotten");
                } else {
                    eprintln!("guild {guild}: had no push set");
                }
                Ok(())
            }
        }
    }
    .await;
    operator.close().await;
    result
}
