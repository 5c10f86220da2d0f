//! How keys look in Discord: the one-time secret reply, the list and info
//! embeds. Times are Discord timestamps (`<t:…:R>`), rendered in each
//! reader's own time zone and language.

use chrono::{DateTime, Utc};
use poise::serenity_prelude as serenity;

use crate::audit::AuditEvent;
use crate::chart::grouped;
use crate::keys::{Environment, KeyRecord, KeyStatus, Scope};
use crate::service::usage_report::{RequestPage, UsageReport, UsageSummary};
use crate::service::{IssuedKey, RequestLogEntry};

/// Discord allows 25 fields per embed.
const MAX_FIELDS: usize = 25;

fn relative(at: DateTime<Utc>) -> String {
    format!("<t:{}:R>", at.timestamp())
}

fn status_badge(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "🟢 active",
        KeyStatus::Revoked => "⛔ revoked",
        KeyStatus::Expired => "⌛ expired",
        KeyStatus::Suspended => "⏸️ suspended",
    }
}

fn expiry(k: &KeyRecord) -> String {
    k.expires_at.map_or_else(|| "never".to_owned(), relative)
}

/// Keeps a name from forming mentions, markdown or masked links, and shows
/// its invisible characters: the audit channel's escaping
/// ([`crate::discord::escape`]), so a name reads the same everywhere.
pub fn safe(s: &str) -> String {
    crate::discord::escape(s)
}

/// A stored client address, shown in a code span: only address characters
/// (it is stored as written by the listener, but never trusted as markup).
fn escape_ip(ip: &str) -> String {
    ip.chars().filter(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':')).take(45).collect()
}

/// The reply that shows a secret, once: after `create` and `rotate`.
pub fn secret_message(issued: &IssuedKey, headline: &str) -> String {
    let k = &issued.record;
    let secret = issued.secret.expose();
    let mut lines = vec![
        format!("🔑 **{headline}: {}**", safe(&k.name)),
        "⚠️ **Copy this secret now. It is shown only once** and cannot be recovered; if you lose it, rotate the key."
            .to_owned(),
        format!("```\n{secret}\n```"),
        format!("**ID:** `{}` · **Prefix:** `{}` · **Environment:** {}", k.id, k.prefix, k.environment),
        format!("**Scopes:** {}", k.scopes),
        format!(
            "**Expires:** {} · **Rate limit:** {}/min · **Allowed IPs:** {}",
            expiry(k),
            k.rate_limit_per_minute,
            k.allowed_ips
        ),
    ];
    if k.scopes.contains(Scope::RolesWrite) {
        lines.push(format!("**Roles it may change:** {}", k.allowed_roles));
    }
    match (k.previous_secret_until_unused, k.previous_secret_expires_at) {
        (Some(idle), Some(until)) => lines.push(format!(
            "The previous secret keeps working until it has not been used for {idle}, and at most until {} ({}).",
            relative(until),
            fmt_abs(until)
        )),
        (None, Some(until)) => {
            lines.push(format!("The previous secret keeps working until {} ({}).", relative(until), fmt_abs(until)))
        }
        _ => {}
    }
    if k.environment == Environment::Test {
        lines.push(
            "🧪 This is a **test** key: writes made with it are dry runs; nothing changes on Discord.".to_owned(),
        );
    }
    lines.push(format!("**Use it as:** `Authorization: Bearer {secret}`"));
    lines.join("\n")
}

/// The reply after `create` or `rotate` of a key delivered into a Roblox
/// universe's Secrets store: where it went, never the secret.
pub fn delivered_message(issued: &IssuedKey, headline: &str, universe: u64, secret_name: &str) -> String {
    let k = &issued.record;
    let mut lines = vec![
        format!("🔑 **{headline}: {}**", safe(&k.name)),
        format!(
            "🎮 Delivered to Roblox universe `{universe}` as secret `{secret_name}`; the secret is not shown. In \
             the game: `HttpService:GetSecret(\"{secret_name}\")`."
        ),
        format!("**ID:** `{}` · **Prefix:** `{}` · **Environment:** {}", k.id, k.prefix, k.environment),
        format!("**Scopes:** {}", k.scopes),
    ];
    if let Some(until) = k.previous_secret_expires_at {
        lines.push(format!("The previous secret keeps working until {} ({}).", relative(until), fmt_abs(until)));
    }
    lines.join("\n")
}

fn fmt_abs(at: DateTime<Utc>) -> String {
    format!("<t:{}:f>", at.timestamp())
}

