//! The loader's rules, one table or case list each.

use super::*;

#[test]
fn shards_are_auto_or_a_count_and_shard_ids_a_range_inside_them() {
    let load = |text: &str, env: &[(&str, &str)]| {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        super::Config::from_parts(Some(text), &|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    };
    let cfg = load("", &[]).unwrap();
    assert_eq!((cfg.discord.shards, cfg.discord.shard_ids), (super::Shards::Auto, None));
    let cfg = load("[discord]\nshards = 4\nshard_ids = \"2-3\"\n", &[]).unwrap();
    assert_eq!((cfg.discord.shards, cfg.discord.shard_ids), (super::Shards::Count(4), Some((2, 3))));
    let cfg = load("[discord]\nshards = \"auto\"\n", &[("GUILDKEY_SHARDS", "2"), ("GUILDKEY_SHARD_IDS", "1")]).unwrap();
    assert_eq!((cfg.discord.shards, cfg.discord.shard_ids), (super::Shards::Count(2), Some((1, 1))));
    for (text, env, key) in [
        ("[discord]\nshards = 0\n", vec![], "discord.shards"),
        ("[discord]\nshards = \"many\"\n", vec![], "discord.shards"),
        ("[discord]\nshards = true\n", vec![], "discord"),
        ("[discord]\nshard_ids = \"0-1\"\n", vec![], "discord.shard_ids"),
        ("[discord]\nshards = 4\nshard_ids = \"3-4\"\n", vec![], "discord.shard_ids"),
        ("[discord]\nshards = 4\nshard_ids = \"2-1\"\n", vec![], "discord.shard_ids"),
        ("", vec![("GUILDKEY_SHARDS", "-1")], "GUILDKEY_SHARDS"),
    ] {
        let err = load(text, &env).unwrap_err();
        assert!(err.key.starts_with(key), "{text:?} {env:?}: {err}");
    }
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_parts(Some(text), &move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

#[test]
fn defaults_match_the_spec() {
    let cfg = load("", &[]).unwrap();
    assert_eq!(cfg.discord.api_base_url, "https://discord.com");
    assert_eq!(cfg.discord.register_commands, RegisterCommands::Global);
    assert_eq!(cfg.database.url, "sqlite://data/guildkey.db?mode=rwc");
    assert_eq!(cfg.http.bind.to_string(), "127.0.0.1:8080");
    assert!(!cfg.http.trust_forwarded_for);
    assert_eq!(cfg.http.max_body_bytes, 16_384);
    assert_eq!(cfg.keys.max_per_guild, 3);
    assert_eq!(cfg.keys.prefix, "gk");
    assert_eq!(cfg.keys.default_rate_limit_per_minute, 60);
    assert_eq!(cfg.keys.last_used_flush_seconds, 5);
    assert_eq!(cfg.log.format, LogFormat::Pretty);
    assert!(!cfg.discord_is_proxied());
}

#[test]
fn environment_overrides_the_file() {
    let cfg = load(
        "[http]\nbind = \"127.0.0.1:1\"\n[discord]\nregister_commands = \"none\"\n",
        &[("GUILDKEY_HTTP_BIND", "127.0.0.1:0"), ("GUILDKEY_REGISTER_COMMANDS", "guild:42")],
    )
    .unwrap();
    assert_eq!(cfg.http.bind.port(), 0);
    assert_eq!(cfg.discord.register_commands, RegisterCommands::Guild(42));
}

#[test]
fn bind_takes_a_host_name_and_port() {
    let cfg = load("[http]\nbind = \"localhost:0\"\n", &[]).unwrap();
    assert!(cfg.http.bind.ip().is_loopback(), "{}", cfg.http.bind);
    assert_eq!(cfg.http.bind.port(), 0);
    for bad in ["localhost", "localhost:http", ":8080", "localhost:70000"] {
        let e = load(&format!("[http]\nbind = \"{bad}\"\n"), &[]).unwrap_err().to_string();
        assert!(e.contains("http.bind") && e.contains("not an address"), "{bad}: {e}");
    }
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("[http]\nbind = \"nope\"", "http.bind"),
        ("[http]\nbind = 5", "http.bind"),
        ("[http]\nmax_body_bytes = 0", "http.max_body_bytes"),
        ("[http]\ntrust_forwarded_for = \"yes\"", "http.trust_forwarded_for"),
        ("[keys]\nmax_per_guild = -1", "keys.max_per_guild"),
        ("[keys]\nprefix = \"GK_\"", "keys.prefix"),
        ("[keys]\ndefault_rate_limit_per_minute = 0", "keys.default_rate_limit_per_minute"),
        ("[keys]\nlast_used_flush_seconds = \"5\"", "keys.last_used_flush_seconds"),
        ("[keys]\nexpiry_check_seconds = 0", "keys.expiry_check_seconds"),
        ("[keys]\nexpiry_check_seconds = 3601", "keys.expiry_check_seconds"),
        ("[log]\nformat = \"xml\"", "log.format"),
        ("[run]\nonly = \"gateway\"", "run.only"),
        ("[run]\nonly = 1", "run.only"),
        ("[run]\nonyl = \"http\"", "run.onyl"),
        ("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]", "http.trusted_proxies"),
        ("[http]\ntrusted_proxies = \"10.0.0.1, proxy.local\"", "http.trusted_proxies"),
        ("[http]\ntrusted_proxies = [\"10.0.0.1\", 5]", "http.trusted_proxies"),
        ("[http]\ntrusted_proxies = 5", "http.trusted_proxies"),
        ("[discord]\nregister_commands = \"guild:abc\"", "discord.register_commands"),
        ("[discord]\napi_base_url = \"ftp://x\"", "discord.api_base_url"),
        ("[database]\nurl = \"mysql://x\"", "database.url"),
        ("[database]\nurl = \"postgres://x:99999999/db\"", "database.url"),
        ("[database]\nurl = \"sqlite://\"", "database.url"),
        ("[database]\nurl = \"sqlite::memory:\"", "database.url"),
        ("[database]\nurl = \"sqlite://x.db?mode=memory\"", "database.url"),
        ("[http]\nbnid = \"1\"", "http.bnid"),
        ("[htp]\nbind = \"1\"", "htp"),
        ("[http\n", "config file"),
    ];
    for (text, key) in cases {
        let err = load(text, &[]).unwrap_err();
        assert_eq!(err.key, key, "{text:?} gave {err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
    let err = load("", &[("GUILDKEY_LOG_FORMAT", "xml")]).unwrap_err();
    assert!(err.key.starts_with("GUILDKEY_LOG_FORMAT"), "{err}");
}

#[test]
fn the_process_role_is_both_by_default_or_http_or_bot_from_the_file_or_the_environment() {
    assert_eq!(load("", &[]).unwrap().run.only, ProcessRole::Both);
    assert_eq!(load("[run]\nonly = \"http\"\n", &[]).unwrap().run.only, ProcessRole::Http);
    let cfg = load("[run]\nonly = \"http\"\n", &[("GUILDKEY_ONLY", "bot")]).unwrap();
    assert_eq!(cfg.run.only, ProcessRole::Bot);
    assert!(cfg.describe().contains("run.only = bot"), "{}", cfg.describe());
    assert_eq!(load("", &[("GUILDKEY_ONLY", "both")]).unwrap().run.only, ProcessRole::Both);
    let err = load("", &[("GUILDKEY_ONLY", "listener")]).unwrap_err();
    assert_eq!(err.key, "GUILDKEY_ONLY (run.only)", "{err}");
    assert!(err.to_string().contains("'listener' is not http"), "{err}");
    let roles = [ProcessRole::Both, ProcessRole::Http, ProcessRole::Bot];
    assert_eq!(roles.map(|r| (r.runs_http(), r.runs_bot())), [(true, true), (true, false), (false, true)]);
}

#[test]
fn control_characters_in_bad_values_and_unknown_keys_are_escaped_to_keep_one_line() {
    // Shrunk inputs found by tests/properties.rs.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        ("[discord]\napi_base_url = \"guild:\\n1\"\n", &[], "discord.api_base_url: 'guild:\\n1'"),
        ("", &[("DISCORD_API_BASE_URL", "a\r0")], "DISCORD_API_BASE_URL (discord.api_base_url): 'a\\r0'"),
        ("[log]\n\"a\\nb\" = 1\n", &[], "log.a\\nb: unknown key"),
    ];
    for (text, env, want) in cases {
        let err = load(text, env).unwrap_err().to_string();
        assert!(!err.contains(['\n', '\r']), "{err:?}");
        assert!(err.starts_with(want), "{text:?} {env:?} gave {err:?}");
    }
}

#[test]
fn the_example_config_documents_every_key_with_its_default() {
    let example = include_str!("../../config.example.toml");
    let cfg = load(example, &[]).expect("config.example.toml loads");
    assert_eq!(cfg.describe(), Config::default().describe());
    for line in Config::default().describe().lines() {
        let key = line.split(" = ").next().unwrap();
        let leaf = key.rsplit('.').next().unwrap();
        assert!(example.contains(leaf), "config.example.toml does not document {key}");
    }
}

#[test]
fn trusted_proxies_take_an_array_a_comma_separated_string_or_the_environment() {
    let want = "http.trusted_proxies = 10.0.0.0/8, 192.0.2.1/32, 2001:db8::/32";
    for text in [
        "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\", \"2001:db8::/32\"]\n",
        "[http]\ntrusted_proxies = \"10.1.2.3/8, 192.0.2.1 ,2001:db8::/32\"\n",
        "[http]\ntrusted_proxies = [\"10.0.0.0/8, 192.0.2.1\", \"2001:db8::/32\", \"10.0.0.0/8\"]\n",
    ] {
        let cfg = load(text, &[]).unwrap();
        assert!(cfg.describe().contains(want), "{text:?}: {}", cfg.describe());
    }
    let cfg =
        load("[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n", &[("GUILDKEY_HTTP_TRUSTED_PROXIES", "192.0.2.0/24,::1")])
            .unwrap();
    assert!(cfg.describe().contains("http.trusted_proxies = 192.0.2.0/24, ::1/128"), "{}", cfg.describe());
    let err = load("", &[("GUILDKEY_HTTP_TRUSTED_PROXIES", "192.0.2.0/24,nope")]).unwrap_err();
    assert_eq!(err.key, "GUILDKEY_HTTP_TRUSTED_PROXIES (http.trusted_proxies)", "{err}");
    assert!(err.to_string().contains("'nope'"), "{err}");
}

#[test]
fn forwarding_without_trusted_proxies_warns_and_so_do_proxies_without_forwarding() {
    let warnings = |text: &str| load(text, &[]).unwrap().http.warnings();
    assert!(warnings("").is_empty());
    let open = warnings("[http]\ntrust_forwarded_for = true\n");
    assert!(open.len() == 1 && open[0].contains("http.trusted_proxies is empty"), "{open:?}");
    assert!(warnings("[http]\ntrust_forwarded_for = true\ntrusted_proxies = \"10.0.0.0/8\"\n").is_empty());
    let unused = warnings("[http]\ntrusted_proxies = \"10.0.0.0/8\"\n");
    assert!(unused.len() == 1 && unused[0].contains("X-Forwarded-For is ignored"), "{unused:?}");
}

#[test]
fn webhook_settings_default_to_public_https_and_take_retry_waits() {
    let cfg = load("", &[]).unwrap();
    assert!(!cfg.webhooks.allow_http && !cfg.webhooks.allow_private_addresses);
    assert!(cfg.describe().contains("webhooks.retry_delays = 5s, 1m, 5m, 30m, 2h, 5h, 10h"), "{}", cfg.describe());
    let cfg = load(
        "[webhooks]\nallow_http = true\nallow_private_addresses = true\nretry_delays = [\"100ms\", \"2s\"]\n",
        &[],
    )
    .unwrap();
    assert!(cfg.webhooks.allow_http && cfg.webhooks.allow_private_addresses);
    let ms: Vec<u128> = cfg.webhooks.retry_delays.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [100, 2000]);
    assert!(cfg.describe().contains("webhooks.retry_delays = 100ms, 2s"), "{}", cfg.describe());
    for (text, needle) in [
        ("[webhooks]\nretry_delays = []\n", "1 to 20"),
        ("[webhooks]\nretry_delays = [\"5\"]\n", "'5'"),
        ("[webhooks]\nretry_delays = [\"0s\"]\n", "'0s'"),
        ("[webhooks]\nretry_delays = \"5x\"\n", "'5x'"),
        ("[webhooks]\nretry_delays = [\"20h\", \"5h\"]\n", "24h"),
        ("[webhooks]\nallow_http = \"yes\"\n", "true or false"),
        ("[webhooks]\nallow_privat_addresses = true\n", "unknown key"),
    ] {
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("webhooks.") && err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn usage_settings_default_to_48_hours_90_days_and_200_log_entries() {
    let cfg = load("", &[]).unwrap();
    assert_eq!(
        cfg.usage,
        UsageConfig { minute_retention_hours: 48, hour_retention_days: 90, request_log_per_key: 200 }
    );
    let cfg =
        load("[usage]\nminute_retention_hours = 2\nhour_retention_days = 1\nrequest_log_per_key = 0\n", &[]).unwrap();
    assert_eq!(cfg.usage, UsageConfig { minute_retention_hours: 2, hour_retention_days: 1, request_log_per_key: 0 });
    assert!(cfg.describe().contains("usage.request_log_per_key = 0"), "{}", cfg.describe());
    for (text, needle) in [
        ("[usage]\nminute_retention_hours = 1\n", "out of range; use 2 to 744"),
        ("[usage]\nhour_retention_days = 0\n", "out of range; use 1 to 3660"),
        ("[usage]\nrequest_log_per_key = 100001\n", "out of range; use 0 to 100000"),
        ("[usage]\nrequest_log_per_key = \"200\"\n", "must be a whole number"),
        (
            "[usage]\nminute_retention_hours = 72\nhour_retention_days = 2\n",
            "shorter than usage.minute_retention_hours",
        ),
        ("[usage]\nretention = 3\n", "unknown key"),
    ] {
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("usage.") && err.contains(needle) && !err.contains('\n'), "{text:?}: {err}");
    }
}

#[test]
fn the_token_is_masked_everywhere() {
    let cfg = load("", &[("DISCORD_TOKEN", "MTIz.secret.token-value")]).unwrap();
    let shown = format!("{} {:?}", cfg.describe(), cfg);
    assert!(!shown.contains("secret.token-value"), "{shown}");
    assert!(cfg.describe().contains("discord.token = ********"));
}

#[test]
fn outside_service_urls_take_https_or_http_to_a_loopback_address_only() {
    let cfg = load("", &[]).unwrap();
    assert_eq!(cfg.roblox.open_cloud_base_url, "https://apis.roblox.com");
    assert_eq!(cfg.http.public_url, None);
    for ok in ["http://127.0.0.1:9000", "http://[::1]:80/", "http://localhost:1", "https://relay.example.com/x/"] {
        let cfg = load(&format!("[roblox]\nrover_base_url = \"{ok}\""), &[]).unwrap();
        assert_eq!(cfg.roblox.rover_base_url, ok.trim_end_matches('/'));
    }
    for bad in ["http://10.0.0.1", "http://example.com", "ftp://127.0.0.1", "https://", "http://127.0.0.1.example.com"]
    {
        let err = load(&format!("[roblox]\nbloxlink_base_url = \"{bad}\""), &[]).unwrap_err().to_string();
        assert!(err.starts_with("roblox.bloxlink_base_url") && err.contains("loopback"), "{bad}: {err}");
    }
    let err = load("", &[("GUILDKEY_ROBLOX_OPEN_CLOUD_BASE_URL", "http://192.168.1.2")]).unwrap_err().to_string();
    assert!(err.contains("GUILDKEY_ROBLOX_OPEN_CLOUD_BASE_URL (roblox.open_cloud_base_url)"), "{err}");
    let cfg = load("", &[("GUILDKEY_HTTP_PUBLIC_URL", "https://keys.example.com")]).unwrap();
    assert_eq!(cfg.http.public_url.as_deref(), Some("https://keys.example.com"));
}
