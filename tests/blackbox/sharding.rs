//! Gateway sharding across processes: two `guildkey run` processes on one
//! database, each running two of four shards, against the Discord double,
//! which sends each guild's events to the shard that owns it
//! (`(guild_id >> 22) % shards`). Every guild's command is answered, once.

use crate::support;

use std::time::Duration;

use discord_double::{shard_of, Double, DoubleConfig, GuildSeed, MemberSeed, RoleSeed};
use support::{ids, spawn_against, Options};

const SHARDS: u32 = 4;
const WAIT: Duration = Duration::from_secs(20);

/// The demo world plus one small guild per shard (owned by Alice), so every
/// shard of four owns at least one guild.
fn world() -> DoubleConfig {
    let mut cfg = DoubleConfig::demo();
    let base = 1_500_000_000_000_000_000u64 >> 22;
    for k in 0..u64::from(SHARDS) {
        let id = ((base + k) << 22) | 1;
        let bot_role = id + 3;
        cfg.guilds.push(
            GuildSeed {
                id,
                name: format!("Shard guild {k}"),
                icon: None,
                owner_id: ids::ALICE_ID,
                channels: vec![(id + 2, "general".into())],
                roles: vec![RoleSeed::new(bot_role, "GuildKey", 1, ids::BOT_ROLE_PERMISSIONS)],
                members: vec![
                    MemberSeed::new(ids::ALICE_ID, "alice", &[]),
                    MemberSeed::new(ids::BOT_USER_ID, "GuildKey", &[bot_role]),
                ],
            }
            .resolve(),
        );
    }
    cfg
}

fn shard_env(first_last: &str, db_url: Option<String>) -> Options {
    let env = [("GUILDKEY_SHARDS", SHARDS.to_string().as_str()), ("GUILDKEY_SHARD_IDS", first_last)]
        .into_iter()
        .chain([("GUILDKEY_REGISTER_COMMANDS", "global")])
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Options { env, db_url, ..Options::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_two_shards_each_answer_every_guild_once() {
    let double = Double::start(world()).await.expect("double");
    let guilds: Vec<(u64, u64)> = double.config().guilds.iter().map(|g| (g.id, g.owner_id)).collect();
    let owners: std::collections::BTreeSet<u32> = guilds.iter().map(|(g, _)| shard_of(*g, SHARDS)).collect();
    assert_eq!(owners.len(), SHARDS as usize, "the world spreads over every shard");

    let first = spawn_against(double.clone(), shard_env("0-1", None)).await;
    let second = spawn_against(double.clone(), shard_env("2-3", Some(first.db_url.clone()))).await;
    double.wait_for_shards(SHARDS, WAIT).await.expect("all four shards identify");

    for &(guild, owner) in &guilds {
        let sent = double
            .slash(guild, owner)
            .subcommand("apikey", "list")
            .send()
            .await
            .unwrap_or_else(|e| panic!("guild {guild}: {e}"));
        let reply = double.wait_for_response(&sent, WAIT).await.unwrap_or_else(|e| panic!("guild {guild}: {e}"));
        assert!(reply.ephemeral() && reply.text().contains("active keys"), "guild {guild}: {}", reply.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let callbacks = double
            .calls_to("POST", "/interactions/{interaction_id}/{interaction_token}/callback")
            .into_iter()
            .filter(|c| c.path.contains(&sent.id.to_string()))
            .count();
        assert_eq!(callbacks, 1, "guild {guild} (shard {}) answered once", shard_of(guild, SHARDS));
    }
    for app in [&first, &second] {
        assert!(app.logs().iter().any(|l| l.contains("connected to Discord")), "a bot in each process");
    }
    double.assert_no_violations();
}

#[tokio::test]
async fn a_bad_shard_count_or_range_is_refused_at_start_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guildkey"))
        .args(["config", "check"])
        .env_clear()
        .env("GUILDKEY_SHARDS", "4")
        .env("GUILDKEY_SHARD_IDS", "3-4")
        .output()
        .expect("run guildkey");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shard_ids") && stderr.lines().count() == 1, "{stderr}");
}
