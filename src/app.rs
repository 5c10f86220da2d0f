//! The running application: database, service, background upkeep, and the
//! adapters that face the world, started together and stopped together on
//! SIGINT/SIGTERM.

use crate::cli::Failure;
use crate::config::Config;
use crate::service::KeyService;

/// `guildkey run`: runs until a shutdown signal, then stops gracefully.
pub async fn run(config: Config) -> Result<(), Failure> {
    if config.discord.token.is_none() {
        return Err(Failure::usage("discord.token: not set; put DISCORD_TOKEN in the environment or .env"));
    }
    let store = crate::cli::open_store(&config).await?;
    let service = KeyService::new(store.clone(), config.keys.clone())
        .await
        .map_err(|e| crate::cli::database_failure(&config.database.url, e))?;
    service.run_upkeep(shutdown_signal()).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
