//! `guildkey run` (the default command): the whole application.

use super::Failure;
use crate::config::Config;

pub async fn run(config: Config) -> Result<(), Failure> {
    Ok(crate::app::run(config).await?)
}
