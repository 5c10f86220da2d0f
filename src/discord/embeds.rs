//! The audit channel's embed and buttons: what happened, to what, by
//! whom, when, built from stored fields only (never a secret), with
//! user-typed text passed through [`escape_within`].

use serenity::all::{Colour, CreateEmbed, CreateEmbedFooter, Timestamp};

use super::{code_span, escape, escape_within};
use crate::audit::{Action, AuditEvent};

/// The audit-channel embed: what happened, to what, by whom, when. Built
/// from stored fields only, so it can never hold a secret.
pub fn audit_embed(event: &AuditEvent) -> CreateEmbed {
    let colour = match event.action {
        Action::KeyCreated | Action::RoleAdded | Action::KeyResumed => Colour::new(0x57F287),
        Action::KeyRevoked | Action::KeyDeleted | Action::BanAdded | Action::DiscordPaused | Action::UsageSpike => {
            Colour::new(0xED4245)
        }
        Action::WebhookSet | Action::WebhookRemoved | Action::WebhookDisabled => Colour::new(0xFEE75C),
        Action::KeyRotated
        | Action::KeyRotationCompleted
        | Action::AuditChannelSet
        | Action::RoleRemoved
        | Action::KeySuspended
        | Action::LeakGuardSet
        | Action::RobloxLinkerSet
        | Action::RobloxLinkerRemoved => Colour::new(0xFEE75C),
        Action::BanRemoved => Colour::new(0x5865F2),
        Action::KeyExpiring => Colour::new(0xE67E22),
        Action::FeatureChanged if event.details["state"] == "on" => Colour::new(0x57F287),
        Action::FeatureChanged => Colour::new(0xED4245),
        Action::RobloxPush => Colour::new(0x5865F2),
        Action::RobloxPushFailed => Colour::new(0xE67E22),
    };
    let mut title = match (event.action, event.details.get("within").and_then(|w| w.as_str())) {
        (Action::KeyExpiring, Some(within)) => format!("API key expires within {within}"),
        (Action::FeatureChanged, _) => feature_title(event),
        (action, _) => action.title().to_owned(),
    };
    // The outbox's summary of entries not posted one by one (`tasks::outbox`).
    if let Some(count) = event.details.get("summarised").and_then(|n| n.as_u64()) {
        let (first, last) = (&event.details["first_event_id"], &event.details["last_event_id"]);
        return CreateEmbed::new()
            .title(format!("{count} more entries, see the audit log"))
            .colour(Colour::new(0x5865F2))
            .description(format!(
                "Too many entries were waiting to be posted here one by one: events {first} to {last} are in \
                 guildkey's audit log (`GET /v1/guilds/{}/audit-log` with an `audit.read` key), not posted here.",
                event.guild_id
            ))
            .footer(CreateEmbedFooter::new(format!("guildkey · events {first}–{last}")));
    }
    if event.test {
        title.push_str(" (test key: dry run, nothing changed)");
    }
    let key = match (&event.key_name, &event.key_prefix) {
        // Within a field's 1,024 characters, with room for the prefix.
        (Some(name), Some(prefix)) => Some(format!("{} (`{prefix}`)", escape_within(name, 960))),
        _ => None,
    };
    let actor = match (event.actor_kind.as_str(), &key) {
        ("api_key", Some(k)) => format!("An API key: {k}"),
        _ => event.actor.clone(),
    };
    let mut fields: Vec<(String, String)> = vec![("By".to_owned(), actor)];
    if event.action.as_str().starts_with("key.") || event.action == Action::UsageSpike {
        if let Some(k) = &key {
            fields.push(("Key".to_owned(), k.clone()));
        }
    }
    fields.extend(detail_fields(event).into_iter().map(|(n, v)| (n.to_owned(), v)));
    let mut description = while_off_summary(event).or_else(|| feature_description(event));
    if event.action == Action::KeyExpiring {
        description = Some(
            "Keys cannot be extended: create a replacement (`/apikey create`) and switch over before then. \
             An expired key stops working."
                .to_owned(),
        );
    }
    let footer = format!("guildkey · event {}", event.id);
    within_discord_limits(&title, &mut description, &mut fields, &footer);
    let mut embed = CreateEmbed::new().title(title).colour(colour).footer(CreateEmbedFooter::new(footer));
    for (name, value) in fields {
        embed = embed.field(name, value, true);
    }
    if let Some(d) = description {
        embed = embed.description(d);
    }
    if let Ok(ts) = Timestamp::from_unix_timestamp(event.at.timestamp()) {
        embed = embed.timestamp(ts);
    }
    embed
}

