//! Resource exhaustion against the real listener: clients that send their
//! headers or bodies a byte at a time, oversized headers and bodies, and
//! thousands of idle connections. The listener must keep answering everyone
//! else, refuse cleanly, close what it will not wait for, and keep its memory
//! bounded. Figures are printed (`--nocapture` shows them).

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{ids, json, spawn_app, spawn_app_with, App, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const DEMO: u64 = ids::DEMO_GUILD_ID;
/// `HEADER_READ_TIMEOUT` in src/http/mod.rs: how long a client may take to
/// send a request's headers, which is also how long an idle connection stays.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `MAX_HEAD_BYTES` in src/http/mod.rs.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// How late the listener may be in closing a connection it gave up on.
const CLOSE_MARGIN: Duration = Duration::from_secs(5);
/// A request to a listener under attack must still be answered this fast.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

// One heavy test at a time, and no other test's app meanwhile
// (`support::alone`): they share two cores, and the latency figures mean
// more when they are not measuring each other.

fn addr(app: &App) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Raises this process's soft open-files limit to the hard limit (the
/// guildkey child inherits it); returns the limit now in force.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0, "getrlimit");
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        }
    }
    lim.rlim_cur
}

/// A field of `/proc/<pid>/status` in kB (e.g. `VmRSS`).
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// GET `/healthz` and `/v1/verify` on fresh connections; returns the slower
/// of the two and asserts both answered 200.
async fn probe(app: &App, token: &str) -> Duration {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(0).build().unwrap();
    let started = Instant::now();
    let health = client.get(app.url("/healthz")).send().await.expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let verify = client.get(app.url("/v1/verify")).bearer_auth(token).send().await.expect("/v1/verify answers");
    assert_eq!(verify.status(), 200);
    started.elapsed()
}

/// Reads a whole HTTP/1.1 response (the request asked for `Connection:
/// close`); returns its status and body.
async fn read_response(stream: &mut TcpStream, within: Duration) -> (u16, String) {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut raw)).await.expect("a response in time");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {raw:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body.to_owned())
}

