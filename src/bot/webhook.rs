//! `/apikey webhook set|remove|show`: the server's one webhook. Parses the
//! options, calls [`crate::service::webhooks::WebhookService`], renders the
//! answer (ephemeral, as every reply); no rules live here. The `/apikey`
//! checks apply (Manage Server or Administrator, in a server).

use poise::serenity_prelude as serenity;
use poise::CreateReply;

use super::error::discord_err;
use super::{render, Context};
use crate::audit::Actor;
use crate::service::webhooks::{EventType, SetWebhook, WebhookReport};
use crate::service::{DeliveryRecord, DeliveryState, Error};

type Result<T = ()> = std::result::Result<T, Error>;

/// Send key events and bans to a URL, signed (one webhook per server)
#[poise::command(
    slash_command,
    rename = "webhook",
    subcommands("webhook_set", "webhook_remove", "webhook_show"),
    subcommand_required
)]
pub async fn apikey_webhook(_: Context<'_>) -> Result {
    Ok(())
}

pub(super) fn guild(ctx: Context<'_>) -> Result<u64> {
    ctx.guild_id().map(|g| g.get()).ok_or_else(|| Error::Missing("use this command in a server".to_owned()))
}

pub(super) async fn say(ctx: Context<'_>, text: String) -> Result {
    ctx.send(CreateReply::default().content(text).ephemeral(true)).await.map_err(discord_err)?;
    Ok(())
}

/// Set the server's webhook (a new one's signing secret is shown once)
#[poise::command(slash_command, rename = "set")]
pub async fn webhook_set(
    ctx: Context<'_>,
    #[description = "Where to POST events: an https URL"]
    #[max_length = 2000]
    url: String,
    #[description = "all, or a comma-separated list: key.created, ban.added, gateway.ban.added, …"]
    #[autocomplete = "complete_events"]
    events: String,
    #[description = "Make a new signing secret (default: keep the current one)"] new_secret: Option<bool>,
) -> Result {
    super::deadline::bounded(ctx, ctx.defer_ephemeral()).await?;
    let guild_id = guild(ctx)?;
    let actor = Actor::User(ctx.author().id.get());
    let set = ctx.data().webhooks.set(guild_id, &url, &events, new_secret.unwrap_or(false), &actor).await?;
    say(ctx, set_message(&set)).await
}

/// Remove the server's webhook (nothing more is sent)
#[poise::command(slash_command, rename = "remove")]
pub async fn webhook_remove(ctx: Context<'_>) -> Result {
    super::deadline::bounded(ctx, ctx.defer_ephemeral()).await?;
    let guild_id = guild(ctx)?;
    let removed = ctx.data().webhooks.remove(guild_id, &Actor::User(ctx.author().id.get())).await?;
    say(ctx, format!("🗑️ Webhook removed: nothing more is sent to {}.", url_text(&removed.url))).await
}

/// Show the server's webhook and its latest deliveries
#[poise::command(slash_command, rename = "show")]
pub async fn webhook_show(ctx: Context<'_>) -> Result {
    super::deadline::bounded(ctx, ctx.defer_ephemeral()).await?;
    let report = ctx.data().webhooks.report(guild(ctx)?).await?;
    say(ctx, show_message(&report)).await
}

/// A URL as inline code: it never forms a link, a mention or markdown.
fn url_text(url: &str) -> String {
    format!("`{}`", url.replace('`', "%60"))
}

fn set_message(set: &SetWebhook) -> String {
    let w = &set.webhook;
    let mut lines = vec![
        format!(
            "🔔 Webhook {}: guildkey POSTs signed events to {}.",
            if set.re_enabled { "set and enabled again" } else { "set" },
            url_text(&w.url)
        ),
        format!("Events: `{}`", w.events.names().join(", ")),
    ];
    match &set.secret {
        Some(secret) => {
            lines.push(
                "Signing secret (verify every delivery with it; **it is shown only once**, so store it now):"
                    .to_owned(),
            );
            lines.push(format!("```\n{}\n```", secret.expose()));
        }
        None => {
            lines.push("The signing secret is unchanged (`new_secret:True` makes a new one, shown once).".to_owned())
        }
    }
    lines.push(
        "Each delivery carries `webhook-id`, `webhook-timestamp` and `webhook-signature` (Standard Webhooks); \
         `/apikey webhook show` lists the latest."
            .to_owned(),
    );
    lines.join("\n")
}