/// The audit entry Discord refused, without what it may have refused: its
/// details (the reporter's, the caller's and any typed words), for the
/// outbox's one retry. What happened, by whom, to which key, and where the
/// rest can be read ("Not shown" says so).
pub fn plain_audit_event(event: &AuditEvent) -> AuditEvent {
    AuditEvent {
        details: serde_json::json!({
            "not_shown": format!(
                "Discord refused this entry as written; its details are in the audit log \
                 (`GET /v1/guilds/{}/audit-log`, event {}).",
                event.guild_id, event.id
            ),
            // Which buttons go under a suspension (Adopt or Resume).
            "maker_id": event.details.get("maker_id"),
        }),
        ..event.clone()
    }
}

/// What stands in for a blank field value: Discord refuses a field whose
/// name or value is empty once trimmed.
pub const BLANK: &str = "—";

/// Characters as Discord counts them for its embed limits: Unicode code
/// points (as serenity 0.12.5's `CreateEmbed::check_length` counts, not
/// UTF-16 units), once leading and trailing whitespace is trimmed.
pub fn discord_chars(s: &str) -> usize {
    s.trim().chars().count()
}

/// A message's embeds may hold this many characters in all.
const EMBED_TOTAL: usize = 6000;
/// A field value's limit.
const FIELD_VALUE: usize = 1024;
/// A description's limit.
const DESCRIPTION: usize = 4096;

