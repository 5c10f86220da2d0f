//! `guildkey secrets reseal`: after `GUILDKEY_SECRETS_KEY` was rotated (the
//! new key in it, the old one in `GUILDKEY_SECRETS_KEY_PREVIOUS`), seals
//! every stored third-party credential and webhook signing secret again
//! under the new key, and says how many. Then the previous key can go.

use clap::Subcommand;

use super::Failure;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Seal every stored credential and webhook signing secret again under GUILDKEY_SECRETS_KEY
    /// (opening them with it or GUILDKEY_SECRETS_KEY_PREVIOUS); prints how many
    Reseal,
}

pub async fn run(cmd: SecretsCommand, config: &Config) -> Result<(), Failure> {
    let SecretsCommand::Reseal = cmd;
    let operator = crate::app::Operator::open(config).await?;
    let result = operator.service.reseal_secrets().await;
    operator.close().await;
    let (credentials, webhooks) = result?;
    println!("{}", credentials + webhooks);
    eprintln!(
        "re-sealed {credentials} credential(s) and {webhooks} webhook signing secret(s) under GUILDKEY_SECRETS_KEY; \
         GUILDKEY_SECRETS_KEY_PREVIOUS is no longer needed once every guildkey process runs with the new key"
    );
    Ok(())
}
