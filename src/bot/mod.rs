//! The Discord bot: poise on serenity, a thin adapter over the service.
//!
//! Two command groups (`/apikey`, in [`apikey`]; `/roblox`, in [`roblox`]); a global check that the
//! member has Manage Server or Administrator in *this* interaction (so a
//! misconfigured command override never lets a plain member in); one
//! `on_error` ([`error`]). Only non-privileged gateway intents are used.

pub mod apikey;
pub mod buttons;
pub mod deadline;
pub mod error;
pub mod render;
pub mod roblox;
pub mod roblox_push;
pub mod usage;
pub mod webhook;

use std::sync::Arc;

use poise::serenity_prelude as serenity;

use crate::config::RegisterCommands;
use crate::service::actions::{BanCache, GuildActions};
use crate::service::guard::DiscordGuard;
use crate::service::makers::Maker;
use crate::service::{Error, KeyService};

/// What every command can reach.
#[derive(Clone)]
pub struct Data {
    pub keys: KeyService,
    /// Acting on Discord beyond messages (the leak guard's AutoMod rule).
    pub actions: Arc<GuildActions>,
    pub bans: Arc<BanCache>,
    /// Told when a guild's roles change, so refusals Discord gave before
    /// are not answered again.
    pub guard: Arc<DiscordGuard>,
    /// The server's webhook (`/apikey webhook`), and bans seen on the gateway.
    pub webhooks: crate::service::webhooks::WebhookService,
    /// Set to connected when the gateway session is ready.
    pub health: Arc<crate::service::health::BotHealth>,
    /// No key outranks its maker: creating and adopting keys as a member,
    /// and re-checking makers when the gateway shows a loss.
    pub makers: Arc<crate::service::makers::Makers>,
    /// Says in the audit channel when the bot's own permissions switch a
    /// feature off (Discord withholds its events) or on again.
    pub features: Arc<crate::service::features::FeatureWatch>,
}

pub type Context<'a> = poise::Context<'a, Data, Error>;

/// Gateway intents: guilds (the cache behind guild info and the role
/// hierarchy) and moderation (ban events that refresh the ban cache).
/// Neither is privileged. With `message_content` (the operator enabled the
/// privileged MESSAGE_CONTENT intent for the bot), also AutoMod's action
/// executions, whose matched content lets the leak guard revoke a pasted key.
pub fn intents(message_content: bool) -> serenity::GatewayIntents {
    let base = serenity::GatewayIntents::GUILDS | serenity::GatewayIntents::GUILD_MODERATION;
    if message_content {
        base | serenity::GatewayIntents::MESSAGE_CONTENT | serenity::GatewayIntents::AUTO_MODERATION_EXECUTION
    } else {
        base
    }
}

/// The member behind a command, as a key's maker: who, their roles, and
/// the permissions Discord resolved for the interaction.
pub fn maker_of(ctx: Context<'_>) -> Maker {
    let member = match ctx {
        Context::Application(app) => app.interaction.member.as_deref(),
        Context::Prefix(_) => None,
    };
    maker_from(ctx.author().id.get(), member)
}

/// [`maker_of`] for any interaction's member.
pub fn maker_from(user_id: u64, member: Option<&serenity::Member>) -> Maker {
    Maker {
        user_id,
        permissions: member.and_then(|m| m.permissions).map(|p| p.bits()),
        roles: member.map(|m| m.roles.iter().map(|r| r.get()).collect()).unwrap_or_default(),
    }
}

/// Whether the member in this interaction may manage keys.
pub fn may_manage_keys(ctx: Context<'_>) -> bool {
    let Context::Application(app) = ctx else { return false };
    let perms = app.interaction.member.as_ref().and_then(|m| m.permissions);
    perms.is_some_and(|p| p.administrator() || p.manage_guild())
}

/// Builds the poise framework.
pub fn framework(data: Data, register: RegisterCommands) -> poise::Framework<Data, Error> {
    let options = poise::FrameworkOptions {
        commands: vec![apikey::apikey(), roblox::roblox()],
        on_error: |e| Box::pin(error::on_error(e)),
        command_check: Some(|ctx| Box::pin(async move { Ok(may_manage_keys(ctx)) })),
        event_handler: |framework, event| Box::pin(on_event(framework.serenity_context, event, framework.user_data)),
        initialize_owners: false,
        ..Default::default()
    };
    poise::Framework::builder()
        .options(options)
        .setup(move |ctx, ready, framework| {
            Box::pin(async move {
                tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), "connected to Discord");
                data.health.set(crate::service::health::BotState::Connected);
                let commands = &framework.options().commands;
                let registered = match register {
                    RegisterCommands::Global => poise::builtins::register_globally(ctx, commands).await,
                    RegisterCommands::Guild(id) => {
                        poise::builtins::register_in_guild(ctx, commands, serenity::GuildId::new(id)).await
                    }
                    RegisterCommands::None => Ok(()),
                };
                if let Err(e) = registered {
                    tracing::error!(error = %e, "failed to register slash commands");
                }
                Ok(data)
            })
        })
        .build()
}

