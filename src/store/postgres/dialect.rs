//! The statements PostgreSQL spells its own way (the rest are written once
//! in `store/*.rs` and run here through `db_run!`): the per-guild lock a
//! key create takes, the start-up index scan, the last-used flush, and the
//! usage counters and request log, whose rows go in as arrays (`unnest`),
//! sorted, so concurrent flushes from several instances lock rows in one
//! order, and whose minute buckets are an `integer[]`: a minute's count is
//! added to its hour row's total and to its bucket in one upsert, so
//! instances adding to one row take turns on its lock and never lose one
//! another's counts.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::keys::KeyId;
use crate::store::rows::{self, id_to_sql, to_millis, INDEX_COLUMNS};
use crate::store::usage::{count_to_sql, minute_of_hour, waves};
use crate::store::{IndexRow, IpCount, MinuteCount, NewRequestLog};

/// Whether a row still holds its 60 minute buckets. Retention sets them to
/// null; a minute added in place to such a row afterwards (a batch held
/// back past retention) makes a one-element array, which counts as dropped
/// too: its hour's total holds the count.
pub(crate) const MINUTES_KEPT: &str = "(array_lower(minutes, 1) = 1 and array_length(minutes, 1) = 60)";

/// A row's minute buckets as JSON text, as SQLite keeps them.
pub(crate) const MINUTES_AS_JSON: &str = "array_to_json(minutes)::text";

/// Rows per statement: large batches go in several, bounding the arrays.
const ROWS_PER_STATEMENT: usize = 20_000;

/// Takes a guild's key-create lock until the transaction ends: a count of
/// the guild's active keys and the insert it allows then see every create
/// committed before (SQLite needs none: it has one writer).
pub(crate) async fn lock_guild_keys(tx: &mut PgConnection, guild_id: u64) -> anyhow::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(2, ($1 % 2147483647)::int)")
        .bind(id_to_sql(guild_id))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Streams every key as typed rows (no sort, no JSON: the driver decodes
/// each row as it arrives; with a million keys this is several times faster
/// than pages of JSON by id), in the snapshot `db_run!` opened.
pub(crate) async fn scan_index_rows(tx: &mut PgConnection, mut each: impl FnMut(IndexRow)) -> anyhow::Result<()> {
    use futures_util::TryStreamExt;
    let sql = format!("select {INDEX_COLUMNS} from api_key");
    let mut stream = sqlx::query_as::<_, rows::TypedIndexRow>(&sql).fetch(&mut *tx);
    while let Some(row) = stream.try_next().await? {
        each(IndexRow::try_from(row)?);
    }
    Ok(())
}

/// One statement for the whole batch. The rows are locked first in key id
/// order, so two instances flushing the same keys at once wait for each
/// other instead of deadlocking; `greatest` keeps the later time.
pub(crate) async fn record_usage(tx: &mut PgConnection, batch: &[(KeyId, DateTime<Utc>, u64)]) -> anyhow::Result<()> {
    let ids: Vec<&str> = batch.iter().map(|(id, _, _)| id.as_str()).collect();
    let ats: Vec<i64> = batch.iter().map(|(_, at, _)| to_millis(*at)).collect();
    let counts: Vec<i64> = batch.iter().map(|(_, _, n)| *n as i64).collect();
    sqlx::query("select 1 from api_key where api_key_id = any($1) order by api_key_id for update")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update api_key k set last_used_at = greatest(coalesce(k.last_used_at, 0), u.at), \
             use_count = k.use_count + u.n \
         from unnest($1::text[], $2::bigint[], $3::bigint[]) as u(id, at, n) where k.api_key_id = u.id",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(&counts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Rows in as arrays, a statement per wave of [`waves`]; a new hour row's
/// buckets are built with `array_fill`, a minute is added to its bucket in
/// place (subscripted assignment).
pub(crate) async fn record_counters(
    tx: &mut PgConnection,
    minutes: &[MinuteCount],
    ips: &[IpCount],
    days: &[IpCount],
) -> anyhow::Result<()> {
    for wave in waves(minutes) {
        for chunk in wave.chunks(ROWS_PER_STATEMENT) {
            let hours: Vec<i64> = chunk.iter().map(|r| r.minute.div_euclid(60)).collect();
            let keys: Vec<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
            let methods: Vec<&str> = chunk.iter().map(|r| r.method).collect();
            let routes: Vec<&str> = chunk.iter().map(|r| r.route).collect();
            let statuses: Vec<i64> = chunk.iter().map(|r| i64::from(r.status)).collect();
            let outcomes: Vec<&str> = chunk.iter().map(|r| r.outcome).collect();
            let counts: Vec<i64> = chunk.iter().map(|r| count_to_sql(r.count)).collect();
            let of_hour: Vec<i64> = chunk.iter().map(|r| minute_of_hour(r.minute)).collect();
            sqlx::query(
                "insert into usage_hour (hour, api_key_id, method, route, status, outcome, count, last_minute, \
                     minutes) \
                 select h, k, me, ro, s, o, n, m, \
                     array_fill(0, array[m::integer]) || n::integer || array_fill(0, array[59 - m::integer]) \
                 from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
                     $7::bigint[], $8::bigint[]) with ordinality as r(h, k, me, ro, s, o, n, m, ord) order by ord \
                 on conflict (hour, api_key_id, method, route, status, outcome) do update set \
                     count = usage_hour.count + excluded.count, last_minute = excluded.last_minute, \
                     minutes[excluded.last_minute + 1] = \
                         (usage_hour.minutes[excluded.last_minute + 1] + excluded.count)::integer",
            )
            .bind(&hours)
            .bind(&keys)
            .bind(&methods)
            .bind(&routes)
            .bind(&statuses)
            .bind(&outcomes)
            .bind(&counts)
            .bind(&of_hour)
            .execute(&mut *tx)
            .await?;
        }
    }
    for (table, unit, rows) in [("usage_ip_hour", "hour", ips), ("usage_ip_day", "day", days)] {
        let mut rows: Vec<&IpCount> = rows.iter().collect();
        rows.sort_by(|a, b| (a.hour, &a.key_id, &a.ip).cmp(&(b.hour, &b.key_id, &b.ip)));
        let sql = format!(
            "insert into {table} ({unit}, api_key_id, ip, count) \
             select h, k, i, n from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
                 with ordinality as r(h, k, i, n, ord) order by ord \
             on conflict ({unit}, api_key_id, ip) do update set count = {table}.count + excluded.count"
        );
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let hours: Vec<i64> = chunk.iter().map(|r| r.hour).collect();
            let keys: Vec<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
            let addrs: Vec<&str> = chunk.iter().map(|r| r.ip.as_str()).collect();
            let counts: Vec<i64> = chunk.iter().map(|r| count_to_sql(r.count)).collect();
            sqlx::query(&sql).bind(&hours).bind(&keys).bind(&addrs).bind(&counts).execute(&mut *tx).await?;
        }
    }
    Ok(())
}

