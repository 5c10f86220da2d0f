//! Crash safety, black-box: a load of key changes (operator CLI processes,
//! some of them killed mid-run), API writes and verifications against the
//! real `guildkey run`, which is then killed with SIGKILL and restarted on
//! the same database, several times over. Whatever was acknowledged must
//! survive, the audit log must hold only whole entries with no change
//! missing its entry, and last-used times may lag by at most one flush.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, Row};
use support::{ids, spawn_app_with, App, Options};

const DEMO: u64 = ids::DEMO_GUILD_ID;
/// `keys.last_used_flush_seconds` for this suite.
const FLUSH: Duration = Duration::from_secs(1);
/// Slack on top of one flush interval: the flush's own transaction, and a
/// tick delayed by a busy machine (two cores, CLI processes starting).
const FLUSH_MARGIN: Duration = Duration::from_millis(750);
/// How long each round of load runs before the kill.
const LOAD: Duration = Duration::from_millis(2500);
const ROUNDS: usize = 3;
/// Concurrent API writers (each bans and unbans its own user) and verifiers.
const WRITERS: usize = 3;
const VERIFIERS: usize = 3;
const ACTIONS: [&str; 9] = [
    "key.created",
    "key.revoked",
    "key.deleted",
    "key.rotated",
    "audit_channel.set",
    "ban.added",
    "ban.removed",
    "role.added",
    "role.removed",
];

/// The operator CLI on the app's database, from the app's directory (so it
/// reads the same config.toml).
fn cli_command(db_url: &str, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The key id from `created key_… 'name' (prefix) …` / `revoked key_… …`.
fn key_id_in(stderr: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stderr).split_whitespace().find(|w| w.starts_with("key_")).map(str::to_owned)
}

