//! Discord's deadlines for answering an interaction. Its first response is
//! taken only within 3 s of the interaction; serenity's ratelimiter would
//! sleep out a 429 on it however long, then retry into "Unknown
//! interaction". A first response (a defer, an error reply) is given up
//! when the window closes, and never attempted after it; any other reply
//! gets [`crate::discord::DISCORD_TIMEOUT`].
//!
//! Commands defer first ([`bounded`]). A button press is answered by
//! [`answer_press`]: its work runs while the window lasts (less
//! [`SEND_MARGIN`] for the answer itself); work that is not done by then
//! (a slow database, a slow Discord) is deferred first and its result
//! edits the message, or follows up, when ready.

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

/// What a press's first response keeps for itself: work still running
/// this long before the window closes is deferred instead.
pub const SEND_MARGIN: Duration = Duration::from_millis(1_000);

/// How a component press is answered.
pub enum PressAnswer {
    /// The pressed message is replaced (content, embeds, buttons; `None`
    /// keeps what it had).
    Update {
        content: Option<String>,
        embeds: Option<Vec<serenity::CreateEmbed>>,
        components: Vec<serenity::CreateActionRow>,
    },
    /// A message only the presser sees; the pressed message stays.
    Ephemeral(String),
}

impl PressAnswer {
    /// Replaces the pressed message with `text` and no buttons.
    pub fn done(text: String) -> Self {
        Self::Update { content: Some(text), embeds: None, components: Vec::new() }
    }

    fn into_response(self) -> serenity::CreateInteractionResponse {
        match self {
            Self::Update { content, embeds, components } => {
                let mut m = serenity::CreateInteractionResponseMessage::new().components(components);
                if let Some(c) = content {
                    m = m.content(c);
                }
                if let Some(e) = embeds {
                    m = m.embeds(e);
                }
                serenity::CreateInteractionResponse::UpdateMessage(m)
            }
            Self::Ephemeral(text) => serenity::CreateInteractionResponse::Message(
                serenity::CreateInteractionResponseMessage::new().content(text).ephemeral(true),
            ),
        }
    }
}

/// Answers `press` with what `work` makes, its first response always within
/// Discord's window: the answer itself if `work` is done in time (the
/// window less [`SEND_MARGIN`]), else a deferred update at once and the
/// answer as an edit of the pressed message (or a follow-up, for an
/// ephemeral one) when `work` is done, within [`crate::discord::DISCORD_TIMEOUT`].
pub async fn answer_press(
    http: &serenity::Context,
    press: &serenity::ComponentInteraction,
    work: impl Future<Output = PressAnswer>,
) -> Result<(), Error> {
    let id = press.id.get();
    let budget = initial_response_left(id).saturating_sub(SEND_MARGIN);
    tokio::pin!(work);
    if let Ok(answer) = tokio::time::timeout(budget, &mut work).await {
        return first_response(id, press.create_response(http, answer.into_response())).await;
    }
    first_response(id, press.create_response(http, serenity::CreateInteractionResponse::Acknowledge)).await?;
    tracing::debug!(interaction_id = id, "a button's work outlasted Discord's first-response window: deferred");
    let later = match work.await {
        PressAnswer::Update { content, embeds, components } => {
            let mut edit = serenity::EditInteractionResponse::new().components(components);
            if let Some(c) = content {
                edit = edit.content(c);
            }
            if let Some(e) = embeds {
                edit = edit.embeds(e);
            }
            let sent = async { press.edit_response(http, edit).await.map(drop).map_err(super::error::discord_err) };
            tokio::time::timeout(crate::discord::DISCORD_TIMEOUT, sent).await
        }
        PressAnswer::Ephemeral(text) => {
            let follow = serenity::CreateInteractionResponseFollowup::new().content(text).ephemeral(true);
            let sent = async { press.create_followup(http, follow).await.map(drop).map_err(super::error::discord_err) };
            tokio::time::timeout(crate::discord::DISCORD_TIMEOUT, sent).await
        }
    };
    match later {
        Ok(result) => result,
        Err(_) => Err(Error::Internal(anyhow::anyhow!(
            "Discord did not take a button's answer within {} s; it was not shown",
            crate::discord::DISCORD_TIMEOUT.as_secs()
        ))),
    }
}

/// A first response to interaction `id`, given up when its window closes.
async fn first_response(id: u64, send: impl Future<Output = Result<(), serenity::Error>>) -> Result<(), Error> {
    let limit = initial_response_left(id);
    match tokio::time::timeout(limit, send).await {
        Ok(result) => result.map_err(super::error::discord_err),
        Err(_) => Err(Error::Internal(anyhow::anyhow!(
            "Discord did not take a button's first response within {:.1} s (a rate limit held it); \
             nothing was shown",
            limit.as_secs_f64()
        ))),
    }
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
