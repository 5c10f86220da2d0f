//! Discord's deadlines for answering an interaction. Its first response is
//! taken only within 3 s of the interaction; serenity's ratelimiter would
//! sleep out a 429 on it however long, then retry into "Unknown
//! interaction". A first response (a defer, an error reply) is given up
//! when the window closes, and never attempted after it; any other reply
//! gets [`crate::discord::DISCORD_TIMEOUT`].

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use poise::serenity_prelude as serenity;

use super::Context;
use crate::service::Error;

/// Discord's window for an interaction's first response.
pub const INITIAL_RESPONSE_WINDOW: Duration = Duration::from_secs(3);
/// The least a first response is given, whatever the clocks say: an
/// interaction's time is Discord's clock, the deadline ours.
const LEAST: Duration = Duration::from_secs(1);
/// Discord's epoch in Unix milliseconds (snowflakes count from it).
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// How long ago Discord created the interaction `id` (a snowflake holds
/// its time); zero if its time is ahead of our clock.
fn age(id: u64) -> Duration {
    let created = UNIX_EPOCH + Duration::from_millis((id >> 22) + DISCORD_EPOCH_MS);
    SystemTime::now().duration_since(created).unwrap_or_default()
}

/// What is left of the first-response window of the interaction `id`, at
/// least [`LEAST`].
pub fn initial_response_left(id: u64) -> Duration {
    INITIAL_RESPONSE_WINDOW.saturating_sub(age(id)).max(LEAST)
}

/// Whether `ctx` still owes its first response.
fn owes_first_response(ctx: Context<'_>) -> bool {
    match ctx {
        poise::Context::Application(a) => !a.has_sent_initial_response.load(std::sync::atomic::Ordering::SeqCst),
        poise::Context::Prefix(_) => false,
    }
}

/// How long a reply in `ctx` may take now: what is left of the first-response
/// window while it is owed, else Discord's request timeout.
pub fn reply_limit(ctx: Context<'_>) -> Duration {
    if owes_first_response(ctx) {
        initial_response_left(ctx.id())
    } else {
        crate::discord::DISCORD_TIMEOUT
    }
}

/// Runs `send`, a reply in `ctx`, within [`reply_limit`]: past it the
/// request is dropped (with any rate-limit wait serenity was sleeping).
pub async fn bounded<T>(ctx: Context<'_>, send: impl Future<Output = Result<T, serenity::Error>>) -> Result<T, Error> {
    let limit = reply_limit(ctx);
    match tokio::time::timeout(limit, send).await {
        Ok(result) => result.map_err(super::error::discord_err),
        Err(_) => Err(Error::Internal(anyhow::anyhow!(
            "Discord did not take the reply within {:.1} s (a rate limit held it); nothing was done",
            limit.as_secs_f64()
        ))),
    }
}

/// Whether an error reply in `ctx` is still worth trying: not when the first
/// response is owed and its window has closed (Discord would refuse it).
pub fn can_still_answer(ctx: Context<'_>) -> bool {
    if !owes_first_response(ctx) {
        return true;
    }
    age(ctx.id()) < INITIAL_RESPONSE_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snowflake_ago(ago: Duration) -> u64 {
        let at = SystemTime::now() - ago;
        let ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 - DISCORD_EPOCH_MS;
        ms << 22
    }

    #[test]
    fn the_first_response_window_counts_from_the_interactions_snowflake() {
        let left = initial_response_left(snowflake_ago(Duration::from_millis(500)));
        assert!(left > Duration::from_millis(2300) && left <= Duration::from_millis(2500), "{left:?}");
        assert_eq!(initial_response_left(snowflake_ago(Duration::from_secs(10))), LEAST);
        // An interaction "from the future" (Discord's clock ahead): 3 s at most.
        assert_eq!(initial_response_left(snowflake_ago(Duration::ZERO) + (5_000 << 22)), INITIAL_RESPONSE_WINDOW);
    }
}