/// The leak guard caught a message: every key in it is compromised (it was
/// posted where others could read it), so each is revoked, whichever guild
/// it belongs to. AutoMod sends one execution per action; each is answered
/// the same, and a second revoke of a key changes nothing.
async fn revoke_pasted_keys(data: &Data, execution: &serenity::ActionExecution) {
    let text = execution.matched_content.as_deref().filter(|m| !m.is_empty()).unwrap_or(&execution.content);
    let where_ = match execution.channel_id {
        Some(c) => format!("https://discord.com/channels/{}/{c}", execution.guild_id),
        None => format!("https://discord.com/channels/{}", execution.guild_id),
    };
    let reports: Vec<_> = crate::service::find_tokens(&data.keys.config().prefix, text)
        .into_iter()
        .map(|token| crate::service::LeakReport {
            token,
            url: Some(where_.clone()),
            source: Some(format!("a Discord message by <@{}> that the leak guard blocked", execution.user_id)),
            kind: None,
        })
        .collect();
    if !reports.is_empty() {
        let revoked = data.keys.revoke_leaked(&reports).await;
        tracing::info!(guild_id = %execution.guild_id, found = reports.len(), revoked, "the leak guard judged the keys in a blocked message");
    }
}

/// Gateway events the bot cares about beyond commands.
async fn on_event(ctx: &serenity::Context, event: &serenity::FullEvent, data: &Data) -> Result<(), Error> {
    match event {
        serenity::FullEvent::InteractionCreate { interaction: serenity::Interaction::Component(press) } => {
            buttons::on_press(ctx, data, press).await?;
        }
        serenity::FullEvent::GuildRoleCreate { new } => {
            data.guard.forget(new.guild_id.get());
            watch_features(ctx, data, new.guild_id);
        }
        serenity::FullEvent::GuildRoleUpdate { new, .. } => {
            data.guard.forget(new.guild_id.get());
            recheck_makers(data, new.guild_id.get(), None);
            watch_features(ctx, data, new.guild_id);
        }
        serenity::FullEvent::GuildRoleDelete { guild_id, .. } => {
            data.guard.forget(guild_id.get());
            recheck_makers(data, guild_id.get(), None);
            watch_features(ctx, data, *guild_id);
        }
        // Discord sends the bot's own member updates whatever the intents:
        // serenity's cache (the bot's roles behind every hierarchy check)
        // already follows it; the refusals remembered are forgotten.
        serenity::FullEvent::GuildMemberUpdate { event, .. } => {
            data.guard.forget(event.guild_id.get());
            if event.user.id == ctx.cache.current_user().id {
                watch_features(ctx, data, event.guild_id);
            } else {
                recheck_makers(data, event.guild_id.get(), Some(event.user.id.get()));
            }
        }
        // An outage (`unavailable`) is not a leave: keys, the leak guard and
        // what the bot knew of the guild stay; its GUILD_CREATE follows.
        serenity::FullEvent::GuildDelete { incomplete, .. } if !incomplete.unavailable => {
            data.guard.forget(incomplete.id.get());
            data.features.forget(incomplete.id.get());
        }
        serenity::FullEvent::GuildMemberRemoval { guild_id, user, .. } => {
            recheck_makers(data, guild_id.get(), Some(user.id.get()));
        }
        serenity::FullEvent::GuildAuditLogEntryCreate { entry, guild_id } => {
            if let Some(user) = maker_loss_target(entry.action.num(), entry.target_id.map(|t| t.get())) {
                recheck_makers(data, guild_id.get(), user);
            }
        }
        serenity::FullEvent::GuildCreate { guild, .. } => {
            data.guard.forget(guild.id.get());
            watch_features(ctx, data, guild.id);
            resync_bans(data, guild.id.get());
        }
        serenity::FullEvent::AutoModActionExecution { execution } => {
            revoke_pasted_keys(data, execution).await;
        }
        serenity::FullEvent::GuildBanAddition { guild_id, banned_user } => {
            data.bans.invalidate(guild_id.get(), banned_user.id.get());
            gateway_ban_list(data, guild_id.get(), banned_user.id.get(), true);
            recheck_makers(data, guild_id.get(), Some(banned_user.id.get()));
            gateway_ban(data, guild_id.get(), banned_user, true);
            crate::service::roblox::push::on_gateway_ban(&data.keys, guild_id.get(), banned_user.id.get(), true);
        }
        serenity::FullEvent::GuildBanRemoval { guild_id, unbanned_user } => {
            data.bans.invalidate(guild_id.get(), unbanned_user.id.get());
            gateway_ban_list(data, guild_id.get(), unbanned_user.id.get(), false);
            gateway_ban(data, guild_id.get(), unbanned_user, false);
            crate::service::roblox::push::on_gateway_ban(&data.keys, guild_id.get(), unbanned_user.id.get(), false);
        }
        _ => {}
    }
    Ok(())
}