fn clip_to(s: &str, max: usize) -> String {
    if discord_chars(s) <= max {
        return s.to_owned();
    }
    let mut out: String = s.trim().chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Makes an embed's texts pass Discord's checks: no blank field name or
/// value ([`BLANK`] instead), each within its own limit, and all of them
/// within 6,000 characters (the description, then the longest values, cut
/// short with "…").
pub fn within_discord_limits(
    title: &str,
    description: &mut Option<String>,
    fields: &mut [(String, String)],
    footer: &str,
) {
    for (name, value) in fields.iter_mut() {
        if name.trim().is_empty() {
            *name = BLANK.to_owned();
        }
        if value.trim().is_empty() {
            *value = BLANK.to_owned();
        }
        *value = clip_to(value, FIELD_VALUE);
    }
    if let Some(d) = description.as_mut() {
        *d = clip_to(d, DESCRIPTION);
    }
    let total = |description: &Option<String>, fields: &[(String, String)]| {
        discord_chars(title)
            + discord_chars(footer)
            + description.as_deref().map_or(0, discord_chars)
            + fields.iter().map(|(n, v)| discord_chars(n) + discord_chars(v)).sum::<usize>()
    };
    let over = total(description, fields).saturating_sub(EMBED_TOTAL);
    if over > 0 {
        if let Some(d) = description.as_mut() {
            let keep = discord_chars(d).saturating_sub(over + 1).max(1);
            *d = clip_to(d, keep);
        }
    }
    while total(description, fields) > EMBED_TOTAL {
        let Some(longest) = fields.iter_mut().max_by_key(|(_, v)| discord_chars(v)) else { break };
        let n = discord_chars(&longest.1);
        if n <= 2 {
            break;
        }
        longest.1 = clip_to(&longest.1, n / 2);
    }
}

/// A push into a Roblox game: which universe, how, whose bans, and why it
/// was given up (`service::roblox::push`).
fn roblox_push_fields(d: &serde_json::Value) -> Vec<(&'static str, String)> {
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let mut out = Vec::new();
    if let Some(universe) = s("universe_id") {
        out.push(("Universe", universe));
    }
    if let Some(how) = s("push") {
        out.push(("Pushed as", how));
    }
    if let Some(events) = d.get("events").and_then(|v| v.as_array()) {
        let lines: Vec<String> = events
            .iter()
            .take(20)
            .map(|e| format!("{} {}", e["action"].as_str().unwrap_or("?"), e["roblox_id"]))
            .collect();
        out.push(("Roblox users", lines.join(", ")));
    }
    if let Some(error) = s("error") {
        out.push(("Error", escape_within(&error, 1000)));
    }
    out
}

/// "Leak-guard revocation is off" / "... is back on" (`service::features`).
fn feature_title(event: &AuditEvent) -> String {
    let what = event.details["feature_title"].as_str().unwrap_or("A feature");
    match event.details["state"].as_str() {
        Some("on") => format!("{what} is back on"),
        _ => format!("{what} is off"),
    }
}

/// What a feature change means and how to undo it.
fn feature_description(event: &AuditEvent) -> Option<String> {
    if event.action != Action::FeatureChanged {
        return None;
    }
    let needs = event.details["needs"].as_str().unwrap_or("a permission");
    let what = match event.details["feature"].as_str() {
        Some("leak_guard_revocation") => "the leak guard still blocks pasted keys but no longer revokes them",
        Some("ban_events") => "bans made in Discord no longer reach guildkey's ban cache and webhook",
        _ => "Discord no longer sends the events this feature needs",
    };
    Some(match event.details["state"].as_str() {
        Some("on") => format!("The bot holds {needs} again; Discord sends the events this feature needs."),
        _ => format!(
            "The bot lost {needs}: Discord sends these events only to a bot holding it, so {what}. \
             Give the bot's role {needs} to turn it back on."
        ),
    })
}

/// For an audit channel set while posts were off: what happened meanwhile
/// (how many changes, since when, the latest few), so turning posts off and
/// on again cannot hide a change. Within an embed description's 4,096
/// characters.
fn while_off_summary(event: &AuditEvent) -> Option<String> {
    let off = event.details.get("while_off")?;
    let count = off["count"].as_u64().unwrap_or(0);
    let since = off["since"].as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let window = match since {
        Some(at) => format!("from <t:{}:f> to <t:{}:f>", at.timestamp(), event.at.timestamp()),
        None => format!("until <t:{}:f>", event.at.timestamp()),
    };
    // Actors are stored labels (`<@id>`, "An API key", "The operator CLI"), not typed text.
    let by = off["turned_off_by"].as_str().map(|b| format!(", turned off by {b}")).unwrap_or_default();
    let mut lines = vec![match count {
        0 => format!("**While audit posts were off** ({window}{by}): no changes."),
        1 => format!("**While audit posts were off** ({window}{by}): **1 change**:"),
        n => format!("**While audit posts were off** ({window}{by}): **{n} changes**, latest first:"),
    }];
    let recent = off["recent"].as_array().map(Vec::as_slice).unwrap_or_default();
    for e in recent {
        let s = |k: &str| e.get(k).and_then(|v| v.as_str());
        let at = s("at").and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok());
        let mut line = format!(
            "• {}`{}`",
            at.map(|a| format!("<t:{}:R> ", a.timestamp())).unwrap_or_default(),
            s("action").unwrap_or("?")
        );
        if let (Some(name), Some(prefix)) = (s("key_name"), s("key_prefix")) {
            line.push_str(&format!(" {} (`{prefix}`)", escape_within(name, 80)));
        }
        if e.get("test").and_then(|t| t.as_bool()) == Some(true) {
            line.push_str(" (dry run)");
        }
        line.push_str(&format!(" by {}", s("actor").unwrap_or("?")));
        lines.push(line);
    }
    if count > recent.len() as u64 {
        lines.push(format!(
            "…and {} more: see `GET /v1/guilds/{}/audit-log` (scope audit.read), or `/apikey info` for one key.",
            count - recent.len() as u64,
            event.guild_id
        ));
    }
    Some(lines.join("\n"))
}

