//! Record first, then act, black-box: an API write to Discord is recorded
//! (pending) before Discord is asked, so that whatever fails around it
//! (PostgreSQL going away mid-way, the process killed mid-write) Discord and
//! the audit log agree write for write, each write in the log exactly once.
//!
//! PostgreSQL outages go through a relay the test cuts (`support::proxy`),
//! as `scale_out` does; those tests need `GUILDKEY_TEST_POSTGRES` and are
//! skipped without it. The crash test runs on SQLite (see there why).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use discord_double::FaultRule;
use serde_json::Value;
use support::proxy::CutProxy;
use support::reply::{get, put};
use support::{db, db_scalar, ids, spawn_app_with, App, Options};

const DEMO: u64 = ids::DEMO_GUILD_ID;
const BAN_ROUTE: &str = "/guilds/{guild_id}/bans/{user_id}";
/// Users no guild has as a member: each write bans a user of its own.
const FIRST_USER: u64 = 1_500_000_000_000_001_000;

fn server_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = &host_port[..host_port.find('/').unwrap_or(host_port.len())];
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    host_port.replace("localhost", "127.0.0.1").parse().expect("a host:port PostgreSQL address")
}

/// A listener on a fresh PostgreSQL database behind a relay the test can
/// cut, or `None` when PostgreSQL is not configured (the test is skipped).
async fn app_behind_relay() -> Option<(App, CutProxy)> {
    let url = db::postgres_admin_url().map(|admin| db::fresh_postgres(&admin))?;
    let relay = CutProxy::start(server_of(&url)).await;
    let app = spawn_app_with(Options { db_url: Some(relay.url_for(&url)), ..Default::default() }).await;
    Some((app, relay))
}

