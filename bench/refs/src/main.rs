//! `gkbench`: the harness behind `bench/run.sh`.
//!
//! - `seed DB_PATH N TOKEN_FILE`: a guildkey database with N keys, written
//!   straight into SQLite in large batches (the CLI makes one key per call);
//!   the first key gets a rate limit high enough never to throttle a
//!   benchmark, and its token goes to TOKEN_FILE (mode 600), nowhere else.
//! - `bare PORT BODY_FILE`: reference (a), a bare axum endpoint answering
//!   every GET with the same static JSON.
//! - `naive PORT DB_PATH`: reference (b), the naive design: per request a
//!   SQLite lookup by the token's hash and an UPDATE of its last-used time.
//! - `startup -- CMD ARGS..`: runs CMD (environment inherited) and prints
//!   the milliseconds until it logs `listening on`, then its resident memory
//!   once it has settled, then stops it.
//! - `copy DB_PATH COPY_PATH`: a copy of a database (for the naive server,
//!   which writes to it).
//! - `changes DB_PATH N`: on that database, in this process, the service's
//!   start-up load, then N creates and N revokes, then one full reload after
//!   a commit by another connection, each timed.
//! - `p99 ROUTE < metrics.txt`: p50 and p99 of one route from guildkey's
//!   Prometheus latency histogram (upper bucket bounds, in microseconds).
//! - `chart [--write PNG] [--write-dir DIR]`: renders `/apikey usage` charts
//!   (`guildkey::chart`) of made-up but plausible traffic, 24 h in hours,
//!   7 d in hours and 30 d in days, 50 times each, and prints the median and
//!   maximum milliseconds per render; `--write` saves the 24 h chart,
//!   `--write-dir` all three and two empty ones (zero counts, no buckets).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// A rate limit no benchmark reaches (the CLI caps it at 100000/min).
const BENCH_RATE_LIMIT: i64 = 1_000_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).context("missing argument; see the module docs");
    match arg(0)? {
        "seed" => runtime()?.block_on(seed(arg(1)?, arg(2)?.parse()?, arg(3)?)),
        "bare" => runtime()?.block_on(bare(arg(1)?.parse()?, arg(2)?)),
        "naive" => runtime()?.block_on(naive(arg(1)?.parse()?, arg(2)?)),
        "startup" => startup(&args[2..]),
        "copy" => runtime()?.block_on(copy(arg(1)?, arg(2)?)),
        "changes" => runtime()?.block_on(changes(arg(1)?, arg(2)?.parse()?)),
        "p99" => p99(arg(1)?),
        "chart" => chart(&args[1..]),
        other => bail!("unknown command {other}"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn token(rng: &mut impl Rng, alphabet: &[u8]) -> String {
    let random: String = (0..32).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect();
    let body = format!("gk_live_{random}");
    let sum = guildkey::keys::token::checksum(&body);
    format!("{body}{sum}")
}

async fn seed(path: &str, n: usize, token_file: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let url = format!("sqlite://{path}?mode=rwc");
    let store = guildkey::store::Store::connect(&url).await?;
    store.migrate().await?;
    store.close().await;
    let pool = pool(path).await?;
    let alphabet = guildkey::keys::token::BASE62;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let now = 1_760_000_000_000_i64;
    // The benchmark's key, with a real token.
    let secret = token(&mut rng, alphabet);
    write_secret(token_file, &secret)?;
    let id: String = (0..16).map(|_| alphabet[rng.gen_range(0..62)] as char).collect();
    sqlx::query(
        "insert into api_key (api_key_id, guild_id, name, key_hash, prefix, environment, scopes, created_at, \
         created_by, rate_limit_per_minute, allowed_ips, updated_at) \
         values (?, 1000000000000000000, 'bench key', ?, ?, 'live', 'guild.read bans.read', ?, 'cli', ?, '', ?)",
    )
    .bind(format!("key_{id}"))
    .bind(Sha256::digest(secret.as_bytes()).to_vec())
    .bind(secret[..12].to_owned())
    .bind(now)
    .bind(BENCH_RATE_LIMIT)
    .bind(now)
    .execute(&pool)
    .await?;
    // The rest in SQL: random hashes (no one presents their tokens), ids and
    // prefixes shaped like real ones, three keys per guild.
    sqlx::query(
        "insert into api_key (api_key_id, guild_id, name, key_hash, prefix, environment, scopes, created_at, \
         created_by, rate_limit_per_minute, allowed_ips, updated_at) \
         with recursive n(i) as (select 1 union all select i + 1 from n where i < ?) \
         select 'key_' || hex(randomblob(8)), 1000000000000000000 + i / 3, 'seeded key ' || i, randomblob(32), \
             'gk_live_' || substr(hex(randomblob(2)), 1, 4), 'live', \
             case i % 2 when 0 then 'guild.read bans.read' else 'bans.read bans.write roles.write' end, \
             ? + i, '1200000000000000001', 60, '', ? + i from n",
    )
    .bind(n.saturating_sub(1) as i64)
    .bind(now)
    .bind(now)
    .execute(&pool)
    .await?;
    pool.close().await;
    eprintln!("seeded {n} keys in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn write_secret(path: &str, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    Ok(())
}

async fn pool(path: &str) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new().max_connections(8).connect_with(options).await?)
}

async fn listen(port: u16, app: Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn bare(port: u16, body_file: &str) -> anyhow::Result<()> {
    let body: &'static [u8] = Vec::leak(std::fs::read(body_file)?);
    let app = Router::new().fallback(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) });
    listen(port, app).await
}

