//! `gkbench`: the harness behind `bench/run.sh`.
//!
//! - `seed DB N TOKEN_FILE`: a guildkey database with N keys, written
//!   straight into the database in large batches (the CLI makes one key per
//!   call); DB is a SQLite file's path or a `postgres://` URL (of an
//!   existing, empty database). The first key gets a rate limit high enough
//!   never to throttle a benchmark, and its token goes to TOKEN_FILE (mode
//!   600), nowhere else.
//! - `bare PORT BODY_FILE`: reference (a), a bare axum endpoint answering
//!   every GET with the same static JSON.
//! - `naive PORT DB_PATH`: reference (b), the naive design: per request a
//!   SQLite lookup by the token's hash and an UPDATE of its last-used time.
//! - `startup -- CMD ARGS..`: runs CMD (environment inherited) and prints
//!   the milliseconds until it logs `listening on`, then its resident memory
//!   once it has settled, then stops it.
//! - `copy DB_PATH COPY_PATH`: a copy of a database (for the naive server,
//!   which writes to it).
//! - `changes DB N`: on that database (a SQLite path, or a `sqlite://` or
//!   `postgres://` URL of a database `seed` made), in this process, the
//!   service's start-up load, then N creates and N revokes, then one full
//!   reload after a commit by another connection, each timed. Given a URL it
//!   also prints the p99 and maximum of the creates and revokes.
//! - `propagation DB N [PAUSE_MS]`: two instances on one database (a path
//!   or URL as for `changes`), each with its own runtime, store (pool; on
//!   PostgreSQL its own LISTEN connection) and upkeep task, as two
//!   processes would have; N keys created through A one at a time (the
//!   first 100 each timed until B accepts it), then N revokes through A,
//!   each after a random pause of up to PAUSE_MS (250) and timed until B's
//!   in-memory `authenticate` refuses the key as revoked (B polled every
//!   ~50 µs).
//! - `propagation-http DB GUILDKEY PORT N [PAUSE_MS]`: the same with real
//!   processes: B is a `guildkey run` listening on PORT on database DB (a
//!   URL); N keys are created here, then each is revoked by a `GUILDKEY keys
//!   revoke` process of its own (the operator CLI, its own process and
//!   database connections) and B is polled over HTTP, `GET /v1/verify` on
//!   one keep-alive connection every ~0.5 ms, until it answers 401
//!   `key_revoked`.
//! - `reload-outage DB`: one instance with its upkeep running on a database
//!   `seed` made (path or URL); another connection overflows the key change
//!   log, as a change of more than 2,048 keys at once would, which makes the
//!   next check reload the index whole; the instance's `authenticate` is
//!   asked about a valid key every millisecond meanwhile, and the time it
//!   answered `index_stale` (every key refused) is printed with the
//!   reload's.
//! - `pg-create ADMIN_URL NAME` / `pg-drop ADMIN_URL NAME`: makes (printing
//!   its URL) or drops a PostgreSQL database on the server at ADMIN_URL.
//! - `pg-scan URL`: a diagnosis of the index's start-up load from
//!   PostgreSQL, read two other ways than the store does: its pages of JSON
//!   with the key id's own collation instead of `collate "C"`, and the same
//!   columns through a cursor as plain rows. Each timed whole.
//! - `p99 ROUTE < metrics.txt`: p50 and p99 of one route from guildkey's
//!   Prometheus latency histogram (upper bucket bounds, in microseconds).
//! - `usage DATABASE_URL N`: the usage counters in-process, on a fresh
//!   database (a SQLite file, or one made for the run on the PostgreSQL
//!   server an admin URL names): memory per active key, then N
//!   keys touched (one verification each; then one each and a refusal,
//!   logged) and one flush timed (wall and CPU, this process's and, on a
//!   local PostgreSQL, the server's), then the storage 48 hours of minute
//!   buckets take per key.
//! - `chart [--write PNG] [--write-dir DIR]`: renders `/apikey usage` charts
//!   (`guildkey::chart`) of made-up but plausible traffic, 24 h in hours,
//!   7 d in hours and 30 d in days, 50 times each, and prints the median and
//!   maximum milliseconds per render; `--write` saves the 24 h chart,
//!   `--write-dir` all three and two empty ones (zero counts, no buckets).
//! - `docs-chart PNG`: draws the README's usage chart (`docs/usage-chart.png`)
//!   through the bot's own path (`guildkey::bot::usage::chart_png`) from the
//!   24 h fixture above, ending 2026-12-03 15:00 UTC; the same file every
//!   run (a test below holds the committed picture to it).

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
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, Row, SqlitePool};