/// A live key that may ban (with room for a hundred bans) and a reader of
/// the audit log, both known to the listener.
async fn keys(app: &App) -> (String, String) {
    let extra = ["--rate-limit", "10000", "--ban-budget", "1000"];
    let writer = app.create_key(DEMO, "game", "bans.write", &extra);
    let reader = app.create_key(DEMO, "auditor", "audit.read", &["--rate-limit", "10000"]);
    for token in [&writer, &reader] {
        let started = Instant::now();
        while get(app, "/v1/verify", token).await.status != 200 {
            assert!(started.elapsed() < Duration::from_secs(5), "the listener never learned of a key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (writer, reader)
}

fn ban_path(user: u64) -> String {
    format!("/v1/guilds/{DEMO}/bans/{user}")
}

/// Every event of the guild's audit log, as the API lists it, paging back
/// to the first.
async fn audit_log(app: &App, reader: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut before = None;
    loop {
        let path = match before {
            None => format!("/v1/guilds/{DEMO}/audit-log?limit=100"),
            Some(b) => format!("/v1/guilds/{DEMO}/audit-log?limit=100&before={b}"),
        };
        let page = get(app, &path, reader).await.ok();
        events.extend(page["events"].as_array().expect("events").iter().cloned());
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return events,
        }
    }
}

/// How many `ban.added` entries the audit log holds for each user.
async fn ban_entries(app: &App, reader: &str) -> BTreeMap<u64, usize> {
    let mut entries = BTreeMap::new();
    for event in audit_log(app, reader).await.iter().filter(|e| e["action"] == "ban.added") {
        let user = event["details"]["user_id"].as_str().and_then(|u| u.parse().ok()).expect("a user id");
        *entries.entry(user).or_default() += 1;
    }
    entries
}

/// Waits until no API write is left pending in the database.
async fn until_settled(app: &App, within: Duration) {
    let started = Instant::now();
    loop {
        let pending = db_scalar(&app.db_url, "select count(*) from audit_event where outcome = 'pending'");
        if pending == Some(0) {
            return;
        }
        assert!(started.elapsed() < within, "API writes still pending after {within:?}: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ban_while_postgres_is_down_answers_503_reaches_no_discord_and_a_retry_bans_once_with_one_entry() {
    // Arrange: a listener whose PostgreSQL is behind a relay; keys in use;
    // a user banned already (to unban), a member without a role (to give).
    let Some((app, relay)) = app_behind_relay().await else { return };
    let (writer, reader) = keys(&app).await;
    let roles = app.create_key(DEMO, "roles", "roles.write bans.write", &["--rate-limit", "10000"]);
    while get(&app, "/v1/verify", &roles).await.status != 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.double.add_ban(DEMO, FIRST_USER, Some("earlier"));
    let role_path = format!("/v1/guilds/{DEMO}/members/{}/roles/{}", ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let write_calls =
        |app: &App| app.double.calls().into_iter().filter(|c| c.method != "GET" && c.path.contains("/guilds/")).count();
    let writes_before = write_calls(&app);

    // Act: PostgreSQL goes away; a ban, an unban and a role are asked for;
    // PostgreSQL comes back; the ban is asked for again, as the 503 invites.
    relay.cut();
    let (ban, unban) = (ban_path(ids::STRANGER_ID), ban_path(FIRST_USER));
    let (during, unban_during, role_during) = tokio::join!(
        put(&app, &ban, &writer),
        support::reply::delete(&app, &unban, &roles),
        put(&app, &role_path, &roles)
    );
    let writes_during = write_calls(&app) - writes_before;
    relay.restore().await;
    let started = Instant::now();
    let retry = loop {
        let retry = put(&app, &ban_path(ids::STRANGER_ID), &writer).await;
        if retry.status != 503 || started.elapsed() > Duration::from_secs(10) {
            break retry;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    until_settled(&app, Duration::from_secs(10)).await;

    // Assert: each refused before Discord was asked; the retry banned once,
    // and the audit log holds that ban once.
    during.err(503, "database_unavailable");
    unban_during.err(503, "database_unavailable");
    role_during.err(503, "database_unavailable");
    assert_eq!(writes_during, 0, "no write reached Discord while the audit log could not record it");
    assert!(app.double.bans(DEMO).contains_key(&FIRST_USER), "still banned");
    assert!(!app.double.member_roles(DEMO, ids::PAT_ID).contains(&ids::VERIFIED_ROLE_ID), "no role given");
    let data = retry.ok();
    assert_eq!((&data["banned"], &data["changed"]), (&Value::Bool(true), &Value::Bool(true)), "{data}");
    assert_eq!(app.double.calls_to("PUT", BAN_ROUTE).len(), 1, "one ban reached Discord");
    assert!(app.double.bans(DEMO).contains_key(&ids::STRANGER_ID));
    let entries = ban_entries(&app, &reader).await;
    assert_eq!(entries, BTreeMap::from([(ids::STRANGER_ID, 1)]), "the ban is in the audit log exactly once");
    let log = audit_log(&app, &reader).await;
    assert_eq!(log.iter().find(|e| e["action"] == "ban.added").unwrap()["id"], data["audit_event_id"]);
    assert!(!log.iter().any(|e| e["action"] == "ban.removed" || e["action"] == "role.added"), "{log:#?}");
    app.double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ban_discord_made_while_postgres_went_away_is_answered_made_and_its_entry_completed_once_back() {
    // Arrange: Discord takes a moment over the ban; PostgreSQL goes away
    // meanwhile, after the ban was recorded and before its outcome is.
    let Some((app, relay)) = app_behind_relay().await else { return };
    let (writer, reader) = keys(&app).await;
    let arrived = Arc::new(AtomicUsize::new(0));
    let seen = arrived.clone();
    app.double.fault(
        FaultRule::matching(move |r| {
            let ban = r.method == "PUT" && r.route == Some(BAN_ROUTE);
            if ban {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            ban
        })
        .latency(Duration::from_millis(1500))
        .once(),
    );

    // Act
    let path = ban_path(ids::STRANGER_ID);
    let ban = put(&app, &path, &writer);
    let cut = async {
        while arrived.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay.cut();
    };
    let (reply, ()) = tokio::join!(ban, cut);
    let pending_while_down = audit_log_or_status(&app, &reader).await;
    relay.restore().await;
    until_settled(&app, Duration::from_secs(10)).await;

    // Assert: the ban stands and is answered as made; while PostgreSQL was
    // away nothing could be read, and once back the entry is there, once.
    let data = reply.ok();
    assert_eq!((&data["banned"], &data["changed"]), (&Value::Bool(true), &Value::Bool(true)), "{data}");
    assert!(app.double.bans(DEMO).contains_key(&ids::STRANGER_ID));
    assert_eq!(pending_while_down, 503, "the log cannot be read while PostgreSQL is away");
    let entries = ban_entries(&app, &reader).await;
    assert_eq!(entries, BTreeMap::from([(ids::STRANGER_ID, 1)]), "the ban's entry, completed once");
    let logs = app.logs();
    assert!(logs.iter().any(|l| l.contains("failed to record a write's outcome")), "the outcome waited for PostgreSQL");
    assert!(logs.iter().any(|l| l.contains("recorded a write's outcome once the database was back")));
    app.double.assert_no_violations();
}

/// The status of reading the audit log.
async fn audit_log_or_status(app: &App, reader: &str) -> u16 {
    get(app, &format!("/v1/guilds/{DEMO}/audit-log"), reader).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_during_100_api_writes_leaves_discord_and_the_audit_log_agreeing_write_for_write() {
    // Arrange: a listener whose PostgreSQL is behind a relay; four writers
    // ban 100 users between them, one each.
    const WRITES: usize = 100;
    const WRITERS: usize = 4;
    /// Answers before the cut, and answers during the outage.
    const CUT_AFTER: usize = 40;
    const OUTAGE_ANSWERS: usize = 8;
    let Some((app, relay)) = app_behind_relay().await else { return };
    let (writer, reader) = keys(&app).await;
    let app = Arc::new(app);
    let answered = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(std::sync::Mutex::new(BTreeMap::new()));

    // Act: the writers run; PostgreSQL goes away after CUT_AFTER answers
    // and comes back OUTAGE_ANSWERS answers later.
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (app, writer, answered, next, answers) =
                (app.clone(), writer.clone(), answered.clone(), next.clone(), answers.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= WRITES {
                        return;
                    }
                    let user = FIRST_USER + i as u64;
                    let reply = put(&app, &ban_path(user), &writer).await;
                    answers.lock().unwrap().insert(user, reply.status);
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let outage = {
        let wait_for = |n: usize| {
            let answered = answered.clone();
            async move {
                while answered.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        wait_for(CUT_AFTER).await;
        relay.cut();
        let cut = Instant::now();
        wait_for(CUT_AFTER + OUTAGE_ANSWERS).await;
        relay.restore().await;
        cut.elapsed()
    };
    for task in tasks {
        task.await.unwrap();
    }
    until_settled(&app, Duration::from_secs(15)).await;
    let answers = answers.lock().unwrap().clone();
    let banned: BTreeSet<u64> = app.double.bans(DEMO).keys().copied().collect();
    let entries = ban_entries(&app, &reader).await;

    // The 503s, retried as they invite.
    let refused: Vec<u64> = answers.iter().filter(|(_, s)| **s == 503).map(|(u, _)| *u).collect();
    for user in &refused {
        let started = Instant::now();
        loop {
            let reply = put(&app, &ban_path(*user), &writer).await;
            if reply.status == 200 {
                assert_eq!(reply.ok()["changed"], true, "a refused write made no change, so its retry does");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "retry of {user}: {}", reply.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    until_settled(&app, Duration::from_secs(10)).await;
    let banned_after: BTreeSet<u64> = app.double.bans(DEMO).keys().copied().collect();
    let entries_after = ban_entries(&app, &reader).await;

    // Assert: during the outage, what Discord has and what the log holds
    // are the same writes, each once; 200 meant banned, 503 meant nothing
    // reached Discord; after the retries all 100 are there, each once.
    let statuses: BTreeSet<u16> = answers.values().copied().collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "answers: {statuses:?}");
    assert!(!refused.is_empty(), "the outage refused some writes");
    for (user, status) in &answers {
        assert_eq!(banned.contains(user), *status == 200, "user {user}: answered {status}");
    }
    let logged: BTreeSet<u64> = entries.keys().copied().collect();
    assert_eq!(logged, banned, "Discord and the audit log agree write for write");
    assert!(entries.values().all(|n| *n == 1), "each write is in the log once: {entries:?}");
    assert_eq!(banned_after.len(), WRITES);
    assert_eq!(entries_after.keys().copied().collect::<BTreeSet<_>>(), banned_after);
    assert!(entries_after.values().all(|n| *n == 1), "each write is in the log once: {entries_after:?}");
    // Discord's rate limit may answer a PUT with 429 (nothing done), which
    // is tried again: one ban Discord made per write.
    let made = app.double.calls_to("PUT", BAN_ROUTE).into_iter().filter(|c| c.status != 429).count();
    assert_eq!(made, WRITES, "one Discord ban per write");
    eprintln!(
        "PostgreSQL outage during {WRITES} API writes ({WRITERS} writers, outage {outage:?}): {} answered 200, {} \
         answered 503 and reached no Discord; Discord {} bans, audit log {} entries, each once; after retrying \
         the 503s: {} bans, {} entries",
        WRITES - refused.len(),
        refused.len(),
        banned.len(),
        entries.len(),
        banned_after.len(),
        entries_after.len()
    );
    app.double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_left_pending_by_a_killed_process_are_settled_from_discord_at_start_and_the_done_one_posted() {
    // Arrange: audit posts on; Discord hangs every ban, so two bans are in
    // flight (recorded, Discord asked, no answer) when the process dies.
    // SQLite whatever the backend under test: one instance writes it, so
    // at start every pending event is a dead process's (on a shared
    // PostgreSQL it would be after the writer's 2 minutes).
    let sqlite = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", sqlite.path().join("gk.db").display());
    let mut app = spawn_app_with(Options { db_url: Some(db_url), ..Default::default() }).await;
    app.set_audit_channel().await;
    let (writer, reader) = keys(&app).await;
    let arrived = Arc::new(AtomicUsize::new(0));
    let seen = arrived.clone();
    app.double.fault(
        FaultRule::matching(move |r| {
            let ban = r.method == "PUT" && r.route == Some(BAN_ROUTE);
            if ban {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            ban
        })
        .latency(Duration::from_secs(600)),
    );
    let (landed, lost) = (FIRST_USER, FIRST_USER + 1);
    let hung: Vec<_> = [landed, lost]
        .into_iter()
        .map(|user| {
            let http = reqwest::Client::new();
            let req = http.put(app.url(&ban_path(user))).bearer_auth(&writer);
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let started = Instant::now();
    while arrived.load(Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "the bans never reached Discord");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = db_scalar(&app.db_url, "select count(*) from audit_event where outcome = 'pending'");
    let listed_while_pending = ban_entries(&app, &reader).await;
    let posts_before = app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).len();

    // Act: kill -9 mid-write. Discord had made one of the bans (its answer
    // was lost with the process), not the other. Start again.
    app.kill();
    for task in hung {
        assert!(task.await.unwrap().is_err(), "the process died before answering");
    }
    app.double.clear_faults();
    app.double.add_ban(DEMO, landed, Some("An API key: game"));
    app.restart().await;
    until_settled(&app, Duration::from_secs(10)).await;
    app.wait_for_audit_outbox().await;

    // Assert: both were pending, neither listed nor posted while so; at
    // start the landed one is in the log once and posted, the lost one is
    // neither; nothing was sent to Discord again.
    assert_eq!(pending, Some(2), "both bans were recorded before Discord was asked");
    assert!(listed_while_pending.is_empty(), "pending writes are not in the log yet: {listed_while_pending:?}");
    assert_eq!(ban_entries(&app, &reader).await, BTreeMap::from([(landed, 1)]));
    let posts: Vec<String> =
        app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).iter().skip(posts_before).map(|m| m.text()).collect();
    let about = |user: u64| posts.iter().filter(|p| p.contains(&user.to_string())).count();
    assert_eq!((about(landed), about(lost)), (1, 0), "posts after the restart: {posts:#?}");
    assert!(!app.double.bans(DEMO).contains_key(&lost));
    let failed = db_scalar(&app.db_url, "select count(*) from audit_event where outcome = 'failed'");
    assert_eq!(failed, Some(1), "the lost write is kept as failed, out of the log");
}
