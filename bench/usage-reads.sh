#!/usr/bin/env bash
# How long `GET /v1/usage` takes, and what it costs in memory, on a key
# with 90 days of the heaviest usage guildkey keeps: every hour (and every
# day) holds its 100 busiest client address blocks plus `other` (the cap), and 8 (method,
# route, status, outcome) rows; the last 48 hours keep their minute buckets;
# the request log is full. The rows are written with one SQL statement per
# table (a recursive CTE), straight into a fresh SQLite database made by
# `guildkey migrate`, the key made by `guildkey keys create`.
#
# `/apikey usage` makes the same read as `/v1/usage` (and then draws its
# chart: `gkbench chart`); `/apikey info` makes the 24h and 7d reads and
# one page of the request log: the 24h, 7d and 30d figures below cover them.
#
#   bench/usage-reads.sh                 # 200 requests per period
#   N=50 GK=target/release/guildkey bench/usage-reads.sh
#
# Prints p50/p99/max per period and the listener's peak resident memory
# (VmHWM) before and after. Not part of CI. Needs sqlite3 and curl.
set -euo pipefail

cd "$(dirname "$0")/.."
N="${N:-200}"
GK="${GK:-${CARGO_TARGET_DIR:-target}/debug/guildkey}"
[ -x "$GK" ] || cargo build -q -p guildkey
WORK="$(mktemp -d)"
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
[ -n "${KEEP_DB:-}" ] && WORK="$KEEP_DB" && mkdir -p "$WORK" && trap - EXIT

export DATABASE_URL="sqlite://$WORK/gk.db?mode=rwc"
"$GK" migrate >/dev/null
(umask 077 && "$GK" keys create --guild 1100000000000000001 --name heavy --scopes bans.read --rate-limit 100000 >"$WORK/token")
KEY_ID="$(sqlite3 "$WORK/gk.db" "select api_key_id from api_key where name = 'heavy'")"
NOW_HOUR="$(( $(date +%s) / 3600 ))"

echo "filling 90 days for $KEY_ID" >&2
sqlite3 "$WORK/gk.db" <<SQL
with recursive h(n) as (select 0 union all select n + 1 from h where n < 2159),
kinds(method, route, status, outcome) as (
    select 'GET', '/v1/verify', 200, 'ok' union all
    select 'GET', '/v1/verify', 401, 'key_revoked' union all
    select 'GET', '/v1/verify', 403, 'ip_not_allowed' union all
    select 'GET', '/v1/verify', 429, 'rate_limited' union all
    select 'GET', '(no route)', 404, 'not_found' union all
    select 'GET', '/v1/guilds/{guild_id}/bans/{user_id}', 200, 'ok' union all
    select 'GET', '/v1/guilds/{guild_id}/bans/{user_id}', 403, 'insufficient_scope' union all
    select 'PUT', '/v1/guilds/{guild_id}/bans/{user_id}', 200, 'ok')
insert into usage_hour (hour, api_key_id, method, route, status, outcome, count, last_minute, minutes)
select $NOW_HOUR - n, '$KEY_ID', method, route, status, outcome, 6000, 59,
       case when n < 48 then '[' || substr(replace(hex(zeroblob(60)), '00', '100,'), 1, 239) || ']' end
from h, kinds;

with recursive h(n) as (select 0 union all select n + 1 from h where n < 2159),
a(i) as (select 0 union all select i + 1 from a where i < 99)
insert into usage_ip_hour (hour, api_key_id, ip, count)
select $NOW_HOUR - n, '$KEY_ID', printf('2001:db8:%x:%x::/64', n, i), 1000 - i from h, a;

with recursive h(n) as (select 0 union all select n + 1 from h where n < 2159)
insert into usage_ip_hour (hour, api_key_id, ip, count)
select $NOW_HOUR - n, '$KEY_ID', 'other', 500000 from h;

with recursive d(n) as (select 0 union all select n + 1 from d where n < 89),
a(i) as (select 0 union all select i + 1 from a where i < 99)
insert into usage_ip_day (day, api_key_id, ip, count)
select $NOW_HOUR / 24 - n, '$KEY_ID', printf('2001:db8:%x:%x::/64', n, i), 24000 - i from d, a;

with recursive d(n) as (select 0 union all select n + 1 from d where n < 89)
insert into usage_ip_day (day, api_key_id, ip, count)
select $NOW_HOUR / 24 - n, '$KEY_ID', 'other', 12000000 from d;

with recursive r(n) as (select 0 union all select n + 1 from r where n < 249)
insert into request_log (api_key_id, at, method, route, status, reason, ip, latency_us, notable)
select '$KEY_ID', ($NOW_HOUR * 3600 - n) * 1000, 'GET', '(no route)', 404, 'not_found', '203.0.113.7', 40,
       n < 50
from r;
SQL
sqlite3 "$WORK/gk.db" "select 'usage_hour rows: ' || count(*) from usage_hour; select 'usage_ip_hour rows: ' || count(*) from usage_ip_hour; select 'usage_ip_day rows: ' || count(*) from usage_ip_day; select 'request_log rows: ' || count(*) from request_log"

DISCORD_TOKEN=bench.not-a-real-token DISCORD_API_BASE_URL=http://127.0.0.1:9 GUILDKEY_HTTP_BIND=127.0.0.1:0 \
    RUST_LOG=info "$GK" run --only http 2>"$WORK/log" &
PID=$!
for _ in $(seq 100); do
    ADDR="$(grep -o 'listening on [0-9.:]*' "$WORK/log" | head -1 | cut -d' ' -f3 || true)"
    [ -n "$ADDR" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/log" >&2; exit 1; }
TOKEN="$(cat "$WORK/token")"
hwm() { awk '/VmHWM/ {print $2}' "/proc/$PID/status"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
curl -fs -H "Authorization: Bearer $TOKEN" "http://$ADDR/v1/verify" >/dev/null
echo "listener: VmRSS $(rss) KiB, VmHWM $(hwm) KiB before the reads"
for period in 24h 7d 30d; do
    for _ in $(seq "$N"); do
        curl -fs -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" \
            "http://$ADDR/v1/usage?period=$period"
    done | sort -n | awk -v p="$period" '{t[NR] = $1 * 1000} END {
        printf "GET /v1/usage?period=%s: %d requests, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
            p, NR, t[int(NR * 0.5)], t[int(NR * 0.99)], t[NR]}'
done
# Four at once, as in the issue (19-23 s each before).
start="$(date +%s%N)"
READERS=()
for _ in 1 2 3 4; do
    curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$ADDR/v1/usage?period=30d" &
    READERS+=($!)
done
wait "${READERS[@]}"
echo "four 30d reads at once: $(( ($(date +%s%N) - start) / 1000000 )) ms in all"
echo "listener: VmRSS $(rss) KiB, VmHWM $(hwm) KiB after the reads"
