//! Discord's refusals, counted together by every instance of the bot
//! (Discord counts them per IP: two instances behind one address that each
//! kept their own count would let twice the budget through). Each
//! instance writes the refusals it counted as they come, and reads the
//! others' over the window a few times a second
//! ([`crate::discord::InvalidAnswers`] holds both; the guard pauses on the
//! sum). One database row per instance, guild and minute.

use std::sync::Arc;
use std::time::Duration;

use super::super::actions::GuildActions;
use crate::discord::{Elsewhere, InvalidAnswers};
use crate::store::Store;

/// How often the other instances' counts are read again.
pub const READ_EVERY: Duration = Duration::from_millis(250);

/// Guilds read back per read: the ones refused most (the rest count in
/// the bot's total alone, and pause no one by their own count).
const GUILDS_READ: u32 = 10_000;

/// Minutes of counts read back: the ten of Discord's window, and the one it
/// started in.
const WINDOW_MINUTES: i64 = 10;

/// Shares this instance's refusal counts and reads the others' until
/// `stop` resolves (a process without Discord access has none to share).
pub async fn run(actions: Arc<GuildActions>, stop: impl std::future::Future<Output = ()>) {
    let ops = actions.ops().clone();
    let Some(invalid) = ops.invalid_answers() else { return };
    let store = actions.keys().store().clone();
    let instance = format!("{}-{}", std::process::id(), crate::keys::token::random_base62(12));
    let mut swept = 0;
    tokio::pin!(stop);
    loop {
        let minute = crate::discord::epoch_minute();
        if let Err(e) = share(&store, &instance, invalid, minute).await {
            tracing::debug!(error = format!("{e:#}"), "failed to share Discord's refusal counts; will retry");
        }
        if swept != minute {
            swept = minute;
            if let Err(e) = store.delete_discord_refusals_before(minute - WINDOW_MINUTES - 1).await {
                tracing::debug!(error = format!("{e:#}"), "failed to delete old Discord refusal counts");
            }
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = invalid.counted() => {}
            () = tokio::time::sleep(READ_EVERY) => {}
        }
    }
    // The last ones counted, for the instances that go on.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), share(&store, &instance, invalid, crate::discord::epoch_minute()))
            .await;
}

/// Writes what this instance counted since the last time, then reads what
/// the others counted over the window.
pub async fn share(store: &Store, instance: &str, invalid: &InvalidAnswers, minute: i64) -> anyhow::Result<()> {
    let cells = invalid.take_unshared();
    if let Err(e) = store.record_discord_refusals(instance, &cells).await {
        invalid.give_back(cells);
        return Err(e);
    }
    let (guilds, total) = store.discord_refusals_elsewhere(instance, minute - WINDOW_MINUTES, GUILDS_READ).await?;
    invalid.set_elsewhere(Elsewhere { guilds: guilds.into_iter().collect(), total });
    Ok(())
}