/// The prefix of the audit channel's buttons' custom ids:
/// `guildkey:resume:<key id>`, `guildkey:adopt:<key id>` and
/// `guildkey:revoke:<key id>`.
pub const AUDIT_BUTTON_PREFIX: &str = "guildkey:";

/// Buttons under a suspension guildkey itself made, so an admin can answer
/// it from the audit channel: **Resume** and **Revoke** after the circuit
/// breaker; **Adopt** (take the key over as its maker) and **Revoke** when
/// its maker left or lost their powers, since resuming it would only give
/// it back to a maker who may no longer hold them.
pub(super) fn audit_buttons(event: &AuditEvent) -> Option<serenity::all::CreateActionRow> {
    use serenity::all::{ButtonStyle, CreateActionRow, CreateButton};
    if event.action != Action::KeySuspended || event.actor_kind != "system" {
        return None;
    }
    let key = event.key_id.as_deref()?;
    let first = if event.details.get("maker_id").is_some() {
        CreateButton::new(format!("{AUDIT_BUTTON_PREFIX}adopt:{key}")).label("Adopt").style(ButtonStyle::Primary)
    } else {
        CreateButton::new(format!("{AUDIT_BUTTON_PREFIX}resume:{key}")).label("Resume").style(ButtonStyle::Success)
    };
    Some(CreateActionRow::Buttons(vec![
        first,
        CreateButton::new(format!("{AUDIT_BUTTON_PREFIX}revoke:{key}")).label("Revoke").style(ButtonStyle::Danger),
    ]))
}

/// The details worth showing, in words.
fn detail_fields(event: &AuditEvent) -> Vec<(&'static str, String)> {
    let d = &event.details;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let mut out = Vec::new();
    if let Some(user) = s("user_id") {
        out.push(("User", format!("<@{user}> ({user})")));
    }
    if let Some(role) = s("role_id") {
        out.push(("Role", format!("<@&{role}>")));
    }
    if let Some(reason) = s("reason") {
        out.push(("Reason", escape_within(&reason, 1024)));
    }
    if let Some(scopes) = d.get("scopes").and_then(|v| v.as_array()) {
        let names: Vec<&str> = scopes.iter().filter_map(|v| v.as_str()).collect();
        out.push(("Scopes", names.join(", ")));
    }
    if let Some(env) = s("environment") {
        out.push(("Environment", env));
    }
    if event.action == Action::AuditChannelSet {
        let channel = match (s("channel_id"), s("previous_channel_id")) {
            (Some(c), _) => format!("<#{c}>"),
            (None, Some(was)) => format!("off (was <#{was}>)"),
            (None, None) => "off".to_owned(),
        };
        out.push(("Channel", channel));
    }
    if let Some(grace) = d.get("grace_seconds").and_then(|v| v.as_i64()).filter(|&g| g > 0) {
        out.push(("Old secret works for", crate::keys::Ttl::from_seconds(grace).to_string()));
    }
    if let Some(idle) = d.get("until_unused_seconds").and_then(|v| v.as_i64()).filter(|&g| g > 0) {
        let idle = crate::keys::Ttl::from_seconds(idle);
        out.push(("Old secret works", format!("until unused for {idle} (at most 30d)")));
    }
    if matches!(event.action, Action::RobloxPush | Action::RobloxPushFailed) {
        out.extend(roblox_push_fields(d));
    }
    if let Some(maker) = s("maker_id") {
        out.push(("Maker", format!("<@{maker}>")));
    }
    if let Some(maker) = s("previous_maker_id") {
        out.push(("Previous maker", format!("<@{maker}>")));
    }
    if let Some(note) = s("outcome") {
        out.push(("Outcome", note));
    }
    if let Some(note) = s("not_shown") {
        out.push(("Not shown", note));
    }
    if let Some(why) = s("why") {
        out.push(("Why", escape(&why)));
    }
    // The reporter's words, shown in code spans: never a link, a mention
    // or markdown, whatever they hold (the service keeps them short).
    if let Some(source) = s("source") {
        out.push(("Reported by", code_span(&source, 200)));
    }
    if let Some(url) = s("url") {
        out.push(("Found at", code_span(&url, 400)));
    }
    if let Some(webhook) = s("webhook") {
        out.push(("Webhook", escape_within(&webhook, 300)));
    }
    if let Some(events) = s("webhook_events") {
        out.push(("Events", escape_within(&events, 1024)));
    }
    if event.action == Action::KeyExpiring {
        if let Some(at) = s("expires_at").and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok()) {
            out.push(("Expires", format!("<t:{0}:R> (<t:{0}:f>)", at.timestamp())));
        }
    }
    if event.action == Action::UsageSpike {
        out.extend(spike_fields(d));
    }
    if let Some(until) = d.get("paused_until").and_then(|v| v.as_str()) {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(until) {
            out.push(("Resumes", format!("<t:{}:R>", at.timestamp())));
        }
    }
    out
}

