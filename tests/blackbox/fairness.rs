//! Every server alone (issue 21): one guild whose Discord is slow, whose
//! audit channel is slow, or whose webhook never answers holds up no other
//! guild. The real binary and the Discord double (whose `FaultRule::
//! for_guild` / `for_channel` make one guild's Discord slow), loopback HTTP.
//!
//! The loads are those of the issue, scaled down in time where noted: each
//! test runs a few seconds, and the ones that measure latency run
//! [`support::alone`].

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use discord_double::FaultRule;
use support::reply::{get, put, send, Reply};
use support::{bot, ids, spawn_app_with, App, Options};

/// The hostile guild, and the quiet one.
const A: u64 = ids::DEMO_GUILD_ID;
const B: u64 = ids::OTHER_GUILD_ID;

/// Logs at info (not the suites' trace): these tests send thousands of
/// requests, and what is measured is the listener, not its logging.
fn quiet(config: &str) -> Options {
    Options {
        config: config.to_owned(),
        env: vec![
            ("RUST_LOG".into(), "info".into()),
            // `/apikey audit-channel` in both guilds.
            ("GUILDKEY_REGISTER_COMMANDS".into(), "global".into()),
        ],
        ..Options::default()
    }
}

/// Creates a key with the CLI and waits until the listener knows it.
async fn key(app: &App, guild: u64, name: &str, scopes: &str, extra: &[&str]) -> String {
    let token = app.create_key(guild, name, scopes, extra);
    let started = Instant::now();
    while get(app, "/v1/verify", &token).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the listener never learned of key {name}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token
}

fn ban_path(guild: u64, user: u64) -> String {
    format!("/v1/guilds/{guild}/bans/{user}")
}

/// One of A's answers: status, reason, `Retry-After`, how long it took.
type Answer = (u16, String, Option<String>, Duration);

/// Sends one request on a kept-alive connection and reads the answer:
/// its status, `Retry-After` and body.
async fn read_answer(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    request: &[u8],
) -> Option<(u16, Option<String>, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    stream.get_mut().write_all(request).await.ok()?;
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut retry) = (0usize, None);
    loop {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "retry-after" => retry = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((status, retry, String::from_utf8_lossy(&body).into_owned()))
}

/// The `q`-quantile of `took` (sorted here).
fn quantile(took: &mut [Duration], q: f64) -> Duration {
    took.sort_unstable();
    let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
    took[i]
}

