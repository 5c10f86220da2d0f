//! AutoMod: keyword rules through REST (validated against the spec), Discord's permission
//! check, limits and errors, the rule events, and a member's message meeting the leak guard's
//! rule: blocked, alerted, and reported with its content only to sessions with MESSAGE_CONTENT.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{http_for, init_tracing, Api, WAIT};
use discord_double::*;
use poise::serenity_prelude as serenity;
use serde_json::{json, Value};

const KEY_PATTERN: &str = "gk_(live|test)_[0-9A-Za-z]{38}";

fn rules_path() -> String {
    format!("/guilds/{DEMO_GUILD_ID}/auto-moderation/rules")
}

/// The rule guildkey's `/apikey leak-guard on` creates.
fn leak_guard_rule() -> Value {
    json!({
        "name": "guildkey leak guard",
        "event_type": 1,
        "trigger_type": 1,
        "trigger_metadata": {"regex_patterns": [KEY_PATTERN]},
        "actions": [
            {"type": 1, "metadata": {"custom_message": "API keys must not be posted here."}},
            {"type": 2, "metadata": {"channel_id": AUDIT_LOG_CHANNEL_ID.to_string()}},
        ],
        "enabled": true,
    })
}

/// The demo world with MANAGE_GUILD added to the bot's role (its absence is the default).
async fn double_with_manage_guild(privileged: u64) -> Double {
    init_tracing();
    let double = Double::start(DoubleConfig::demo().with_privileged_intents(privileged)).await.unwrap();
    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, BOT_ROLE_PERMISSIONS | permissions::MANAGE_GUILD);
    double
}

/// What a plain serenity client saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Value)>>>);

impl Seen {
    fn events(&self, name: &str) -> Vec<Value> {
        self.0.lock().unwrap().iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }
    async fn wait(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.events(name);
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name}: {} of {n} arrived", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    fn push(&self, name: &str, v: impl serde::Serialize) {
        self.0.lock().unwrap().push((name.to_string(), serde_json::to_value(v).unwrap()));
    }
}

struct Handler(Seen);

#[serenity::async_trait]
impl serenity::EventHandler for Handler {
    async fn auto_moderation_rule_create(&self, _: serenity::Context, rule: serenity::Rule) {
        self.0.push("AUTO_MODERATION_RULE_CREATE", rule);
    }
    async fn auto_moderation_rule_update(&self, _: serenity::Context, rule: serenity::Rule) {
        self.0.push("AUTO_MODERATION_RULE_UPDATE", rule);
    }
    async fn auto_moderation_rule_delete(&self, _: serenity::Context, rule: serenity::Rule) {
        self.0.push("AUTO_MODERATION_RULE_DELETE", rule);
    }
    async fn auto_moderation_action_execution(&self, _: serenity::Context, execution: serenity::ActionExecution) {
        self.0.push("AUTO_MODERATION_ACTION_EXECUTION", execution);
    }
    async fn message(&self, _: serenity::Context, message: serenity::Message) {
        self.0.push("MESSAGE_CREATE", message);
    }
}

/// A serenity client (no framework) identifying with `intents`; its events land in `Seen`.
async fn client(double: &Double, intents: serenity::GatewayIntents) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen = Seen::default();
    let mut client = serenity::ClientBuilder::new_with_http(http_for(double), intents)
        .event_handler(Handler(seen.clone()))
        .await
        .expect("client");
    let task = tokio::spawn(async move {
        let _ = client.start().await;
    });
    (seen, task)
}

fn automod_intents() -> serenity::GatewayIntents {
    serenity::GatewayIntents::GUILDS
        | serenity::GatewayIntents::GUILD_MESSAGES
        | serenity::GatewayIntents::AUTO_MODERATION_CONFIGURATION
        | serenity::GatewayIntents::AUTO_MODERATION_EXECUTION
}

