//! `/roblox push set|show|remove`: bans pushed into the server's live
//! Roblox games (`service::roblox::push`). Parses the options, calls the
//! service, answers ephemerally; the Open Cloud key typed in is stored
//! sealed and never shown back. The bot's checks apply (Manage Server or
//! Administrator, in a server).

use super::error::discord_err;
use super::webhook::{guild, say};
use super::Context;
use crate::service::roblox::push::PushMode;
use crate::service::Error;

type Result<T = ()> = std::result::Result<T, Error>;

/// Push this server's bans into a Roblox game (MessagingService, Ban API)
#[poise::command(
    slash_command,
    rename = "push",
    subcommands("push_set", "push_show", "push_remove"),
    subcommand_required
)]
pub async fn roblox_push(_: Context<'_>) -> Result {
    Ok(())
}

/// How bans reach the game.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum ModeChoice {
    #[name = "publish"]
    Publish,
    #[name = "restrict"]
    Restrict,
    #[name = "both"]
    Both,
    #[name = "none"]
    None,
}

/// Push bans and unbans into a Roblox universe (the Open Cloud key is stored encrypted)
#[poise::command(slash_command, rename = "set")]
pub async fn push_set(
    ctx: Context<'_>,
    #[description = "The Roblox universe (experience) id"]
    #[min = 1]
    universe: i64,
    #[description = "The universe's Open Cloud API key (stored encrypted, never shown)"]
    #[max_length = 4000]
    key: String,
    #[description = "publish (default), restrict (Roblox's ban), both, or none (key kept for Secrets delivery)"]
    mode: Option<ModeChoice>,
    #[description = "The MessagingService topic (default guildkey-bans)"]
    #[max_length = 80]
    topic: Option<String>,
) -> Result {
    ctx.defer_ephemeral().await.map_err(discord_err)?;
    let mode = match mode.unwrap_or(ModeChoice::Publish) {
        ModeChoice::Publish => PushMode::Publish,
        ModeChoice::Restrict => PushMode::Restrict,
        ModeChoice::Both => PushMode::Both,
        ModeChoice::None => PushMode::None,
    };
    let universe = u64::try_from(universe).unwrap_or(0);
    let s = ctx.data().keys.set_roblox_push(guild(ctx)?, universe, &key, mode, topic.as_deref()).await?;
    say(
        ctx,
        format!(
            "🎮 Bans are pushed into Roblox universe `{}` as **{}** (topic `{}`). The Open Cloud key is stored \
             encrypted and is never shown.",
            s.universe_id, s.mode, s.topic
        ),
    )
    .await
}

/// Show where this server's bans are pushed and the latest pushes
#[poise::command(slash_command, rename = "show")]
pub async fn push_show(ctx: Context<'_>) -> Result {
    ctx.defer_ephemeral().await.map_err(discord_err)?;
    let Some(st) = ctx.data().keys.roblox_push_status(guild(ctx)?).await? else {
        return say(ctx, "No bans are pushed into Roblox games: set it with `/roblox push set`.".into()).await;
    };
    let s = &st.setting;
    let mut lines = vec![format!("🎮 Universe `{}` · mode **{}** · topic `{}`", s.universe_id, s.mode, s.topic)];
    for p in &st.recent {
        lines.push(format!(
            "• <t:{}:R> {} {} Roblox `{}` ({}): {}",
            p.created_at.timestamp(),
            p.kind,
            p.action,
            p.roblox_id,
            p.origin,
            p.state
        ));
    }
    say(ctx, lines.join("\n")).await
}

/// Stop pushing this server's bans and forget its Open Cloud key
#[poise::command(slash_command, rename = "remove")]
pub async fn push_remove(ctx: Context<'_>) -> Result {
    ctx.defer_ephemeral().await.map_err(discord_err)?;
    let text = if ctx.data().keys.remove_roblox_push(guild(ctx)?).await? {
        "🗑️ Bans are no longer pushed into Roblox games; the Open Cloud key is forgotten."
    } else {
        "No bans were pushed into Roblox games."
    };
    say(ctx, text.to_owned()).await
}
