//! `/apikey`: the slash-command group. Each subcommand parses its options,
//! calls the service and renders the answer; no rules live here. Every
//! reply is ephemeral, and each command defers first so Discord's 3-second
//! window is met however slow the database is.

use std::time::Duration;

use poise::serenity_prelude as serenity;
use poise::CreateReply;

use super::deadline::{answer_press, PressAnswer};
use super::error::{discord_err, user_message};
use super::{render, Context};
use crate::audit::Actor;
use crate::keys::{KeyChange, Scope};
use crate::service::{Error, KeyDraft, KeyRequest, OldSecret};

type Result<T = ()> = std::result::Result<T, Error>;

/// How long the confirm buttons wait.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);
/// Discord shows at most 25 autocomplete choices.
const MAX_CHOICES: usize = 25;

/// Manage this server's API keys
#[poise::command(
    slash_command,
    guild_only,
    // Installed to servers only (integration_types [0]): a user install
    // would offer it where the bot is absent.
    install_context = "Guild",
    default_member_permissions = "MANAGE_GUILD",
    subcommands(
        "apikey_create",
        "apikey_list",
        "apikey_info",
        "apikey_revoke",
        "apikey_delete",
        "apikey_rotate",
        "apikey_suspend",
        "apikey_resume",
        "apikey_adopt",
        "apikey_audit_channel",
        "apikey_leak_guard",
        "super::webhook::apikey_webhook",
        "super::usage::apikey_usage",
        "super::usage::apikey_requests"
    ),
    subcommand_required
)]
pub async fn apikey(_: Context<'_>) -> Result {
    Ok(())
}

/// live keys act for real; test keys make every write a dry run.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum EnvironmentChoice {
    #[name = "live"]
    Live,
    #[name = "test"]
    Test,
}

fn guild(ctx: Context<'_>) -> Result<u64> {
    ctx.guild_id().map(|g| g.get()).ok_or_else(|| Error::Missing("use this command in a server".to_owned()))
}

fn actor(ctx: Context<'_>) -> Actor {
    Actor::User(ctx.author().id.get())
}