/// The bot's permissions in a guild as the gateway cache shows them now,
/// handed to the feature watch (off the event loop: it may read the
/// database and record an audit event).
fn watch_features(ctx: &serenity::Context, data: &Data, guild_id: serenity::GuildId) {
    let permissions = {
        let me = ctx.cache.current_user().id;
        let Some(guild) = ctx.cache.guild(guild_id) else { return };
        let Some(member) = guild.members.get(&me) else { return };
        guild.member_permissions(member).bits()
    };
    let features = data.features.clone();
    tokio::spawn(async move { features.observe(guild_id.get(), permissions).await });
    let (lists, ops) = (data.actions.ban_lists().clone(), data.actions.ops().clone());
    tokio::spawn(async move {
        // Ban Members back: the list is synced again (bans made meanwhile
        // were not heard).
        if lists.observe_permissions(guild_id.get(), permissions).await {
            crate::service::ban_lists::spawn_sync(&lists, &ops, guild_id.get());
        }
    });
}

/// The bot sees a guild (a start, a re-identify, a join, an outage's end;
/// not a resume): its ban list is synced again if one is kept or wanted.
fn resync_bans(data: &Data, guild_id: u64) {
    let (lists, ops) = (data.actions.ban_lists().clone(), data.actions.ops().clone());
    tokio::spawn(async move {
        if lists.wanted(guild_id).await {
            crate::service::ban_lists::spawn_sync(&lists, &ops, guild_id);
        }
    });
}

/// A ban the gateway reported, applied to the guild's ban list (memory,
/// then the store, with Discord's reason), off the event loop.
fn gateway_ban_list(data: &Data, guild_id: u64, user_id: u64, banned: bool) {
    let actions = data.actions.clone();
    tokio::spawn(async move { actions.heard_ban(guild_id, user_id, banned).await });
}

/// Which makers an audit-log entry may have cost their powers: a member's
/// roles changed, a kick or a ban (that member, `Some(Some(id))`), a role
/// changed or deleted (every maker of the guild, `Some(None)`); `None` for
/// entries that cost no one anything. Discord's audit-log action types.
pub fn maker_loss_target(action_type: u8, target_id: Option<u64>) -> Option<Option<u64>> {
    const MEMBER_KICK: u8 = 20;
    const MEMBER_PRUNE: u8 = 21;
    const MEMBER_BAN_ADD: u8 = 22;
    const MEMBER_UPDATE: u8 = 24;
    const MEMBER_ROLE_UPDATE: u8 = 25;
    const ROLE_UPDATE: u8 = 31;
    const ROLE_DELETE: u8 = 32;
    match action_type {
        MEMBER_KICK | MEMBER_BAN_ADD | MEMBER_UPDATE | MEMBER_ROLE_UPDATE => Some(target_id),
        MEMBER_PRUNE | ROLE_UPDATE | ROLE_DELETE => Some(None),
        _ => None,
    }
}

/// Re-checks the makers of a guild's keys (one member's, with `user_id`)
/// off the event loop: it reads the database and Discord.
fn recheck_makers(data: &Data, guild_id: u64, user_id: Option<u64>) {
    let makers = data.makers.clone();
    tokio::spawn(async move {
        if let Err(e) = makers.recheck(guild_id, user_id).await {
            tracing::warn!(guild_id, error = %e, "failed to re-check key makers after a gateway event");
        }
    });
}

/// Hands a ban the gateway reported to the webhook service, off the event
/// loop (it reads the database).
fn gateway_ban(data: &Data, guild_id: u64, user: &serenity::User, added: bool) {
    let (webhooks, user_id, name) = (data.webhooks.clone(), user.id.get(), user.name.clone());
    tokio::spawn(async move { webhooks.gateway_ban(guild_id, user_id, &name, added).await });
}

#[cfg(test)]
mod tests {
    use super::maker_loss_target;

    #[test]
    fn audit_log_entries_that_may_cost_a_maker_their_powers_trigger_a_recheck() {
        assert_eq!(maker_loss_target(25, Some(9)), Some(Some(9)), "a member's roles changed");
        assert_eq!(maker_loss_target(20, Some(9)), Some(Some(9)), "kicked");
        assert_eq!(maker_loss_target(22, Some(9)), Some(Some(9)), "banned");
        assert_eq!(maker_loss_target(31, Some(5)), Some(None), "a role changed: every maker");
        assert_eq!(maker_loss_target(32, Some(5)), Some(None), "a role deleted");
        assert_eq!(maker_loss_target(21, None), Some(None), "a prune");
        assert_eq!(maker_loss_target(1, None), None, "a guild update costs no one");
        assert_eq!(maker_loss_target(30, Some(5)), None, "a role created costs no one");
    }
}