/// Load 1: A's key re-sends 1,100 ban checks at once while A's Discord
/// takes 2 s a call (for 7 s here, not the 14). B's
/// `GET /v1/guilds/B`, which needs no Discord call, answers 100 times at
/// 20 a second within 50 ms at p99 as the listener measures it (its
/// latency histogram), and within 1 s seen from here on a debug build on a shared machine
/// (50 ms on a release build); A's checks that find no place within 1 s
/// are answered 503 `discord_busy` with `Retry-After: 1`, none hangs. On
/// the listener before fair places, B's requests waited for A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guild_whose_discord_is_slow_holds_up_no_other_guilds_requests() {
    let _alone = support::alone().await;
    // Every client here comes from 127.0.0.1: its cap on connections lifted.
    let app = spawn_app_with(quiet("[http]\nmax_connections_per_ip = 100000\n")).await;
    // A's ban checks must ask Discord (as before a guild's ban list is
    // synced; synced, they would need no Discord place at all).
    app.double.fault(FaultRule::on("GET", "/guilds/{guild_id}/bans").discord_error(404, 10004, "Unknown Guild"));
    let flood = key(&app, A, "flood", "bans.read", &["--rate-limit", "100000"]).await;
    let reader = key(&app, B, "reader", "guild.read", &["--rate-limit", "100000"]).await;
    app.double.fault(FaultRule::for_guild(A).latency(Duration::from_secs(2)));

    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut senders = tokio::task::JoinSet::new();
    let addr = app.base.trim_start_matches("http://").to_owned();
    for i in 0..1_100u64 {
        let (addr, flood, stop, answers) = (addr.clone(), flood.clone(), stop.clone(), answers.clone());
        // Raw HTTP/1.1 on one kept-alive connection each: the load costs
        // this process little, so what is measured is the listener.
        senders.spawn(async move {
            let mut conn = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let user = 1_200_000_000_001_000_000 + i * 1_000 + n;
                n += 1;
                let started = Instant::now();
                if conn.is_none() {
                    conn = tokio::net::TcpStream::connect(&addr).await.ok().map(tokio::io::BufReader::new);
                }
                let Some(stream) = conn.as_mut() else { continue };
                let request = format!(
                    "GET {} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {flood}\r\n\r\n",
                    ban_path(A, user)
                );
                match read_answer(stream, request.as_bytes()).await {
                    Some((status, retry, body)) => {
                        let reason = serde_json::from_str::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["error"]["reason"].as_str().map(str::to_owned));
                        answers.lock().unwrap().push((status, reason.unwrap_or_default(), retry, started.elapsed()));
                    }
                    None => conn = None,
                }
            }
        });
    }
    // A's checks fill every place they may take.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut took = Vec::new();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..100 {
        every.tick().await;
        let reply = get(&app, &format!("/v1/guilds/{B}"), &reader).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        took.push(reply.took);
    }
    stop.store(true, Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs(10), async { while senders.join_next().await.is_some() {} });
    assert!(drained.await.is_ok(), "A's checks are all answered within seconds once they stop");

    // The listener's own view: B's requests from their head read to their answer.
    let metrics = support::text(app.http.get(app.url("/metrics")).send().await.unwrap()).await;
    let bucket = |le: &str| {
        metrics
            .lines()
            .find(|l| {
                l.contains("request_duration_seconds_bucket")
                    && l.contains("route=\"/v1/guilds/{guild_id}\"")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_default()
    };
    let (within, all) = (bucket("0.05"), bucket("+Inf"));
    eprintln!("load 1: the listener answered {within} of B's {all} requests within 50 ms");
    let p50 = quantile(&mut took, 0.5);
    let p99 = quantile(&mut took, 0.99);
    let answers = answers.lock().unwrap().clone();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503 && a.1 == "discord_busy").collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let slowest_busy = busy.iter().map(|a| a.3).max().unwrap_or_default();
    eprintln!(
        "load 1: B's GET /v1/guilds/B p50 {p50:?} p99 {p99:?}; A: {} answers, {ok} ok, {} discord_busy (slowest {slowest_busy:?})",
        answers.len(),
        busy.len()
    );
    assert!(within >= 99.0 && all >= 100.0, "the listener answered {within} of B's {all} requests within 50 ms");
    // Seen from here, the time also holds the scheduling of this process
    // and of the listener's connection task on a shared machine (300-400 ms
    // at p99 at a load average of 14 on two cores); the test binary is a
    // debug build, several times slower a request than the release build
    // the issue measured, so its bound is looser. Before fair places B's
    // requests waited for A's: they timed out.
    let bound = Duration::from_millis(if cfg!(debug_assertions) { 1000 } else { 50 });
    assert!(p99 <= bound, "B's p99 {p99:?} while A's Discord is slow");
    assert!(!busy.is_empty(), "A's checks that find no place within 1 s are refused");
    assert!(busy.iter().all(|a| a.2.as_deref() == Some("1")), "discord_busy says Retry-After: 1");
    let other: Vec<_> = answers.iter().filter(|a| a.0 != 200 && !(a.0 == 503 && a.1 == "discord_busy")).collect();
    assert!(
        other.is_empty(),
        "A's checks are answered or refused as busy, nothing else: {:?}",
        &other[..other.len().min(5)]
    );
    // A place waited for here (1 s at most), then one of A's Discord calls (1 s at most): never the 30 s timeout.
    assert!(slowest_busy < Duration::from_secs(10), "a busy answer took {slowest_busy:?}");
}