/// Every dispatch the double sent is an event serenity knows (none silently dropped).
fn assert_serenity_reads_every_dispatch(double: &Double) {
    for f in double.gateway_frames().into_iter().filter(|f| f.direction == Direction::Sent && f.op == 0) {
        let raw = json!({"op": f.op, "d": f.d, "s": f.s, "t": f.t});
        let event: serenity::GatewayEvent =
            serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("serenity cannot read {raw}: {e}"));
        if let serenity::GatewayEvent::Dispatch(_, ev) = &event {
            assert!(ev.name().is_some(), "serenity reads {:?} as an unknown event: {raw:.600}", f.t);
        }
    }
}

fn leaked_key() -> String {
    format!("gk_live_{}", "Ab3".repeat(12) + "xy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_create_list_get_update_delete_round_trip_within_the_schema() {
    let double = double_with_manage_guild(0).await;
    let (seen, _task) = client(&double, automod_intents()).await;
    double.wait_for_ready(WAIT).await.unwrap();
    let api = Api::new(&double, "leak%20guard");

    let (s, rule) = api.call("POST", &rules_path(), Some(leak_guard_rule())).await;
    assert_eq!(s, 200, "{rule}");
    let id = rule["id"].as_str().unwrap().to_string();
    assert_eq!(rule["guild_id"], DEMO_GUILD_ID.to_string());
    assert_eq!(rule["creator_id"], BOT_USER_ID.to_string());
    assert_eq!((rule["event_type"].as_u64(), rule["trigger_type"].as_u64()), (Some(1), Some(1)));
    assert_eq!(
        rule["trigger_metadata"],
        json!({"keyword_filter": [], "regex_patterns": [KEY_PATTERN], "allow_list": []})
    );
    assert_eq!(rule["actions"][1], json!({"type": 2, "metadata": {"channel_id": AUDIT_LOG_CHANNEL_ID.to_string()}}));
    assert_eq!((rule["enabled"].as_bool(), rule["exempt_roles"].clone()), (Some(true), json!([])));
    assert_eq!(double.automod_rules(DEMO_GUILD_ID), vec![rule.clone()]);

    let (s, list) = api.call("GET", &rules_path(), None).await;
    assert_eq!((s, list), (200, json!([rule.clone()])));
    let (s, got) = api.call("GET", &format!("{}/{id}", rules_path()), None).await;
    assert_eq!((s, got), (200, rule.clone()));

    let (s, updated) = api.call("PATCH", &format!("{}/{id}", rules_path()), Some(json!({"enabled": false}))).await;
    assert_eq!((s, updated["enabled"].as_bool(), updated["name"].clone()), (200, Some(false), rule["name"].clone()));

    let (s, body) = api.call("DELETE", &format!("{}/{id}", rules_path()), None).await;
    assert_eq!((s, body), (204, Value::Null));
    assert!(double.automod_rules(DEMO_GUILD_ID).is_empty());

    // The bot learns each change from the gateway, as serenity models it.
    let created = seen.wait("AUTO_MODERATION_RULE_CREATE", 1).await;
    assert_eq!(created[0]["id"], id.as_str());
    assert_eq!(created[0]["trigger_metadata"]["regex_patterns"], json!([KEY_PATTERN]));
    assert_eq!(seen.wait("AUTO_MODERATION_RULE_UPDATE", 1).await[0]["enabled"], false);
    assert_eq!(seen.wait("AUTO_MODERATION_RULE_DELETE", 1).await[0]["id"], id.as_str());
    assert_eq!(double.calls_to("DELETE", "/guilds/{guild_id}/auto-moderation/rules/{rule_id}")[0].status, 204);
    assert_serenity_reads_every_dispatch(&double);
    double.assert_no_violations();
}

#[tokio::test]
async fn rule_events_need_the_auto_moderation_configuration_intent() {
    let double = double_with_manage_guild(0).await;
    let (seen, _task) = client(&double, serenity::GatewayIntents::non_privileged()).await;
    let (without, _task2) = client(&double, serenity::GatewayIntents::GUILDS).await;
    double.wait_for_gateway(|s| s.identifies >= 2, WAIT).await.unwrap();
    double.wait_for_ready(WAIT).await.unwrap();
    let (s, _) = Api::new(&double, "leak%20guard").call("POST", &rules_path(), Some(leak_guard_rule())).await;
    assert_eq!(s, 200);
    seen.wait("AUTO_MODERATION_RULE_CREATE", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(without.events("AUTO_MODERATION_RULE_CREATE").is_empty());
    let sent: Vec<_> =
        double.gateway_frames().into_iter().filter(|f| f.t.as_deref() == Some("AUTO_MODERATION_RULE_CREATE")).collect();
    assert_eq!(sent.len(), 1, "only the session with the intent gets it");
    double.assert_no_violations();
}

#[tokio::test]
async fn without_manage_guild_every_rule_route_is_403_and_unknown_rules_are_404() {
    init_tracing();
    // The demo bot role lacks MANAGE_GUILD.
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let api = Api::new(&double, "leak%20guard");
    let one = format!("{}/1400000000000000999", rules_path());
    for (method, path, body) in [
        ("GET", rules_path(), None),
        ("POST", rules_path(), Some(leak_guard_rule())),
        ("GET", one.clone(), None),
        ("PATCH", one.clone(), Some(json!({"enabled": false}))),
        ("DELETE", one.clone(), None),
    ] {
        let (s, v) = api.call(method, &path, body).await;
        assert_eq!((s, v), (403, json!({"code": 50013, "message": "Missing Permissions"})), "{method} {path}");
    }
    assert!(double.automod_rules(DEMO_GUILD_ID).is_empty());

    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, BOT_ROLE_PERMISSIONS | permissions::MANAGE_GUILD);
    for (method, body) in [("GET", None), ("PATCH", Some(json!({"enabled": false}))), ("DELETE", None)] {
        let (s, v) = api.call(method, &one, body).await;
        assert_eq!((s, v), (404, json!({"code": 0, "message": "Unknown Auto Moderation Rule"})), "{method}");
    }
    let (s, v) = api.call("GET", "/guilds/1000000000000000999/auto-moderation/rules", None).await;
    assert_eq!((s, v["code"].as_u64()), (404, Some(10004)));
    double.assert_no_violations();
}

#[tokio::test]
async fn discords_limits_six_keyword_rules_ten_patterns_of_260_and_valid_regex() {
    let double = double_with_manage_guild(0).await;
    let api = Api::new(&double, "leak%20guard");
    let with_patterns = |patterns: Value| {
        let mut rule = leak_guard_rule();
        rule["trigger_metadata"]["regex_patterns"] = patterns;
        rule
    };
    let pattern_error = |v: &Value, at: &str| {
        let errors = &v["errors"]["trigger_metadata"]["regex_patterns"];
        let errors = if at.is_empty() { errors } else { &errors[at] };
        errors["_errors"][0]["code"].clone()
    };

    // The double refuses what Discord refuses; the schema flags over-long lists too.
    let (s, v) = api.call("POST", &rules_path(), Some(with_patterns(json!(vec!["a"; 11])))).await;
    assert_eq!((s, pattern_error(&v, "")), (400, json!("BASE_TYPE_MAX_LENGTH")), "{v}");
    let (s, v) = api.call("POST", &rules_path(), Some(with_patterns(json!(["a".repeat(261)])))).await;
    assert_eq!((s, pattern_error(&v, "0")), (400, json!("BASE_TYPE_BAD_LENGTH")), "{v}");
    let v = double.violations();
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v.iter().all(|v| v.kind == ViolationKind::Request && v.operation_id == "create_auto_moderation_rule"));
    double.clear_recorded();
    let (s, v) = api.call("POST", &rules_path(), Some(with_patterns(json!(["(unclosed"])))).await;
    assert_eq!((s, pattern_error(&v, "0")), (400, json!("AUTO_MODERATION_INVALID_REGEX")), "{v}");
    let mut nameless = leak_guard_rule();
    nameless.as_object_mut().unwrap().remove("name");
    assert_eq!(api.call("POST", &rules_path(), Some(nameless)).await.0, 400);
    double.clear_recorded();
    assert!(double.automod_rules(DEMO_GUILD_ID).is_empty(), "nothing refused was stored");

    for i in 0..6 {
        let mut rule = with_patterns(json!(["a".repeat(260)]));
        rule["name"] = json!(format!("rule {i}"));
        assert_eq!(api.call("POST", &rules_path(), Some(rule)).await.0, 200);
    }
    let (s, v) = api.call("POST", &rules_path(), Some(leak_guard_rule())).await;
    assert_eq!((s, v["code"].as_u64()), (400, Some(50035)), "{v}");
    assert_eq!(v["errors"]["_errors"][0]["code"], "AUTO_MODERATION_MAX_RULES_OF_TYPE_EXCEEDED");
    assert_eq!(double.automod_rules(DEMO_GUILD_ID).len(), 6);

    // A refused update changes nothing.
    let id = double.automod_rules(DEMO_GUILD_ID)[0]["id"].as_str().unwrap().to_string();
    let patch = json!({"name": "renamed", "trigger_metadata": {"regex_patterns": ["(unclosed"]}});
    assert_eq!(api.call("PATCH", &format!("{}/{id}", rules_path()), Some(patch)).await.0, 400);
    assert_eq!(double.automod_rules(DEMO_GUILD_ID)[0]["name"], "rule 0");
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_key_is_blocked_alerted_and_reported_with_content_only_to_message_content_sessions() {
    let double = double_with_manage_guild(intents::MESSAGE_CONTENT).await;
    let (with_content, _t1) = client(&double, automod_intents() | serenity::GatewayIntents::MESSAGE_CONTENT).await;
    let (without_content, _t2) = client(&double, automod_intents()).await;
    double.wait_for_gateway(|s| s.identifies >= 2, WAIT).await.unwrap();
    let api = Api::new(&double, "leak%20guard");
    let (_, rule) = api.call("POST", &rules_path(), Some(leak_guard_rule())).await;
    let rule_id: u64 = rule["id"].as_str().unwrap().parse().unwrap();

    let key = leaked_key();
    let text = format!("here is the prod key {key} thanks");
    let out = double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, PAT_ID, &text).unwrap();
    assert!(out.blocked);
    assert_eq!((out.message_id, out.matched_rules.clone(), out.alert_message_ids.len()), (None, vec![rule_id], 1));
    assert!(double.messages_in(GENERAL_CHANNEL_ID).is_empty(), "the key never posts");

    // The alert in #audit-log: type 24 by the member, Discord's auto_moderation_message embed.
    let alert = double.message(out.alert_message_ids[0]).unwrap();
    assert_eq!(alert.channel_id, AUDIT_LOG_CHANNEL_ID);
    let (_, alert_json) =
        api.call("GET", &format!("/channels/{AUDIT_LOG_CHANNEL_ID}/messages/{}", out.alert_message_ids[0]), None).await;
    assert_eq!(
        (alert_json["type"].as_u64(), alert_json["author"]["id"].clone()),
        (Some(24), json!(PAT_ID.to_string()))
    );
    let embed = &alert_json["embeds"][0];
    assert_eq!(
        (embed["type"].as_str(), embed["description"].as_str()),
        (Some("auto_moderation_message"), Some(text.as_str()))
    );
    let field =
        |name: &str| embed["fields"].as_array().unwrap().iter().find(|f| f["name"] == name).map(|f| f["value"].clone());
    assert_eq!(field("rule_name"), Some(json!("guildkey leak guard")));
    assert_eq!(field("decision_outcome"), Some(json!("blocked")));
    assert_eq!(field("keyword"), Some(json!(KEY_PATTERN)));
    assert_eq!(field("keyword_matched_content"), Some(json!(key)));
    assert_eq!(field("channel_id"), Some(json!(GENERAL_CHANNEL_ID.to_string())));

    // One execution per action; content only with MESSAGE_CONTENT.
    let full = with_content.wait("AUTO_MODERATION_ACTION_EXECUTION", 2).await;
    let blank = without_content.wait("AUTO_MODERATION_ACTION_EXECUTION", 2).await;
    for (exec, content, matched) in
        full.iter().map(|e| (e, text.as_str(), key.as_str())).chain(blank.iter().map(|e| (e, "", "")))
    {
        assert_eq!(exec["rule_id"], rule_id.to_string());
        assert_eq!(
            (exec["user_id"].clone(), exec["channel_id"].clone()),
            (json!(PAT_ID.to_string()), json!(GENERAL_CHANNEL_ID.to_string()))
        );
        assert_eq!(exec["matched_keyword"], KEY_PATTERN);
        assert_eq!(exec["message_id"], Value::Null, "blocked: no message");
        assert_eq!((exec["content"].as_str(), exec["matched_content"].as_str()), (Some(content), Some(matched)));
    }
    let alert_exec = full.iter().find(|e| e["action"]["type"] == 2).unwrap();
    assert_eq!(alert_exec["alert_system_message_id"], out.alert_message_ids[0].to_string());
    assert_eq!(full.iter().find(|e| e["action"]["type"] == 1).unwrap()["alert_system_message_id"], Value::Null);
    assert_eq!(out.executions.len(), 2);
    assert_eq!(out.executions[1]["matched_content"], key.as_str());

    // The alert reaches the bot as MESSAGE_CREATE; its embed only with MESSAGE_CONTENT.
    let with = with_content.wait("MESSAGE_CREATE", 1).await;
    let without = without_content.wait("MESSAGE_CREATE", 1).await;
    assert_eq!((with.len(), without.len()), (1, 1), "only the alert, not the blocked message");
    assert_eq!(with[0]["embeds"][0]["description"], text.as_str());
    assert_eq!(without[0]["embeds"], json!([]));
    assert_serenity_reads_every_dispatch(&double);
    double.assert_no_violations();
}

