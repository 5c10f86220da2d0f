//! AutoMod (Discord's "Auto Moderation"): keyword rules through REST with Discord's checks,
//! limits and errors, AUTO_MODERATION_RULE_* gateway events, and what happens when a member
//! sends a message ([`crate::Double::post_user_message`]): matching rules block it, post an
//! alert (message type 24) and dispatch AUTO_MODERATION_ACTION_EXECUTION.
//!
//! Only keyword rules (trigger type 1) are modelled; other trigger types are refused with
//! 400 50035 (see `README.md`).

use regex::{Regex, RegexBuilder};
use serde_json::{json, Value};

use crate::config::permissions::{ADMINISTRATOR, MANAGE_GUILD};
use crate::gateway::{self, intents};
use crate::rest::Parts;
use crate::state::{without_nulls, ApiError, State};
use crate::Inner;

/// Trigger type KEYWORD.
pub const TRIGGER_KEYWORD: u64 = 1;
/// Event type MESSAGE_SEND.
pub const EVENT_MESSAGE_SEND: u64 = 1;
/// Action BLOCK_MESSAGE.
pub const ACTION_BLOCK_MESSAGE: u64 = 1;
/// Action SEND_ALERT_MESSAGE.
pub const ACTION_SEND_ALERT_MESSAGE: u64 = 2;
/// Action TIMEOUT.
pub const ACTION_TIMEOUT: u64 = 3;
/// Discord's limit of keyword rules per guild.
pub const MAX_KEYWORD_RULES: usize = 6;
/// Discord's limit of `regex_patterns` per rule.
pub const MAX_REGEX_PATTERNS: usize = 10;
/// Discord's limit on one regex pattern's length.
pub const MAX_REGEX_LENGTH: usize = 260;
/// Message type AUTO_MODERATION_ACTION (the alert posted by SEND_ALERT_MESSAGE).
pub const MESSAGE_TYPE_AUTO_MODERATION_ACTION: u8 = 24;

/// 404 for a rule id the guild does not have. Discord's list of JSON error codes
/// (topics/opcodes-and-status-codes.mdx) has no code for an unknown AutoMod rule (10066 there
/// is "Unknown application command permissions"), so the double answers what is documented:
/// HTTP 404 ("The resource at the location specified doesn't exist") with code 0, "General
/// error". A client must read the status, not guess a code.
pub fn unknown_rule() -> ApiError {
    ApiError::new(404, 0, "Unknown Auto Moderation Rule")
}

/// A member with Manage Server deletes a rule in Discord's client: it is gone, and
/// AUTO_MODERATION_RULE_DELETE goes out as after the REST call. False if there was no such rule.
pub(crate) fn delete_by_hand(inner: &Inner, guild_id: u64, rule_id: u64) -> bool {
    let rule = inner.state().guilds.get_mut(&guild_id).and_then(|g| g.automod_rules.remove(&rule_id));
    match rule {
        Some(rule) => {
            announce(inner, "AUTO_MODERATION_RULE_DELETE", &rule);
            true
        }
        None => false,
    }
}