fn show_message(report: &WebhookReport) -> String {
    let w = &report.webhook;
    let state = if w.enabled {
        "🟢 **enabled**".to_owned()
    } else {
        let when = w.disabled_at.map(|at| format!(" <t:{}:R>", at.timestamp())).unwrap_or_default();
        let why = w.disabled_reason.as_deref().map(|r| format!(": {}", render::safe(r))).unwrap_or_default();
        format!("⛔ **disabled**{when}{why}. `/apikey webhook set` turns it back on")
    };
    let mut lines = vec![
        format!("🔔 Webhook {}: {state}", url_text(&w.url)),
        format!("Events: `{}`", w.events.names().join(", ")),
        format!("Set <t:{}:R>, changed <t:{}:R>", w.created_at.timestamp(), w.updated_at.timestamp()),
    ];
    if w.enabled && w.failed_messages > 0 {
        lines.push(format!(
            "⚠️ {} message(s) in a row given up; {} disable the webhook.",
            w.failed_messages,
            crate::service::webhooks::DISABLE_AFTER_FAILED_MESSAGES
        ));
    }
    if report.deliveries.is_empty() {
        lines.push("No deliveries yet.".to_owned());
    } else {
        lines.push("**Latest deliveries**, newest first:".to_owned());
        lines.extend(report.deliveries.iter().map(delivery_line));
    }
    let text = lines.join("\n");
    // Within a message's 2,000 characters.
    if text.chars().count() > 1990 {
        text.chars().take(1990).collect::<String>() + "…"
    } else {
        text
    }
}

fn delivery_line(d: &DeliveryRecord) -> String {
    let attempts = match d.attempts {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let last = match (d.last_status, &d.last_error) {
        (Some(s), _) if (200..300).contains(&s) => format!("HTTP {s}"),
        (_, Some(e)) => render::safe(e),
        (Some(s), None) => format!("HTTP {s}"),
        (None, None) => String::new(),
    };
    let state = match d.state {
        DeliveryState::Delivered => {
            format!("✅ delivered {} ({last}, {attempts})", d.done_at.map(rel).unwrap_or_default())
        }
        DeliveryState::Pending if d.attempts == 0 => "⏳ queued".to_owned(),
        DeliveryState::Pending => {
            format!("🔁 retrying {} ({attempts} so far, last: {last})", d.next_attempt_at.map(rel).unwrap_or_default())
        }
        DeliveryState::Failed => {
            format!("❌ given up {} ({attempts}, last: {last})", d.done_at.map(rel).unwrap_or_default())
        }
        DeliveryState::Dropped => "➖ dropped (the webhook was disabled)".to_owned(),
    };
    format!("• `{}` <t:{}:R> `{}`: {state}", d.event_type, d.created_at.timestamp(), d.message_id)
}

fn rel(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("<t:{}:R>", at.timestamp())
}

/// Continues a comma-separated event list (or offers `all`).
async fn complete_events(_ctx: Context<'_>, partial: &str) -> serenity::CreateAutocompleteResponse {
    serenity::CreateAutocompleteResponse::new().set_choices(event_choices(partial))
}

pub fn event_choices(partial: &str) -> Vec<serenity::AutocompleteChoice> {
    let (done, last) = match partial.rfind([',', ' ']) {
        Some(i) => (&partial[..i], partial[i + 1..].trim()),
        None => ("", partial.trim()),
    };
    let mut chosen: Vec<&str> = Vec::new();
    for word in done.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(t) = EventType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(word)) {
            if !chosen.contains(&t.as_str()) {
                chosen.push(t.as_str());
            }
        }
    }
    let head = chosen.join(", ");
    let last = last.to_lowercase();
    let mut choices: Vec<serenity::AutocompleteChoice> = Vec::new();
    if chosen.is_empty() && "all".starts_with(&last) {
        choices.push(serenity::AutocompleteChoice::new("all (every event type, new ones too)", "all"));
    }
    choices.extend(
        EventType::ALL.into_iter().filter(|t| !chosen.contains(&t.as_str()) && t.as_str().starts_with(&last)).map(
            |t| {
                let value = if head.is_empty() { t.as_str().to_owned() } else { format!("{head}, {t}") };
                let value: String = value.chars().take(100).collect();
                serenity::AutocompleteChoice::new(value.clone(), value)
            },
        ),
    );
    choices.truncate(25);
    choices
}