/// Rows in as arrays; the trim is one statement for every key.
pub(crate) async fn record_requests(
    tx: &mut PgConnection,
    rows: &[NewRequestLog],
    trim: &[KeyId],
    keep: [u32; 2],
) -> anyhow::Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let keys: Vec<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
        let ats: Vec<i64> = chunk.iter().map(|r| to_millis(r.at)).collect();
        let methods: Vec<&str> = chunk.iter().map(|r| r.method).collect();
        let routes: Vec<&str> = chunk.iter().map(|r| r.route).collect();
        let statuses: Vec<i64> = chunk.iter().map(|r| i64::from(r.status)).collect();
        let reasons: Vec<Option<&str>> = chunk.iter().map(|r| r.reason).collect();
        let ips: Vec<&str> = chunk.iter().map(|r| r.ip.as_str()).collect();
        let latencies: Vec<i64> = chunk.iter().map(|r| i64::from(r.latency_us)).collect();
        let users: Vec<Option<i64>> = chunk.iter().map(|r| r.target_user_id.map(id_to_sql)).collect();
        let roles: Vec<Option<i64>> = chunk.iter().map(|r| r.target_role_id.map(id_to_sql)).collect();
        let notable: Vec<bool> = chunk.iter().map(|r| r.notable).collect();
        sqlx::query(
            "insert into request_log (api_key_id, at, method, route, status, reason, ip, latency_us, \
                 target_user_id, target_role_id, notable) \
             select k, a, m, ro, s, re, i, l, u, rl, nt \
             from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
                 $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::boolean[]) \
             with ordinality as r(k, a, m, ro, s, re, i, l, u, rl, nt, n) order by n",
        )
        .bind(&keys)
        .bind(&ats)
        .bind(&methods)
        .bind(&routes)
        .bind(&statuses)
        .bind(&reasons)
        .bind(&ips)
        .bind(&latencies)
        .bind(&users)
        .bind(&roles)
        .bind(&notable)
        .execute(&mut *tx)
        .await?;
    }
    // Per key and kind, all but the newest (`keep[0]` of the rest,
    // `keep[1]` notable refusals): one index range each.
    let keys: Vec<&str> = trim.iter().map(KeyId::as_str).collect();
    for (notable, keep) in [(false, keep[0]), (true, keep[1])] {
        sqlx::query(
            "delete from request_log r using ( \
                 select k, (select request_log_id from request_log where api_key_id = k and notable = $3 \
                            order by request_log_id desc offset $2 limit 1) as cut \
                 from unnest($1::text[]) as k) c \
             where r.api_key_id = c.k and r.notable = $3 and r.request_log_id <= c.cut",
        )
        .bind(&keys)
        .bind(i64::from(keep))
        .bind(notable)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
