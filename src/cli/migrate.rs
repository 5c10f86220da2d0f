//! `guildkey migrate`: apply migrations and exit.

use super::{database_failure, Failure};
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
    let url = &config.database.url;
    let store = Store::connect(url).await.map_err(|e| database_failure(url, e))?;
    store.migrate().await.map_err(|e| database_failure(url, e))?;
    Ok(store)
}