async fn say(ctx: Context<'_>, reply: CreateReply) -> Result<poise::ReplyHandle<'_>> {
    ctx.send(reply.ephemeral(true)).await.map_err(discord_err)
}

/// The first response, within Discord's 3-second window.
async fn defer(ctx: Context<'_>) -> Result {
    super::deadline::bounded(ctx, ctx.defer_ephemeral()).await
}

/// Create an API key (the secret is shown once)
#[poise::command(slash_command, rename = "create")]
// Poise makes each slash option an argument.
#[allow(clippy::too_many_arguments)]
pub async fn apikey_create(
    ctx: Context<'_>,
    #[description = "A name to recognise the key by (1-64 characters)"]
    #[max_length = 64]
    name: String,
    #[description = "Comma-separated: guild.read, bans.read, bans.write, roles.write, audit.read"]
    #[autocomplete = "complete_scopes"]
    scopes: String,
    #[description = "live (default) or test: a test key's writes are dry runs"] environment: Option<EnvironmentChoice>,
    #[description = "Expire after, e.g. 12h or 30d (default: never)"] expires_in: Option<String>,
    #[description = "Requests per minute (default from the server's config)"]
    #[min = 1]
    #[max = 100000]
    rate_limit: Option<i64>,
    #[description = "Comma-separated IPs/CIDRs allowed to use the key (default: any)"] allowed_ips: Option<String>,
    #[description = "Role ids (or @mentions) a roles.write key may change (default: any role guildkey deems safe)"]
    allowed_roles: Option<String>,
    #[description = "Bans per 10 minutes before guildkey suspends the key (default from the server's config)"]
    #[min = 1]
    #[max = 10000]
    ban_budget: Option<i64>,
    #[description = "Role changes per 10 minutes before guildkey suspends the key (default from the config)"]
    #[min = 1]
    #[max = 10000]
    role_budget: Option<i64>,
    #[description = "Deliver the secret into this Roblox universe's Secrets store instead of showing it"]
    #[min = 1]
    roblox_universe: Option<i64>,
    #[description = "The secret's name in the universe's Secrets store (default: guildkey)"]
    #[max_length = 64]
    roblox_secret: Option<String>,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let environment = environment.map(|e| match e {
        EnvironmentChoice::Live => "live",
        EnvironmentChoice::Test => "test",
    });
    let draft = KeyDraft::parse(&KeyRequest {
        name: &name,
        scopes: &scopes,
        environment,
        expires_in: expires_in.as_deref(),
        rate_limit,
        allowed_ips: allowed_ips.as_deref(),
        allowed_roles: allowed_roles.as_deref(),
        ban_budget,
        role_budget,
    })?;
    // No key outranks its maker: the member's own powers bound it.
    let maker = super::maker_of(ctx);
    if let Some(universe) = roblox_universe {
        let target = crate::service::roblox::delivery::Target::parse(universe, roblox_secret.as_deref())?;
        let who = actor(ctx);
        let issue = ctx.data().makers.issue(guild_id, draft, &who, &maker);
        let issued = ctx.data().keys.issue_delivered(guild_id, &target, &who, issue).await?;
        let text = render::delivered_message(&issued, "API key created", target.universe_id, &target.secret_name);
        say(ctx, CreateReply::default().content(text)).await?;
        return Ok(());
    }
    let issued = ctx.data().makers.issue(guild_id, draft, &actor(ctx), &maker).await?;
    say(ctx, CreateReply::default().content(render::secret_message(&issued, "API key created"))).await?;
    Ok(())
}

/// List this server's API keys
#[poise::command(slash_command, rename = "list")]
pub async fn apikey_list(ctx: Context<'_>) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let keys = ctx.data().keys.list(guild_id).await?;
    let (active, max) = ctx.data().keys.active_count(guild_id).await?;
    // One message per page: each within Discord's limits (see `list_pages`).
    for embed in render::list_pages(&keys, active, max, ctx.data().keys.now()) {
        say(ctx, CreateReply::default().embed(embed)).await?;
    }
    Ok(())
}

/// Show one API key in detail
#[poise::command(slash_command, rename = "info")]
pub async fn apikey_info(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "complete_keys"]
    key: String,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let record = ctx.data().keys.find(Some(guild_id), &key).await?;
    let recent = ctx.data().keys.recent_key_events(&record, 5).await?;
    let now = ctx.data().keys.now();
    // Usage is a bonus here: the key's facts are shown even if it cannot be read.
    let usage = match ctx.data().keys.usage_summary(&record.id, now, 3).await {
        Ok(usage) => Some(usage),
        Err(e) => {
            tracing::warn!(error = %e, "failed to read a key's usage for /apikey info");
            None
        }
    };
    let embed = render::info_embed(&record, &recent, usage.as_ref(), now);
    say(ctx, CreateReply::default().embed(embed)).await?;
    Ok(())
}

/// Revoke an API key at once (asks to confirm)
#[poise::command(slash_command, rename = "revoke")]
pub async fn apikey_revoke(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "complete_keys"]
    key: String,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let record = ctx.data().keys.find_for(Some(guild_id), &key, KeyChange::Revoke).await?;
    let prompt = format!(
        "Revoke the key **{}** (`{}`)? Programs using it stop working at once. This cannot be undone.",
        render::safe(&record.name),
        record.prefix
    );
    confirm(ctx, prompt, "Revoke", serenity::ButtonStyle::Danger, |ctx| {
        let id = record.id.to_string();
        async move {
            let k = ctx.data().keys.revoke(Some(guild(ctx)?), &id, &actor(ctx)).await?;
            Ok(format!("⛔ Revoked **{}** (`{}`). Requests with it now fail.", render::safe(&k.name), k.prefix))
        }
    })
    .await
}