/// Days without a request after which `/apikey list` suggests revoking an
/// active key (counted from its creation when it was never used).
pub const UNUSED_AFTER_DAYS: i64 = 30;

/// "Unused for N days — consider revoking it", for an active key not used
/// for [`UNUSED_AFTER_DAYS`] (or never used and created that long ago).
pub fn unused_note(k: &KeyRecord, now: DateTime<Utc>) -> Option<String> {
    if k.status(now) != KeyStatus::Active {
        return None;
    }
    let days = (now - k.last_used_at.unwrap_or(k.created_at)).num_days();
    if days < UNUSED_AFTER_DAYS {
        return None;
    }
    let never = if k.last_used_at.is_none() { " (never used)" } else { "" };
    Some(format!("💤 **Unused for {days} days**{never} — consider revoking it"))
}

fn key_summary(k: &KeyRecord, now: DateTime<Utc>) -> (String, String) {
    let name = format!("{} · {}", crate::discord::escape_within(&k.name, 200), status_badge(k.status(now)));
    let mut value = vec![
        format!("`{}` · `{}` · {}", k.prefix, k.id, k.environment),
        format!("**Scopes:** {}", k.scopes),
        format!(
            "**Created** {} · **Last used** {} · **Expires** {}",
            relative(k.created_at),
            k.last_used_at.map_or_else(|| "never".to_owned(), relative),
            expiry(k)
        ),
    ];
    if let Some(note) = unused_note(k, now) {
        value.push(note);
    }
    if let Some(at) = k.revoked_at {
        value.push(format!("**Revoked** {}", relative(at)));
    } else if let Some(at) = k.suspended_at {
        value.push(format!("**Suspended** {} · `/apikey resume` brings it back", relative(at)));
    }
    (name, value.join("\n"))
}

/// Characters a message's embeds may hold in all (titles, descriptions,
/// field names and values, footers, author names), as Discord counts them
/// ([`crate::discord::discord_chars`]): more, and Discord refuses the message.
pub const MESSAGE_EMBED_CHARS: usize = 6000;

/// What one `/apikey list` message's fields may add up to: the limit less
/// room for its title, description and footer.
const LIST_FIELD_CHARS: usize = MESSAGE_EMBED_CHARS - 500;

/// The most messages one `/apikey list` sends; keys past them are counted
/// ("and N more"), not listed.
pub const LIST_MAX_MESSAGES: usize = 5;

/// Revoked keys named in the list's summary of them before "and N more".
const REVOKED_NAMED_CHARS: usize = 900;

/// `/apikey list`: every key that is not revoked in full, the revoked ones
/// summarised in one field (prefix and name), over as many messages as it
/// takes (at most [`LIST_MAX_MESSAGES`]), each within Discord's 25 fields
/// and [`MESSAGE_EMBED_CHARS`].
pub fn list_pages(keys: &[KeyRecord], active: u32, max: u32, now: DateTime<Utc>) -> Vec<serenity::CreateEmbed> {
    use crate::discord::discord_chars;
    let (revoked, listed): (Vec<&KeyRecord>, Vec<&KeyRecord>) =
        keys.iter().partition(|k| k.status(now) == KeyStatus::Revoked);
    let mut fields: Vec<(String, String)> = listed.iter().map(|k| key_summary(k, now)).collect();
    if !revoked.is_empty() {
        fields.push(revoked_summary(&revoked));
    }
    // Greedy: a field goes on the current page while it fits.
    let mut pages: Vec<Vec<(String, String)>> = vec![Vec::new()];
    let mut used = 0;
    let mut left_out = 0;
    for (name, value) in fields {
        let n = discord_chars(&name) + discord_chars(&value);
        let page = pages.last_mut().expect("a page");
        if !page.is_empty() && (page.len() == MAX_FIELDS - 1 || used + n > LIST_FIELD_CHARS) {
            if pages.len() == LIST_MAX_MESSAGES {
                left_out += 1;
                continue;
            }
            pages.push(Vec::new());
            used = 0;
        }
        used += n;
        pages.last_mut().expect("a page").push((name, value));
    }
    let total = pages.len();
    let mut head = format!("**{active} of {max} active keys**");
    if keys.is_empty() {
        head = format!("No keys yet. Create one with `/apikey create`.\n{head}");
    }
    pages
        .into_iter()
        .enumerate()
        .map(|(i, fields)| {
            let title = if total > 1 { format!("API keys ({} of {total})", i + 1) } else { "API keys".to_owned() };
            let mut embed = serenity::CreateEmbed::new().title(title).colour(serenity::Colour::new(0x5865F2));
            if i == 0 {
                embed = embed.description(head.clone());
            }
            for (name, value) in fields {
                embed = embed.field(name, value, false);
            }
            if i + 1 == total && left_out > 0 {
                embed = embed.field(
                    "…",
                    format!(
                        "and {left_out} more not shown: `/apikey info` shows any key; delete revoked keys to tidy up"
                    ),
                    false,
                );
            }
            embed
        })
        .collect()
}

