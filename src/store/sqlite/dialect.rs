//! The statements SQLite spells its own way (the rest are written once in
//! `store/*.rs` and run here through `db_run!`): the start-up index scan,
//! the last-used flush, and the usage counters and request log, whose
//! minute buckets are a JSON array. Each takes the connection of the
//! transaction `db_run!` opened on this process's one writer connection.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::keys::KeyId;
use crate::store::rows::{self, id_to_sql, to_millis};
use crate::store::usage::{count_to_sql, minute_of_hour, minutes_json, waves};
use crate::store::{IndexRow, IpCount, MinuteCount, NewRequestLog};

/// Whether a `usage_hour` row still holds its minute buckets (retention
/// sets them to null).
pub(crate) const MINUTES_KEPT: &str = "minutes is not null";

/// A row's minute buckets as JSON text: SQLite keeps them so.
pub(crate) const MINUTES_AS_JSON: &str = "minutes";

/// Index rows as one JSON array per query: sqlx hands rows over one at a
/// time between threads, which made loading a million keys take half a
/// minute; one text value per page of rows takes a few seconds.
const INDEX_JSON: &str = "json_group_array(json_array(api_key_id, guild_id, name, prefix, environment, scopes, \
     expires_at, revoked_at, rate_limit_per_minute, allowed_ips, hex(key_hash), hex(previous_hash), \
     previous_hash_expires_at, allowed_roles, suspended_at is not null, ban_budget, role_budget))";

/// Rows per insert statement (each binds at most 10 values; SQLite allows
/// 32,766 per statement).
const ROWS_PER_STATEMENT: usize = 1000;

/// Every key as the index keeps it: pages of rows in `rowid` order, each
/// page one JSON text (see [`INDEX_JSON`]), read in one transaction.
pub(crate) async fn scan_index_rows(tx: &mut SqliteConnection, mut each: impl FnMut(IndexRow)) -> anyhow::Result<()> {
    const PAGE: i64 = 8192;
    let sql = format!(
        "select count(*), max(rid), {INDEX_JSON} from \
         (select rowid as rid, * from api_key where rowid > $1 order by rowid limit $2)"
    );
    let mut after = i64::MIN;
    loop {
        let (n, last, json): (i64, Option<i64>, String) =
            sqlx::query_as(&sql).bind(after).bind(PAGE).fetch_one(&mut *tx).await?;
        for row in rows::index_rows(&json)? {
            each(row);
        }
        match last {
            Some(last) if n == PAGE => after = last,
            _ => return Ok(()),
        }
    }
}

/// One update a key: in-process statements cost no round trip.
pub(crate) async fn record_usage(
    tx: &mut SqliteConnection,
    batch: &[(KeyId, DateTime<Utc>, u64)],
) -> anyhow::Result<()> {
    for (id, at, count) in batch {
        sqlx::query(
            "update api_key set last_used_at = max(coalesce(last_used_at, 0), $1), \
             use_count = use_count + $2 where api_key_id = $3",
        )
        .bind(to_millis(*at))
        .bind(*count as i64)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Many rows to a statement; a minute's count is added to its bucket in the
/// hour row's JSON array with `json_set`.
pub(crate) async fn record_counters(
    tx: &mut SqliteConnection,
    minutes: &[MinuteCount],
    ips: &[IpCount],
    days: &[IpCount],
) -> anyhow::Result<()> {
    for wave in waves(minutes) {
        for chunk in wave.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "insert into usage_hour (hour, api_key_id, method, route, status, outcome, count, last_minute, \
                 minutes) ",
            );
            q.push_values(chunk, |mut b, r| {
                let (m, n) = (minute_of_hour(r.minute), count_to_sql(r.count));
                b.push_bind(r.minute.div_euclid(60))
                    .push_bind(r.key_id.as_str())
                    .push_bind(r.method)
                    .push_bind(r.route)
                    .push_bind(i64::from(r.status))
                    .push_bind(r.outcome)
                    .push_bind(n)
                    .push_bind(m)
                    .push_bind(minutes_json(m as usize, n));
            });
            q.push(
                " on conflict (hour, api_key_id, method, route, status, outcome) do update set \
                 count = usage_hour.count + excluded.count, last_minute = excluded.last_minute, \
                 minutes = json_set(usage_hour.minutes, '$[' || excluded.last_minute || ']', \
                     json_extract(usage_hour.minutes, '$[' || excluded.last_minute || ']') + excluded.count)",
            );
            q.build().execute(&mut *tx).await?;
        }
    }
    for (table, unit, rows) in [("usage_ip_hour", "hour", ips), ("usage_ip_day", "day", days)] {
        let mut rows: Vec<&IpCount> = rows.iter().collect();
        rows.sort_by(|a, b| (a.hour, &a.key_id, &a.ip).cmp(&(b.hour, &b.key_id, &b.ip)));
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(format!("insert into {table} ({unit}, api_key_id, ip, count) "));
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.hour)
                    .push_bind(r.key_id.as_str())
                    .push_bind(r.ip.as_str())
                    .push_bind(count_to_sql(r.count));
            });
            q.push(format!(
                " on conflict ({unit}, api_key_id, ip) do update set count = {table}.count + excluded.count"
            ));
            q.build().execute(&mut *tx).await?;
        }
    }
    Ok(())
}

/// Many rows to a statement, then one indexed delete per trimmed key.
pub(crate) async fn record_requests(
    tx: &mut SqliteConnection,
    rows: &[NewRequestLog],
    trim: &[KeyId],
    keep: [u32; 2],
) -> anyhow::Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "insert into request_log (api_key_id, at, method, route, status, reason, ip, latency_us, \
             target_user_id, target_role_id, notable) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.key_id.as_str())
                .push_bind(to_millis(r.at))
                .push_bind(r.method)
                .push_bind(r.route)
                .push_bind(i64::from(r.status))
                .push_bind(r.reason)
                .push_bind(r.ip.as_str())
                .push_bind(i64::from(r.latency_us))
                .push_bind(r.target_user_id.map(id_to_sql))
                .push_bind(r.target_role_id.map(id_to_sql))
                .push_bind(r.notable);
        });
        q.build().execute(&mut *tx).await?;
    }
    // One indexed delete per key and kind (cheap in-process): all but the
    // newest of each (`keep[0]` of the rest, `keep[1]` notable refusals).
    for key in trim {
        for (notable, keep) in [(false, keep[0]), (true, keep[1])] {
            sqlx::query(
                "delete from request_log where api_key_id = $1 and notable = $3 and request_log_id <= \
                 (select request_log_id from request_log where api_key_id = $1 and notable = $3 \
                  order by request_log_id desc limit 1 offset $2)",
            )
            .bind(key.as_str())
            .bind(i64::from(keep))
            .bind(notable)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}