/// Delete a revoked or expired API key for good (asks to confirm)
#[poise::command(slash_command, rename = "delete")]
pub async fn apikey_delete(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "complete_keys"]
    key: String,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let record = ctx.data().keys.find_for(Some(guild_id), &key, KeyChange::Delete).await?;
    let prompt = format!(
        "Delete the key **{}** (`{}`) for good? Its record disappears from `/apikey list`; the audit log keeps its history.",
        render::safe(&record.name),
        record.prefix
    );
    confirm(ctx, prompt, "Delete", serenity::ButtonStyle::Danger, |ctx| {
        let id = record.id.to_string();
        async move {
            let k = ctx.data().keys.delete(Some(guild(ctx)?), &id, &actor(ctx)).await?;
            Ok(format!("🗑️ Deleted **{}** (`{}`).", render::safe(&k.name), k.prefix))
        }
    })
    .await
}

/// Give an API key a new secret (asks to confirm; the new secret is shown once)
#[poise::command(slash_command, rename = "rotate")]
pub async fn apikey_rotate(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "complete_keys"]
    key: String,
    #[description = "Keep the old secret working this long, e.g. 10m (at most 7d; default: stop it now)"] grace: Option<
        String,
    >,
    #[description = "Or keep the old secret working until unused this long, e.g. 1h (1s to 30d; at most 30 days)"]
    grace_until_unused: Option<String>,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let old_secret = OldSecret::parse(grace.as_deref(), grace_until_unused.as_deref())?;
    let record = ctx.data().keys.find_for(Some(guild_id), &key, KeyChange::Rotate).await?;
    let prompt = format!(
        "Rotate the key **{}** (`{}`)? It gets a new secret; the old one {old_secret}.",
        render::safe(&record.name),
        record.prefix
    );
    confirm(ctx, prompt, "Rotate", serenity::ButtonStyle::Primary, |ctx| {
        let id = record.id.to_string();
        async move {
            let issued = ctx.data().keys.rotate_with(Some(guild(ctx)?), &id, old_secret, &actor(ctx)).await?;
            if let Some(d) = ctx.data().keys.deliver_rotated(&issued).await? {
                return Ok(render::delivered_message(&issued, "API key rotated", d.universe_id, &d.secret_name));
            }
            Ok(render::secret_message(&issued, "API key rotated"))
        }
    })
    .await
}

/// Suspend an API key: refused at once, until resumed (reversible)
#[poise::command(slash_command, rename = "suspend")]
pub async fn apikey_suspend(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "complete_keys"]
    key: String,
    #[description = "Why (shown in the audit log)"]
    #[max_length = 200]
    reason: Option<String>,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let details = serde_json::json!({ "reason": reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) });
    let k = ctx.data().keys.set_suspended(Some(guild_id), &key, true, &actor(ctx), details).await?;
    let text = format!(
        "⏸️ Suspended **{}** (`{}`). Requests with it now fail with `key_suspended`; `/apikey resume` brings it back.",
        render::safe(&k.name),
        k.prefix
    );
    say(ctx, CreateReply::default().content(text)).await?;
    Ok(())
}

/// Resume a suspended API key
#[poise::command(slash_command, rename = "resume")]
pub async fn apikey_resume(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "complete_keys"]
    key: String,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    // Not past a maker who lost their powers: that key needs adopting.
    let k = ctx.data().makers.resume(guild_id, &key, &actor(ctx)).await?;
    let text = format!("▶️ Resumed **{}** (`{}`). It works again.", render::safe(&k.name), k.prefix);
    say(ctx, CreateReply::default().content(text)).await?;
    Ok(())
}

/// Take an API key over: you become its maker, and it works again if guildkey suspended it
#[poise::command(slash_command, rename = "adopt")]
pub async fn apikey_adopt(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "complete_keys"]
    key: String,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let k = ctx.data().makers.adopt(guild_id, &key, &super::maker_of(ctx)).await?;
    let text = format!(
        "🤝 You adopted **{}** (`{}`): it is bounded by your powers from now on{}.",
        render::safe(&k.name),
        k.prefix,
        if k.suspended_at.is_none() { ", and it works" } else { "" }
    );
    say(ctx, CreateReply::default().content(text)).await?;
    Ok(())
}