/// Load 2: A's test key makes 64 dry-run bans (an audit entry each) while
/// A's audit channel takes 1 s a post; a key created in B by the CLI is
/// posted in B's channel within 2 s, and A's backlog is summed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guild_flooding_its_slow_audit_channel_holds_up_no_other_guilds_posts() {
    let app = spawn_app_with(quiet("")).await;
    app.set_audit_channel().await;
    let command = app.double.slash(B, ids::OSCAR_ID).subcommand("apikey", "audit-channel");
    let reply = bot::answer(&app, command.channel("channel", ids::OTHER_GENERAL_CHANNEL_ID)).await;
    assert!(reply.all_text().contains("Audit entries now go to"), "{}", reply.all_text());
    app.wait_for_audit_outbox().await;
    app.double.fault(FaultRule::for_channel(ids::AUDIT_LOG_CHANNEL_ID).latency(Duration::from_secs(1)));

    let tester =
        key(&app, A, "tester", "bans.write", &["--env", "test", "--rate-limit", "100000", "--ban-budget", "10000"])
            .await;
    let mut dry_runs = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        let (http, url, tester) =
            (app.http.clone(), app.url(&ban_path(A, 1_200_000_000_002_000_000 + i)), tester.clone());
        // A's own requests may be told its Discord is busy (503
        // discord_busy, Retry-After 1) while its posts hold places: a client
        // tries again, as the answer asks.
        dry_runs.spawn(async move {
            let mut tries = 0;
            loop {
                let reply = send(http.put(&url).bearer_auth(&tester)).await;
                tries += 1;
                if reply.status != 503 || !reply.text.contains("discord_busy") || tries == 20 {
                    break reply;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    while let Some(done) = dry_runs.join_next().await {
        let reply: Reply = done.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
    }

    let created = Instant::now();
    app.create_key(B, "quiet neighbour", "guild.read", &[]);
    let posted = app
        .double
        .wait_for_message(
            ids::OTHER_GENERAL_CHANNEL_ID,
            |m| m.text().contains("quiet neighbour"),
            Duration::from_secs(10),
        )
        .await
        .expect("B's new key is posted in B's channel");
    let after = created.elapsed();
    eprintln!(
        "load 2: B's post {after:?} after the CLI created the key; {}",
        posted.text().lines().next().unwrap_or("")
    );
    assert!(after <= Duration::from_secs(2), "B's post came {after:?} after its key was created");

    // A's queue is bounded: what is past it is summed up in one entry.
    let summary = app
        .double
        .wait_for_message(
            ids::AUDIT_LOG_CHANNEL_ID,
            |m| m.text().contains("more entries, see the audit log"),
            Duration::from_secs(15),
        )
        .await
        .expect("A's backlog is summed up");
    let posts = app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).len();
    eprintln!(
        "load 2: A's channel: {posts} posts so far, the summary: {}",
        summary.text().lines().next().unwrap_or("")
    );
    assert!(posts < 64, "A's 64 dry runs are not all posted one by one: {posts} posts");
}

/// Load 3: A's webhook accepts connections and never answers, with 40 of
/// A's events queued; B's webhook gets B's next event within 2 s, and A's
/// attempt is given up after 5 s (it was 10 s; B's message was already on
/// time on the main branch of the day, since a guild's messages go one at
/// a time in event order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guild_whose_webhook_never_answers_holds_up_no_other_guilds_deliveries() {
    // A receiver that accepts and never answers (it keeps every socket open).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    // B's receiver answers 204 and notes when each message came.
    let (hits_tx, mut hits) = tokio::sync::mpsc::unbounded_channel::<(Instant, String)>();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}/hook", receiver.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let _ = hits_tx.send((Instant::now(), body));
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    let serving = tokio::spawn(async move { axum::serve(receiver, router).await.unwrap() });

    let config = "[webhooks]\nallow_http = true\nallow_private_addresses = true\nretry_delays = [\"1s\"]\n";
    let app = spawn_app_with(quiet(config)).await;
    for (guild, url, events) in [(A, &silent_url, "ban.added"), (B, &receiver_url, "key.created")] {
        let (guild, events) = (guild.to_string(), events);
        let out = app.cli(&["keys", "webhook", "set", "--guild", &guild, "--url", url, "--events", events]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let tester =
        key(&app, A, "tester", "bans.write", &["--env", "test", "--rate-limit", "100000", "--ban-budget", "10000"])
            .await;
    for i in 0..40u64 {
        put(&app, &ban_path(A, 1_200_000_000_003_000_000 + i), &tester).await.ok();
    }
    // A's messages are queued, and the first is being tried.
    let deadline = Instant::now() + Duration::from_secs(10);
    while support::db_scalar(&app.db_url, "select count(*) from webhook_delivery where state = 'pending'") < Some(40) {
        assert!(Instant::now() < deadline, "A's 40 messages are queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued = Instant::now();

    let created = Instant::now();
    app.create_key(B, "quiet neighbour", "guild.read", &[]);
    let (at, body) = tokio::time::timeout(Duration::from_secs(15), hits.recv())
        .await
        .expect("B's webhook gets B's event")
        .expect("the receiver runs");
    let after = at.duration_since(created);
    eprintln!("load 3: B's message {after:?} after the CLI created the key");
    assert!(body.contains("quiet neighbour"), "{body}");
    assert!(after <= Duration::from_secs(2), "B's message came {after:?} after its key was created");

    // And the silent receiver costs A itself 5 s an attempt (2 s to
    // connect, 5 s in all), not 10: its first attempt, started before the
    // 40 were queued, has failed within 6.5 s of then.
    let first_failed = format!("select count(*) from webhook_delivery where guild_id = {A} and attempts >= 1");
    while support::db_scalar(&app.db_url, &first_failed) < Some(1) {
        assert!(queued.elapsed() < Duration::from_millis(6_500), "A's first attempt is still waiting for an answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let why = format!(
        "select count(*) from webhook_delivery where guild_id = {A} and last_error like 'no answer within 5 s%'"
    );
    assert_eq!(support::db_scalar(&app.db_url, &why), Some(1), "the attempt timed out after 5 s");
    held.abort();
    serving.abort();
}

/// Connections: the process at soft and hard open-files limits of 1,024;
/// one address holds 1,100 idle connections; another's 22 requests, 0.5 s
/// apart with 3 s each, are all answered (its connections are closed past
/// `http.max_connections_per_ip` as they arrive, so the process keeps
/// files for everyone else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_leave_another_answered_at_1024_open_files() {
    let _alone = support::alone().await;
    // This process holds the 1,100 connections too.
    guildkey::http::raise_open_files_limit();
    let app = spawn_app_with(Options { open_files: Some((1024, 1024)), ..quiet("") }).await;
    assert_eq!(support::open_files_of(app.pid()), (1024, 1024), "started at 1,024 open files, no higher hard limit");
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        if let Ok(Ok(socket)) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
        {
            idle.push(socket);
        }
    }
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (mut answered, mut failures) = (0, Vec::new());
    let mut every = tokio::time::interval(Duration::from_millis(500));
    for i in 0..22 {
        every.tick().await;
        match client.get(app.url("/healthz")).send().await {
            Ok(resp) => {
                support::text(resp).await;
                answered += 1;
            }
            Err(e) => failures.push(format!("request {i}: {e}")),
        }
    }
    eprintln!("connections: {} idle connections opened from 127.0.0.1; {answered} of 22 answered", idle.len());
    assert_eq!(answered, 22, "{failures:?}");
    drop(idle);
}

/// At a systemd-like soft 1,024 and a much higher hard limit, the process
/// raises its soft limit to the hard one at start.
#[tokio::test]
async fn the_open_files_soft_limit_is_raised_to_the_hard_limit_at_start() {
    let mut ours = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) }, 0);
    // systemd's 524,288, or whatever this machine lets a process have.
    let hard = ours.rlim_max.min(524_288);
    assert!(hard > 1024, "this machine's hard limit ({hard}) leaves nothing to raise");
    let app = spawn_app_with(Options { open_files: Some((1024, hard)), ..quiet("") }).await;
    assert_eq!(support::open_files_of(app.pid()), (hard, hard), "the soft limit was raised from 1,024");
    assert!(app.logs().iter().any(|l| l.contains("raised the open-files limit")), "and the log says so");
}