#[tokio::test]
async fn messages_that_match_nothing_or_are_exempt_post_normally() {
    let double = double_with_manage_guild(0).await;
    let (seen, _task) = client(&double, automod_intents()).await;
    double.wait_for_ready(WAIT).await.unwrap();
    let api = Api::new(&double, "leak%20guard");
    let (_, rule) = api.call("POST", &rules_path(), Some(leak_guard_rule())).await;

    // No match: a normal message, a MESSAGE_CREATE (content blanked: no MESSAGE_CONTENT).
    let out = double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, PAT_ID, "gk_live_tooshort").unwrap();
    assert_eq!((out.blocked, out.matched_rules.len(), out.alert_message_ids.len()), (false, 0, 0));
    let id = out.message_id.unwrap();
    let posted = double.messages_in(GENERAL_CHANNEL_ID);
    assert_eq!((posted.len(), posted[0].content.as_str()), (1, "gk_live_tooshort"));
    let (s, m) = api.call("GET", &format!("/channels/{GENERAL_CHANNEL_ID}/messages/{id}"), None).await;
    assert_eq!((s, m["author"]["id"].clone(), m["type"].as_u64()), (200, json!(PAT_ID.to_string()), Some(0)));
    let created = seen.wait("MESSAGE_CREATE", 1).await;
    assert_eq!((created[0]["id"].clone(), created[0]["content"].clone()), (json!(id.to_string()), json!("")));
    assert!(seen.events("AUTO_MODERATION_ACTION_EXECUTION").is_empty());

    // Administrators and Manage Server holders are exempt from AutoMod, as on Discord.
    let key = leaked_key();
    assert!(!double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, MORGAN_ID, &key).unwrap().blocked);
    // So are exempt channels, and a disabled rule does nothing.
    let path = format!("{}/{}", rules_path(), rule["id"].as_str().unwrap());
    api.call("PATCH", &path, Some(json!({"exempt_channels": [GENERAL_CHANNEL_ID.to_string()]}))).await;
    assert!(!double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, PAT_ID, &key).unwrap().blocked);
    api.call("PATCH", &path, Some(json!({"exempt_channels": [], "enabled": false}))).await;
    assert!(!double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, PAT_ID, &key).unwrap().blocked);

    // An alert-only rule flags without blocking: the message posts and the alert links it.
    api.call("PATCH", &path, Some(json!({"enabled": true, "actions": [{"type": 2, "metadata": {"channel_id": AUDIT_LOG_CHANNEL_ID.to_string()}}]}))).await;
    let out = double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, DANA_ID, &format!("oops {key}")).unwrap();
    let id = out.message_id.expect("not blocked");
    assert_eq!(out.executions[0]["message_id"], id.to_string());
    let alert = double.message(out.alert_message_ids[0]).unwrap();
    assert!(alert.text().contains("flagged"), "{}", alert.text());
    assert!(alert.text().contains(&id.to_string()), "flagged_message_id: {}", alert.text());

    // Unknown channel or non-member: the helper refuses (Discord's client would not send).
    assert!(double.post_user_message(DEMO_GUILD_ID, OTHER_GENERAL_CHANNEL_ID, PAT_ID, "hi").is_err());
    assert!(double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, OSCAR_ID, "hi").is_err());
    assert_serenity_reads_every_dispatch(&double);
    double.assert_no_violations();
}