/// A rate limit no benchmark reaches (the CLI caps it at 100000/min).
const BENCH_RATE_LIMIT: i64 = 1_000_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).context("missing argument; see the module docs");
    match arg(0)? {
        "seed" if guildkey::store::is_postgres_url(arg(1)?) => {
            runtime()?.block_on(seed_postgres(arg(1)?, arg(2)?.parse()?, arg(3)?))
        }
        "seed" => runtime()?.block_on(seed(arg(1)?, arg(2)?.parse()?, arg(3)?)),
        "bare" => runtime()?.block_on(bare(arg(1)?.parse()?, arg(2)?)),
        "naive" => runtime()?.block_on(naive(arg(1)?.parse()?, arg(2)?)),
        "startup" => startup(&args[2..]),
        "copy" => runtime()?.block_on(copy(arg(1)?, arg(2)?)),
        "changes" => runtime()?.block_on(changes(arg(1)?, arg(2)?.parse()?)),
        "propagation" => propagation(arg(1)?, arg(2)?.parse()?, args.get(3).map_or(Ok(250), |a| a.parse())?),
        "propagation-http" => propagation_http(
            arg(1)?,
            arg(2)?,
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            args.get(5).map_or(Ok(250), |a| a.parse())?,
        ),
        "reload-outage" => reload_outage(arg(1)?),
        "pg-create" => runtime()?.block_on(pg_admin(arg(1)?, arg(2)?, true)),
        "pg-drop" => runtime()?.block_on(pg_admin(arg(1)?, arg(2)?, false)),
        "pg-scan" => runtime()?.block_on(pg_scan(arg(1)?)),
        "p99" => p99(arg(1)?),
        "usage" => runtime()?.block_on(usage(arg(1)?, arg(2)?.parse()?)),
        "chart" => chart(&args[1..]),
        "docs-chart" => std::fs::write(arg(1)?, docs_chart()?).with_context(|| format!("writing {}", arg(1).unwrap())),
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

/// Rows per `insert` when seeding PostgreSQL (one array per column).
const PG_SEED_BATCH: usize = 50_000;

/// As `seed`, into an empty PostgreSQL database: the schema by guildkey's
/// own migrations, then the same rows as SQLite gets (columns and values as
/// `migrations/postgres/0001_schema.sql` has them), made here and sent as
/// arrays, `PG_SEED_BATCH` rows per statement, in one transaction.
async fn seed_postgres(url: &str, n: usize, token_file: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = guildkey::store::Store::connect(url).await?;
    store.migrate().await?;
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let alphabet = guildkey::keys::token::BASE62;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let random = |rng: &mut rand::rngs::StdRng, len: usize| -> String {
        (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
    };
    let now = 1_760_000_000_000_i64;
    let secret = token(&mut rng, alphabet);
    write_secret(token_file, &secret)?;
    let mut tx = conn.begin().await?;
    // The change-log trigger takes an advisory lock and writes and trims
    // the log and NOTIFYs, row by row: off for the load (one transaction,
    // the database is new), then the log's newest 10,000 entries written as
    // the trigger would have left them.
    sqlx::query("alter table api_key disable trigger key_change_on_insert_or_delete").execute(&mut *tx).await?;
    sqlx::query(
        "insert into api_key (api_key_id, guild_id, name, key_hash, prefix, environment, scopes, created_at, \
         created_by, rate_limit_per_minute, allowed_ips, updated_at) \
         values ($1, 1000000000000000000, 'bench key', $2, $3, 'live', 'guild.read bans.read', $4, 'cli', $5, '', $4)",
    )
    .bind(format!("key_{}", random(&mut rng, 16)))
    .bind(Sha256::digest(secret.as_bytes()).to_vec())
    .bind(secret[..12].to_owned())
    .bind(now)
    .bind(BENCH_RATE_LIMIT)
    .execute(&mut *tx)
    .await?;
    // The rest as in SQLite: random hashes, ids and prefixes shaped like
    // real ones, three keys per guild.
    let mut first = 1;
    while first < n {
        let rows = first..(first + PG_SEED_BATCH).min(n);
        let ids: Vec<String> = rows.clone().map(|_| format!("key_{}", random(&mut rng, 16))).collect();
        let guilds: Vec<i64> = rows.clone().map(|i| 1_000_000_000_000_000_000 + (i / 3) as i64).collect();
        let names: Vec<String> = rows.clone().map(|i| format!("seeded key {i}")).collect();
        let hashes: Vec<Vec<u8>> = rows.clone().map(|_| rng.gen::<[u8; 32]>().to_vec()).collect();
        let prefixes: Vec<String> = rows.clone().map(|_| format!("gk_live_{}", random(&mut rng, 4))).collect();
        let scopes: Vec<&str> = rows
            .clone()
            .map(|i| if i % 2 == 0 { "guild.read bans.read" } else { "bans.read bans.write roles.write" })
            .collect();
        let ats: Vec<i64> = rows.clone().map(|i| now + i as i64).collect();
        sqlx::query(
            "insert into api_key (api_key_id, guild_id, name, key_hash, prefix, environment, scopes, created_at, \
             created_by, rate_limit_per_minute, allowed_ips, updated_at) \
             select id, guild, name, hash, prefix, 'live', scopes, at, '1200000000000000001', 60, '', at \
             from unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::bigint[]) \
                 as r(id, guild, name, hash, prefix, scopes, at)",
        )
        .bind(&ids)
        .bind(&guilds)
        .bind(&names)
        .bind(&hashes)
        .bind(&prefixes)
        .bind(&scopes)
        .bind(&ats)
        .execute(&mut *tx)
        .await?;
        first = rows.end;
    }
    sqlx::query("alter table api_key enable trigger key_change_on_insert_or_delete").execute(&mut *tx).await?;
    sqlx::query(
        "insert into key_change (api_key_id) select api_key_id from \
         (select api_key_id, created_at from api_key order by created_at desc limit 10000) newest order by created_at",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let loaded = started.elapsed();
    // What autovacuum would get to soon after: statistics, and the rows'
    // visibility settled (else the first reader of each page sets its hint
    // bits, writing it back).
    sqlx::query("vacuum (analyze) api_key").execute(&mut conn).await?;
    sqlx::query("vacuum (analyze) key_change").execute(&mut conn).await?;
    conn.close().await?;
    eprintln!(
        "seeded {n} keys in {:.1} s (rows {:.1} s, vacuum analyze {:.1} s)",
        started.elapsed().as_secs_f64(),
        loaded.as_secs_f64(),
        (started.elapsed() - loaded).as_secs_f64()
    );
    Ok(())
}

/// `pg-create` (`create` true) or `pg-drop` a database on the server.
async fn pg_admin(admin: &str, name: &str, create: bool) -> anyhow::Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        bail!("database name {name:?}: lower-case letters, digits and _ only");
    }
    let mut conn = sqlx::PgConnection::connect(admin).await.context("connect to the admin URL")?;
    let sql =
        if create { format!("create database {name}") } else { format!("drop database if exists {name} with (force)") };
    sqlx::query(&sql).execute(&mut conn).await?;
    conn.close().await?;
    if create {
        let (base, _) = admin.rsplit_once('/').context("the admin URL ends in /DATABASE")?;
        println!("{base}/{name}");
    }
    Ok(())
}

/// The index's columns as `src/store/postgres/keys.rs` reads them at start-up.
const PG_INDEX_JSON: &str = "coalesce(json_agg(json_build_array(api_key_id, guild_id, name, prefix, environment, \
     scopes, expires_at, revoked_at, rate_limit_per_minute, allowed_ips, encode(key_hash, 'hex'), \
     encode(previous_hash, 'hex'), previous_hash_expires_at, allowed_roles, (suspended_at is not null)::int, \
     ban_budget, role_budget))::text, '[]')";

/// `pg-scan`: see the module docs.
async fn pg_scan(url: &str) -> anyhow::Result<()> {
    const PAGE: i64 = 8192;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // (a) The store's keyset pages, but ordered and compared in the key
    // id's own collation, which its primary key index is in.
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    sqlx::query("set transaction isolation level repeatable read read only").execute(&mut *tx).await?;
    let (mut after, mut rows, mut bytes, mut pages) = (String::new(), 0_i64, 0_usize, 0);
    loop {
        let (n, last, json): (i64, Option<String>, String) = sqlx::query_as(&format!(
            "select count(*), max(api_key_id), {PG_INDEX_JSON} from \
             (select * from api_key where api_key_id > $1 order by api_key_id limit $2) page"
        ))
        .bind(&after)
        .bind(PAGE)
        .fetch_one(&mut *tx)
        .await?;
        rows += n;
        bytes += json.len();
        pages += 1;
        match last {
            Some(last) if n == PAGE => after = last,
            _ => break,
        }
    }
    tx.commit().await?;
    println!(
        "keyset pages of JSON in the column's collation (no collate \"C\"): {rows} rows, {pages} pages, {:.0} MiB of JSON \
         in {:.0} ms (not parsed)",
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64() * 1e3
    );
    // (b) One snapshot through a cursor, in pages of plain rows decoded by
    // sqlx (no sort, no JSON).
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    sqlx::query("set transaction isolation level repeatable read read only").execute(&mut *tx).await?;
    sqlx::query(
        "declare index_scan no scroll cursor for select api_key_id, guild_id, name, prefix, environment, scopes, \
         expires_at, revoked_at, rate_limit_per_minute, allowed_ips, key_hash, previous_hash, \
         previous_hash_expires_at, allowed_roles, suspended_at is not null, ban_budget, role_budget from api_key",
    )
    .execute(&mut *tx)
    .await?;
    let (mut rows, mut check) = (0_usize, 0_u64);
    loop {
        let page = sqlx::query(&format!("fetch forward {PAGE} from index_scan")).fetch_all(&mut *tx).await?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            let id: &str = row.try_get(0)?;
            let guild: i64 = row.try_get(1)?;
            let (name, prefix, env, scopes): (&str, &str, &str, &str) =
                (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
            let (expires, revoked): (Option<i64>, Option<i64>) = (row.try_get(6)?, row.try_get(7)?);
            let rate: i64 = row.try_get(8)?;
            let allowed: &str = row.try_get(9)?;
            let hash: &[u8] = row.try_get(10)?;
            let previous: Option<&[u8]> = row.try_get(11)?;
            let until: Option<i64> = row.try_get(12)?;
            let roles: &str = row.try_get(13)?;
            let suspended: bool = row.try_get(14)?;
            let (ban, role): (Option<i64>, Option<i64>) = (row.try_get(15)?, row.try_get(16)?);
            check = check.wrapping_add(
                (id.len() + name.len() + prefix.len() + env.len() + scopes.len() + allowed.len() + roles.len()) as u64
                    + guild as u64
                    + rate as u64
                    + u64::from(hash[0])
                    + u64::from(suspended)
                    + [expires, revoked, until, ban, role].iter().flatten().count() as u64
                    + previous.map_or(0, |p| p.len() as u64),
            );
        }
        rows += page.len();
    }
    tx.commit().await?;
    conn.close().await?;
    println!(
        "cursor pages of plain rows, decoded: {rows} rows in {:.0} ms (checksum {check})",
        started.elapsed().as_secs_f64() * 1e3
    );
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

/// A database named as `changes` and `propagation` take it: a SQLite path,
/// or a URL. Returns its URL and, for SQLite, the file's path.
fn database(target: &str) -> (String, Option<String>) {
    if guildkey::store::is_postgres_url(target) {
        return (target.to_owned(), None);
    }
    let path = target.strip_prefix("sqlite://").unwrap_or(target);
    let path = path.split('?').next().unwrap_or(path).to_owned();
    (format!("sqlite://{path}"), Some(path))
}

/// Another connection to the database, committing as the CLI or a second
/// instance would.
enum Other {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Other {
    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        match self {
            Other::Sqlite(p) => {
                sqlx::query(sql).execute(p).await?;
            }
            Other::Postgres(p) => {
                sqlx::query(sql).execute(p).await?;
            }
        }
        Ok(())
    }
}

fn bench_keys_config() -> guildkey::config::KeysConfig {
    guildkey::config::KeysConfig {
        max_per_guild: 1_000_000,
        prefix: "gk".into(),
        default_rate_limit_per_minute: 60,
        last_used_flush_seconds: 5,
        ..guildkey::config::Config::default().keys
    }
}

/// The `q` quantile of `v` (sorted here) in milliseconds: the smallest
/// sample at or above a `q` share of them.
fn quantile_ms(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    let at = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[at].as_secs_f64() * 1e3
}

async fn changes(target: &str, n: usize) -> anyhow::Result<()> {
    use guildkey::audit::Actor;
    use guildkey::service::{KeyDraft, KeyRequest, KeyService};
    let (url, sqlite) = database(target);
    let given_url = target.contains("://");
    let store = guildkey::store::Store::connect(&url).await?;
    let t = Instant::now();
    let service = KeyService::new(store.clone(), bench_keys_config()).await?;
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
    let (other, [revoke_sql, flush_sql, overflow_sql]) = match &sqlite {
        Some(path) => (
            Other::Sqlite(pool(path).await?),
            [
                "update api_key set revoked_at = updated_at where rowid = 1",
                "update api_key set last_used_at = updated_at, use_count = use_count + 1 where rowid = 2",
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < 3000) \
                 insert into key_change (api_key_id) select 'key_bench' || i from n",
            ],
        ),
        None => (
            Other::Postgres(PgPoolOptions::new().max_connections(1).connect(&url).await?),
            [
                "update api_key set revoked_at = updated_at where name = 'seeded key 1'",
                "update api_key set last_used_at = updated_at, use_count = use_count + 1 where name = 'seeded key 2'",
                "insert into key_change (api_key_id) select 'key_bench' || i from generate_series(1, 3000) i",
            ],
        ),
    };
    let foreign = |sql: &'static str| {
        let (other, service) = (&other, service.clone());
        async move {
            other.execute(sql).await?;
            let t = Instant::now();
            service.refresh_index().await?;
            anyhow::Ok(t.elapsed().as_secs_f64() * 1e3)
        }
    };
    let stats = service.index_stats();
    let revoke_ms = foreign(revoke_sql).await?;
    let after_revoke = service.index_stats();
    let flush_ms = foreign(flush_sql).await?;
    let after_increments = service.index_stats();
    let reload_ms = foreign(overflow_sql).await?;
    let after_reload = service.index_stats();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let tail = if given_url {
        format!(
            " n={n} create_p99_ms={:.2} create_max_ms={:.2} revoke_p99_ms={:.2} revoke_max_ms={:.2} backend={}",
            quantile_ms(&mut create, 0.99),
            quantile_ms(&mut create, 1.0),
            quantile_ms(&mut revoke, 0.99),
            quantile_ms(&mut revoke, 1.0),
            store.backend_name()
        )
    } else {
        String::new()
    };
    println!(
        "keys={keys} load_ms={:.0} create_p50_ms={:.2} revoke_p50_ms={:.2} own_commits_seen_as_foreign={own_commits_seen}{tail}",
        load.as_secs_f64() * 1e3,
        median(&mut create),
        median(&mut revoke),
    );
    if after_revoke.keys_applied == stats.keys_applied {
        eprintln!("warning: the foreign revoke applied no key (is this a database `gkbench seed` made?)");
    }
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

/// One instance of guildkey's key service, as a process would have it: its
/// own runtime (worker threads), store and upkeep task.
struct Instance {
    rt: tokio::runtime::Runtime,
    service: guildkey::service::KeyService,
    stop: tokio::sync::oneshot::Sender<()>,
    upkeep: tokio::task::JoinHandle<()>,
}

impl Instance {
    fn open(url: &str) -> anyhow::Result<Self> {
        let rt = runtime()?;
        let service = rt.block_on(async {
            let store = guildkey::store::Store::connect(url).await?;
            store.migrate().await?;
            guildkey::service::KeyService::new(store, bench_keys_config()).await
        })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let upkeep = rt.spawn({
            let service = service.clone();
            async move {
                service
                    .run_upkeep(async move {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        Ok(Self { rt, service, stop, upkeep })
    }

    fn close(self) {
        let Self { rt, service, stop, upkeep } = self;
        drop(stop);
        rt.block_on(async move {
            let _ = upkeep.await;
            service.store().close().await;
        });
    }
}

/// How many of the creates `propagation` times one by one (each waits for
/// B; on SQLite, a whole watch tick each).
const CREATES_TIMED: usize = 100;
/// How long the poller sleeps between two looks at B's index.
const POLL: Duration = Duration::from_micros(50);
/// The same over HTTP (each look is a request B serves; every 50 µs would
/// keep a core busy, on a machine of two).
const POLL_HTTP: Duration = Duration::from_micros(500);
/// How long a key may take to propagate before it counts as never.
const GIVE_UP: Duration = Duration::from_secs(5);

/// Polls `check` (B's in-memory `authenticate`, no I/O) from this thread
/// until it returns `Some(done)`; the instant it first held, or `None`
/// after [`GIVE_UP`].
fn poll_until(mut check: impl FnMut() -> Option<bool>) -> Option<Instant> {
    let started = Instant::now();
    loop {
        if check() == Some(true) {
            return Some(Instant::now());
        }
        if started.elapsed() > GIVE_UP {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn propagation(target: &str, n: usize, pause_ms: u64) -> anyhow::Result<()> {
    use guildkey::audit::Actor;
    use guildkey::service::{Error, KeyDraft, KeyRequest};
    let (url, _) = database(target);
    let a = Instance::open(&url)?;
    let b = Instance::open(&url)?;
    let backend = a.service.store().backend_name();
    let background = b.service.indexed_keys();
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let draft = KeyDraft::parse(&KeyRequest { name: "propagation", scopes: "bans.read", ..Default::default() })?;

    // Creates through A, one at a time, each until B accepts it.
    let mut keys = Vec::with_capacity(n);
    let (mut create_call, mut created) = (Vec::new(), Vec::new());
    let mut create_never = 0;
    for i in 0..n {
        let guild = 7_000_000_000_000_000_000 + (i % 50) as u64;
        let t0 = Instant::now();
        let issued = a.rt.block_on(a.service.issue(guild, draft.clone(), &Actor::Cli))?;
        let returned = Instant::now();
        create_call.push(returned - t0);
        let token = issued.secret.expose().to_owned();
        if i < CREATES_TIMED {
            match poll_until(|| Some(b.service.authenticate(&token, ip).is_ok())) {
                Some(at) => created.push(at - returned),
                None => create_never += 1,
            }
        }
        keys.push((guild, issued.record.id, token));
    }
    let last_created = Instant::now();
    for (_, _, token) in &keys {
        if poll_until(|| Some(b.service.authenticate(token, ip).is_ok())).is_none() {
            bail!("B never accepted a key created through A");
        }
    }
    let all_accepted = last_created.elapsed();

    // Revokes through A, one at a time, each until B refuses the key as
    // revoked. B is polled from a thread of its own from before the call,
    // so a refusal before A's call returns is seen when it happens. Before
    // each, a random pause of up to `pause_ms`: back to back, each revoke
    // would land just after the previous one's wake-up, in step with the
    // 250 ms watch tick (SQLite's only signal), and so always wait ~a whole tick.
    let mut rng = rand::rngs::StdRng::from_entropy();
    let (mut revoke_call, mut after_return, mut after_call) = (Vec::new(), Vec::new(), Vec::new());
    let (mut revoke_never, mut other_refusals) = (0, 0_usize);
    for (guild, id, token) in &keys {
        if pause_ms > 0 {
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..pause_ms * 1000)));
        }
        let outcome = std::thread::scope(|s| -> anyhow::Result<_> {
            let poller = s.spawn(|| {
                let mut other = 0_usize;
                let at = poll_until(|| match b.service.authenticate(token, ip) {
                    Ok(_) => Some(false),
                    Err(Error::Revoked(_)) => Some(true),
                    Err(_) => {
                        other += 1;
                        Some(false)
                    }
                });
                (at, other)
            });
            let t0 = Instant::now();
            let revoked = a.rt.block_on(a.service.revoke(Some(*guild), id.as_str(), &Actor::Cli));
            let returned = Instant::now();
            let (at, other) = poller.join().expect("poller panicked");
            revoked?;
            Ok((t0, returned, at, other))
        })?;
        let (t0, returned, at, other) = outcome;
        other_refusals += other;
        revoke_call.push(returned - t0);
        match at {
            Some(at) => {
                after_return.push(at.saturating_duration_since(returned));
                after_call.push(at - t0);
            }
            None => revoke_never += 1,
        }
    }
    a.close();
    b.close();

    let stats = |v: &mut Vec<Duration>| {
        if v.is_empty() {
            return "none".to_owned();
        }
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            quantile_ms(v, 0.5),
            quantile_ms(v, 0.99),
            quantile_ms(v, 1.0)
        )
    };
    let over_1s = after_call.iter().filter(|d| **d > Duration::from_secs(1)).count();
    println!(
        "backend={backend} keys={n} (B's index held {background} keys before; random pause before each revoke \
         up to {pause_ms} ms, none before creates)"
    );
    println!("  create through A (the call):            {}", stats(&mut create_call));
    println!(
        "  ... until B accepts it, from its return: {} (the first {} creates, back to back, so in step with B's tick; \
         never within {} s: {create_never}); B accepted all {n} {:.0} ms after the last",
        stats(&mut created),
        CREATES_TIMED.min(n),
        GIVE_UP.as_secs(),
        all_accepted.as_secs_f64() * 1e3
    );
    println!("  revoke through A (the call):            {}", stats(&mut revoke_call));
    println!("  ... until B refuses it, from the call:   {}", stats(&mut after_call));
    println!(
        "  ... until B refuses it, from its return: {} (over 1 s: {over_1s}; never within {} s: {revoke_never}; \
         B's other refusals meanwhile: {other_refusals})",
        stats(&mut after_return),
        GIVE_UP.as_secs()
    );
    Ok(())
}

fn reload_outage(target: &str) -> anyhow::Result<()> {
    use guildkey::audit::Actor;
    use guildkey::service::{Error, KeyDraft, KeyRequest};
    let (url, sqlite) = database(target);
    let t = Instant::now();
    let b = Instance::open(&url)?;
    let load = t.elapsed();
    let keys = b.service.indexed_keys();
    let draft = KeyDraft::parse(&KeyRequest { name: "reload outage", scopes: "bans.read", ..Default::default() })?;
    let issued = b.rt.block_on(b.service.issue(42, draft, &Actor::Cli))?;
    let token = issued.secret.expose().to_owned();
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    // Let the upkeep settle (its own change seen, a few checks done).
    std::thread::sleep(Duration::from_secs(1));
    b.service.authenticate(&token, ip).map_err(|e| anyhow::anyhow!("the key does not verify: {e}"))?;
    let loads = b.service.index_stats().full_loads;
    b.rt.block_on(async {
        let (other, sql) = match &sqlite {
            Some(path) => (
                Other::Sqlite(pool(path).await?),
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < 3000) \
                 insert into key_change (api_key_id) select 'key_bench' || i from n",
            ),
            None => (
                Other::Postgres(PgPoolOptions::new().max_connections(1).connect(&url).await?),
                "insert into key_change (api_key_id) select 'key_bench' || i from generate_series(1, 3000) i",
            ),
        };
        other.execute(sql).await
    })?;
    let overflowed = Instant::now();
    let (mut looks, mut stale, mut other) = (0_u64, 0_u64, 0_u64);
    let (mut first_stale, mut last_stale) = (None, None);
    let done = loop {
        let answer = b.service.authenticate(&token, ip);
        let now = Instant::now();
        looks += 1;
        match &answer {
            Ok(_) => {}
            Err(Error::IndexStale) => {
                stale += 1;
                first_stale.get_or_insert(now);
                last_stale = Some(now);
            }
            Err(_) => other += 1,
        }
        if answer.is_ok() && b.service.index_stats().full_loads > loads {
            break now;
        }
        if overflowed.elapsed() > Duration::from_secs(900) {
            bail!("no full reload within 900 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    b.close();
    let s = |at: Instant| (at - overflowed).as_secs_f64();
    println!(
        "keys={keys} load_ms={:.0}; after the change log overflowed, the full reload was done {:.1} s later",
        load.as_secs_f64() * 1e3,
        s(done)
    );
    match (first_stale, last_stale) {
        (Some(first), Some(last)) => println!(
            "  authenticate refused every key (index_stale) from {:.1} s to {:.1} s: {stale} of {looks} looks \
             (other refusals: {other})",
            s(first),
            s(last)
        ),
        _ => println!("  authenticate never answered index_stale ({looks} looks; other refusals: {other})"),
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection asking `GET /v1/verify` with a token.
struct Verify {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Verify {
    fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self { stream, buf: Vec::with_capacity(4096) })
    }

    /// The status and body of one request.
    fn get(&mut self, token: &str) -> anyhow::Result<(u16, String)> {
        use std::io::Write;
        let request = format!("GET /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n");
        self.stream.write_all(request.as_bytes())?;
        let mut chunk = [0_u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?.to_owned();
                let status: u16 = head.split(' ').nth(1).context("status line")?.parse()?;
                let length: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .context("no content-length")?
                    .parse()?;
                while self.buf.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        bail!("connection closed");
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]).into_owned();
                self.buf.drain(..end + 4 + length);
                return Ok((status, body));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn propagation_http(url: &str, guildkey: &str, port: u16, n: usize, pause_ms: u64) -> anyhow::Result<()> {
    use guildkey::audit::Actor;
    use guildkey::service::{KeyDraft, KeyRequest};
    // The keys, made here (their tokens go to B in requests only). A rate
    // limit the polling stays under, and no unknown token presented (guesses
    // count towards B's per-address failure throttle).
    let draft = KeyDraft::parse(&KeyRequest {
        name: "propagation",
        scopes: "bans.read",
        rate_limit: Some(100_000),
        ..Default::default()
    })?;
    let rt = runtime()?;
    let keys = rt.block_on(async {
        let store = guildkey::store::Store::connect(url).await?;
        let service = guildkey::service::KeyService::new(store.clone(), bench_keys_config()).await?;
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let guild = 7_000_000_000_000_000_000 + (i % 50) as u64;
            let issued = service.issue(guild, draft.clone(), &Actor::Cli).await?;
            keys.push((issued.record.id, issued.secret.expose().to_owned()));
        }
        store.close().await;
        anyhow::Ok(keys)
    })?;
    drop(rt);
    // B holds them all once its index gauge says so; then each verifies.
    let wanted = keys.len();
    let started = Instant::now();
    loop {
        let mut http = std::net::TcpStream::connect(("127.0.0.1", port))?;
        std::io::Write::write_all(&mut http, b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut text = String::new();
        http.read_to_string(&mut text)?;
        let indexed = text
            .lines()
            .find_map(|l| l.strip_prefix("guildkey_keys_indexed "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if indexed >= wanted {
            break;
        }
        if started.elapsed() > GIVE_UP {
            bail!("B indexed {indexed} of {wanted} keys after {} s", GIVE_UP.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut b = Verify::connect(port)?;
    for (_, token) in &keys {
        let (status, body) = b.get(token)?;
        if status != 200 {
            bail!("B refused a key it should accept: {status} {body}");
        }
    }

    let mut rng = rand::rngs::StdRng::from_entropy();
    let (mut process, mut after_exit, mut after_spawn) = (Vec::new(), Vec::new(), Vec::new());
    let (mut never, mut other) = (0, 0_usize);
    for (id, token) in &keys {
        if pause_ms > 0 {
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..pause_ms * 1000)));
        }
        let (spawned, exited, refused, others) = std::thread::scope(|s| -> anyhow::Result<_> {
            let poller = s.spawn(|| -> anyhow::Result<_> {
                let mut others = 0_usize;
                let started = Instant::now();
                loop {
                    let (status, body) = b.get(token)?;
                    if status == 401 && body.contains("key_revoked") {
                        return Ok((Some(Instant::now()), others));
                    }
                    if status != 200 {
                        others += 1;
                    }
                    if started.elapsed() > GIVE_UP {
                        return Ok((None, others));
                    }
                    std::thread::sleep(POLL_HTTP);
                }
            });
            let spawned = Instant::now();
            let out = std::process::Command::new(guildkey)
                .args(["keys", "revoke", id.as_str()])
                .env("DATABASE_URL", url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .output()?;
            let exited = Instant::now();
            let (refused, others) = poller.join().expect("poller panicked")?;
            if !out.status.success() {
                bail!("guildkey keys revoke failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok((spawned, exited, refused, others))
        })?;
        other += others;
        process.push(exited - spawned);
        match refused {
            Some(at) => {
                after_exit.push(at.saturating_duration_since(exited));
                after_spawn.push(at - spawned);
            }
            None => never += 1,
        }
    }
    let stats = |v: &mut Vec<Duration>| {
        if v.is_empty() {
            return "none".to_owned();
        }
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            quantile_ms(v, 0.5),
            quantile_ms(v, 0.99),
            quantile_ms(v, 1.0)
        )
    };
    let before_exit = after_exit.iter().filter(|d| d.is_zero()).count();
    let over_1s = after_exit.iter().filter(|d| **d > Duration::from_secs(1)).count();
    println!(
        "keys={n} revoked one at a time by `guildkey keys revoke` processes (random pause up to {pause_ms} ms before each), \
         B a `guildkey run` polled over HTTP"
    );
    println!("  the revoking process, spawn to exit:         {}", stats(&mut process));
    println!("  ... until B answers 401 key_revoked, from its spawn: {}", stats(&mut after_spawn));
    println!(
        "  ... until B answers 401 key_revoked, from its exit:  {} (refused before the process had exited: \
         {before_exit}; over 1 s: {over_1s}; never within {} s: {never}; B's other answers meanwhile: {other})",
        stats(&mut after_exit),
        GIVE_UP.as_secs()
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

/// CPU seconds (user + system) this process has used, all threads.
fn cpu_seconds() -> f64 {
    proc_cpu_seconds("self").unwrap_or_default()
}

/// CPU seconds (user + system) of process `pid` from `/proc/PID/stat`.
fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds of every `postgres` process on this machine (the server
/// the benchmark writes to, and whatever else it serves meanwhile).
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "postgres").then(|| proc_cpu_seconds(&pid)).flatten()
        })
        .sum()
}

/// Bytes the usage tables take: SQLite's pages in use, or PostgreSQL's
/// relation sizes (tables and indexes).
async fn usage_storage_bytes(url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    if guildkey::store::is_postgres_url(url) {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        // Live rows only: dead row versions (each update leaves one) are
        // autovacuum's to reuse.
        sqlx::query("vacuum full usage_hour, usage_ip_hour, request_log").execute(&mut conn).await?;
        let (bytes,): (i64,) = sqlx::query_as(
            "select sum(pg_total_relation_size(t))::bigint from unnest(array['usage_hour', 'usage_ip_hour', \
             'request_log']) as t",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(bytes)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        let (count,): (i64,) = sqlx::query_as("pragma page_count").fetch_one(&mut conn).await?;
        let (free,): (i64,) = sqlx::query_as("pragma freelist_count").fetch_one(&mut conn).await?;
        let (size,): (i64,) = sqlx::query_as("pragma page_size").fetch_one(&mut conn).await?;
        Ok((count - free) * size)
    }
}

/// `usage` on a fresh database: for PostgreSQL, `url` is an admin URL on
/// which a database is made for the run and dropped after it.
async fn usage(url: &str, n: usize) -> anyhow::Result<()> {
    use sqlx::Connection;
    if !guildkey::store::is_postgres_url(url) {
        return usage_on(url, n).await;
    }
    let name = format!("gkbench_usage_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("create database {name}")).execute(&mut admin).await?;
    let (base, _) = url.rsplit_once('/').context("a PostgreSQL URL ends in /database")?;
    let outcome = usage_on(&format!("{base}/{name}"), n).await;
    sqlx::query(&format!("drop database {name} with (force)")).execute(&mut admin).await?;
    outcome
}

async fn usage_on(url: &str, n: usize) -> anyhow::Result<()> {
    use guildkey::keys::KeyId;
    use guildkey::service::usage::{KeyUsage, RequestFacts, UsageTracker};
    use guildkey::store::{IpCount, MinuteCount};
    let store = guildkey::store::Store::connect(url).await?;
    store.migrate().await?;
    let postgres = guildkey::store::is_postgres_url(url);
    let keys: Vec<(KeyId, Arc<KeyUsage>)> = (0..n).map(|_| (KeyId::generate(), Arc::default())).collect();
    let minute_ms = 60_000;
    let t0 = 1_760_000_000_000_i64 / minute_ms * minute_ms;
    let facts = |i: usize, at: i64, status: u16, reason: Option<&'static str>| RequestFacts {
        at_ms: at,
        method: "GET",
        route: if status == 200 { "/v1/verify" } else { "/v1/guilds/{guild_id}/bans/{user_id}" },
        status,
        reason,
        ip: std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        latency_us: 25,
        target_user: None,
        target_role: None,
    };
    let tracker = UsageTracker::new(200);

    // Memory: the counts one minute of one request per key holds.
    let rss_before = rss_kib(std::process::id())?;
    for (i, (id, u)) in keys.iter().enumerate() {
        tracker.record(id, u, &facts(i, t0 + 1_000, 200, None));
    }
    let rss_after = rss_kib(std::process::id())?;
    println!(
        "memory: {n} keys with one minute pending: {:.1} MiB, {:.0} bytes per active key",
        (rss_after - rss_before) as f64 / 1024.0,
        (rss_after - rss_before) as f64 * 1024.0 / n as f64
    );

    // One flush of the counters after the minute ended: N keys touched.
    let flush = |at: i64| {
        let (tracker, store) = (&tracker, &store);
        async move {
            let (cpu, pg, t) = (cpu_seconds(), postgres_cpu_seconds(), Instant::now());
            let mut refused = Vec::new();
            tracker.flush(store, at, false, &mut refused).await?;
            anyhow::Ok((t.elapsed().as_secs_f64(), cpu_seconds() - cpu, postgres_cpu_seconds() - pg))
        }
    };
    let report = |what: &str, (wall, cpu, pg): (f64, f64, f64)| {
        let server = if postgres { format!(", PostgreSQL server CPU {pg:.2} s") } else { String::new() };
        println!("flush, {n} keys, {what}: wall {wall:.2} s, this process's CPU {cpu:.2} s{server}");
    };
    report(
        "one verification each, the hour's first minute (inserts: N hour rows, N IP rows)",
        flush(t0 + minute_ms + 2_000).await?,
    );
    // The next minutes of the same hour: the rows are there, added to.
    for round in 1..=2 {
        for (i, (id, u)) in keys.iter().enumerate() {
            tracker.record(id, u, &facts(i, t0 + round * minute_ms + 3_000, 200, None));
        }
        report(
            &format!("one verification each, minute {} of the hour (updates: N hour rows, N IP rows)", round + 1),
            flush(t0 + (round + 1) * minute_ms + 2_000).await?,
        );
    }
    // A verification and a refusal per key (logged, and a new row each).
    for (i, (id, u)) in keys.iter().enumerate() {
        tracker.record(id, u, &facts(i, t0 + 3 * minute_ms + 3_000, 200, None));
        tracker.record(id, u, &facts(i, t0 + 3 * minute_ms + 4_000, 403, Some("insufficient_scope")));
    }
    report(
        "a verification and a refusal each (N hour rows updated, N inserted, N IP rows; N log rows)",
        flush(t0 + 4 * minute_ms + 2_000).await?,
    );

    // Storage: 48 hours of minute buckets (one cell a minute, one client IP)
    // for a sample of keys, written as flushes write them.
    let sample = 200;
    let before = usage_storage_bytes(url).await?;
    let minutes = 48 * 60;
    let start = t0 / minute_ms + 10_000;
    for chunk_start in (0..minutes).step_by(60) {
        let mut rows = Vec::new();
        let mut ips = Vec::new();
        for (id, _) in keys.iter().take(sample) {
            for m in chunk_start..chunk_start + 60 {
                rows.push(MinuteCount {
                    key_id: id.clone(),
                    minute: start + m,
                    method: "GET",
                    route: "/v1/verify",
                    status: 200,
                    outcome: "ok",
                    count: 30,
                });
            }
            ips.push(IpCount {
                key_id: id.clone(),
                hour: (start + chunk_start) / 60,
                ip: "203.0.113.7".into(),
                count: 1800,
            });
        }
        store.record_counters(&rows, &ips).await?;
    }
    let after = usage_storage_bytes(url).await?;
    println!(
        "storage: 48 h of minute buckets (one route and outcome a minute, one client IP an hour): \
         {:.0} KiB per key ({} keys, {} minute rows each)",
        (after - before) as f64 / 1024.0 / sample as f64,
        sample,
        minutes
    );
    store.close().await;
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

/// The README's chart: the 24 h fixture as the usage report the bot would
/// build for it, drawn by the bot's own function.
fn docs_chart() -> anyhow::Result<Vec<u8>> {
    use guildkey::service::usage_report::{Period, UsageBucket, UsageReport, CLASSES};
    let buckets: Vec<UsageBucket> = usage_buckets(&VIEWS[0])
        .into_iter()
        .map(|(start, c)| UsageBucket { start, ok: c[0], client_error: c[1], rate_limited: c[2], server_error: c[3] })
        .collect();
    let sums: Vec<u64> = (0..4)
        .map(|i| buckets.iter().map(|b| [b.ok, b.client_error, b.rate_limited, b.server_error][i]).sum())
        .collect();
    let total: u64 = sums.iter().sum();
    let from = buckets.first().context("the fixture has buckets")?.start;
    let report = UsageReport {
        key_id: "key_7kJbQWk3evOIrhMP".into(),
        period: Period::Day,
        from,
        to: from + chrono::Duration::hours(24),
        bucket_seconds: 3600,
        buckets,
        total,
        outcomes: CLASSES.iter().zip(&sums).map(|(c, n)| (c.to_string(), *n)).collect(),
        error_share: (total - sums[0]) as f64 / total as f64,
        top_routes: Vec::new(),
        top_ips: Vec::new(),
        distinct_ips: 1,
    };
    guildkey::bot::usage::chart_png("game", &report)
}

#[cfg(test)]
mod tests {
    /// `gkbench docs-chart docs/usage-chart.png` reproduces the README's
    /// picture byte for byte: the picture is what the bot draws.
    #[test]
    fn the_readme_chart_is_what_docs_chart_draws() {
        let committed = include_bytes!("../../../docs/usage-chart.png");
        let drawn = super::docs_chart().unwrap();
        assert!(drawn == committed, "docs/usage-chart.png is stale: run `cargo run -p guildkey-bench --bin gkbench -- docs-chart docs/usage-chart.png`");
    }
}
