//! `guildkey run` (the default command): the whole application, or one
//! role of it (`--only http`, `--only bot`).

use super::Failure;
use crate::config::{Config, ProcessRole};

#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Run one role only: `http` (the listener, no gateway connection; run as many as you like) or `bot`
    /// (the gateway bot and the audit-channel posts, no listener); `both` is the default [config: run.only,
    /// env: GUILDKEY_ONLY]
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    pub only: Option<ProcessRole>,
}

fn parse_role(v: &str) -> Result<ProcessRole, String> {
    v.parse()
}

pub async fn run(mut config: Config, args: RunArgs) -> Result<(), Failure> {
    if let Some(only) = args.only {
        config.run.only = only;
    }
    Ok(crate::app::run(config).await?)
}
