//! The one mapping of errors to what an admin sees: a short ephemeral
//! message, never a stack trace or a secret. Called from poise's `on_error`
//! and from the confirmation flows.

use poise::serenity_prelude as serenity;

use super::{Context, Data};
use crate::service::Error;

/// What the admin reads for a service error.
pub fn user_message(e: &Error) -> String {
    match e {
        Error::Invalid(i) => format!("❌ `{}`: {}", i.field, i.message),
        Error::LimitReached { max } => format!(
            "❌ This server already has {max} active API keys, the most allowed. \
             Revoke one with `/apikey revoke` (see `/apikey list`), then try again."
        ),
        Error::NotFound(r) => {
            format!("❌ No key in this server matches `{}`. Use `/apikey list` to see its keys.", r.replace('`', "'"))
        }
        Error::StillActive(k) => {
            format!("❌ The key {k} is still active. Revoke it first with `/apikey revoke`, then delete it.")
        }
        Error::Internal(cause) => {
            tracing::error!(error = format!("{cause:#}"), "command failed");
            "❌ Something went wrong on our side; nothing was changed. Try again in a moment.".to_owned()
        }
        Error::DatabaseUnavailable => {
            "❌ guildkey cannot reach its database right now. Try again in a moment; `/apikey list` shows what was saved.".to_owned()
        }
        Error::OutranksMaker(why) => format!("🔒 {why}"),
        Error::LinkerLimited { retry_after_secs, .. } => {
            format!("⏳ The account linker asked guildkey to wait; try again in {retry_after_secs} s.")
        }
        other => format!("❌ {}.", capitalise(&other.to_string())),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |first| first.to_uppercase().chain(c).collect())
}

/// A serenity failure while talking to Discord is ours, not the admin's.
pub fn discord_err(e: serenity::Error) -> Error {
    Error::Internal(anyhow::Error::from(e).context("failed to talk to Discord"))
}

/// poise's error hook: every failure becomes an ephemeral message.
pub async fn on_error(error: poise::FrameworkError<'_, Data, Error>) {
    let (ctx, text): (Context<'_>, String) = match error {
        poise::FrameworkError::Command { error, ctx, .. } => (ctx, user_message(&error)),
        poise::FrameworkError::CommandCheckFailed { error, ctx, .. } => match error {
            Some(e) => (ctx, user_message(&e)),
            None => (
                ctx,
                "🔒 You need the **Manage Server** or **Administrator** permission to manage API keys.".to_owned(),
            ),
        },
        poise::FrameworkError::GuildOnly { ctx, .. } => {
            (ctx, "❌ API keys belong to a server: use `/apikey` in a server, not in direct messages.".to_owned())
        }
        // Options that do not fit the registration (a missing required
        // option, a word where a number or channel belongs): Discord's client
        // sends these only while it still shows an older version of the
        // command, but the admin must still get an answer.
        poise::FrameworkError::CommandStructureMismatch { description, ctx, .. } => {
            tracing::warn!(command = %ctx.command().qualified_name, description, "options do not match the command");
            (
                poise::Context::Application(ctx),
                "❌ Those options do not fit this command (Discord may be showing an older version of it). \
                 Check each option and try again."
                    .to_owned(),
            )
        }
        poise::FrameworkError::ArgumentParse { error, input, ctx, .. } => {
            let what = input.map(|i| format!(" `{}`", i.replace('`', "'"))).unwrap_or_default();
            (ctx, format!("❌ That option{what} is not valid: {error}"))
        }
        // A subcommand this version does not have (a stale registration).
        poise::FrameworkError::UnknownInteraction { framework, interaction, .. }
            if interaction.data.autocomplete().is_none() =>
        {
            tracing::warn!(command = %interaction.data.name, "unknown command or subcommand");
            let msg = serenity::CreateInteractionResponseMessage::new()
                .content("❌ This command is not known (Discord may be showing an older version of it). Try again in a minute.")
                .ephemeral(true);
            let response = serenity::CreateInteractionResponse::Message(msg);
            if let Err(e) = interaction.create_response(framework.serenity_context, response).await {
                tracing::warn!(error = %e, "failed to answer an unknown command");
            }
            return;
        }
        other => {
            if let Err(e) = poise::builtins::on_error(other).await {
                tracing::error!(error = %e, "failed to handle a framework error");
            }
            return;
        }
    };
    if !super::deadline::can_still_answer(ctx) {
        tracing::warn!("Discord's 3-second window for a first response has closed; the error is not shown");
        return;
    }
    let reply = poise::CreateReply::default().content(text).ephemeral(true);
    if let Err(e) = super::deadline::bounded(ctx, ctx.send(reply)).await {
        tracing::warn!(error = %e, "failed to send an error reply");
    }
}
