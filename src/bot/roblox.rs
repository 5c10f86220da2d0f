//! `/roblox`: settings for the server's Roblox games. `/roblox linker`
//! sets the account linker (Bloxlink or RoVer) that turns `roblox:<userId>`
//! member ids into Discord ids, with its API key (stored encrypted, never
//! shown back), turns it `off`, or, with no options, shows which is set.
//! Replies are ephemeral; the change is audited `roblox.linker_set` (the
//! provider, never the key).

use poise::CreateReply;

use super::error::discord_err;
use super::Context;
use crate::audit::Actor;
use crate::service::Error;

type Result<T = ()> = std::result::Result<T, Error>;

/// Settings for this server's Roblox games
#[poise::command(
    slash_command,
    guild_only,
    install_context = "Guild",
    default_member_permissions = "MANAGE_GUILD",
    subcommands("roblox_linker", "super::roblox_push::roblox_push"),
    subcommand_required
)]
pub async fn roblox(_: Context<'_>) -> Result {
    Ok(())
}

/// Which account linker turns Roblox ids into Discord ids here.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum LinkerChoice {
    #[name = "bloxlink"]
    Bloxlink,
    #[name = "rover"]
    Rover,
    #[name = "off"]
    Off,
}

/// The account linker for roblox:<userId> ids (no options: show it)
#[poise::command(slash_command, rename = "linker")]
pub async fn roblox_linker(
    ctx: Context<'_>,
    #[description = "bloxlink or rover (with its API key for this server), or off"] provider: Option<LinkerChoice>,
    #[description = "The linker's API key for this server (stored encrypted, never shown back)"]
    #[max_length = 4096]
    key: Option<String>,
) -> Result {
    super::deadline::bounded(ctx, ctx.defer_ephemeral()).await?;
    let guild_id =
        ctx.guild_id().map(|g| g.get()).ok_or_else(|| Error::Missing("use this command in a server".into()))?;
    let actor = Actor::User(ctx.author().id.get());
    let keys = &ctx.data().keys;
    let text = match (provider, key) {
        (None, None) => match keys.linker(guild_id).await? {
            Some(l) => format!(
                "🔗 This server resolves `roblox:` ids through **{}**. Its key is stored encrypted and is never shown.",
                l.provider.display_name()
            ),
            None => "No account linker is set: `roblox:` ids are refused (`linker_error`). Set one with \
                     `/roblox linker provider:bloxlink key:…`."
                .to_owned(),
        },
        (None, Some(_)) => "❌ Choose the `provider` the key belongs to (bloxlink or rover).".to_owned(),
        (Some(LinkerChoice::Off), _) => {
            if keys.remove_linker(guild_id, &actor).await? {
                "🔗 Account linker removed: `roblox:` ids are refused until one is set again.".to_owned()
            } else {
                "No account linker was set.".to_owned()
            }
        }
        (Some(_), None) => "❌ Give the linker's API `key` for this server too.".to_owned(),
        (Some(choice), Some(key)) => {
            let provider = if matches!(choice, LinkerChoice::Bloxlink) { "bloxlink" } else { "rover" };
            let set = keys.set_linker(guild_id, provider, &key, &actor).await?;
            format!(
                "🔗 `roblox:` ids now resolve through **{}**. Its key is stored encrypted and will not be shown again.",
                set.provider.display_name()
            )
        }
    };
    ctx.send(CreateReply::default().content(text).ephemeral(true)).await.map_err(discord_err)?;
    Ok(())
}