/// Waits for the peer to close (EOF, reset, or a final response and then
/// EOF); returns true if it did within `within`.
async fn closed_by_peer(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

/// A client that sends request headers one byte every `every`, never
/// finishing; returns how long the listener let it go on before closing.
async fn slow_header_client(addr: String, every: Duration, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    let trickle = async move {
        for b in head.bytes().chain(std::iter::repeat(b'a')) {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    };
    let mut buf = [0u8; 256];
    tokio::select! {
        () = trickle => Some(started.elapsed()),
        _ = rd.read(&mut buf) => Some(started.elapsed()),
        () = tokio::time::sleep(give_up) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_do_not_pin_the_listener_and_slow_headers_are_cut_off() {
    let _alone = support::alone().await;
    let app = spawn_app().await;
    let verifier = app.create_key(DEMO, "verifier", "guild.read", &["--rate-limit", "100000"]);
    // Its 32 dry runs spend its ban budget as live bans would: room for them.
    let writer = app.create_key(
        DEMO,
        "writer",
        "bans.write",
        &["--env", "test", "--rate-limit", "100000", "--ban-budget", "100"],
    );
    tokio::time::sleep(Duration::from_millis(1200)).await; // the CLI's keys are live within 1 s
    let baseline = probe(&app, &verifier).await;
    let addr = addr(&app);

    // 200 clients that never finish their headers, a byte every 250 ms.
    const SLOW_HEADERS: usize = 200;
    let mut headers = JoinSet::new();
    for _ in 0..SLOW_HEADERS {
        headers.spawn(slow_header_client(addr.clone(), Duration::from_millis(250), HEADER_READ_TIMEOUT + CLOSE_MARGIN));
    }
    // 32 authenticated writes whose bodies arrive a byte every 100 ms.
    const SLOW_BODIES: usize = 32;
    let mut bodies = JoinSet::new();
    for i in 0..SLOW_BODIES {
        let (addr, writer) = (addr.clone(), writer.clone());
        bodies.spawn(async move {
            let body = format!("{{\"reason\":\"slow body {i:02}\"}}");
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let head = format!(
                "PUT /v1/guilds/{DEMO}/bans/{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {writer}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                ids::PAT_ID,
                body.len()
            );
            stream.write_all(head.as_bytes()).await.expect("write head");
            for b in body.bytes() {
                stream.write_all(&[b]).await.expect("the listener waits for a slow body");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            read_response(&mut stream, Duration::from_secs(10)).await
        });
    }
    // One legitimate but slow client: its headers take about 2 s.
    let patient = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            for chunk in request.as_bytes().chunks(4) {
                stream.write_all(chunk).await.expect("write");
                tokio::time::sleep(Duration::from_millis(2000 / (request.len() as u64 / 4))).await;
            }
            read_response(&mut stream, Duration::from_secs(10)).await
        })
    };

    // Meanwhile everyone else is answered, and fast.
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    let probing = Instant::now();
    while probing.elapsed() < Duration::from_secs(4) {
        slowest = slowest.max(probe(&app, &verifier).await);
        probes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answered = 0;
    while let Some(done) = bodies.join_next().await {
        let (status, body) = done.expect("slow-body client");
        assert_eq!(status, 200, "a slow body is still read and answered: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["data"]["dry_run"], true, "{body}");
        answered += 1;
    }
    let (status, _) = patient.await.unwrap();
    assert_eq!(status, 200, "a client slower than usual but inside the timeout is served");
    let mut cut_after = Vec::new();
    while let Some(done) = headers.join_next().await {
        cut_after.push(done.unwrap().expect("the listener closes a connection whose headers never end"));
    }
    cut_after.sort();

    eprintln!(
        "slowloris: {SLOW_HEADERS} slow-header + {SLOW_BODIES} slow-body connections; {probes} probes \
         (healthz + verify), slowest {slowest:?} (baseline {baseline:?}); {answered} slow bodies answered 200; \
         slow headers cut off after {:?}..{:?}",
        cut_after[0],
        cut_after[cut_after.len() - 1]
    );
    assert!(slowest < ANSWER_WITHIN, "the listener was pinned: a probe took {slowest:?}");
    assert_eq!(answered, SLOW_BODIES);
    assert!(cut_after[0] >= HEADER_READ_TIMEOUT - Duration::from_millis(500), "cut off too early: {:?}", cut_after[0]);
    assert!(probe(&app, &verifier).await < ANSWER_WITHIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_a_clean_refusal_and_the_listener_stays_up() {
    let _alone = support::alone().await;
    let app = spawn_app().await;
    let verifier = app.create_key(DEMO, "verifier", "guild.read", &[]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let addr = addr(&app);

    // One 64 KiB header, a header block just over the limit, 200 small headers, and 1 MiB.
    let cases: Vec<(&str, String)> = vec![
        ("one 64 KiB header", format!("X-Big: {}\r\n", "a".repeat(64 * 1024))),
        ("headers just over the limit", format!("X-Big: {}\r\n", "a".repeat(MAX_HEAD_BYTES))),
        ("200 small headers", (0..200).map(|i| format!("X-H{i}: v\r\n")).collect()),
        ("a 1 MiB header", format!("X-Big: {}\r\n", "a".repeat(1024 * 1024))),
    ];
    for (what, extra) in &cases {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
        // The listener may stop reading (and close) before all of it is sent.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await;
        assert!(read.is_ok(), "{what}: no answer and no close within 5 s");
        let raw = String::from_utf8_lossy(&raw);
        let status: Option<u16> = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        eprintln!("{what} ({} bytes): {status:?}", request.len());
        // A reset before the status line arrived is a refusal too, but we want to see the status.
        assert!(matches!(status, Some(431 | 400 | 413)), "{what}: expected 431/400/413, got {raw:.200}");
        if *what == "headers just over the limit" {
            // Within hyper's own limit (twice ours): the front door answers, in the envelope.
            assert_eq!(status, Some(431), "{what}: {raw:.200}");
            let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
            let body: Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {raw:.300}"));
            assert_eq!((body["success"].clone(), body["error"]["code"].clone()), (Value::Bool(false), 431.into()));
            assert_eq!(body["error"]["reason"], "headers_too_large", "{body}");
        }
        assert!(probe(&app, &verifier).await < ANSWER_WITHIN, "{what}: the listener is still up");
    }
    // Over our limit but within hyper's, through an ordinary client: the envelope.
    let over = "a".repeat(MAX_HEAD_BYTES + 1024);
    let resp = app.http.get(app.url("/v1/verify")).bearer_auth(&verifier).header("x-big", &over).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 431);
    let body = json(resp).await;
    assert_eq!(body["error"]["reason"], "headers_too_large", "{body}");
    // Just inside ours: answered as usual.
    let inside = "a".repeat(MAX_HEAD_BYTES - 1024);
    let resp = app.http.get(app.url("/v1/verify")).bearer_auth(&verifier).header("x-big", &inside).send().await;
    assert_eq!(resp.unwrap().status(), 200);

    // Through an ordinary client too.
    let big = "a".repeat(64 * 1024);
    let resp = app.http.get(app.url("/v1/verify")).bearer_auth(&verifier).header("x-big", &big).send().await;
    match resp {
        Ok(r) => assert!(matches!(r.status().as_u16(), 431 | 400 | 413), "got {}", r.status()),
        Err(e) => panic!("a 64 KiB header got no HTTP answer: {e}"),
    }
    // Headers well inside the limit are fine.
    let ok = app.http.get(app.url("/v1/verify")).bearer_auth(&verifier).header("x-medium", "a".repeat(8 * 1024));
    assert_eq!(ok.send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_get_413_in_the_envelope_without_being_read_whole() {
    let _alone = support::alone().await;
    let app = spawn_app_with(Options { config: "[http]\nmax_body_bytes = 1024\n".into(), ..Options::default() }).await;
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--env", "test"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let addr = addr(&app);
    let path = format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID);

    // A declared 10 GB body is refused from its headers alone.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {writer}\r\nContent-Type: application/json\r\n\
         Content-Length: 10000000000\r\nConnection: close\r\n\r\n{{\"reason\":\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (status, body) = read_response(&mut stream, Duration::from_secs(5)).await;
    eprintln!("declared 10 GB body: {status} after {:?}", started.elapsed());
    assert_envelope_413(status, &body);

    // A chunked body with no length to go by, sent in 256-byte chunks: refused
    // once it passes the limit, not after the client has sent everything.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {writer}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut sent = 0;
    let started = Instant::now();
    let chunk = format!("100\r\n{}\r\n", "a".repeat(256));
    let refused = loop {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break read_response(&mut stream, Duration::from_secs(5)).await;
        }
        sent += 256;
        let mut peek = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), stream.peek(&mut peek)).await {
            if n > 0 {
                break read_response(&mut stream, Duration::from_secs(5)).await;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no refusal after {sent} bytes");
    };
    eprintln!("chunked body: {} after {sent} bytes sent (limit 1024)", refused.0);
    assert_envelope_413(refused.0, &refused.1);
    assert!(sent <= 64 * 1024, "the refusal came only after {sent} bytes");

    // Without a key nothing waits for the body at all: 401 from the headers.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\
         Connection: close\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (status, body) = read_response(&mut stream, Duration::from_secs(2)).await;
    eprintln!("keyless write with a body never sent: {status} after {:?}", started.elapsed());
    assert_eq!(status, 401, "{body}");
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[track_caller]
fn assert_envelope_413(status: u16, body: &str) {
    assert_eq!(status, 413, "{body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["data"], serde_json::json!({}), "{v}");
    assert_eq!(v["error"]["code"], 413, "{v}");
    assert_eq!(v["error"]["reason"], "payload_too_large", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_keep_memory_bounded_and_are_closed_by_the_listener() {
    let _alone = support::alone().await;
    let limit = raise_nofile_limit();
    // Both ends of every connection count against the same limit (the child
    // inherits it); leave room for everything else each process opens.
    let target = 10_000usize.min(limit.saturating_sub(500) as usize);
    eprintln!("RLIMIT_NOFILE {limit}; opening {target} idle connections");
    // All from one address here: its cap lifted, so every one is held.
    let config = "[http]\nmax_connections_per_ip = 1000000\n".to_owned();
    let app = spawn_app_with(Options { config, ..Options::default() }).await;
    let verifier = app.create_key(DEMO, "verifier", "guild.read", &["--rate-limit", "100000"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pid = app.pid();
    probe(&app, &verifier).await;
    let rss_before = proc_status_kb(pid, "VmRSS");
    let fds_before = open_fds(pid);
    let addr = addr(&app);

    // Open them in batches smaller than the listener's accept backlog (128),
    // and let the listener accept each batch before the next, so no handshake
    // waits for a retransmit. A slow or loaded machine opens fewer: opening
    // stops while the first connections are still well inside the header
    // timeout, so every one of them is open when the figures are read.
    let started = Instant::now();
    let open_budget = HEADER_READ_TIMEOUT - Duration::from_secs(3);
    let mut idle: Vec<(TcpStream, tokio::time::Instant)> = Vec::with_capacity(target);
    while idle.len() < target && started.elapsed() < open_budget {
        let mut batch = JoinSet::new();
        for _ in 0..(target - idle.len()).min(100) {
            let addr = addr.clone();
            batch.spawn(async move { TcpStream::connect(addr).await });
        }
        let opened_at = tokio::time::Instant::now();
        while let Some(conn) = batch.join_next().await {
            idle.push((conn.unwrap().expect("connect"), opened_at));
        }
        while open_fds(pid) + 100 < fds_before + idle.len() && started.elapsed() < open_budget {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let opened_in = started.elapsed();
    let opened = idle.len();
    assert!(
        opened >= target / 5,
        "only {opened} connections opened in {opened_in:?}: too few for the figures to mean anything"
    );
    // Wait for the listener to have accepted (nearly) all of them.
    let deadline = Instant::now() + Duration::from_secs(2);
    while open_fds(pid) < fds_before + opened * 99 / 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fds_open = open_fds(pid);
    let rss_open = proc_status_kb(pid, "VmRSS");
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        slowest = slowest.max(probe(&app, &verifier).await);
    }

    // The listener closes each idle connection once the header timeout passes.
    let mut still_open = 0;
    for (stream, opened_at) in &mut idle {
        let reap_deadline = *opened_at + HEADER_READ_TIMEOUT + CLOSE_MARGIN;
        let left = reap_deadline.saturating_duration_since(tokio::time::Instant::now());
        if !closed_by_peer(stream, left).await {
            still_open += 1;
        }
    }
    let reaped_after = started.elapsed();
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_after = open_fds(pid);
    let rss_after = proc_status_kb(pid, "VmRSS");
    let per_conn = (rss_open.saturating_sub(rss_before)) * 1024 / opened as u64;
    eprintln!(
        "{opened} of {target} idle connections opened in {opened_in:?}; guildkey fds {fds_before} -> {fds_open} -> {fds_after}; \
         VmRSS {rss_before} kB -> {rss_open} kB (+{per_conn} B per connection) -> {rss_after} kB after they \
         were closed; probes while open: slowest {slowest:?}; {still_open} still open {reaped_after:?} after \
         the first connect"
    );
    assert!(fds_open >= fds_before + opened * 9 / 10, "the listener accepted the connections");
    assert!(slowest < ANSWER_WITHIN, "with {opened} idle connections open a probe took {slowest:?}");
    assert!(per_conn < 64 * 1024, "{per_conn} bytes per idle connection");
    assert_eq!(still_open, 0, "the listener keeps idle connections open past its header timeout");
    assert!(fds_after < fds_before + 50, "connections were not released: {fds_after} fds");
    assert!(probe(&app, &verifier).await < ANSWER_WITHIN);
    let health = json(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(health["data"]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_is_reused_within_the_timeout() {
    let _alone = support::alone().await;
    let app = spawn_app().await;
    let addr = addr(&app);
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    for i in 0..3 {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("the connection is still open");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("answer").unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "request {i} on a kept-alive connection: {text}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_and_closes_idle_connections() {
    let _alone = support::alone().await;
    let mut app = spawn_app().await;
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--env", "test"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let addr = addr(&app);
    // An idle connection, a kept-alive one after a request, and a write whose body is half sent.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let body = "{\"reason\":\"in flight at shutdown\"}";
    let mut writing = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/guilds/{DEMO}/bans/{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {writer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        ids::PAT_ID,
        body.len(),
        &body[..10]
    );
    writing.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let term = std::process::Command::new("kill").arg("-TERM").arg(app.pid().to_string()).status().unwrap();
    assert!(term.success());
    let started = Instant::now();
    assert!(closed_by_peer(&mut idle, Duration::from_secs(3)).await, "an idle connection is closed at shutdown");
    assert!(closed_by_peer(&mut kept, Duration::from_secs(3)).await, "a kept-alive connection is closed at shutdown");
    let closed_in = started.elapsed();
    writing.write_all(&body.as_bytes()[10..]).await.expect("the request in flight is still read");
    let (status, reply) = read_response(&mut writing, Duration::from_secs(5)).await;
    eprintln!("after SIGTERM: idle connections closed in {closed_in:?}; the write in flight answered {status}");
    assert_eq!(status, 200, "the request in flight is finished: {reply}");
    let exit = app.stop();
    assert!(exit.success(), "a clean exit: {exit:?}");
}
