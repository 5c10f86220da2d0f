//! The client's MessagingService subscriber: bans guildkey pushes into live
//! servers (the contract's v1 envelope) kick the player and go on the ban
//! list in memory; anything else is ignored without an error. Roblox's
//! services are Luau fakes with their methods' shapes; the listener, for the
//! checks that still ask it, is the real one (`world.rs`).

use super::world::World;
use super::*;

/// `MessagingService:SubscribeAsync` keeps each topic's callback;
/// `push(topic, data)` calls it as Roblox does, with `{Data, Sent}`.
/// `Players:GetPlayerByUserId` finds the players in `inServer`, whose
/// `:Kick(message)` is recorded in `kicked`.
const ROBLOX: &str = r#"
kicked = {}
local function player(id)
    return { UserId = id, Kick = function(self, message) kicked[tostring(self.UserId)] = message end }
end
inServer = { [42] = player(42), [43] = player(43) }
Players = { GetPlayerByUserId = function(self, id) return inServer[id] end }
subscriptions = {}
MessagingService = {
    SubscribeAsync = function(self, topic, callback)
        subscriptions[topic] = callback
        return { Disconnect = function() subscriptions[topic] = nil end }
    end,
}
function push(topic, data)
    subscriptions[topic]({ Data = data, Sent = 1765000000 })
end
events = {}
function onBanEvent(event, kicked)
    table.insert(events, { event.roblox_id, event.action, event.origin, if kicked then kicked.UserId else 0 })
end
"#;

async fn subscribed(extra: &str) -> (World, Harness) {
    let world = World::start().await;
    let h = Harness::new(&world.app, &world.key);
    h.lua.load(ROBLOX).set_name("roblox fakes").exec().unwrap();
    h.client(&format!("guildId = '{DEMO}', onBanEvent = onBanEvent, {extra}"));
    let sub = h.eval("local r = client:subscribeBans(MessagingService, Players) return { r.ok, r.data.topic }");
    assert_eq!(sub, json!([true, "guildkey-bans"]));
    (world, h)
}

/// Calls the subscription's callback with `message` as the message's Data,
/// as guildkey's publish on the default topic would.
#[track_caller]
fn push(h: &Harness, message: &Value) {
    deliver(h, &json!({ "topic": "guildkey-bans", "message": message.to_string() }));
}

/// What Roblox does with an Open Cloud `publishMessage` request body
/// (`{"topic", "message"}`): every server subscribed to the topic gets
/// `{Data = message, Sent = <time>}`. Messages over 1 KiB never arrive.
/// (Once the Open Cloud double is merged, the bodies it records can be
/// delivered here as they are.)
#[track_caller]
fn deliver(h: &Harness, publish: &Value) {
    let topic = publish["topic"].as_str().expect("a topic");
    let message = publish["message"].as_str().expect("a message");
    assert!(topic.len() <= 80 && message.len() <= 1024, "MessagingService refuses this: {publish}");
    h.lua.globals().set("topic", topic).unwrap();
    h.lua.globals().set("message", message).unwrap();
    h.eval("if subscriptions[topic] then push(topic, message) end");
}

fn envelope(events: Value) -> Value {
    json!({ "v": 1, "guild_id": s(DEMO), "events": events })
}