async fn naive(port: u16, db: &str) -> anyhow::Result<()> {
    let app = Router::new().fallback(naive_verify).with_state(Arc::new(pool(db).await?));
    listen(port, app).await
}

async fn naive_verify(State(pool): State<Arc<SqlitePool>>, headers: HeaderMap) -> Response {
    let Some(token) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()?.strip_prefix("Bearer ")) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match naive_lookup(&pool, token).await {
        Ok(Some(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn naive_lookup(pool: &SqlitePool, token: &str) -> anyhow::Result<Option<String>> {
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    let Some(row) = sqlx::query(
        "select api_key_id, guild_id, name, prefix, environment, scopes, expires_at, revoked_at, \
         rate_limit_per_minute from api_key where key_hash = ?",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        return Ok(None);
    }
    let id: String = row.try_get("api_key_id")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    sqlx::query("update api_key set last_used_at = ?, use_count = use_count + 1 where api_key_id = ?")
        .bind(now)
        .bind(&id)
        .execute(pool)
        .await?;
    let scopes: String = row.try_get("scopes")?;
    let body = serde_json::json!({
        "success": true,
        "data": {
            "key_id": id,
            "guild_id": (row.try_get::<i64, _>("guild_id")? as u64).to_string(),
            "name": row.try_get::<String, _>("name")?,
            "prefix": row.try_get::<String, _>("prefix")?,
            "scopes": scopes.split(' ').collect::<Vec<_>>(),
            "environment": row.try_get::<String, _>("environment")?,
            "expires_at": row.try_get::<Option<i64>, _>("expires_at")?,
            "rate_limit_per_minute": row.try_get::<i64, _>("rate_limit_per_minute")?,
        }
    });
    Ok(Some(body.to_string()))
}

async fn copy(from: &str, to: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(to);
    let pool = pool(from).await?;
    sqlx::query("vacuum into ?").bind(to).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

async fn changes(db: &str, n: usize) -> anyhow::Result<()> {
    use guildkey::audit::Actor;
    use guildkey::service::{KeyDraft, KeyRequest, KeyService};
    let store = guildkey::store::Store::connect(&format!("sqlite://{db}")).await?;
    let cfg = guildkey::config::KeysConfig {
        max_per_guild: 1_000_000,
        prefix: "gk".into(),
        default_rate_limit_per_minute: 60,
        last_used_flush_seconds: 5,
        ..guildkey::config::Config::default().keys
    };
    let t = Instant::now();
    let service = KeyService::new(store.clone(), cfg).await?;
    let load = t.elapsed();
    let keys = service.indexed_keys();
    let draft = KeyDraft::parse(&KeyRequest { name: "bench change", scopes: "bans.read", ..Default::default() })?;
    let (mut create, mut revoke) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let issued = service.issue(42, draft.clone(), &Actor::Cli).await?;
        create.push(t.elapsed());
        let t = Instant::now();
        service.revoke(Some(42), issued.record.id.as_str(), &Actor::Cli).await?;
        revoke.push(t.elapsed());
    }
    let own_commits_seen = service.refresh_index().await?;
    // Commits by another connection, as the CLI or a second instance makes
    // them: a key change is applied alone, a last-used flush costs nothing,
    // and a change log that cannot say what changed means a full reload.
    let other = pool(db).await?;
    let foreign = |sql: &'static str| {
        let (other, service) = (other.clone(), service.clone());
        async move {
            sqlx::query(sql).execute(&other).await?;
            let t = Instant::now();
            service.refresh_index().await?;
            anyhow::Ok(t.elapsed().as_secs_f64() * 1e3)
        }
    };
    let stats = service.index_stats();
    let revoke_ms = foreign("update api_key set revoked_at = updated_at where rowid = 1").await?;
    let flush_ms =
        foreign("update api_key set last_used_at = updated_at, use_count = use_count + 1 where rowid = 2").await?;
    let after_increments = service.index_stats();
    let reload_ms = foreign(
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 3000) \
         insert into key_change (api_key_id) select 'key_bench' || i from n",
    )
    .await?;
    let after_reload = service.index_stats();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!(
        "keys={keys} load_ms={:.0} create_p50_ms={:.2} revoke_p50_ms={:.2} own_commits_seen_as_foreign={own_commits_seen}",
        load.as_secs_f64() * 1e3,
        median(&mut create),
        median(&mut revoke),
    );
    println!(
        "foreign revoke: applied in {revoke_ms:.2} ms; foreign last-used flush: {flush_ms:.2} ms; \
         full reloads {} -> {} (keys applied {} -> {})",
        stats.full_loads, after_increments.full_loads, stats.keys_applied, after_increments.keys_applied
    );
    println!(
        "forced full reload (change log overflow): {reload_ms:.0} ms; full reloads {} -> {}",
        after_increments.full_loads, after_reload.full_loads
    );
    Ok(())
}

fn startup(cmd: &[String]) -> anyhow::Result<()> {
    let (program, rest) = cmd.split_first().context("startup -- CMD ARGS..")?;
    let started = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(rest)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("failed to start {program}"))?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let mut ready = None;
    for line in lines.by_ref() {
        let line = line?;
        if line.contains("listening on") {
            ready = Some(started.elapsed());
            break;
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let Some(ready) = ready else {
        let _ = child.wait();
        bail!("{program} exited before logging 'listening on'");
    };
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(pid)?;
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    println!("startup_ms={} rss_mib={:.1}", ready.as_millis(), rss as f64 / 1024.0);
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Percentiles from cumulative `_bucket{le=..}` counts: the upper bound of
/// the bucket holding the quantile (an upper estimate).
fn p99(route: &str) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("guildkey_http_request_duration_seconds_bucket{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        bail!("no samples for {route}");
    }
    let at = |q: f64| buckets.iter().find(|b| b.1 >= q * total).map_or(f64::INFINITY, |b| b.0 * 1e6);
    println!("handler_samples={total} handler_p50_le_us={} handler_p99_le_us={}", at(0.5), at(0.99));
    Ok(())
}

/// One chart view: a title, the bucket length and how many buckets end at 2026-12-03 15:00 UTC.
struct View {
    name: &'static str,
    title: &'static str,
    bucket_label: &'static str,
    step_hours: i64,
    buckets: i64,
}

const VIEWS: [View; 3] = [
    View {
        name: "24h",
        title: "game (gk_live_Xr4qT9) · last 24 hours",
        bucket_label: "per hour",
        step_hours: 1,
        buckets: 24,
    },
    View {
        name: "7d",
        title: "game (gk_live_Xr4qT9) · last 7 days",
        bucket_label: "per hour",
        step_hours: 1,
        buckets: 168,
    },
    View {
        name: "30d",
        title: "game (gk_live_Xr4qT9) · last 30 days",
        bucket_label: "per day",
        step_hours: 24,
        buckets: 30,
    },
];
const CHART_RENDERS: usize = 50;
const OUTCOMES: [&str; 4] = ["ok", "4xx", "429", "5xx"];

/// A game server checking bans: busiest in the (UTC) evening, about 1.5 %
/// 4xx, a runaway loop hitting the rate limit one afternoon, a Discord
/// hiccup with 5xx, the server down for maintenance for one hour, and a key
/// created four days into the month.
fn usage_buckets(view: &View) -> Vec<(chrono::DateTime<chrono::Utc>, Vec<u64>)> {
    use chrono::TimeZone;
    let end = chrono::Utc.with_ymd_and_hms(2026, 12, 3, 15, 0, 0).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let created = end - chrono::Duration::days(26) - chrono::Duration::hours(9);
    let maintenance = end - chrono::Duration::hours(9);
    let hour_counts = |at: chrono::DateTime<chrono::Utc>, rng: &mut rand::rngs::StdRng| -> [u64; 4] {
        use chrono::Timelike;
        if at < created || at == maintenance {
            return [0; 4];
        }
        let phase = (f64::from(at.hour()) - 20.0) / 24.0 * std::f64::consts::TAU;
        let busy = (0.5 + 0.5 * phase.cos()).powf(1.5);
        let hours_ago = (end - at).num_hours();
        let total = (350.0 + 1500.0 * busy) * rng.gen_range(0.85..1.15);
        let client_errors = total * rng.gen_range(0.008..0.022);
        let limited = if (20..=21).contains(&hours_ago) { rng.gen_range(180.0..320.0) } else { 0.0 };
        let server_errors = if hours_ago == 4 {
            rng.gen_range(25.0..45.0)
        } else if rng.gen_bool(0.08) {
            1.0
        } else {
            0.0
        };
        [total as u64, client_errors as u64, limited as u64, server_errors as u64]
    };
    (0..view.buckets)
        .map(|i| {
            let start = end - chrono::Duration::hours(view.step_hours * (view.buckets - i));
            let mut counts = vec![0u64; OUTCOMES.len()];
            for h in 0..view.step_hours {
                let hour = hour_counts(start + chrono::Duration::hours(h), &mut rng);
                counts.iter_mut().zip(hour).for_each(|(c, n)| *c += n);
            }
            (start, counts)
        })
        .collect()
}

fn chart(args: &[String]) -> anyhow::Result<()> {
    let mut write = None;
    let mut write_dir = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--write" => write = Some(args.next().context("--write PNG")?.clone()),
            "--write-dir" => write_dir = Some(args.next().context("--write-dir DIR")?.clone()),
            other => bail!("unknown chart option {other}"),
        }
    }
    for view in &VIEWS {
        let buckets = usage_buckets(view);
        let chart = guildkey::chart::UsageChart {
            title: view.title,
            bucket_label: view.bucket_label,
            outcomes: &OUTCOMES,
            buckets: &buckets,
        };
        let mut times = Vec::with_capacity(CHART_RENDERS);
        let mut png = Vec::new();
        for _ in 0..CHART_RENDERS {
            let started = Instant::now();
            png = guildkey::chart::render_png(&chart)?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let first = times[0];
        times.sort_by(f64::total_cmp);
        println!(
            "{:>3}, {:>3} buckets: median {:.1} ms, max {:.1} ms (first {:.1} ms), {} renders, PNG {:.1} KiB",
            view.name,
            buckets.len(),
            times[times.len() / 2],
            times[times.len() - 1],
            first,
            CHART_RENDERS,
            png.len() as f64 / 1024.0
        );
        if let (Some(path), "24h") = (&write, view.name) {
            std::fs::write(path, &png).with_context(|| format!("writing {path}"))?;
        }
        if let Some(dir) = &write_dir {
            std::fs::write(format!("{dir}/usage-{}.png", view.name), &png)?;
        }
    }
    if let Some(dir) = &write_dir {
        let idle: Vec<_> = usage_buckets(&VIEWS[0]).into_iter().map(|(start, c)| (start, vec![0; c.len()])).collect();
        for (name, buckets) in [("none", &idle[..]), ("no-buckets", &[])] {
            let chart = guildkey::chart::UsageChart {
                title: "idle (gk_live_Q8mZ2a) · last 24 hours",
                bucket_label: "per hour",
                outcomes: &OUTCOMES,
                buckets,
            };
            std::fs::write(format!("{dir}/usage-{name}.png"), guildkey::chart::render_png(&chart)?)?;
        }
    }
    Ok(())
}