#[tokio::test]
async fn serenitys_own_automod_calls_round_trip_without_violations() {
    use serenity::automod::{Action, EventType, Trigger};
    use serenity::{ChannelId, EditAutoModRule, GuildId};
    let double = double_with_manage_guild(0).await;
    let http = http_for(&double);
    let guild = GuildId::new(DEMO_GUILD_ID);
    let builder = EditAutoModRule::new()
        .name("guildkey leak guard")
        .event_type(EventType::MessageSend)
        .trigger(Trigger::Keyword { strings: vec![], regex_patterns: vec![KEY_PATTERN.into()], allow_list: vec![] })
        .actions(vec![
            Action::BlockMessage { custom_message: Some("API keys must not be posted here.".into()) },
            Action::Alert(ChannelId::new(AUDIT_LOG_CHANNEL_ID)),
        ])
        .enabled(true)
        .audit_log_reason("leak guard on");
    let rule = guild.create_automod_rule(&http, builder).await.expect("create");
    assert_eq!(rule.creator_id.get(), BOT_USER_ID);
    assert_eq!(rule.actions[1], Action::Alert(ChannelId::new(AUDIT_LOG_CHANNEL_ID)));
    assert!(matches!(&rule.trigger, Trigger::Keyword { regex_patterns, .. } if regex_patterns == &[KEY_PATTERN]));
    assert_eq!(guild.automod_rules(&http).await.unwrap().len(), 1);
    assert_eq!(guild.automod_rule(&http, rule.id).await.unwrap().name, "guildkey leak guard");
    let edited = guild.edit_automod_rule(&http, rule.id, EditAutoModRule::new().enabled(false)).await.unwrap();
    assert!(!edited.enabled);

    // The key is blocked only while the rule is enabled.
    let key = leaked_key();
    assert!(!double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, PAT_ID, &key).unwrap().blocked);
    guild.edit_automod_rule(&http, rule.id, EditAutoModRule::new().enabled(true)).await.unwrap();
    assert!(double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, PAT_ID, &key).unwrap().blocked);

    guild.delete_automod_rule(&http, rule.id).await.expect("delete");
    let err = guild.automod_rule(&http, rule.id).await.unwrap_err();
    assert!(err.to_string().contains("Unknown Auto Moderation Rule"), "{err}");
    assert!(!double.post_user_message(DEMO_GUILD_ID, GENERAL_CHANNEL_ID, PAT_ID, &key).unwrap().blocked);
    let create = &double.calls_to("POST", "/guilds/{guild_id}/auto-moderation/rules")[0];
    assert_eq!(create.audit_log_reason().as_deref(), Some("leak guard on"));
    double.assert_no_violations();
}