fn event(roblox_id: u64, action: &str) -> Value {
    json!({ "roblox_id": roblox_id, "action": action, "origin": "discord", "at": "2026-12-07T15:00:00Z" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_ban_kicks_the_player_and_a_rejoin_is_refused_from_memory() {
    let (world, h) = subscribed("kickMessage = 'Banned in our Discord'").await;
    world.link(77, ids::PAT_ID);

    let api = json!({ "roblox_id": 77, "action": "ban", "origin": "api", "key_prefix": "gk_live_ab12", "at": "2026-12-07T15:00:01Z" });
    push(&h, &envelope(json!([event(42, "ban"), api])));

    assert_eq!(h.eval("return kicked"), json!({ "42": "Banned in our Discord" }), "only the player in this server");
    assert_eq!(h.eval("return events"), json!([[42, "ban", "discord", 42], [77, "ban", "api", 0]]));
    // Player 77 was not here; joining later, they are refused with no request.
    let rejoin = h.eval("return client:isBanned({ UserId = 77 })");
    assert_eq!((&rejoin["data"]["banned"], &rejoin["fromBanList"]), (&json!(true), &json!(true)), "{rejoin}");
    assert!(h.exchanges().is_empty(), "{:?}", h.paths());

    // An unban takes them off the list: the listener is asked again.
    push(&h, &envelope(json!([event(77, "unban")])));
    assert_eq!(h.eval("return client:isBanned({ UserId = 77 }).data.banned"), false);
    assert_eq!(h.paths(), [format!("GET /v1/guilds/{DEMO}/bans/roblox:77")]);
    assert_eq!(h.eval("return #events"), 3);

    // The connection stops it.
    h.eval("client:subscribeBans(MessagingService, Players, 'other-topic').data.connection:Disconnect()");
    assert_eq!(h.eval("return subscriptions['other-topic'] == nil"), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_unban_takes_a_synced_ban_off_under_both_ids() {
    let (world, h) = subscribed("").await;
    world.ban(ids::STRANGER_ID, Some(43)).await;
    assert_eq!(h.eval("return client:syncBans().data.bans"), 1);
    assert_eq!(h.eval(&format!("return client:isBanned('{}').data.banned", ids::STRANGER_ID)), true);

    push(&h, &envelope(json!([event(43, "unban")])));

    h.clear();
    assert_eq!(h.eval("return client:isBanned(43).data.banned"), false);
    assert_eq!(h.eval(&format!("return client:isBanned('{}').data.banned", ids::STRANGER_ID)), false);
    assert!(h.exchanges().is_empty(), "answered from the synced list: {:?}", h.paths());
    assert_eq!(h.eval("return kicked"), json!([]), "an unban kicks no one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_messages_that_are_not_guildkeys_are_ignored_without_an_error() {
    let (world, h) = subscribed("").await;
    let ban = event(42, "ban");
    let bad: Vec<Value> = vec![
        json!("not json at all"),
        json!({}),
        json!({ "v": 2, "guild_id": s(DEMO), "events": [ban] }),
        json!({ "guild_id": s(DEMO), "events": [ban] }),
        json!({ "v": 1, "guild_id": s(ids::OTHER_GUILD_ID), "events": [ban] }),
        json!({ "v": 1, "guild_id": s(DEMO), "events": "ban" }),
        envelope(json!([{ "roblox_id": "42", "action": "ban" }])),
        envelope(json!([{ "roblox_id": -42, "action": "ban" }])),
        envelope(json!([{ "roblox_id": 42.5, "action": "ban" }])),
        envelope(json!([{ "roblox_id": 42, "action": "kick" }])),
        envelope(json!([{ "action": "ban" }])),
        envelope(json!(["ban 42"])),
    ];

    for message in &bad {
        match message {
            Value::String(text) => {
                h.lua.globals().set("message", text.as_str()).unwrap();
                h.eval("push('guildkey-bans', message)");
            }
            other => push(&h, other),
        }
    }
    // Not even a message table: Roblox would never send these, still no error.
    h.eval("subscriptions['guildkey-bans'](nil)");
    h.eval("subscriptions['guildkey-bans']('ban 42')");
    h.eval("subscriptions['guildkey-bans']({ Data = 42 })");

    assert_eq!(h.eval("return kicked"), json!([]));
    assert_eq!(h.eval("return #events"), 0);
    // A good event beside a malformed one still applies.
    push(&h, &envelope(json!([{ "roblox_id": "x" }, event(43, "ban")])));
    assert_eq!(h.eval("return kicked['43'] ~= nil"), true);
    assert_eq!(h.eval("return #events"), 1);

    // A client not told its guild learns it before subscribing, then
    // ignores another guild's bans.
    let learner = Harness::new(&world.app, &world.key);
    learner.lua.load(ROBLOX).exec().unwrap();
    learner.client("");
    let sub = learner.eval("local r = client:subscribeBans(MessagingService, Players) return r.ok");
    assert_eq!((sub, learner.paths()), (json!(true), vec!["GET /v1/verify".to_owned()]));
    push(&learner, &json!({ "v": 1, "guild_id": s(ids::OTHER_GUILD_ID), "events": [event(42, "ban")] }));
    assert_eq!(learner.eval("return kicked"), json!([]));
    push(&learner, &envelope(json!([event(42, "ban")])));
    assert_eq!(learner.eval("return kicked['42'] ~= nil"), true);

    // Subscribing: a topic MessagingService would refuse, or a failure.
    let long = "t".repeat(81);
    let refused = h.eval(&format!("return client:subscribeBans(MessagingService, Players, '{long}')"));
    assert_failure(&refused, 0, "invalid_argument");
    let failed = h.eval(
        "return client:subscribeBans({ SubscribeAsync = function() error('MessagingService is not available') end }, Players)",
    );
    assert_failure(&failed, 0, "network_error");
    assert!(h.exchanges().is_empty(), "{:?}", h.paths());
}

/// The whole way, with no world: a ban made in Discord reaches the real
/// binary's push, the Open Cloud double records the `publishMessage` it was
/// sent, and that body, delivered as Roblox delivers it, makes the client
/// in the Luau VM kick the player.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_in_discord_is_pushed_by_guildkey_and_kicks_the_player_in_the_vm() {
    let (roblox, app, _) = crate::roblox_push::setup("publish", "").await;
    let key = app.create_key(DEMO, "game server", "bans.read", &[]);
    crate::roblox_push::wait_live(&app, &key).await;
    let h = Harness::new(&app, &key);
    h.lua.load(ROBLOX).set_name("roblox fakes").exec().unwrap();
    // Pat plays as Roblox user 1002 (the link `setup` seeded).
    h.eval("inServer[1002] = { UserId = 1002, Kick = function(self, m) kicked[tostring(self.UserId)] = m end }");
    h.client("kickMessage = 'Banned in our Discord', onBanEvent = onBanEvent");
    let sub = h.eval("return client:subscribeBans(MessagingService, Players).ok");
    assert_eq!(sub, true);

    let user =
        json!({ "id": s(ids::PAT_ID), "username": "pat", "discriminator": "0", "global_name": null, "avatar": null });
    assert_eq!(app.double.dispatch("GUILD_BAN_ADD", json!({ "guild_id": s(DEMO), "user": user })), 1);
    assert!(
        roblox.wait_until(Duration::from_secs(2), |d| !d.published().is_empty()).await,
        "guildkey published the ban within 2 s"
    );

    for published in roblox.published() {
        deliver(&h, &json!({ "topic": published.topic, "message": published.message }));
    }
    assert_eq!(h.eval("return kicked"), json!({ "1002": "Banned in our Discord" }));
    assert_eq!(h.eval("return events"), json!([[1002, "ban", "discord", 1002]]));
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());
}
