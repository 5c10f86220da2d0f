//! The client's Roblox side: players named by `roblox:` id, join bursts
//! batched into bulk checks, the local request budget, the rate-limit
//! headers and the start-up sync, against the real listener whose guild's
//! linker is the linker double (`world.rs`).

use super::world::{World, LIMIT};
use super::*;

async fn world(extra: &str) -> (World, Harness) {
    let world = World::start().await;
    let h = world.harness(extra);
    (world, h)
}

/// A Discord id for the `i`th synthetic user.
fn user(i: u64) -> u64 {
    1_100_000_000_000_100_000 + i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_banned_names_a_player_or_a_number_by_roblox_id_and_a_discord_id_as_it_is() {
    let (world, h) = world("cacheTtl = 0").await;
    world.ban(ids::STRANGER_ID, Some(42)).await;
    world.link(7, ids::PAT_ID);

    let banned = h.eval("return client:isBanned({ UserId = 42, Name = 'griefer' })");

    assert_eq!((&banned["ok"], &banned["data"]["banned"]), (&json!(true), &json!(true)), "{banned}");
    assert_eq!(h.paths(), [format!("GET /v1/guilds/{DEMO}/bans/roblox:42")]);
    assert!(h.exchanges()[0].bearer_ok);
    // A number is a Roblox UserId; "roblox:<n>" and Discord ids go as they are.
    h.clear();
    assert_eq!(h.eval("return client:isBanned(7).data.banned"), false);
    assert_eq!(h.eval("return client:isBanned('roblox:42').data.banned"), true);
    assert_eq!(h.eval(&format!("return client:isBanned('{}').data.banned", ids::STRANGER_ID)), true);
    let path = |m: &str| format!("GET /v1/guilds/{DEMO}/bans/{m}");
    assert_eq!(h.paths(), [path("roblox:7"), path("roblox:42"), path(&s(ids::STRANGER_ID))]);
    // A thread that cannot yield (this test's main chunk) asks at once, alone.
    assert!(h.sleeps().is_empty(), "{:?}", h.sleeps());

    // A Roblox account no Discord account is linked to: the listener's reason.
    h.clear();
    assert_failure(&h.eval("return client:isBanned(99)"), 404, "not_linked");
    // The largest Roblox id a number holds exactly is written out in full.
    assert_failure(&h.eval("return client:isBanned(2^53)"), 404, "not_linked");
    assert_eq!(h.paths()[1], format!("GET /v1/guilds/{DEMO}/bans/roblox:9007199254740992"));

    // Anything else is refused before the network.
    h.clear();
    for bad in
        ["'roblox:0'", "'roblox:x'", "'roblox:9007199254740993'", "2^53 + 2", "1.5", "-3", "{ UserId = '42' }", "{}"]
    {
        assert_failure(&h.eval(&format!("return client:isBanned({bad})")), 0, "invalid_argument");
    }
    assert!(h.exchanges().is_empty(), "{:?}", h.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_made_together_share_one_bulk_request_and_each_caller_gets_its_own_answer() {
    let (world, h) = world("sleep = yieldingSleep").await;
    world.ban(ids::STRANGER_ID, Some(42)).await;
    world.link(7, ids::PAT_ID);
    world.ban(ids::DANA_ID, None).await;
    let dana = s(ids::DANA_ID);
    let pat = s(ids::PAT_ID);

    let results = h.eval(&format!(
        "local asks = {{ {{ UserId = 42 }}, 7, {{ UserId = 99 }}, '{dana}', {{ UserId = 42 }}, '{pat}' }}
        local fns = {{}}
        for i, who in asks do
            fns[i] = function() return client:isBanned(who) end
        end
        return runConcurrently(fns)"
    ));

    let exchanges = h.exchanges();
    assert_eq!(h.paths(), [format!("POST /v1/guilds/{DEMO}/bans/check")], "one request for six callers");
    let body: Value = serde_json::from_str(exchanges[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({ "user_ids": ["roblox:42", "roblox:7", "roblox:99", dana, pat] }),
        "each id once, in the order asked"
    );
    assert_eq!(h.sleeps(), [0.1], "the first caller waited the default window for the others");
    let banned = |i: usize| (results[i]["ok"].clone(), results[i]["data"]["banned"].clone());
    assert_eq!(banned(0), (json!(true), json!(true)), "{}", results[0]);
    assert_eq!(banned(1), (json!(true), json!(false)), "{}", results[1]);
    assert_eq!(banned(3), (json!(true), json!(true)), "{}", results[3]);
    assert_eq!(banned(4), (json!(true), json!(true)), "the same player asked twice: {}", results[4]);
    assert_eq!(banned(5), (json!(true), json!(false)), "{}", results[5]);
    // An id the listener could not answer fails only its own caller.
    assert_failure(&results[2], 200, "not_linked");
    for r in results.as_array().unwrap() {
        assert_eq!(r["rateLimit"]["limit"], LIMIT, "{r}");
    }

    // The answers are cached: asked again together, nothing is sent.
    h.clear();
    let again = h.eval(
        "return runConcurrently({ function() return client:isBanned(42) end, function() return client:isBanned(7) end })",
    );
    assert_eq!((&again[0]["cached"], &again[0]["data"]["banned"]), (&json!(true), &json!(true)), "{again}");
    assert_eq!((&again[1]["cached"], &again[1]["data"]["banned"]), (&json!(true), &json!(false)), "{again}");
    assert!(h.exchanges().is_empty() && h.sleeps().is_empty(), "{:?}", h.paths());

    // A check alone waits the window, then asks with the single-member GET.
    let lone = h.eval("return runConcurrently({ function() return client:isBanned(7000) end })");
    assert_failure(&lone[0], 404, "not_linked");
    assert_eq!(h.paths(), [format!("GET /v1/guilds/{DEMO}/bans/roblox:7000")]);
    assert_eq!(h.sleeps(), [0.1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_more_than_a_hundred_goes_in_bulk_requests_of_at_most_a_hundred() {
    let (world, h) = world("sleep = yieldingSleep, batchWindow = 0.25").await;
    for id in 1..=149 {
        world.link(id, user(id));
    }
    world.ban(user(150), Some(150)).await;

    let results = h.eval(
        "local fns = {}
        for i = 1, 150 do
            fns[i] = function() return client:isBanned({ UserId = i }) end
        end
        return runConcurrently(fns)",
    );

    let sizes: Vec<usize> = h
        .exchanges()
        .iter()
        .map(|e| {
            assert_eq!(e.path, format!("/v1/guilds/{DEMO}/bans/check"));
            let body: Value = serde_json::from_str(e.body.as_deref().unwrap()).unwrap();
            body["user_ids"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(sizes, [100, 50]);
    assert_eq!(h.sleeps(), [0.25, 0.25], "each batch's first caller waited the window");
    let results = results.as_array().unwrap();
    assert!(results[..149].iter().all(|r| r["ok"] == true && r["data"]["banned"] == false));
    assert_eq!(results[149]["data"]["banned"], true, "{}", results[149]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_budget_a_call_fails_at_once_with_client_budget_and_sends_nothing() {
    let (_world, h) = world("budgetPerMinute = 3, cacheTtl = 0, batchWindow = 0").await;
    let pat = s(ids::PAT_ID);
    for _ in 0..3 {
        assert_eq!(h.eval(&format!("return client:isBanned('{pat}').ok")), true);
    }

    let refused = h.eval(&format!("return client:isBanned('{pat}')"));

    assert_failure(&refused, 0, "client_budget");
    assert_eq!(refused["retryAfter"], 60.0, "the oldest request counts for a minute: {refused}");
    assert!(refused["message"].as_str().unwrap().contains("budgetPerMinute"), "{refused}");
    assert_eq!(h.exchanges().len(), 3, "nothing was sent: {:?}", h.paths());
    let budget = h.eval("return client:budget()");
    assert_eq!((&budget["limit"], &budget["remaining"], &budget["reset"]), (&json!(3), &json!(0), &json!(60)));
    assert_eq!(budget["listener"]["limit"], LIMIT, "the listener's last headers: {budget}");
    // Other calls share the budget.
    assert_failure(&h.eval("return client:syncBans()"), 0, "client_budget");
    h.advance_clock(30.0);
    assert_eq!(h.eval(&format!("return client:isBanned('{pat}').retryAfter")), 30.0);
    h.advance_clock(30.0);
    assert_eq!(h.eval(&format!("return client:isBanned('{pat}').ok")), true, "a minute later");
    assert_eq!(h.exchanges().len(), 4);

    // Retries spend it too: a failing listener cannot make a server exceed it.
    h.clear();
    h.fail_next(100);
    h.client(&format!("guildId = '{DEMO}', budgetPerMinute = 2, maxAttempts = 4"));
    let result = h.eval(&format!("return client:isBanned('{pat}')"));
    assert_failure(&result, 0, "client_budget");
    assert_eq!(h.exchanges().len(), 2, "two tries, then the budget: {:?}", h.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_carry_the_listeners_rate_limit_headers() {
    let (world, h) = world("cacheTtl = 0").await;
    world.link(7, ids::PAT_ID);

    let fine = h.eval("return client:isBanned(7)");
    let refused = h.eval("return client:isBanned(8)");

    assert_eq!(fine["rateLimit"]["limit"], LIMIT, "{fine}");
    let remaining = fine["rateLimit"]["remaining"].as_u64().expect("remaining");
    assert!(remaining < LIMIT, "{fine}");
    assert!(fine["rateLimit"]["reset"].as_u64().is_some_and(|r| r <= 60), "{fine}");
    assert_failure(&refused, 404, "not_linked");
    assert_eq!(refused["rateLimit"]["limit"], LIMIT, "{refused}");
    assert_eq!(refused["rateLimit"]["remaining"], remaining - 1, "one more request spent: {refused}");
    assert_eq!(h.eval("return client:budget().listener"), refused["rateLimit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_bans_follows_every_page_then_answers_from_memory() {
    let discord = |i: u64| 1_100_000_000_000_000_000 + i * 7;
    let world = World::start_with(|app| app.double.seed_bans(DEMO, discord(0), 2500, 7)).await;
    let h = world.harness("");
    let linked: Vec<(u64, u64)> = (0..2500).filter(|i| i % 10 == 0).map(|i| (5000 + i, discord(i))).collect();
    world.store_links(&linked);
    world.link(1, ids::PAT_ID);

    let synced = h.eval("return client:syncBans()");

    assert_eq!(synced["ok"], true, "{synced}");
    assert_eq!(synced["data"], json!({ "bans": 2500, "roblox": 250, "pages": 3 }));
    let page = |after: Option<u64>| match after {
        None => format!("GET /v1/guilds/{DEMO}/bans?limit=1000"),
        Some(a) => format!("GET /v1/guilds/{DEMO}/bans?limit=1000&after={a}"),
    };
    assert_eq!(h.paths(), [page(None), page(Some(discord(999))), page(Some(discord(1999)))]);

    // From memory: no request, whichever id names the user.
    h.clear();
    let listed = h.eval(&format!(
        "return {{ client:isBanned({{ UserId = 5000 }}), client:isBanned('{}'), client:isBanned(1), client:isBanned('{}') }}",
        discord(2499),
        ids::PAT_ID
    ));
    let answers: Vec<(Value, Value)> =
        listed.as_array().unwrap().iter().map(|r| (r["data"]["banned"].clone(), r["fromBanList"].clone())).collect();
    assert_eq!(
        answers,
        [
            (json!(true), json!(true)),
            (json!(true), json!(true)),
            (json!(false), json!(true)),
            (json!(false), json!(true))
        ]
    );
    assert!(h.exchanges().is_empty(), "{:?}", h.paths());

    // With askOnMiss, ids not on the list are asked (the listener may know a
    // link the export did not carry).
    assert_eq!(h.eval("return client:syncBans({ askOnMiss = true }).ok"), true);
    h.clear();
    assert_eq!(h.eval("return client:isBanned({ UserId = 5010 }).fromBanList"), true);
    assert_eq!(h.eval("return client:isBanned(1).data.banned"), false);
    assert_eq!(h.paths(), [format!("GET /v1/guilds/{DEMO}/bans/roblox:1")]);

    // A sync that fails keeps the list held before.
    h.clear();
    h.fail_next(100);
    assert_failure(&h.eval("return client:syncBans({ pageSize = 500 })"), 503, "bad_response");
    assert_eq!(h.eval("return client:isBanned(5000).fromBanList"), true);
    assert_failure(&h.eval("return client:syncBans({ pageSize = 1001 })"), 0, "invalid_argument");
}