/// Set the channel that receives audit entries (omit to turn them off)
#[poise::command(slash_command, rename = "audit-channel")]
pub async fn apikey_audit_channel(
    ctx: Context<'_>,
    #[description = "A text channel the bot can post in; omit to turn audit posts off"]
    #[channel_types("Text", "News")]
    channel: Option<serenity::ChannelId>,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    ctx.data().keys.set_audit_channel(guild_id, channel.map(|c| c.get()), &actor(ctx)).await?;
    let text = match channel {
        Some(c) => format!(
            "📋 Audit entries now go to <#{c}>. The bot needs **View Channel**, **Send Messages** and **Embed Links** there."
        ),
        None => "📋 Audit posts are off. Changes are still recorded (see `GET /v1/guilds/{id}/audit-log`).".to_owned(),
    };
    say(ctx, CreateReply::default().content(text)).await?;
    Ok(())
}

/// on: block messages holding a key; off: stop.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum OnOff {
    #[name = "on"]
    On,
    #[name = "off"]
    Off,
}

/// Block any message that holds an API key (a Discord AutoMod rule)
#[poise::command(slash_command, rename = "leak-guard")]
pub async fn apikey_leak_guard(
    ctx: Context<'_>,
    #[description = "on: block messages holding a key and alert the audit channel; off: remove the rule"] state: OnOff,
) -> Result {
    defer(ctx).await?;
    let guild_id = guild(ctx)?;
    let on = matches!(state, OnOff::On);
    let guard = ctx.data().actions.set_leak_guard(guild_id, on, &actor(ctx)).await?;
    let text = match (guard.rule_id, guard.alerts_to) {
        (Some(_), Some(channel)) => format!(
            "🛡️ Leak guard {}: a message holding an API key is blocked before anyone sees it, and AutoMod alerts <#{channel}>.",
            if guard.changed { "on" } else { "already on" }
        ),
        (Some(_), None) => format!(
            "🛡️ Leak guard {}: a message holding an API key is blocked. Set `/apikey audit-channel` and turn the guard off and on to get alerts too.",
            if guard.changed { "on" } else { "already on" }
        ),
        (None, _) => format!("Leak guard {}.", if guard.changed { "off: the AutoMod rule is removed" } else { "already off" }),
    };
    say(ctx, CreateReply::default().content(text)).await?;
    Ok(())
}

/// Asks to confirm with buttons; runs `action` on Confirm. Only the invoking
/// admin can answer; after a minute the prompt says nothing was changed.
async fn confirm<'a, F, Fut>(
    ctx: Context<'a>,
    prompt: String,
    label: &str,
    style: serenity::ButtonStyle,
    action: F,
) -> Result
where
    F: FnOnce(Context<'a>) -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let confirm_id = format!("gk:{}:confirm", ctx.id());
    let cancel_id = format!("gk:{}:cancel", ctx.id());
    let buttons = vec![serenity::CreateActionRow::Buttons(vec![
        serenity::CreateButton::new(&confirm_id).label(label).style(style),
        serenity::CreateButton::new(&cancel_id).label("Cancel").style(serenity::ButtonStyle::Secondary),
    ])];
    let handle = say(ctx, CreateReply::default().content(prompt).components(buttons)).await?;
    let message_id = handle.message().await.map_err(discord_err)?.id;
    let author = ctx.author().id;
    let prefix = format!("gk:{}:", ctx.id());
    let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let filter_prefix = prefix.clone();
        let press = serenity::ComponentInteractionCollector::new(ctx.serenity_context())
            .message_id(message_id)
            .timeout(remaining)
            .filter(move |i| i.data.custom_id.starts_with(&filter_prefix))
            .await;
        let Some(press) = press else {
            let done = CreateReply::default()
                .content(
                    "⌛ No answer within a minute, so nothing was changed. Run the command again if you still want to.",
                )
                .components(vec![]);
            handle.edit(ctx, done).await.map_err(discord_err)?;
            return Ok(());
        };
        if press.user.id != author {
            let refusal = PressAnswer::Ephemeral("🔒 Only the admin who ran this command can answer it.".to_owned());
            answer_press(ctx.serenity_context(), &press, async { refusal }).await?;
            continue;
        }
        // The change may outlast Discord's 3 s for the press's first
        // response (a slow database): `answer_press` defers first then.
        let confirmed = press.data.custom_id == confirm_id;
        let work = async move {
            let text = if confirmed {
                match action(ctx).await {
                    Ok(text) => text,
                    Err(e) => user_message(&e),
                }
            } else {
                "Cancelled; nothing was changed.".to_owned()
            };
            PressAnswer::done(text)
        };
        answer_press(ctx.serenity_context(), &press, work).await?;
        return Ok(());
    }
}

