//! Many guilds: `DoubleConfig::with_synthetic_guilds(n)` adds `n` generated guilds, each of
//! which a real serenity client receives as a GUILD_CREATE (on the shard that owns it) and
//! caches with its roles, channels and members; their REST answers validate like the demo's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{http_for, init_tracing, start_bot, Api, WAIT};
use discord_double::*;
use poise::serenity_prelude as serenity;

const SYNTHETIC: u32 = 50;

fn world() -> DoubleConfig {
    DoubleConfig::demo().with_synthetic_guilds(SYNTHETIC)
}

/// Guild ids of the GUILD_CREATE frames sent, by gateway connection.
fn guild_creates(double: &Double) -> BTreeMap<u64, Vec<u64>> {
    let mut out: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for f in double.gateway_frames() {
        if f.direction == Direction::Sent && f.t.as_deref() == Some("GUILD_CREATE") {
            let id = f.d["id"].as_str().and_then(|s| s.parse().ok()).expect("guild id");
            out.entry(f.connection).or_default().push(id);
        }
    }
    out
}

async fn wait_for_cached_guilds(cache: &serenity::Cache, n: usize) {
    for _ in 0..400 {
        if cache.guild_count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("serenity cached {} of {n} guilds", cache.guild_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_receives_and_caches_every_synthetic_guild() {
    init_tracing();
    let double = Double::start(world()).await.expect("double");
    let all: BTreeSet<u64> = double.config().guilds.iter().map(|g| g.id).collect();
    assert_eq!(all.len(), SYNTHETIC as usize + 2);

    let bot = start_bot(&double).await;
    double.wait_for_ready(WAIT).await.expect("ready");

    // One GUILD_CREATE per guild, each guild once, on the one connection.
    let sent = guild_creates(&double);
    assert_eq!(sent.len(), 1, "one connection");
    let ids: Vec<u64> = sent.into_values().next().unwrap();
    assert_eq!(ids.len(), SYNTHETIC as usize + 2);
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), all);
    let ready = double.gateway_frames().into_iter().find(|f| f.t.as_deref() == Some("READY")).expect("READY");
    assert_eq!(ready.d["guilds"].as_array().map(Vec::len), Some(all.len()));

    // serenity read every one of them into its cache, with roles, channels and members.
    wait_for_cached_guilds(&bot.cache, all.len()).await;
    for index in [0, SYNTHETIC / 2, SYNTHETIC - 1] {
        let id = synthetic_guild_id(index);
        let guild = bot.cache.guild(serenity::GuildId::new(id)).expect("cached").clone();
        assert_eq!(guild.name, format!("Guild {index:05}"));
        assert_eq!(guild.channels.len(), 3);
        assert_eq!(guild.roles.len(), 4, "@everyone and three roles");
        assert_eq!(guild.members.len(), 1, "without GUILD_PRESENCES only the bot's member");
        assert_eq!(guild.member_count, 5);
        let me = &guild.members[&serenity::UserId::new(BOT_USER_ID)];
        let bot_role = &guild.roles[&me.roles[0]];
        assert_eq!((bot_role.name.as_str(), bot_role.managed), ("GuildKey", true));
        assert!(bot_role.permissions.ban_members() && bot_role.permissions.manage_roles());
        let everyone = &guild.roles[&serenity::RoleId::new(id)];
        assert_eq!(everyone.name, "@everyone");
    }

    // Their REST answers validate against Discord's schema, like the demo guild's.
    let api = Api::new(&double, "API%20key%20bench");
    let g = synthetic_guild_id(SYNTHETIC - 1);
    let (s, v) = api.call("GET", &format!("/guilds/{g}?with_counts=true"), None).await;
    assert_eq!((s, v["approximate_member_count"].as_u64()), (200, Some(5)));
    let (s, roles) = api.call("GET", &format!("/guilds/{g}/roles"), None).await;
    assert_eq!((s, roles.as_array().map(Vec::len)), (200, Some(4)));
    let (s, channels) = api.call("GET", &format!("/guilds/{g}/channels"), None).await;
    assert_eq!((s, channels.as_array().map(Vec::len)), (200, Some(3)));
    let (s, me) = api.call("GET", &format!("/guilds/{g}/members/{BOT_USER_ID}"), None).await;
    assert_eq!((s, me["roles"][0].as_str()), (200, Some((g + 2).to_string().as_str())));
    let channel = channels[0]["id"].as_str().unwrap().to_string();
    let (s, _) =
        api.call("POST", &format!("/channels/{channel}/messages"), Some(serde_json::json!({"content": "hi"}))).await;
    assert_eq!(s, 200);
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_shards_each_shard_gets_only_the_guilds_it_owns() {
    init_tracing();
    const SHARDS: u32 = 2;
    let double = Double::start(world()).await.expect("double");
    let all: BTreeSet<u64> = double.config().guilds.iter().map(|g| g.id).collect();

    let mut client =
        serenity::ClientBuilder::new_with_http(http_for(&double), serenity::GatewayIntents::non_privileged())
            .await
            .expect("client");
    let cache = client.cache.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = client.start_shards(SHARDS).await {
            eprintln!("client stopped: {e}");
        }
    });
    double.wait_for_shards(SHARDS, WAIT).await.expect("both shards ready");

    // Which shard each connection identified as.
    let frames = double.gateway_frames();
    let shard_of_conn: BTreeMap<u64, u32> = frames
        .iter()
        .filter(|f| f.direction == Direction::Received && f.op == 2)
        .map(|f| (f.connection, f.d["shard"][0].as_u64().expect("sharded identify") as u32))
        .collect();
    assert_eq!(shard_of_conn.values().copied().collect::<BTreeSet<_>>(), (0..SHARDS).collect());

    // Every GUILD_CREATE went to the owning shard, and together they hold every guild once.
    let mut seen = Vec::new();
    for (conn, ids) in guild_creates(&double) {
        let shard = shard_of_conn[&conn];
        for id in &ids {
            assert_eq!(shard_of(*id, SHARDS), shard, "guild {id} sent to shard {shard}");
        }
        let expected = all.iter().filter(|g| shard_of(**g, SHARDS) == shard).count();
        assert_eq!(ids.len(), expected, "shard {shard}");
        assert!(ids.len() >= SYNTHETIC as usize / 2 - 1, "the synthetic guilds spread over both shards");
        seen.extend(ids);
    }
    seen.sort_unstable();
    assert_eq!(seen, all.iter().copied().collect::<Vec<_>>());

    // READY lists only the shard's own guilds, too.
    for f in frames.iter().filter(|f| f.direction == Direction::Sent && f.t.as_deref() == Some("READY")) {
        let shard = shard_of_conn[&f.connection];
        let listed: Vec<u64> = f.d["guilds"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["id"].as_str().and_then(|s| s.parse().ok()))
            .collect();
        assert!(listed.iter().all(|g| shard_of(*g, SHARDS) == shard));
        assert_eq!(f.d["shard"], serde_json::json!([shard, SHARDS]));
    }

    wait_for_cached_guilds(&cache, all.len()).await;
    let frames_ok = double.gateway_frames().iter().filter(|f| f.t.as_deref() == Some("GUILD_CREATE")).all(|f| {
        serde_json::from_value::<serenity::Guild>(f.d.clone()).is_ok()
            && f.d["members"].as_array().is_some_and(|m| !m.is_empty())
    });
    assert!(frames_ok, "every GUILD_CREATE reads as a serenity Guild");
    task.abort();
    double.assert_no_violations();
}