/// The REST operations on `/guilds/{guild_id}/auto-moderation/rules[/{rule_id}]`.
pub(crate) fn handle(p: Parts<'_>, op_id: &str) -> Result<(u16, Option<Value>), ApiError> {
    let inner = p.inner;
    let guild_id = snowflake(&p, "guild_id")?;
    let mut st = inner.state();
    st.guild(guild_id)?;
    let perms = st.bot_permissions(guild_id)?;
    if perms & ADMINISTRATOR == 0 && perms & MANAGE_GUILD == 0 {
        return Err(ApiError::missing_permissions());
    }
    let rule_id = || snowflake(&p, "rule_id");
    match op_id {
        "list_auto_moderation_rules" => {
            let rules: Vec<Value> = st.guilds[&guild_id].automod_rules.values().cloned().collect();
            Ok((200, Some(Value::Array(rules))))
        }
        "get_auto_moderation_rule" => {
            let id = rule_id()?;
            let rule = st.guilds[&guild_id].automod_rules.get(&id).cloned().ok_or_else(unknown_rule)?;
            Ok((200, Some(rule)))
        }
        "create_auto_moderation_rule" => {
            let body = p.body;
            let trigger_type = body["trigger_type"].as_u64().unwrap_or(0);
            if trigger_type != TRIGGER_KEYWORD {
                return Err(ApiError::invalid_form(
                    "trigger_type",
                    "AUTO_MODERATION_TRIGGER_TYPE_NOT_MODELLED",
                    "discord-double models keyword rules (trigger_type 1) only",
                ));
            }
            let keyword_rules = st.guilds[&guild_id]
                .automod_rules
                .values()
                .filter(|r| r["trigger_type"].as_u64() == Some(TRIGGER_KEYWORD))
                .count();
            if keyword_rules >= MAX_KEYWORD_RULES {
                return Err(ApiError::invalid_form(
                    "",
                    "AUTO_MODERATION_MAX_RULES_OF_TYPE_EXCEEDED",
                    &format!("Maximum number of rules with trigger type 1 is {MAX_KEYWORD_RULES}"),
                ));
            }
            for field in ["name", "event_type"] {
                if body[field].is_null() {
                    return Err(ApiError::invalid_form(field, "BASE_TYPE_REQUIRED", "This field is required"));
                }
            }
            if body["actions"].as_array().is_none_or(Vec::is_empty) {
                return Err(ApiError::invalid_form("actions", "BASE_TYPE_REQUIRED", "This field is required"));
            }
            let id = st.ids.fresh();
            let mut rule = json!({
                "id": id.to_string(),
                "guild_id": guild_id.to_string(),
                "creator_id": st.bot_user_id.to_string(),
                "name": "",
                "event_type": EVENT_MESSAGE_SEND,
                "trigger_type": TRIGGER_KEYWORD,
                "trigger_metadata": {"keyword_filter": [], "regex_patterns": [], "allow_list": []},
                "actions": [],
                "enabled": false,
                "exempt_roles": [],
                "exempt_channels": [],
            });
            apply(&st, guild_id, &mut rule, body)?;
            st.guild_mut(guild_id)?.automod_rules.insert(id, rule.clone());
            drop(st);
            announce(inner, "AUTO_MODERATION_RULE_CREATE", &rule);
            Ok((200, Some(rule)))
        }
        "update_auto_moderation_rule" => {
            let id = rule_id()?;
            let mut rule = st.guilds[&guild_id].automod_rules.get(&id).cloned().ok_or_else(unknown_rule)?;
            apply(&st, guild_id, &mut rule, p.body)?;
            st.guild_mut(guild_id)?.automod_rules.insert(id, rule.clone());
            drop(st);
            announce(inner, "AUTO_MODERATION_RULE_UPDATE", &rule);
            Ok((200, Some(rule)))
        }
        "delete_auto_moderation_rule" => {
            let id = rule_id()?;
            let rule = st.guild_mut(guild_id)?.automod_rules.remove(&id).ok_or_else(unknown_rule)?;
            drop(st);
            announce(inner, "AUTO_MODERATION_RULE_DELETE", &rule);
            Ok((204, None))
        }
        _ => unreachable!("automod::handle called for {op_id}"),
    }
}

fn snowflake(p: &Parts<'_>, name: &str) -> Result<u64, ApiError> {
    let raw = p.params.get(name).map(String::as_str).unwrap_or("");
    raw.parse::<u64>()
        .map_err(|_| ApiError::invalid_form(name, "NUMBER_TYPE_COERCE", &format!("Value \"{raw}\" is not snowflake.")))
}

fn announce(inner: &Inner, event: &str, rule: &Value) {
    gateway::dispatch(inner, event, rule.clone(), Some(intents::AUTO_MODERATION_CONFIGURATION));
    inner.bump();
}

