//! The periodic check of key makers (issue 22): every
//! `keys.maker_check_seconds` (at least hourly) the bot re-reads, through
//! the Discord port, the roles of every maker whose keys still hold a place
//! and suspends each active key whose maker left the server or lost a power
//! one of its scopes needs ([`Makers::recheck_all`]). Gateway events catch
//! most losses within seconds (`bot::on_event`); this catches what no event
//! shows the bot, such as a maker who left (Discord sends member removals
//! only with the privileged GUILD_MEMBERS intent, which guildkey does not
//! ask for).
//!
//! Several bots may run it at once: a suspension changes a key only once,
//! so a second check finds it suspended already and records nothing.

use std::sync::Arc;

use crate::service::makers::Makers;

/// Re-checks every maker every [`Makers::check_every`] until `stop`
/// resolves. The first check comes after one period: at start the gateway
/// cache is still filling (a guild whose roles are not known yet is skipped
/// anyway), and events cover what happens meanwhile.
pub async fn run(makers: Arc<Makers>, stop: impl std::future::Future<Output = ()>) {
    let every = makers.check_every();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = tick.tick() => match makers.recheck_all().await {
                Ok(n) => {
                    if failing {
                        tracing::info!("re-checking key makers works again");
                        failing = false;
                    }
                    if n > 0 {
                        tracing::info!(suspended = n, "the periodic check suspended keys whose makers lost their powers");
                    }
                }
                Err(e) if failing => tracing::debug!(error = %e, "still cannot re-check key makers"),
                Err(e) => {
                    tracing::warn!(error = %e, "failed to re-check key makers; will retry");
                    failing = true;
                }
            },
        }
    }
}