/// A refusal spike's figures (`service::spike`): how many refusals in how
/// long, against the key's usual rate, by reason and client IP. Reasons and
/// addresses are guildkey's own words and parsed addresses, never typed text.
fn spike_fields(d: &serde_json::Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let refusals = d.get("refusals").and_then(|v| v.as_u64()).unwrap_or(0);
    let minutes = d.get("window_minutes").and_then(|v| v.as_u64()).unwrap_or(5);
    out.push(("Refusals", format!("{refusals} in {minutes} minutes")));
    if let Some(usual) = d.get("usual_per_window").and_then(|v| v.as_f64()) {
        out.push(("Usually", format!("{usual:.1} per {minutes} minutes")));
    }
    let list = |key: &str| -> Option<String> {
        let items = d.get(key)?.as_object()?;
        let lines: Vec<String> = items
            .iter()
            .take(5)
            .map(|(k, v)| format!("`{}` × {}", k.replace('`', "'"), v.as_u64().unwrap_or(0)))
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    };
    if let Some(reasons) = list("reasons") {
        out.push(("Reasons", reasons));
    }
    if let Some(ips) = list("top_ips") {
        out.push(("Client IPs (this hour)", ips));
    }
    out.push((
        "What now",
        "`/apikey usage` and `/apikey requests` show what it is; `/apikey suspend` stops it".to_owned(),
    ));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_while_off_summary_counts_lists_escaped_and_points_to_the_rest() {
        let event = crate::audit::AuditEvent {
            id: 40,
            guild_id: 123,
            at: chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().into(),
            action: crate::audit::Action::AuditChannelSet,
            actor: "<@7>".into(),
            actor_kind: "user".into(),
            key_id: None,
            key_name: None,
            key_prefix: None,
            test: false,
            details: serde_json::json!({
                "channel_id": "9",
                "while_off": {
                    "count": 12,
                    "since": "2026-01-01T09:00:00Z",
                    "turned_off_by": "<@8>",
                    "recent": [{
                        "id": 39, "at": "2026-01-01T09:59:00Z", "action": "key.revoked",
                        "actor": "The operator CLI", "key_name": "[x](https://evil.example)",
                        "key_prefix": "gk_live_Ab3d", "test": false
                    }],
                },
            }),
        };
        let summary = super::while_off_summary(&event).expect("a summary");
        let lines: Vec<&str> = summary.lines().collect();
        assert!(lines[0].contains("12 changes") && lines[0].contains("turned off by <@8>"), "{summary}");
        assert!(lines[0].contains(&format!("<t:{}:f>", 1_767_258_000)), "the window starts when posts went off");
        assert_eq!(
            lines[1],
            "• <t:1767261540:R> `key.revoked` \\[x\\]\\(https://evil.example\\) (`gk_live_Ab3d`) by The operator CLI"
        );
        assert!(lines[2].contains("11 more") && lines[2].contains("GET /v1/guilds/123/audit-log"), "{summary}");
        assert!(
            super::while_off_summary(&crate::audit::AuditEvent { details: serde_json::json!({}), ..event }).is_none()
        );
    }

    #[test]
    fn an_expiry_reminder_names_the_key_the_threshold_and_the_expiry_as_a_discord_timestamp() {
        let event = crate::audit::AuditEvent {
            id: 41,
            guild_id: 123,
            at: chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().into(),
            action: crate::audit::Action::KeyExpiring,
            actor: "guildkey".into(),
            actor_kind: "system".into(),
            key_id: Some("key_abc".into()),
            key_name: Some("game *server*".into()),
            key_prefix: Some("gk_live_Ab3d".into()),
            test: false,
            details: serde_json::json!({
                "expires_at": "2026-01-03T10:00:00Z", "within": "7 days", "threshold_seconds": 604_800,
            }),
        };
        let embed = serde_json::to_value(super::audit_embed(&event)).unwrap();
        assert_eq!(embed["title"], "API key expires within 7 days");
        let field = |name: &str| {
            embed["fields"].as_array().unwrap().iter().find(|f| f["name"] == name).map(|f| f["value"].clone())
        };
        assert_eq!(field("By").unwrap(), "guildkey");
        assert_eq!(field("Key").unwrap(), "game \\*server\\* (`gk_live_Ab3d`)");
        let at = 1_767_434_400; // 2026-01-03T10:00:00Z
        assert_eq!(field("Expires").unwrap(), format!("<t:{at}:R> (<t:{at}:f>)"));
        assert!(embed["description"].as_str().unwrap().contains("/apikey create"), "{embed}");
        let day = crate::audit::AuditEvent {
            details: serde_json::json!({"expires_at": "2026-01-03T10:00:00Z", "within": "1 day"}),
            ..event
        };
        assert_eq!(serde_json::to_value(super::audit_embed(&day)).unwrap()["title"], "API key expires within 1 day");
    }

    #[test]
    fn no_field_is_blank_and_an_entry_never_exceeds_6000_characters() {
        let event = crate::audit::AuditEvent {
            id: 42,
            guild_id: 123,
            at: chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().into(),
            action: crate::audit::Action::BanAdded,
            actor: "  ".into(),
            actor_kind: "api_key".into(),
            key_id: Some("key_abc".into()),
            key_name: Some("k".repeat(64)),
            key_prefix: Some("gk_live_Ab3d".into()),
            test: false,
            details: serde_json::json!({
                "reason": "\u{3000} ", "webhook_events": "e".repeat(5000), "why": "w".repeat(5000),
                "user_id": "1", "source": "s".repeat(100), "url": "u".repeat(200),
            }),
        };
        let embed = serde_json::to_value(super::audit_embed(&event)).unwrap();
        let c = |v: &serde_json::Value| v.as_str().map_or(0, super::discord_chars);
        let mut total = c(&embed["title"]) + c(&embed["description"]) + c(&embed["footer"]["text"]);
        for f in embed["fields"].as_array().unwrap() {
            assert!(c(&f["name"]) > 0 && c(&f["value"]) > 0, "{f}");
            assert!(c(&f["value"]) <= 1024, "{f}");
            total += c(&f["name"]) + c(&f["value"]);
        }
        assert!(total <= 6000, "{total}");
        let reason = embed["fields"].as_array().unwrap().iter().find(|f| f["name"] == "Reason").unwrap();
        assert_eq!(reason["value"], super::BLANK, "a blank reason shows as a dash");
    }

    #[test]
    fn the_plain_retry_keeps_what_happened_and_drops_the_details() {
        let event = crate::audit::AuditEvent {
            id: 43,
            guild_id: 123,
            at: chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().into(),
            action: crate::audit::Action::KeyRevoked,
            actor: "guildkey".into(),
            actor_kind: "system".into(),
            key_id: Some("key_abc".into()),
            key_name: Some("game".into()),
            key_prefix: Some("gk_live_Ab3d".into()),
            test: false,
            details: serde_json::json!({"source": "whatever they wrote", "why": "leaked"}),
        };
        let text = serde_json::to_value(super::audit_embed(&super::plain_audit_event(&event))).unwrap().to_string();
        assert!(text.contains("API key revoked") && text.contains("gk_live_Ab3d"), "{text}");
        assert!(text.contains("Not shown") && text.contains("event 43"), "{text}");
        assert!(!text.contains("whatever they wrote"), "{text}");
    }
}