/// Applies the fields of a create/update body to `rule` (fields that are absent or `null`
/// keep their value), with Discord's checks: a valid Rust regex per pattern, alert channels
/// in the guild, and MODERATE_MEMBERS for a timeout action.
fn apply(st: &State, guild_id: u64, rule: &mut Value, body: &Value) -> Result<(), ApiError> {
    let body = Value::Object(without_nulls(body));
    if let Some(name) = body["name"].as_str() {
        rule["name"] = json!(name);
    }
    if let Some(e) = body["event_type"].as_u64() {
        rule["event_type"] = json!(e);
    }
    if let Some(enabled) = body["enabled"].as_bool() {
        rule["enabled"] = json!(enabled);
    }
    for key in ["exempt_roles", "exempt_channels"] {
        if let Some(list) = body[key].as_array() {
            rule[key] = Value::Array(list.clone());
        }
    }
    if let Some(meta) = body.get("trigger_metadata").filter(|m| m.is_object()) {
        for key in ["keyword_filter", "regex_patterns", "allow_list"] {
            if let Some(list) = meta.get(key).and_then(Value::as_array) {
                rule["trigger_metadata"][key] = Value::Array(list.clone());
            }
        }
        let patterns = rule["trigger_metadata"]["regex_patterns"].as_array().cloned().unwrap_or_default();
        if patterns.len() > MAX_REGEX_PATTERNS {
            return Err(ApiError::invalid_form(
                "trigger_metadata.regex_patterns",
                "BASE_TYPE_MAX_LENGTH",
                &format!("Must be {MAX_REGEX_PATTERNS} or fewer in length."),
            ));
        }
        for (i, p) in patterns.iter().enumerate() {
            let p = p.as_str().unwrap_or_default();
            if p.is_empty() || p.chars().count() > MAX_REGEX_LENGTH {
                return Err(ApiError::invalid_form(
                    &format!("trigger_metadata.regex_patterns.{i}"),
                    "BASE_TYPE_BAD_LENGTH",
                    &format!("Must be between 1 and {MAX_REGEX_LENGTH} in length."),
                ));
            }
            if compile(p).is_none() {
                return Err(ApiError::invalid_form(
                    &format!("trigger_metadata.regex_patterns.{i}"),
                    "AUTO_MODERATION_INVALID_REGEX",
                    "Invalid regex",
                ));
            }
        }
    }
    if let Some(actions) = body["actions"].as_array() {
        if actions.is_empty() || actions.len() > 5 {
            return Err(ApiError::invalid_form(
                "actions",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 5 in length.",
            ));
        }
        let g = st.guild(guild_id)?;
        let mut out = Vec::new();
        for (i, a) in actions.iter().enumerate() {
            let kind = a["type"].as_u64().unwrap_or(0);
            let meta = &a["metadata"];
            let metadata = match kind {
                ACTION_BLOCK_MESSAGE => match meta["custom_message"].as_str() {
                    Some(m) => json!({"custom_message": m}),
                    None => json!({}),
                },
                ACTION_SEND_ALERT_MESSAGE => {
                    let channel = meta["channel_id"].as_str().and_then(|c| c.parse::<u64>().ok());
                    if !channel.is_some_and(|c| g.channels.contains_key(&c)) {
                        return Err(ApiError::invalid_form(
                            &format!("actions.{i}.metadata.channel_id"),
                            "AUTO_MODERATION_ACTION_INVALID_CHANNEL",
                            "Invalid channel",
                        ));
                    }
                    json!({"channel_id": meta["channel_id"]})
                }
                ACTION_TIMEOUT => {
                    if st.bot_permissions(guild_id)? & (ADMINISTRATOR | crate::config::permissions::MODERATE_MEMBERS)
                        == 0
                    {
                        return Err(ApiError::missing_permissions());
                    }
                    json!({"duration_seconds": meta["duration_seconds"].as_u64().unwrap_or(60)})
                }
                _ => meta.clone(),
            };
            out.push(json!({"type": kind, "metadata": metadata}));
        }
        rule["actions"] = Value::Array(out);
    }
    Ok(())
}

/// A regex pattern as AutoMod compiles it (Rust `regex` syntax, which is what Discord uses).
fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern).size_limit(1 << 20).build().ok()
}

/// A keyword as AutoMod matches it: case-insensitive, whole words unless `*` marks a side
/// as open (`cat*` prefix, `*cat` suffix, `*cat*` anywhere).
fn keyword_regex(keyword: &str) -> Option<Regex> {
    let open_start = keyword.starts_with('*');
    let open_end = keyword.len() > 1 && keyword.ends_with('*');
    let core = keyword.trim_matches('*');
    if core.is_empty() {
        return None;
    }
    let pattern =
        format!("{}{}{}", if open_start { "" } else { r"\b" }, regex::escape(core), if open_end { "" } else { r"\b" });
    RegexBuilder::new(&pattern).case_insensitive(true).build().ok()
}