/// What the CLI thread got acknowledged (exit 0), and what it started but
/// killed before it could answer.
#[derive(Default, Debug)]
struct CliLedger {
    created: Vec<String>,
    revoked: Vec<String>,
    rotated: BTreeMap<String, usize>,
    /// Killed runs: (operation, key id if known).
    doomed: Vec<(&'static str, Option<String>)>,
    failures: Vec<String>,
}

/// Runs `keys create` / `revoke` / `rotate` in a loop until `stop`; every
/// fifth run is SIGKILLed a few milliseconds in.
fn cli_load(db_url: String, cwd: PathBuf, round: usize, stop: Arc<AtomicBool>, ledger: Arc<Mutex<CliLedger>>) {
    let guild = DEMO.to_string();
    let mut i = 0usize;
    let mut last_created: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let name = format!("load {round}-{i}");
        // create A, rotate A, revoke A, create B, …
        let (op, args): (&'static str, Vec<String>) = match (i % 3, &last_created) {
            (1, Some(k)) => ("rotate", vec!["keys".into(), "rotate".into(), k.clone()]),
            (2, Some(k)) => ("revoke", vec!["keys".into(), "revoke".into(), k.clone()]),
            _ => (
                "create",
                ["keys", "create", "--guild", &guild, "--name", &name, "--scopes", "guild.read"]
                    .map(String::from)
                    .to_vec(),
            ),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let target = if op == "create" { None } else { last_created.clone() };
        if i % 5 == 0 {
            let mut child = cli_command(&db_url, &cwd, &args).spawn().expect("spawn the CLI");
            std::thread::sleep(Duration::from_millis((i as u64 * 7) % 60));
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            let mut ledger = ledger.lock().unwrap();
            if out.status.success() {
                record(&mut ledger, op, target, &out); // it finished before the kill
            } else {
                ledger.doomed.push((op, target.or_else(|| key_id_in(&out.stderr))));
            }
            last_created = None; // do not build on a key whose state is unknown
            continue;
        }
        let out = cli_command(&db_url, &cwd, &args).output().expect("run the CLI");
        let mut ledger = ledger.lock().unwrap();
        if out.status.success() {
            last_created = match op {
                "create" => key_id_in(&out.stderr),
                "rotate" => last_created,
                _ => None,
            };
            record(&mut ledger, op, target, &out);
        } else {
            ledger.failures.push(format!("{op}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
}

fn record(ledger: &mut CliLedger, op: &str, target: Option<String>, out: &Output) {
    match op {
        "create" => ledger.created.push(key_id_in(&out.stderr).expect("create names the key")),
        "revoke" => ledger.revoked.push(target.expect("a target")),
        _ => *ledger.rotated.entry(target.expect("a target")).or_default() += 1,
    }
}

/// API writes acknowledged with 200: (audit event id, action), plus how
/// many were still unanswered at the kill.
#[derive(Default, Debug)]
struct ApiLedger {
    acked: Vec<(i64, String)>,
    unanswered: usize,
    failures: Vec<String>,
}

/// Bans and unbans `user` until the listener goes away.
async fn api_load(http: reqwest::Client, base: String, token: String, user: u64, ledger: Arc<Mutex<ApiLedger>>) {
    let url = format!("{base}/v1/guilds/{DEMO}/bans/{user}");
    for n in 0.. {
        let (req, action) = if n % 2 == 0 {
            (http.put(&url).json(&serde_json::json!({ "reason": format!("crash test {n}") })), "ban.added")
        } else {
            (http.delete(&url), "ban.removed")
        };
        let resp = match req.bearer_auth(&token).send().await {
            Ok(r) => r,
            Err(_) => {
                ledger.lock().unwrap().unanswered += 1; // the kill: it may or may not have been applied
                return;
            }
        };
        let status = resp.status().as_u16();
        let Ok(body) = resp.json::<Value>().await else {
            ledger.lock().unwrap().unanswered += 1;
            return;
        };
        let mut ledger = ledger.lock().unwrap();
        match (status, body["data"]["changed"].as_bool(), body["data"]["audit_event_id"].as_i64()) {
            (200, Some(true), Some(id)) => ledger.acked.push((id, action.to_owned())),
            // Already so: a write unanswered at the last kill had been applied.
            (200, Some(false), None) => {}
            _ => ledger.failures.push(format!("{action}: {status} {body}")),
        }
    }
}

/// Verifies with `token` until the listener goes away; returns the time of
/// the last 200 and how many there were.
async fn verify_load(http: reqwest::Client, base: String, token: String) -> (Option<DateTime<Utc>>, u64) {
    let (mut last, mut n) = (None, 0);
    loop {
        match http.get(format!("{base}/v1/verify")).bearer_auth(&token).send().await {
            Ok(r) if r.status() == 200 => {
                last = Some(Utc::now());
                n += 1;
            }
            Ok(r) => panic!("verify answered {} during the load", r.status()),
            Err(_) => return (last, n),
        }
    }
}

/// `keys list --json`, by key id.
pub(crate) fn list_keys(app: &App) -> BTreeMap<String, Value> {
    let out = app.cli(&["keys", "list", "--guild", &DEMO.to_string(), "--json"]);
    assert!(out.status.success(), "keys list: {}", String::from_utf8_lossy(&out.stderr));
    let keys: Vec<Value> = serde_json::from_slice(&out.stdout).expect("keys list --json is JSON");
    keys.into_iter().map(|k| (k["key_id"].as_str().unwrap().to_owned(), k)).collect()
}

/// One audit_event row, read straight from SQLite.
#[derive(Debug)]
pub(crate) struct Row_ {
    pub(crate) id: i64,
    pub(crate) action: String,
    actor_kind: String,
    key_id: Option<String>,
}

/// Reads every audit row in the log and asserts each is whole: known action
/// and actor, a timestamp, the key fields a key event needs, details a JSON
/// object. An API write the kill left pending (recorded before Discord was
/// asked, not yet settled) or that Discord refused is not in the log.
pub(crate) async fn audit_rows(db_url: &str) -> Vec<Row_> {
    let mut conn = sqlx::SqliteConnection::connect(db_url).await.expect("open the database");
    let rows = sqlx::query(
        "select audit_event_id, guild_id, created_at, action, actor_kind, actor_user_id, api_key_id, key_name, \
         key_prefix, test, details from audit_event where outcome is null or outcome = 'done' \
         order by audit_event_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read audit_event");
    let mut out = Vec::new();
    for r in rows {
        let id: i64 = r.get("audit_event_id");
        let action: String = r.get("action");
        let actor_kind: String = r.get("actor_kind");
        let key_id: Option<String> = r.get("api_key_id");
        let whole = format!("audit row {id}: {action} by {actor_kind}");
        assert_eq!(r.get::<i64, _>("guild_id") as u64, DEMO, "{whole}");
        assert!(r.get::<i64, _>("created_at") > 1_600_000_000_000, "{whole}: created_at");
        assert!(ACTIONS.contains(&action.as_str()), "{whole}: unknown action");
        assert!(["user", "api_key", "cli"].contains(&actor_kind.as_str()), "{whole}: unknown actor");
        assert_eq!(actor_kind == "user", r.get::<Option<i64>, _>("actor_user_id").is_some(), "{whole}: actor user id");
        if action.starts_with("key.") || actor_kind == "api_key" {
            assert!(key_id.is_some(), "{whole}: no key id");
            assert!(r.get::<Option<String>, _>("key_name").is_some_and(|n| !n.is_empty()), "{whole}: no key name");
            let prefix: Option<String> = r.get("key_prefix");
            assert!(prefix.is_some_and(|p| p.len() == 12 && p.starts_with("gk_")), "{whole}: key prefix");
        }
        let details: String = r.get("details");
        let parsed: Value = serde_json::from_str(&details).unwrap_or_else(|e| panic!("{whole}: details ({e})"));
        assert!(parsed.is_object(), "{whole}: details {details}");
        let _: bool = r.get("test");
        out.push(Row_ { id, action, actor_kind, key_id });
    }
    conn.close().await.ok();
    out
}

/// Every event through `GET /v1/guilds/{g}/audit-log`, paging with `before`.
async fn audit_log_over_http(app: &App, token: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = before.map_or("?limit=100".to_owned(), |b| format!("?limit=100&before={b}"));
        let resp = app.get(&format!("/v1/guilds/{DEMO}/audit-log{query}"), token).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("JSON");
        let page = body["data"]["events"].as_array().expect("events").clone();
        events.extend(page);
        match body["data"]["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return events,
        }
    }
}

/// Last-used time and use count of a key, straight from SQLite.
async fn last_used(db_url: &str, key: &str) -> (Option<DateTime<Utc>>, i64) {
    let mut conn = sqlx::SqliteConnection::connect(db_url).await.expect("open the database");
    let row = sqlx::query("select last_used_at, use_count from api_key where api_key_id = ?")
        .bind(key)
        .fetch_one(&mut conn)
        .await
        .expect("the key row");
    conn.close().await.ok();
    let at: Option<i64> = row.get("last_used_at");
    (at.and_then(DateTime::from_timestamp_millis), row.get("use_count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill_with_whole_audit_entries_and_last_used_at_most_one_flush_old() {
    // The load and the flush margin are measured with no other test's app running.
    let _alone = support::alone().await;
    let config = "[keys]\nlast_used_flush_seconds = 1\nmax_per_guild = 1000\n";
    let mut app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    let fast = ["--rate-limit", "100000"];
    // The load's bans are wanted: a budget the breaker never reaches here.
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--rate-limit", "100000", "--ban-budget", "10000"]);
    let auditor = app.create_key(DEMO, "auditor", "audit.read", &fast);
    let verifiers: Vec<(String, String)> = (0..VERIFIERS)
        .map(|i| {
            let token = app.create_key(DEMO, &format!("verifier {i}"), "guild.read", &fast);
            let id = list_keys(&app).into_values().find(|k| k["prefix"] == token[..12]).unwrap()["key_id"]
                .as_str()
                .unwrap()
                .to_owned();
            (token, id)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await; // the CLI's keys are live within 1 s

    let cli_ledger = Arc::new(Mutex::new(CliLedger::default()));
    let api_ledger = Arc::new(Mutex::new(ApiLedger::default()));
    let mut worst_lag = chrono::Duration::zero();
    let mut verified = [0u64; VERIFIERS];
    for round in 1..=ROUNDS {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cli = {
            let (db, cwd, stop, ledger) =
                (app.db_url.clone(), app.dir.path().to_owned(), stop.clone(), cli_ledger.clone());
            std::thread::spawn(move || cli_load(db, cwd, round, stop, ledger))
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let user = 1_500_000_000_000_000_000 + w as u64;
                tokio::spawn(api_load(http.clone(), app.base.clone(), writer.clone(), user, api_ledger.clone()))
            })
            .collect();
        let verifying: Vec<_> = verifiers
            .iter()
            .map(|(t, _)| tokio::spawn(verify_load(http.clone(), app.base.clone(), t.clone())))
            .collect();

        tokio::time::sleep(LOAD).await;
        let killed_at = Utc::now();
        app.kill();
        let killed = Instant::now();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.await.unwrap();
        }
        let mut lags = Vec::new();
        for (i, ((_, id), v)) in verifiers.iter().zip(verifying).enumerate() {
            let (last_ack, n) = v.await.unwrap();
            verified[i] += n;
            let last_ack = last_ack.expect("some verifications were acknowledged");
            assert!(last_ack <= killed_at + chrono::Duration::milliseconds(50));
            let (stored, count) = last_used(&app.db_url, id).await;
            let stored = stored.expect("a last-used time was flushed");
            let lag = last_ack - stored;
            lags.push(format!("{} ms (use_count {count} of {} acknowledged)", lag.num_milliseconds(), verified[i]));
            // Uses in flight at a kill may have been counted; nothing is counted twice.
            assert!(count as u64 <= verified[i] + round as u64, "round {round}: use_count {count} > {}", verified[i]);
            worst_lag = worst_lag.max(lag);
            let allowed = chrono::Duration::from_std(FLUSH + FLUSH_MARGIN).unwrap();
            assert!(lag <= allowed, "round {round}: last use stored {stored}, last acknowledged {last_ack}");
        }
        cli.join().expect("the CLI thread");
        eprintln!("round {round}: killed after {LOAD:?} of load; last-used lag behind the last acknowledged verify: {lags:?}; CLI stopped {:?} after the kill", killed.elapsed());
        app.restart().await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }

    // Everything acknowledged is there.
    // Every writer has ended, so the ledgers can be taken whole.
    let cli = std::mem::take(&mut *cli_ledger.lock().unwrap());
    let api = std::mem::take(&mut *api_ledger.lock().unwrap());
    assert!(cli.failures.is_empty(), "CLI runs failed under load: {:?}", cli.failures);
    assert!(api.failures.is_empty(), "API writes failed under load: {:?}", api.failures);
    assert!(cli.created.len() >= 10 && api.acked.len() >= 20, "too little load: {cli:?} {api:?}");
    let keys = list_keys(&app);
    for id in &cli.created {
        assert!(keys.contains_key(id), "acknowledged key {id} is missing after the crash");
    }
    for id in &cli.revoked {
        assert_eq!(keys[id]["status"], "revoked", "acknowledged revocation of {id} is lost");
    }
    let doomed_ids: BTreeSet<&str> = cli.doomed.iter().filter_map(|(_, id)| id.as_deref()).collect();
    let doomed_creates = cli.doomed.iter().filter(|(op, _)| *op == "create").count();
    let setup = 2 + VERIFIERS;
    let extra = keys.len() - setup - cli.created.len();
    assert!(extra <= doomed_creates, "{extra} keys nobody created (at most {doomed_creates} killed creates)");

    // The audit log: whole rows, one per change, nothing missing.
    let rows = audit_rows(&app.db_url).await;
    let count = |action: &str, key: &str| {
        rows.iter().filter(|r| r.action == action && r.key_id.as_deref() == Some(key)).count()
    };
    for (id, key) in &keys {
        assert_eq!(count("key.created", id), 1, "key {id} has not exactly one key.created entry");
        let revoked = usize::from(key["status"] == "revoked");
        assert_eq!(count("key.revoked", id), revoked, "key {id} ({}) and its key.revoked entries", key["status"]);
        let rotated = cli.rotated.get(id).copied().unwrap_or(0);
        let n = count("key.rotated", id);
        let killed_rotations = cli.doomed.iter().filter(|(op, k)| *op == "rotate" && k.as_deref() == Some(id)).count();
        assert!(
            rotated <= n && n <= rotated + killed_rotations,
            "key {id}: {n} key.rotated entries for {rotated} acknowledged rotations"
        );
    }
    let created_events = rows.iter().filter(|r| r.action == "key.created").count();
    assert_eq!(created_events, keys.len(), "a key.created entry without its key");
    let by_id: BTreeMap<i64, &Row_> = rows.iter().map(|r| (r.id, r)).collect();
    for (id, action) in &api.acked {
        let row = by_id.get(id).unwrap_or_else(|| panic!("acknowledged API write's entry {id} is missing"));
        assert_eq!((&row.action, row.actor_kind.as_str()), (action, "api_key"), "entry {id}");
    }
    let api_rows = rows.iter().filter(|r| r.actor_kind == "api_key").count();
    assert!(
        api.acked.len() <= api_rows && api_rows <= api.acked.len() + api.unanswered,
        "{api_rows} API entries for {} acknowledged and {} unanswered writes",
        api.acked.len(),
        api.unanswered
    );

    // The same log through the API, after the restarts.
    let events = audit_log_over_http(&app, &auditor).await;
    assert_eq!(events.len(), rows.len(), "the API shows every stored entry");
    for (event, row) in events.iter().rev().zip(&rows) {
        assert_eq!(event["id"], row.id, "{event}");
        assert_eq!(event["action"], row.action.as_str(), "{event}");
        assert!(event["at"].as_str().is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok()), "{event}");
        assert!(event["details"].is_object() && event["actor"].is_string(), "{event}");
    }

    let rotations: usize = cli.rotated.values().sum();
    eprintln!(
        "{ROUNDS} SIGKILLs under load: CLI {} creates, {} revokes, {rotations} rotations acknowledged, {} CLI runs \
         killed ({} on known keys); API {} writes acknowledged, {} unanswered at a kill; {} audit rows, all whole; \
         worst last-used lag {} ms (allowed {} ms)",
        cli.created.len(),
        cli.revoked.len(),
        cli.doomed.len(),
        doomed_ids.len(),
        api.acked.len(),
        api.unanswered,
        rows.len(),
        worst_lag.num_milliseconds(),
        (FLUSH + FLUSH_MARGIN).as_millis()
    );
}
