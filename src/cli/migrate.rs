//! `guildkey migrate`: apply migrations and exit.

use super::Failure;
use crate::config::Config;
use crate::store::Store;

pub async fn run(config: &Config) -> Result<(), Failure> {
    let store = open(config).await?;
    store.close().await;
    eprintln!("migrations applied");
    Ok(())
}

/// Opens and migrates the database named by the config.
pub async fn open(config: &Config) -> Result<Store, Failure> {
    Ok(crate::app::open_store(config).await?)
}