/// The first match of a keyword rule in `content`: (matched keyword or pattern, matched text).
fn rule_match(rule: &Value, content: &str) -> Option<(String, String)> {
    let meta = &rule["trigger_metadata"];
    let strings = |k: &str| -> Vec<String> {
        meta[k]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let allowed = |text: &str| strings("allow_list").iter().any(|a| keyword_regex(a).is_some_and(|r| r.is_match(text)));
    for keyword in strings("keyword_filter") {
        if let Some(m) = keyword_regex(&keyword).and_then(|r| r.find(content)) {
            if !allowed(m.as_str()) {
                return Some((keyword, m.as_str().to_string()));
            }
        }
    }
    for pattern in strings("regex_patterns") {
        if let Some(m) = compile(&pattern).and_then(|r| r.find(content)) {
            if !allowed(m.as_str()) {
                return Some((pattern, m.as_str().to_string()));
            }
        }
    }
    None
}

/// What happened to a message a member sent ([`crate::Double::post_user_message`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PostedMessage {
    /// The message id, `None` when AutoMod blocked it.
    pub message_id: Option<u64>,
    /// Whether a BLOCK_MESSAGE action stopped it.
    pub blocked: bool,
    /// Ids of the rules that matched, in id order.
    pub matched_rules: Vec<u64>,
    /// The alert messages (type 24) posted by SEND_ALERT_MESSAGE actions.
    pub alert_message_ids: Vec<u64>,
    /// Every AUTO_MODERATION_ACTION_EXECUTION payload, as a session with MESSAGE_CONTENT got
    /// it (one per action of each matched rule).
    pub executions: Vec<Value>,
}

