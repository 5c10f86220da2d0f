//! The Luau client against the real listener.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_returns_the_calling_key_and_learns_its_guild() {
    let app = spawn_app().await;
    let key = app.create_key(DEMO, "game server", "bans.read", &[]);
    tokio::time::sleep(CROSS_PROCESS).await;
    let h = Harness::new(&app, &key);
    h.client("");

    let result = h.eval("return client:verify()");

    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["status"], 200);
    let data = &result["data"];
    assert_eq!(data["guild_id"], s(DEMO));
    assert_eq!(data["name"], "game server");
    assert_eq!(data["scopes"], json!(["bans.read"]));
    assert_eq!(data["environment"], "live");
    assert_eq!(data["prefix"], &key[..12]);
    // The listener's X-RateLimit-* headers come with the result.
    let limit = &result["rateLimit"];
    assert_eq!(limit["limit"], data["rate_limit_per_minute"], "{result}");
    assert!(limit["remaining"].as_u64().is_some_and(|r| r < limit["limit"].as_u64().unwrap()), "{result}");
    assert!(limit["reset"].as_u64().is_some_and(|r| r <= 60), "{result}");
    let exchanges = h.exchanges();
    assert_eq!(h.paths(), ["GET /v1/verify"]);
    assert!(exchanges[0].bearer_ok, "the key goes in Authorization: Bearer");
    assert_eq!(exchanges[0].body, None, "a GET sends no body");

    // The guild was learnt: a ban check needs no second verify.
    h.clear();
    assert_eq!(h.eval(&format!("return client:isBanned('{}').ok", ids::PAT_ID)), true);
    assert_eq!(h.paths(), [format!("GET /v1/guilds/{DEMO}/bans/{}", ids::PAT_ID)]);

    // Printing the client in Studio shows no secret, nor does any field.
    let shown = h.eval("return tostring(client)").as_str().unwrap().to_owned();
    assert!(shown.contains(&key[..12]) && !shown.contains(&key), "{shown}");
    let fields = h.eval("local t = {} for k, v in client do t[k] = tostring(v) end return t");
    assert!(!fields.to_string().contains(&key), "the key is not a field of the client");

    // A Roblox Secret (HttpService:GetSecret) works too: the module never
    // reads it, only asks it for the header (here a fake with its method).
    let secret: Table =
        h.lua.load("return { AddPrefix = function(self, prefix) return prefix .. API_KEY end }").eval().unwrap();
    let new: Function = h.module.get("new").unwrap();
    h.lua.globals().set("client", new.call::<Table>((app.base.as_str(), secret, h.options(""))).unwrap()).unwrap();
    h.clear();
    assert_eq!(h.eval("return client:verify().data.name"), "game server");
    assert!(h.exchanges()[0].bearer_ok, "Authorization: the Secret with the Bearer prefix");
    assert_eq!(h.eval("return tostring(client)"), format!("GuildKey({}, a Secret)", app.base));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_banned_answers_from_the_listener_then_from_its_cache_until_the_ttl_passes() {
    let app = spawn_app().await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("exploiting"));
    let key = app.create_key(DEMO, "checker", "bans.read", &[]);
    tokio::time::sleep(CROSS_PROCESS).await;
    let h = Harness::new(&app, &key);
    h.client("cacheTtl = 10");

    let not_banned = h.eval(&format!("return client:isBanned('{}')", ids::PAT_ID));
    assert_eq!(not_banned["ok"], true, "{not_banned}");
    assert_eq!(not_banned["data"]["banned"], false, "{not_banned}");
    assert_eq!(not_banned["cached"], Value::Null, "the first answer is fresh");
    let banned = h.eval(&format!("return client:isBanned('{}')", ids::STRANGER_ID));
    assert_eq!(banned["data"], json!({ "banned": true, "reason": "exploiting" }), "{banned}");
    assert_eq!(
        h.paths(),
        [
            "GET /v1/verify".to_owned(),
            format!("GET /v1/guilds/{DEMO}/bans/{}", ids::PAT_ID),
            format!("GET /v1/guilds/{DEMO}/bans/{}", ids::STRANGER_ID),
        ],
        "the guild id is fetched once, lazily"
    );

    // Within the TTL: the same answers, no request.
    h.clear();
    h.advance_clock(9.5);
    let again = h.eval(&format!("return client:isBanned('{}')", ids::STRANGER_ID));
    assert_eq!((&again["ok"], &again["cached"], &again["data"]["banned"]), (&json!(true), &json!(true), &json!(true)));
    assert_eq!(h.eval(&format!("return client:isBanned('{}').data.banned", ids::PAT_ID)), false);
    assert!(h.exchanges().is_empty(), "answered from the cache: {:?}", h.paths());

    // After it: asked again.
    h.advance_clock(1.0);
    let fresh = h.eval(&format!("return client:isBanned('{}')", ids::STRANGER_ID));
    assert_eq!((&fresh["cached"], &fresh["data"]["banned"]), (&Value::Null, &json!(true)), "{fresh}");
    assert_eq!(h.paths(), [format!("GET /v1/guilds/{DEMO}/bans/{}", ids::STRANGER_ID)]);

    // cacheTtl = 0 turns the cache off.
    let h = Harness::new(&app, &key);
    h.client(&format!("cacheTtl = 0, guildId = '{DEMO}'"));
    for _ in 0..2 {
        assert_eq!(h.eval(&format!("return client:isBanned('{}').data.banned", ids::PAT_ID)), false);
    }
    assert_eq!(h.exchanges().len(), 2, "no cache: {:?}", h.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_and_roles_change_the_guild_on_discord() {
    let app = spawn_app().await;
    let key = app.create_key(DEMO, "moderation", "bans.read,bans.write,roles.write", &[]);
    tokio::time::sleep(CROSS_PROCESS).await;
    let h = Harness::new(&app, &key);
    // With the guild given, no verify is needed.
    h.client(&format!("guildId = '{DEMO}'"));
    let stranger = s(ids::STRANGER_ID);
    assert_eq!(h.eval(&format!("return client:isBanned('{stranger}').data.banned")), false);

    let banned =
        h.eval(&format!("return client:ban('{stranger}', {{ reason = 'aimbot', deleteMessageSeconds = 3600 }})"));

    assert_eq!(banned["ok"], true, "{banned}");
    assert_eq!((&banned["data"]["banned"], &banned["data"]["changed"]), (&json!(true), &json!(true)), "{banned}");
    assert_eq!(banned["data"]["dry_run"], false);
    let reason =
        app.double.bans(DEMO).get(&ids::STRANGER_ID).cloned().flatten().expect("banned on Discord with a reason");
    assert!(reason.contains("aimbot"), "{reason}");
    let put = h.exchanges().into_iter().find(|e| e.method == "PUT").expect("a PUT");
    let body: Value = serde_json::from_str(put.body.as_deref().expect("a body")).unwrap();
    assert_eq!(body, json!({ "reason": "aimbot", "delete_message_seconds": 3600 }));
    // The client forgot its cached "not banned".
    let now = h.eval(&format!("return client:isBanned('{stranger}')"));
    assert_eq!((&now["data"]["banned"], &now["cached"]), (&json!(true), &Value::Null), "{now}");

    // Idempotent, and a ban without options sends no body (not `[]`).
    h.clear();
    let again = h.eval(&format!("return client:ban('{stranger}')"));
    assert_eq!((&again["ok"], &again["data"]["changed"]), (&json!(true), &json!(false)), "{again}");
    assert_eq!(h.exchanges()[0].body, None);

    let unbanned = h.eval(&format!("return client:unban('{stranger}')"));
    assert_eq!(
        (&unbanned["data"]["banned"], &unbanned["data"]["changed"]),
        (&json!(false), &json!(true)),
        "{unbanned}"
    );
    assert!(!app.double.bans(DEMO).contains_key(&ids::STRANGER_ID));

    let (pat, verified) = (s(ids::PAT_ID), s(ids::VERIFIED_ROLE_ID));
    let added = h.eval(&format!("return client:addRole('{pat}', '{verified}')"));
    assert_eq!(added["ok"], true, "{added}");
    assert_eq!(
        (&added["data"]["has_role"], &added["data"]["changed"], &added["data"]["role_id"]),
        (&json!(true), &json!(true), &json!(verified))
    );
    assert!(app.double.member_roles(DEMO, ids::PAT_ID).contains(&ids::VERIFIED_ROLE_ID));
    let removed = h.eval(&format!("return client:removeRole('{pat}', '{verified}')"));
    assert_eq!((&removed["data"]["has_role"], &removed["data"]["changed"]), (&json!(false), &json!(true)), "{removed}");
    assert!(!app.double.member_roles(DEMO, ids::PAT_ID).contains(&ids::VERIFIED_ROLE_ID));
    assert!(h.exchanges().iter().all(|e| e.bearer_ok));
    assert!(!h.paths().iter().any(|p| p.contains("/v1/verify")), "guildId was given: {:?}", h.paths());

    // guildkey refusing (the owner is never a key's to ban) is final: no retry.
    h.clear();
    let refused = h.eval(&format!("return client:ban('{}')", ids::ALICE_ID));
    assert_failure(&refused, 403, "member_protected");
    assert_eq!(h.exchanges().len(), 1, "member_protected is not retried: {:?}", h.paths());
    // So is Discord refusing.
    h.clear();
    app.double.fault(discord_double::FaultRule::on("PUT", "/guilds/{guild_id}/bans/{user_id}").discord_error(
        403,
        50013,
        "Missing Permissions",
    ));
    let refused = h.eval(&format!("return client:ban('{}')", ids::DANA_ID));
    app.double.clear_faults();
    assert_failure(&refused, 502, "discord_error");
    assert!(refused["message"].as_str().unwrap().contains("Missing Permissions"), "{refused}");
    assert_eq!(h.exchanges().len(), 1, "discord_error is not retried: {:?}", h.paths());
    assert!(h.sleeps().is_empty());

    // Bad ids never reach the network.
    h.clear();
    assert_failure(&h.eval("return client:ban(1.2e18)"), 0, "invalid_argument");
    assert_failure(&h.eval("return client:addRole('123', 'admin')"), 0, "invalid_argument");
    assert_failure(&h.eval("return client:isBanned(nil)"), 0, "invalid_argument");
    assert_failure(
        &h.eval(&format!("return client:ban('{pat}', {{ deleteMessageSeconds = -1 }})")),
        0,
        "invalid_argument",
    );
    assert!(h.exchanges().is_empty(), "{:?}", h.paths());
    // A number is a Roblox UserId (the answers: roblox::batching).
    h.eval("return client:isBanned(42)");
    assert_eq!(h.paths(), [format!("GET /v1/guilds/{DEMO}/bans/roblox:42")]);
    app.double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_come_back_as_typed_results_and_are_not_retried() {
    let app = spawn_app().await;
    let revoked = app.create_key(DEMO, "old", "bans.read", &[]);
    let out = app.cli(&["keys", "revoke", &revoked[..12]]);
    assert!(out.status.success(), "revoke: {}", String::from_utf8_lossy(&out.stderr));
    let reader = app.create_key(DEMO, "reader", "bans.read", &[]);
    tokio::time::sleep(CROSS_PROCESS).await;

    // 401: a revoked key, from verify and from a call that needs the guild.
    let h = Harness::new(&app, &revoked);
    h.client("");
    let result = h.eval("return client:verify()");
    assert_failure(&result, 401, "key_revoked");
    let result = h.eval(&format!("return client:isBanned('{}')", ids::PAT_ID));
    assert_failure(&result, 401, "key_revoked");
    assert_eq!(h.paths(), ["GET /v1/verify", "GET /v1/verify"], "no ban check without a guild, no retries");
    assert!(h.sleeps().is_empty());

    // 401: a well-formed key (right checksum) that no one issued.
    let unknown = {
        let body = format!("gk_live_{}", &"Unkn0wn".repeat(5)[..32]);
        let mut n = crc32fast::hash(body.as_bytes());
        let mut digits = [b'0'; 6];
        for d in digits.iter_mut().rev() {
            *d = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[(n % 62) as usize];
            n /= 62;
        }
        format!("{body}{}", String::from_utf8(digits.to_vec()).unwrap())
    };
    let h = Harness::new(&app, &unknown);
    h.client(&format!("guildId = '{DEMO}'"));
    assert_failure(&h.eval(&format!("return client:isBanned('{}')", ids::PAT_ID)), 401, "invalid_key");
    assert_eq!(h.exchanges().len(), 1, "a 401 is not retried");

    // 401: a mistyped key (bad checksum) never reaches the database.
    let mistyped = format!("{}{}", &reader[..45], if reader.ends_with('A') { 'B' } else { 'A' });
    let h = Harness::new(&app, &mistyped);
    h.client("");
    let result = h.eval("return client:verify()");
    assert_failure(&result, 401, "malformed_key");
    assert!(!result["message"].as_str().unwrap().contains(&mistyped), "the key is not echoed: {result}");

    // 403: a key without the route's scope.
    let h = Harness::new(&app, &reader);
    h.client("");
    let result = h.eval(&format!("return client:addRole('{}', '{}')", ids::PAT_ID, ids::VERIFIED_ROLE_ID));
    assert_failure(&result, 403, "insufficient_scope");
    let result = h.eval(&format!("return client:ban('{}')", ids::PAT_ID));
    assert_failure(&result, 403, "insufficient_scope");
    assert_eq!(h.exchanges().iter().filter(|e| e.status == 403).count(), 2, "once each: {:?}", h.paths());
    assert!(h.sleeps().is_empty());
    assert!(app.double.member_roles(DEMO, ids::PAT_ID).iter().all(|&r| r != ids::VERIFIED_ROLE_ID));

    // 403: another guild's id given in the options.
    let h = Harness::new(&app, &reader);
    h.client(&format!("guildId = '{}'", ids::OTHER_GUILD_ID));
    assert_failure(&h.eval(&format!("return client:isBanned('{}')", ids::PAT_ID)), 403, "guild_mismatch");

    for line in app.logs() {
        assert!(!line.contains(&reader) && !line.contains(&revoked), "a key in the log: {line}");
    }
}

/// A listener on SQLite whatever the suite's backend, for the tests that
/// read the local limiter's `Retry-After` (the time its next request comes
/// back): on a shared PostgreSQL a 429 past the key's budget waits for the
/// minute window's end instead (`http::rate_limits`, two listeners).
async fn spawn_app_on_sqlite() -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = Some(format!("sqlite://{}?mode=rwc", dir.path().join("gk.db").display()));
    let app = spawn_app_with(Options { db_url, ..Options::default() }).await;
    (dir, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_call_waits_for_retry_after_then_succeeds() {
    let (_db, app) = spawn_app_on_sqlite().await;
    // 60 a minute: one request comes back every second.
    let key = app.create_key(DEMO, "busy", "bans.read", &["--rate-limit", "60"]);
    tokio::time::sleep(CROSS_PROCESS).await;
    let mut burnt = 0;
    while app.get("/v1/verify", &key).await.status() != 429 {
        burnt += 1;
        assert!(burnt <= 120, "the limit of 60 a minute never answered 429");
    }
    let h = Harness::new(&app, &key);
    h.set_real_sleep_max(2.0);
    h.client("");

    // Should a request come back to the budget between the last 429 and the
    // client's first try, that try takes it and the next one is refused.
    let mut result = Value::Null;
    for _ in 0..5 {
        h.clear();
        result = h.eval("return client:verify()");
        if h.exchanges()[0].status == 429 {
            break;
        }
    }

    assert_eq!(result["ok"], true, "{result}");
    let exchanges = h.exchanges();
    assert_eq!(exchanges.iter().map(|e| e.status).collect::<Vec<_>>(), [429, 200], "{:?}", h.paths());
    let retry_after = exchanges[0].retry_after.expect("a 429 carries Retry-After");
    assert_eq!(retry_after, 1.0, "one request a second comes back");
    assert_eq!(h.sleeps(), [retry_after], "waited exactly what Retry-After said");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_limit_gets_bounded_retries_then_a_rate_limited_result() {
    let (_db, app) = spawn_app_on_sqlite().await;
    // One a minute: each retry is refused again, with a long Retry-After.
    let key = app.create_key(DEMO, "slow", "bans.read", &["--rate-limit", "1"]);
    tokio::time::sleep(CROSS_PROCESS).await;
    let h = Harness::new(&app, &key);
    h.client("maxAttempts = 3, maxRetryAfter = 120");
    assert_eq!(h.eval("return client:verify().ok"), true, "the one request of the minute");
    h.clear();

    let result = h.eval(&format!("return client:isBanned('{}')", ids::PAT_ID));

    assert_failure(&result, 429, "rate_limited");
    let exchanges = h.exchanges();
    assert_eq!(exchanges.len(), 3, "maxAttempts bounds the tries: {:?}", h.paths());
    assert!(exchanges.iter().all(|e| e.status == 429));
    let retry_afters: Vec<f64> = exchanges.iter().map(|e| e.retry_after.expect("Retry-After")).collect();
    assert!(retry_afters.iter().all(|&s| (50.0..=60.0).contains(&s)), "{retry_afters:?}");
    assert_eq!(h.sleeps(), retry_afters[..2], "each wait is the Retry-After just received");
    assert_eq!(result["retryAfter"].as_f64(), Some(retry_afters[2]), "the last Retry-After is reported: {result}");

    // By default a wait over 30 s is not made: the result comes back at once.
    let h = Harness::new(&app, &key);
    h.client(&format!("guildId = '{DEMO}'"));
    let result = h.eval(&format!("return client:isBanned('{}')", ids::PAT_ID));
    assert_failure(&result, 429, "rate_limited");
    assert!(result["retryAfter"].as_f64().is_some_and(|s| s > 30.0), "{result}");
    assert_eq!(h.exchanges().len(), 1, "{:?}", h.paths());
    assert!(h.sleeps().is_empty(), "{:?}", h.sleeps());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_network_failures_are_retried_with_exponential_backoff() {
    let app = spawn_app().await;
    let key = app.create_key(DEMO, "flaky path", "bans.read", &[]);
    tokio::time::sleep(CROSS_PROCESS).await;

    // A proxy in front of the listener answers 503 twice, then passes through.
    let h = Harness::new(&app, &key);
    h.fail_next(2);
    h.client("baseDelay = 0.25");
    let result = h.eval("return client:verify()");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(h.exchanges().iter().map(|e| e.status).collect::<Vec<_>>(), [503, 503, 200]);
    assert_eq!(h.sleeps(), [0.25, 0.5], "doubling from baseDelay");

    // Always 503: four tries (the default), delays doubling up to maxDelay,
    // then the proxy's answer as a typed result.
    let h = Harness::new(&app, &key);
    h.fail_next(100);
    h.client("maxDelay = 0.75");
    let result = h.eval("return client:verify()");
    assert_failure(&result, 503, "bad_response");
    assert_eq!(h.exchanges().len(), 4);
    assert_eq!(h.sleeps(), [0.5, 0.75, 0.75]);

    // Nothing listening: RequestAsync throws; that is a network_error result.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let h = Harness::with_base(&app, &base, &key);
    h.client("maxAttempts = 2");
    let result = h.eval("return client:verify()");
    assert_failure(&result, 0, "network_error");
    assert!(!result["message"].as_str().unwrap().contains(&key), "{result}");
    assert_eq!((h.exchanges().len(), h.sleeps()), (2, vec![0.5]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_refuses_to_run_on_a_roblox_client_and_checks_its_arguments() {
    let app = spawn_app().await;
    let key = app.create_key(DEMO, "leaky", "bans.read", &[]);
    let h = Harness::new(&app, &key);
    let client_side = "runService = { IsClient = function() return true end, IsServer = function() return false end }";

    let err = h.try_new(client_side).expect_err("new must refuse on a client");

    assert!(err.contains("must run on the server"), "{err}");
    assert!(!err.contains(&key), "{err}");
    // Studio's Run mode is client and server at once: allowed, as on a server.
    let studio = "runService = { IsClient = function() return true end, IsServer = function() return true end }";
    h.try_new(studio).expect("Studio Run mode is a server");
    h.try_new("runService = { IsClient = function() return false end, IsServer = function() return true end }")
        .expect("a game server");

    // Mistakes in the calling code are errors at new, never echoing the key.
    let new: Function = h.module.get("new").unwrap();
    let err = new.call::<Table>(("guildkey.example.com", key.as_str(), h.options(""))).unwrap_err().to_string();
    assert!(err.contains("baseUrl"), "{err}");
    let err = new.call::<Table>((app.base.as_str(), format!("{key} "), h.options(""))).unwrap_err().to_string();
    assert!(err.contains("apiKey") && !err.contains(&key), "{err}");
    let err =
        new.call::<Table>((app.base.as_str(), key.as_str(), h.options("guildId = 'demo'"))).unwrap_err().to_string();
    assert!(err.contains("guildId"), "{err}");
    // Outside Roblox, without the fakes, it says what to pass.
    let err = new.call::<Table>((app.base.as_str(), key.as_str())).unwrap_err().to_string();
    assert!(err.contains("options.request"), "{err}");
    assert!(h.exchanges().is_empty(), "new makes no request");
}
