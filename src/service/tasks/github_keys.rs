//! Refreshes GitHub's secret-scanning public keys (`service::github_keys`)
//! from `leaks.github_public_keys_url`: at start, then hourly, and soon
//! after a report names a key the document does not hold (GitHub rotated).
//! Where the network does not allow it, the failure is logged (once per
//! change of state) and the file's keys stay in use.

use std::sync::Arc;
use std::time::Duration;

use crate::service::github_keys::GithubKeys;

/// How often the keys are read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// The least time between two refreshes asked for by unknown keys.
pub const SOONEST_AGAIN: Duration = Duration::from_secs(60);

/// Runs until `stop`. `wake` asks for a refresh now (at most every
/// [`SOONEST_AGAIN`]).
pub async fn run(
    keys: Arc<GithubKeys>,
    url: String,
    wake: Arc<tokio::sync::Notify>,
    stop: impl std::future::Future<Output = ()>,
) {
    let client = match reqwest::Client::builder()
        .user_agent(concat!("guildkey/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build an HTTP client to refresh GitHub's keys; the file's keys stay in use");
            return;
        }
    };
    tokio::pin!(stop);
    let mut failing = false;
    loop {
        match keys.refresh(&client, &url).await {
            Ok(n) => {
                if failing {
                    tracing::info!(keys = n, "GitHub's secret-scanning keys refreshed again");
                } else {
                    tracing::debug!(keys = n, "GitHub's secret-scanning keys refreshed");
                }
                failing = false;
            }
            Err(e) if !failing => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    url,
                    "could not refresh GitHub's secret-scanning keys; the file's keys stay in use"
                );
                failing = true;
            }
            Err(e) => tracing::debug!(error = format!("{e:#}"), "GitHub's keys still cannot be refreshed"),
        }
        let soonest = tokio::time::sleep(SOONEST_AGAIN);
        tokio::select! {
            () = &mut stop => return,
            () = soonest => {}
        }
        tokio::select! {
            () = &mut stop => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(REFRESH_EVERY - SOONEST_AGAIN) => {}
        }
    }
}