/// A member sends `content` in `channel_id`: runs the guild's AutoMod rules, then creates the
/// message (MESSAGE_CREATE) unless one blocked it.
pub(crate) fn post_user_message(
    inner: &Inner,
    guild_id: u64,
    channel_id: u64,
    user_id: u64,
    content: &str,
) -> anyhow::Result<PostedMessage> {
    let mut st = inner.state();
    let g = st.guilds.get(&guild_id).ok_or_else(|| anyhow::anyhow!("unknown guild {guild_id}"))?;
    anyhow::ensure!(g.channels.contains_key(&channel_id), "channel {channel_id} is not in guild {guild_id}");
    let member = g.members.get(&user_id).ok_or_else(|| anyhow::anyhow!("{user_id} is not a member of {guild_id}"))?;
    anyhow::ensure!(!content.is_empty() && content.chars().count() <= 2000, "content must be 1-2000 characters");

    // Members with Administrator or Manage Server are exempt from AutoMod, as on Discord.
    let exempt_member = member.permissions & (ADMINISTRATOR | MANAGE_GUILD) != 0;
    let member_roles: Vec<String> = member.roles.iter().map(u64::to_string).collect();
    let channel_str = channel_id.to_string();
    let mut matches: Vec<(u64, Value, String, String)> = Vec::new();
    if !exempt_member {
        for (id, rule) in &g.automod_rules {
            let listed = |k: &str, v: &str| rule[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
            if rule["enabled"] != json!(true)
                || rule["event_type"] != json!(EVENT_MESSAGE_SEND)
                || listed("exempt_channels", &channel_str)
                || member_roles.iter().any(|r| listed("exempt_roles", r))
            {
                continue;
            }
            if let Some((keyword, matched)) = rule_match(rule, content) {
                matches.push((*id, rule.clone(), keyword, matched));
            }
        }
    }
    let blocked = matches.iter().any(|(_, rule, _, _)| has_action(rule, ACTION_BLOCK_MESSAGE));
    let member_json = {
        let g = &st.guilds[&guild_id];
        let mut m = st.member_json(g, &g.members[&user_id], false);
        m.as_object_mut().expect("object").remove("user");
        m
    };

    let mut outcome =
        PostedMessage { blocked, matched_rules: matches.iter().map(|(id, ..)| *id).collect(), ..Default::default() };
    let mut messages = Vec::new();
    if !blocked {
        let id = st.create_message(channel_id, Some(guild_id), &json!({"content": content}), 0, None);
        st.messages.get_mut(&id).expect("message").author_id = user_id;
        outcome.message_id = Some(id);
        messages.push(id);
    }
    let mut executions = Vec::new();
    for (rule_id, rule, keyword, matched) in &matches {
        for action in rule["actions"].as_array().into_iter().flatten() {
            let mut alert_id = None;
            if action["type"] == json!(ACTION_SEND_ALERT_MESSAGE) {
                if let Some(alert_channel) = action["metadata"]["channel_id"].as_str().and_then(|c| c.parse().ok()) {
                    let mut fields = vec![
                        ("rule_name", rule["name"].as_str().unwrap_or_default().to_string()),
                        ("channel_id", channel_str.clone()),
                        ("decision_id", st.ids.fresh().to_string()),
                        ("decision_outcome", if blocked { "blocked" } else { "flagged" }.to_string()),
                        ("keyword", keyword.clone()),
                        ("keyword_matched_content", matched.clone()),
                    ];
                    if let Some(m) = outcome.message_id {
                        fields.push(("flagged_message_id", m.to_string()));
                    }
                    let embed = json!({
                        "type": "auto_moderation_message",
                        "description": content,
                        "fields": fields.iter().map(|(n, v)| json!({"name": n, "value": v, "inline": false})).collect::<Vec<_>>(),
                    });
                    let id = st.create_message(
                        alert_channel,
                        Some(guild_id),
                        &json!({"content": "", "embeds": [embed]}),
                        MESSAGE_TYPE_AUTO_MODERATION_ACTION,
                        None,
                    );
                    st.messages.get_mut(&id).expect("message").author_id = user_id;
                    outcome.alert_message_ids.push(id);
                    messages.push(id);
                    alert_id = Some(id);
                }
            }
            let mut exec = json!({
                "guild_id": guild_id.to_string(),
                "action": action,
                "rule_id": rule_id.to_string(),
                "rule_trigger_type": rule["trigger_type"],
                "user_id": user_id.to_string(),
                "channel_id": channel_str,
                "matched_keyword": keyword,
                "content": content,
                "matched_content": matched,
            });
            if let Some(m) = outcome.message_id {
                exec["message_id"] = json!(m.to_string());
            }
            if let Some(a) = alert_id {
                exec["alert_system_message_id"] = json!(a.to_string());
            }
            executions.push(exec);
        }
    }
    let created: Vec<Value> = messages
        .iter()
        .map(|id| {
            let mut event = st.message_json(&st.messages[id]);
            event["guild_id"] = json!(guild_id.to_string());
            event["member"] = member_json.clone();
            event
        })
        .collect();
    drop(st);

    // The execution events first, then MESSAGE_CREATE for the message (if allowed) and the alerts.
    for exec in &executions {
        gateway::dispatch_with(
            inner,
            "AUTO_MODERATION_ACTION_EXECUTION",
            Some(intents::AUTO_MODERATION_EXECUTION),
            |i| Some(without_content(exec, i, &["content", "matched_content"])),
        );
    }
    for event in &created {
        gateway::dispatch_with(inner, "MESSAGE_CREATE", Some(intents::GUILD_MESSAGES), |i| {
            Some(without_content(event, i, &["content", "embeds", "attachments", "components"]))
        });
    }
    outcome.executions = executions;
    inner.bump();
    Ok(outcome)
}

fn has_action(rule: &Value, kind: u64) -> bool {
    rule["actions"].as_array().is_some_and(|a| a.iter().any(|x| x["type"] == json!(kind)))
}

/// Discord blanks these fields of others' content for sessions without MESSAGE_CONTENT:
/// strings become `""`, arrays `[]`.
fn without_content(payload: &Value, session_intents: u64, fields: &[&str]) -> Value {
    let mut v = payload.clone();
    if session_intents & intents::MESSAGE_CONTENT == 0 {
        for f in fields {
            if let Some(x) = v.get_mut(*f) {
                *x = if x.is_array() { json!([]) } else { json!("") };
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_like_automod() {
        let rule = |k: &[&str], allow: &[&str]| json!({"trigger_metadata": {"keyword_filter": k, "regex_patterns": [], "allow_list": allow}});
        assert!(rule_match(&rule(&["cat"], &[]), "a CAT sat").is_some());
        assert!(rule_match(&rule(&["cat"], &[]), "catch").is_none());
        assert_eq!(rule_match(&rule(&["cat*"], &[]), "catch it").map(|m| m.1), Some("cat".into()));
        assert!(rule_match(&rule(&["*cat"], &[]), "bobcat").is_some());
        assert!(rule_match(&rule(&["*cat*"], &[]), "concatenate").is_some());
        assert!(rule_match(&rule(&["cat*"], &["cat"]), "cat").is_none());
        let key = format!("gk_live_{}", "a1".repeat(19));
        let re = json!({"trigger_metadata": {"keyword_filter": [], "regex_patterns": ["gk_(live|test)_[0-9A-Za-z]{38}"], "allow_list": []}});
        assert_eq!(rule_match(&re, &format!("my key is {key}!")).map(|m| m.1), Some(key.clone()));
        assert!(rule_match(&re, "gk_live_short").is_none());
        assert!(compile("(unclosed").is_none());
    }
}