/// A bounded webhook backlog: A's receiver stops answering while 12 of A's
/// events come, with `webhooks.max_pending_per_guild` at 5: A never has
/// more than 6 messages stored (5 and one summary), B's webhook is served
/// meanwhile, and once A's receiver is back it gets the 5 in order, then
/// one `events.skipped` for the other 7, pointing at the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receivers_backlog_is_bounded_and_summed_up_in_one_message() {
    // A's receiver holds every request until it is back, then answers 204
    // and notes the body.
    let (back_tx, back) = tokio::sync::watch::channel(false);
    let (a_tx, mut a_hits) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (b_tx, mut b_hits) = tokio::sync::mpsc::unbounded_channel::<(Instant, String)>();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", receiver.local_addr().unwrap());
    let router = axum::Router::new()
        .route(
            "/a",
            axum::routing::post(move |body: String| {
                let (mut back, a_tx) = (back.clone(), a_tx.clone());
                async move {
                    let _ = back.wait_for(|up| *up).await;
                    let _ = a_tx.send(body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/b",
            axum::routing::post(move |body: String| {
                let _ = b_tx.send((Instant::now(), body));
                async { axum::http::StatusCode::NO_CONTENT }
            }),
        );
    let serving = tokio::spawn(async move { axum::serve(receiver, router).await.unwrap() });

    let config = "[webhooks]\nallow_http = true\nallow_private_addresses = true\n\
                  retry_delays = [\"1s\", \"1s\", \"1s\"]\nmax_pending_per_guild = 5\n";
    let app = spawn_app_with(quiet(config)).await;
    for (guild, path, events) in [(A, "/a", "ban.added"), (B, "/b", "key.created")] {
        let (guild, url) = (guild.to_string(), format!("{base}{path}"));
        let out = app.cli(&["keys", "webhook", "set", "--guild", &guild, "--url", &url, "--events", events]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let tester = key(&app, A, "tester", "bans.write", &["--env", "test", "--rate-limit", "100000"]).await;

    // 12 of A's events while its receiver is away.
    let pending_a = format!("select count(*) from webhook_delivery where guild_id = {A} and state = 'pending'");
    let mut most = 0;
    for i in 0..12u64 {
        put(&app, &ban_path(A, 1_200_000_000_004_000_000 + i), &tester).await.ok();
        most = most.max(support::db_scalar(&app.db_url, &pending_a).unwrap_or(0));
    }
    let unchecked = format!(
        "select count(*) from audit_event where guild_id = {A} and action = 'ban.added' and webhook_checked_at is null"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while support::db_scalar(&app.db_url, &unchecked) != Some(0) {
        assert!(Instant::now() < deadline, "A's events were all looked at by the dispatcher");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    most = most.max(support::db_scalar(&app.db_url, &pending_a).unwrap_or(0));
    let stored =
        support::db_scalar(&app.db_url, &format!("select count(*) from webhook_delivery where guild_id = {A}"));
    let folded = support::db_scalar(
        &app.db_url,
        &format!("select skipped_count from webhook_delivery where guild_id = {A} and event_type = 'events.skipped'"),
    );
    eprintln!("backlog: A stored {stored:?} messages (at most {most} pending), the summary stands for {folded:?}");
    assert!(most <= 6, "A had {most} messages pending, past 5 and one summary");
    assert_eq!((stored, folded), (Some(6), Some(7)), "5 messages and one summary for the other 7");

    // B is served meanwhile.
    let created = Instant::now();
    app.create_key(B, "neighbour", "guild.read", &[]);
    let (at, body) = tokio::time::timeout(Duration::from_secs(10), b_hits.recv()).await.unwrap().unwrap();
    assert!(body.contains("neighbour"), "{body}");
    assert!(at.duration_since(created) <= Duration::from_secs(2), "B waited {:?}", at.duration_since(created));

    // A's receiver comes back: the 5, in order, then the summary.
    back_tx.send(true).unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let body = tokio::time::timeout(Duration::from_secs(15), a_hits.recv())
            .await
            .unwrap_or_else(|_| panic!("A's backlog drains once its receiver is back; got {}", got.len()))
            .unwrap();
        got.push(serde_json::from_str::<serde_json::Value>(&body).unwrap());
    }
    let types: Vec<&str> = got.iter().map(|m| m["type"].as_str().unwrap_or("")).collect();
    assert_eq!(types, ["ban.added"; 5].into_iter().chain(["events.skipped"]).collect::<Vec<_>>());
    let users: Vec<&str> = got[..5].iter().map(|m| m["data"]["details"]["user_id"].as_str().unwrap_or("")).collect();
    let expected: Vec<String> = (0..5u64).map(|i| (1_200_000_000_004_000_000 + i).to_string()).collect();
    assert_eq!(users, expected, "in event order");
    let summary = &got[5]["data"];
    assert_eq!(summary["count"], 7);
    assert_eq!(summary["message"], "7 more events, see the audit log");
    let (first, last) =
        (summary["first_audit_event_id"].as_i64().unwrap(), summary["last_audit_event_id"].as_i64().unwrap());
    assert_eq!(
        support::db_scalar(
            &app.db_url,
            &format!("select count(*) from audit_event where guild_id = {A} and action = 'ban.added' and audit_event_id between {first} and {last}")
        ),
        Some(7),
        "the summary's range holds the 7 events it stands for"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a_hits.try_recv().is_err(), "nothing after the summary");
    serving.abort();
}
