//! `guildkey migrate`: apply migrations and exit.

use super::Failure;
use crate::config::Config;

pub async fn run(config: &Config) -> Result<(), Failure> {
    crate::app::migrate(config).await?;
    eprintln!("migrations applied");
    Ok(())
}