/// Offers the guild's keys, by name, prefix or id; never another guild's,
/// and nothing to a member who may not manage keys.
pub(super) async fn complete_keys(ctx: Context<'_>, partial: &str) -> serenity::CreateAutocompleteResponse {
    let mut choices = Vec::new();
    if let (Some(guild_id), true) = (ctx.guild_id(), super::may_manage_keys(ctx)) {
        let needle = partial.trim().to_lowercase();
        if let Ok(keys) = ctx.data().keys.list(guild_id.get()).await {
            let now = ctx.data().keys.now();
            for k in keys {
                let hay = format!("{} {} {}", k.name, k.prefix, k.id).to_lowercase();
                if needle.is_empty() || hay.contains(&needle) {
                    let label: String =
                        format!("{} · {} · {}", k.name, k.prefix, k.status(now)).chars().take(100).collect();
                    choices.push(serenity::AutocompleteChoice::new(label, k.id.to_string()));
                }
            }
        }
    }
    choices.truncate(MAX_CHOICES);
    serenity::CreateAutocompleteResponse::new().set_choices(choices)
}

/// Continues a comma-separated scope list: `bans.read, ba` offers
/// `bans.read, bans.write`.
async fn complete_scopes(_ctx: Context<'_>, partial: &str) -> serenity::CreateAutocompleteResponse {
    serenity::CreateAutocompleteResponse::new().set_choices(scope_choices(partial))
}

pub fn scope_choices(partial: &str) -> Vec<serenity::AutocompleteChoice> {
    let (done, last) = match partial.rfind([',', ' ']) {
        Some(i) => (&partial[..i], partial[i + 1..].trim()),
        None => ("", partial.trim()),
    };
    // Only known scopes are carried into a choice: picking a choice replaces
    // the whole option, and a choice `create` would refuse helps nobody.
    let mut chosen: Vec<&str> = Vec::new();
    for word in done.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(scope) = Scope::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(word)) {
            if !chosen.contains(&scope.as_str()) {
                chosen.push(scope.as_str());
            }
        }
    }
    let head = chosen.join(", ");
    Scope::ALL
        .into_iter()
        .filter(|s| !chosen.contains(&s.as_str()) && s.as_str().starts_with(&last.to_lowercase()))
        .map(|s| {
            let value = if head.is_empty() { s.as_str().to_owned() } else { format!("{head}, {s}") };
            let label = format!("{value} ({})", s.describe());
            serenity::AutocompleteChoice::new(label.chars().take(100).collect::<String>(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(partial: &str) -> Vec<String> {
        scope_choices(partial)
            .into_iter()
            .map(|c| serde_json::to_value(&c).unwrap()["value"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn scope_autocomplete_continues_a_list() {
        assert_eq!(values("bans.read, ba"), ["bans.read, bans.write"]);
        assert_eq!(values("").len(), 5);
        assert_eq!(values("ro"), ["roles.write"]);
        assert!(values("bans.read,bans.write,").iter().all(|v| v.starts_with("bans.read, bans.write, ")));
        assert!(values("xyz").is_empty());
    }
}
