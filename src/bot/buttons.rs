//! The audit channel's buttons: when guildkey itself suspends a key (its
//! circuit breaker tripped), the audit entry carries **Resume** and
//! **Revoke** buttons; when it suspends one whose maker left or lost their
//! powers, **Adopt** (the presser, who must hold the powers the key's scopes
//! need, becomes its maker) and **Revoke**. A press is answered here, for members who may manage
//! keys only; the answer replaces the buttons, so the channel shows who
//! decided what.

use poise::serenity_prelude as serenity;

use super::deadline::{answer_press, PressAnswer};
use super::error::user_message;
use super::{render, Data};
use crate::audit::Actor;
use crate::discord::AUDIT_BUTTON_PREFIX;
use crate::service::Error;

/// Answers a press of one of the audit channel's buttons; other
/// components (the commands' confirm buttons) are left to their collectors.
pub async fn on_press(
    ctx: &serenity::Context,
    data: &Data,
    press: &serenity::ComponentInteraction,
) -> Result<(), Error> {
    let Some((action, key)) = press.data.custom_id.strip_prefix(AUDIT_BUTTON_PREFIX).and_then(|r| r.split_once(':'))
    else {
        return Ok(());
    };
    if !matches!(action, "resume" | "adopt" | "revoke") {
        return Ok(());
    }
    let may_manage =
        press.member.as_ref().and_then(|m| m.permissions).is_some_and(|p| p.administrator() || p.manage_guild());
    let (Some(guild_id), true) = (press.guild_id, may_manage) else {
        let refusal = PressAnswer::Ephemeral("🔒 Only members with Manage Server can answer this.".to_owned());
        return answer_press(ctx, press, async { refusal }).await;
    };
    // The work may outlast Discord's 3 s (a slow database or Discord):
    // `answer_press` defers first then, and the answer follows.
    answer_press(ctx, press, decide(data, press, guild_id, action, key)).await
}

/// What a press of `action` on `key` does, and how it is answered.
async fn decide(
    data: &Data,
    press: &serenity::ComponentInteraction,
    guild_id: serenity::GuildId,
    action: &str,
    key: &str,
) -> PressAnswer {
    let actor = Actor::User(press.user.id.get());
    let who = press.user.id;
    let guild = Some(guild_id.get());
    let outcome =
        match action {
            "resume" => data.makers.resume(guild_id.get(), key, &actor).await.map(|k| {
                format!("▶️ <@{who}> resumed **{}** (`{}`); it works again.", render::safe(&k.name), k.prefix)
            }),
            "adopt" => {
                let maker = super::maker_from(who.get(), press.member.as_ref());
                data.makers.adopt(guild_id.get(), key, &maker).await.map(|k| {
                    format!(
                        "🤝 <@{who}> adopted **{}** (`{}`): it works again, bounded by their powers.",
                        render::safe(&k.name),
                        k.prefix
                    )
                })
            }
            "revoke" => data
                .keys
                .revoke(guild, key, &actor)
                .await
                .map(|k| format!("⛔ <@{who}> revoked **{}** (`{}`) for good.", render::safe(&k.name), k.prefix)),
            _ => Err(Error::Missing("an unknown button".to_owned())),
        };
    match outcome {
        Ok(text) => PressAnswer::done(text),
        Err(e) => PressAnswer::Ephemeral(user_message(&e)),
    }
}