/// One field for every revoked key: how many, then prefixes and names
/// while they fit, then "and N more".
fn revoked_summary(revoked: &[&KeyRecord]) -> (String, String) {
    let mut named = Vec::new();
    let mut len = 0;
    for k in revoked {
        let item = format!("`{}` {}", k.prefix, crate::discord::escape_within(&k.name, 40));
        let n = item.chars().count() + 2;
        if len + n > REVOKED_NAMED_CHARS {
            break;
        }
        len += n;
        named.push(item);
    }
    let mut value = named.join(", ");
    if named.len() < revoked.len() {
        value.push_str(&format!(" and {} more", revoked.len() - named.len()));
    }
    value.push_str("\n`/apikey delete` removes a revoked key from this list.");
    (format!("{} · {} revoked", status_badge(KeyStatus::Revoked), revoked.len()), value)
}

/// `/apikey info`.
pub fn info_embed(
    k: &KeyRecord,
    recent: &[AuditEvent],
    usage: Option<&UsageSummary>,
    now: DateTime<Utc>,
) -> serenity::CreateEmbed {
    let (_, summary) = key_summary(k, now);
    let mut embed = serenity::CreateEmbed::new()
        .title(format!("API key: {}", crate::discord::escape_within(&k.name, 200)))
        .colour(serenity::Colour::new(0x5865F2))
        .description(summary)
        .field("Status", status_badge(k.status(now)), true)
        .field("Rate limit", format!("{}/min", k.rate_limit_per_minute), true)
        .field("Allowed IPs", k.allowed_ips.to_string(), true)
        .field(
            "Roles it may change",
            if k.scopes.contains(Scope::RolesWrite) {
                k.allowed_roles.to_string()
            } else {
                "none (no roles.write)".to_owned()
            },
            true,
        )
        .field("Requests", k.use_count.to_string(), true)
        .field(
            "Created by",
            if k.created_by == "cli" { "the operator CLI".to_owned() } else { format!("<@{}>", k.created_by) },
            true,
        )
        .field(
            "Bounded by",
            match k.maker_id {
                Some(maker) => format!("<@{maker}>'s powers (its maker)"),
                None => "nobody (made by the operator CLI: no maker's bound)".to_owned(),
            },
            true,
        );
    if let Some(until) = k.previous_secret_expires_at.filter(|&u| u > now) {
        let works = match k.previous_secret_until_unused {
            Some(idle) => format!("works until unused for {idle} (at most until {})", relative(until)),
            None => format!("works until {}", relative(until)),
        };
        let seen = match &k.previous_secret_seen {
            Some((at, ip)) => format!("last presented {} from `{}`", relative(*at), escape_ip(ip)),
            None => "not presented since the rotation".to_owned(),
        };
        embed = embed.field("Previous secret", format!("{works}; {seen}"), true);
    }
    let activity = if recent.is_empty() {
        "nothing yet".to_owned()
    } else {
        recent
            .iter()
            .map(|e| {
                let test = if e.test { " (dry run)" } else { "" };
                format!("{} `{}`{test} by {}", relative(e.at), e.action.as_str(), e.actor)
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    embed = embed.field("Recent activity", activity, false);
    if let Some(u) = usage {
        let totals = |t: crate::service::usage_report::Totals| format!("{} ({} not ok)", t.requests, t.errors);
        embed = embed.field("Last 24 hours", totals(u.last_24h), true).field("Last 7 days", totals(u.last_7d), true);
        let errors = if u.recent_errors.is_empty() {
            "none kept".to_owned()
        } else {
            u.recent_errors.iter().map(request_line).collect::<Vec<_>>().join("\n")
        };
        embed = embed.field("Latest errors", errors, false);
    }
    embed
}

/// One request of the log, in one line: when, what, the answer, from where.
/// Route templates, reasons and addresses are guildkey's own text (never the
/// client's path or headers).
fn request_line(e: &RequestLogEntry) -> String {
    let reason = e.reason.as_deref().map(|r| format!(" `{r}`")).unwrap_or_default();
    let mut line = format!(
        "<t:{}:R> `{} {}` → **{}**{reason} · {} · {} µs",
        e.at.timestamp(),
        e.method,
        e.route,
        e.status,
        e.ip,
        e.latency_us
    );
    if let Some(user) = &e.target_user_id {
        line.push_str(&format!(" · user {user}"));
    }
    if let Some(role) = &e.target_role_id {
        line.push_str(&format!(" · role {role}"));
    }
    line
}

/// `n` and its noun, digits grouped as the chart groups them: "1 client
/// IP", "28,588 requests".
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", grouped(n), if n == 1 { one } else { many })
}

/// `/apikey usage`: totals per outcome, the busiest routes and IPs, and
/// the error share (the chart, when attached, goes in the embed's image).
pub fn usage_embed(k: &KeyRecord, r: &UsageReport) -> serenity::CreateEmbed {
    let mut outcomes: Vec<(&String, &u64)> = r.outcomes.iter().collect();
    outcomes.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let description = if r.total == 0 {
        format!("No requests in the last {}.", r.period)
    } else {
        format!(
            "**{}** in the last {} · **{:.1}%** not ok · {}",
            counted(r.total, "request", "requests"),
            r.period,
            r.error_share * 100.0,
            counted(r.distinct_ips, "client IP", "client IPs")
        )
    };
    let mut embed = serenity::CreateEmbed::new()
        .title(format!("Usage: {} (`{}`)", crate::discord::escape_within(&k.name, 200), k.prefix))
        .colour(serenity::Colour::new(0x5865F2))
        .description(description);
    if r.total > 0 {
        let lines: Vec<String> = outcomes.iter().map(|(o, n)| format!("`{o}`: {}", grouped(**n))).collect();
        embed = embed.field("By outcome", lines.join("\n"), true);
        let routes: Vec<String> = r
            .top_routes
            .iter()
            .map(|t| format!("`{}`: {} ({} not ok)", t.route, grouped(t.count), grouped(t.errors)))
            .collect();
        embed = embed.field("Top routes", routes.join("\n"), false);
        let ips: Vec<String> = r.top_ips.iter().map(|t| format!("`{}`: {}", t.ip, grouped(t.count))).collect();
        embed = embed.field("Top IPs", ips.join("\n"), true);
    }
    embed.footer(serenity::CreateEmbedFooter::new(format!(
        "{} buckets, one per {}, from {} UTC · successful verifications are counted, not logged",
        r.buckets.len(),
        r.period.bucket_label(),
        r.from.format("%Y-%m-%d %H:%M")
    )))
}

/// One page of `/apikey requests`, newest first (`page` from 1).
pub fn requests_embed(k: &KeyRecord, p: &RequestPage, page: usize) -> serenity::CreateEmbed {
    let description = if p.entries.is_empty() {
        "No requests logged yet (successful verifications are counted, not logged).".to_owned()
    } else {
        p.entries.iter().map(request_line).collect::<Vec<_>>().join("\n")
    };
    serenity::CreateEmbed::new()
        .title(format!("Requests: {} (`{}`)", crate::discord::escape_within(&k.name, 200), k.prefix))
        .colour(serenity::Colour::new(0x5865F2))
        .description(description)
        .footer(serenity::CreateEmbedFooter::new(format!("page {page} · newest first")))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::*;
    use crate::keys::{AllowedIps, AllowedRoles, KeyId, Scopes};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    fn key(name: &str, created_at: DateTime<Utc>, last_used_at: Option<DateTime<Utc>>) -> KeyRecord {
        KeyRecord {
            id: KeyId::from_stored(format!("key_{name}")),
            guild_id: 1,
            name: name.to_owned(),
            prefix: "gk_live_Ab3d".to_owned(),
            environment: Environment::Live,
            scopes: Scopes::parse("bans.read").unwrap(),
            created_at,
            created_by: "cli".to_owned(),
            maker_id: None,
            last_used_at,
            use_count: i64::from(last_used_at.is_some()),
            expires_at: None,
            revoked_at: None,
            rate_limit_per_minute: 60,
            allowed_ips: AllowedIps::default(),
            previous_secret_expires_at: None,
            previous_secret_until_unused: None,
            previous_secret_seen: None,
            allowed_roles: AllowedRoles::default(),
            suspended_at: None,
            ban_budget: None,
            role_budget: None,
        }
    }

    fn list_text(keys: &[KeyRecord], now: DateTime<Utc>) -> String {
        serde_json::to_value(list_pages(keys, 1, 3, now)).unwrap().to_string()
    }

    /// What Discord sums for a message of this one embed.
    fn embed_chars(embed: &serenity::CreateEmbed) -> usize {
        let v = serde_json::to_value(embed).unwrap();
        let c = |v: &serde_json::Value| v.as_str().map_or(0, crate::discord::discord_chars);
        let fields: usize = v["fields"].as_array().into_iter().flatten().map(|f| c(&f["name"]) + c(&f["value"])).sum();
        c(&v["title"]) + c(&v["description"]) + c(&v["footer"]["text"]) + c(&v["author"]["name"]) + fields
    }

    #[test]
    fn a_long_list_is_split_into_messages_within_discords_limits_and_revoked_keys_are_summed_up() {
        let now = at("2026-03-01T12:00:00Z");
        let long = "n".repeat(64);
        let mut keys: Vec<KeyRecord> = (0..60)
            .map(|i| {
                let mut k = key(&format!("{long}{i}"), now - Duration::days(40), None);
                k.scopes = Scopes::parse("guild.read,bans.read,bans.write,roles.write,audit.read").unwrap();
                k.expires_at = Some(now + Duration::days(300));
                k
            })
            .collect();
        for k in keys.iter_mut().take(25) {
            k.revoked_at = Some(now - Duration::days(2));
        }
        let pages = list_pages(&keys, 35, 100, now);
        assert!(pages.len() > 1 && pages.len() <= LIST_MAX_MESSAGES, "{}", pages.len());
        for p in &pages {
            assert!(embed_chars(p) <= MESSAGE_EMBED_CHARS, "{}", embed_chars(p));
            assert!(serde_json::to_value(p).unwrap()["fields"].as_array().unwrap().len() <= MAX_FIELDS);
        }
        let text = serde_json::to_value(&pages).unwrap().to_string();
        assert_eq!(text.matches("🟢 active").count(), 35, "every live key in full");
        assert!(text.contains("25 revoked"), "{text}");
        assert_eq!(text.matches("**Revoked**").count(), 0, "revoked keys are not listed in full");
    }

    #[test]
    fn the_list_flags_keys_unused_for_30_days_with_how_long() {
        let now = at("2026-03-01T12:00:00Z");
        let day = Duration::days(1);
        let busy = key("busy", now - day * 90, Some(now - day * 2));
        let idle = key("idle", now - day * 90, Some(now - day * 45));
        let never = key("never", now - day * 31, None);
        let fresh = key("fresh", now - day * 29, None);
        let barely = key("barely", now - day * 60, Some(now - day * 30 + Duration::minutes(1)));

        assert_eq!(unused_note(&busy, now), None);
        assert_eq!(unused_note(&idle, now).unwrap(), "💤 **Unused for 45 days** — consider revoking it");
        assert_eq!(unused_note(&never, now).unwrap(), "💤 **Unused for 31 days** (never used) — consider revoking it");
        assert_eq!(unused_note(&fresh, now), None, "a key younger than 30 days is not flagged");
        assert_eq!(unused_note(&barely, now), None, "29 days and 23:59 is not 30 days");
        assert!(unused_note(&key("exactly", now - day * 30, None), now).is_some());

        let text = list_text(&[busy, idle, never, fresh], now);
        assert_eq!(text.matches("consider revoking").count(), 2, "{text}");
        assert!(text.contains("Unused for 45 days") && text.contains("Unused for 31 days"), "{text}");
    }

    #[test]
    fn revoked_expired_and_suspended_keys_are_not_flagged_as_unused() {
        let now = at("2026-03-01T12:00:00Z");
        let old = now - Duration::days(100);
        let revoked = KeyRecord { revoked_at: Some(now - Duration::days(1)), ..key("revoked", old, None) };
        let expired = KeyRecord { expires_at: Some(now - Duration::days(1)), ..key("expired", old, None) };
        let suspended = KeyRecord { suspended_at: Some(now - Duration::days(1)), ..key("suspended", old, None) };
        for k in [&revoked, &expired, &suspended] {
            assert_eq!(unused_note(k, now), None, "{}", k.name);
        }
        assert!(!list_text(&[revoked, expired, suspended], now).contains("consider revoking"));
    }

    #[test]
    fn counts_in_words_are_grouped_and_plural_right() {
        assert_eq!(counted(1, "client IP", "client IPs"), "1 client IP");
        assert_eq!(counted(0, "client IP", "client IPs"), "0 client IPs");
        assert_eq!(counted(28_588, "request", "requests"), "28,588 requests");
    }
}
