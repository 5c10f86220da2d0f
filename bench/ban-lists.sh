#!/usr/bin/env bash
# Ban lists in memory (README "Ban lists in memory"): `guildkey run` (release)
# against the Discord double with the demo guild holding BANS bans (default
# 100,000) and its ban-list route allowing RATE pages a second (default 3):
# how long the sync takes, what the lists hold (/metrics ban_list_bytes),
# the resident memory beside a run with no bans (settled VmRSS, both), and
# the latency of CHECKS ban checks (default 1,000; half banned) answered from
# memory, p50/p99/max as curl measures them on loopback, with the count of
# Discord ban calls they made (the double's log: none expected).
#
#   bench/ban-lists.sh
#   BANS=20000 RATE=10 CHECKS=2000 bench/ban-lists.sh
#
# Not part of CI. Needs cargo and curl. Honours CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
BANS="${BANS:-100000}"
RATE="${RATE:-3}"
CHECKS="${CHECKS:-1000}"
SYNC_TIMEOUT="${SYNC_TIMEOUT:-300}"
GUILD=1000000000000000001
FIRST=1500000000000000000 # the double's first seeded ban (seed-bans)

echo "building (release)" >&2
cargo build --release -q -p guildkey -p discord-double
BIN="${CARGO_TARGET_DIR:-target}/release"
GK="$BIN/guildkey"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

export DISCORD_TOKEN="MTEwMDAwMDAwMDAwMDAwMDAwMQ.bench.token"
export GUILDKEY_REGISTER_COMMANDS=none
export RUST_LOG=warn,guildkey=info

wait_for_line() { # file pattern timeout_s
    for _ in $(seq 1 $(( ${3:-30} * 20 ))); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "no '$2' in $1:" >&2
    tail -20 "$1" >&2
    return 1
}
kib() { awk -v k="$2" '$1 == k":" { print $2 }' /proc/"$1"/status; }
settled_rss() { # pid: VmRSS once 3 samples 1 s apart differ by at most 1 %
    local samples=()
    for _ in $(seq 1 30); do
        sleep 1
        samples+=("$(kib "$1" VmRSS)")
        (( ${#samples[@]} >= 3 )) || continue
        if printf '%s\n' "${samples[@]: -3}" |
            awk '{ if (NR == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1 } END { exit !(hi - lo <= hi / 100) }'; then
            break
        fi
    done
    kib "$1" VmRSS
}

# One run with $1 bans; prints "rss_kib sync_s bytes" and leaves guildkey
# running for the checks when $2 is "keep".
run() {
    local n="$1" dir="$WORK/run-$1"
    mkdir -p "$dir"
    RUST_LOG=discord_double=debug "$BIN/discord-double" --port 0 --bans "$n" --ban-list-rate "$RATE" \
        </dev/null >"$dir/double.log" 2>"$dir/double.err" &
    PIDS+=("$!")
    wait_for_line "$dir/double.log" "REST base URL"
    local base
    base="$(grep "REST base URL" "$dir/double.log" | sed 's/.*: //')"
    export DATABASE_URL="sqlite://$dir/gk.db?mode=rwc"
    local secret
    secret="$("$GK" keys create --guild "$GUILD" --name bench --scopes bans.read --rate-limit 100000 2>"$dir/cli.log")"
    (umask 077 && printf 'Authorization: Bearer %s\n' "$secret" >"$dir/auth")
    unset secret
    # The guild has a key: the bot syncs its list when it sees the guild.
    local t0
    t0="$(date +%s%3N)"
    DISCORD_API_BASE_URL="$base" GUILDKEY_HTTP_BIND="127.0.0.1:0" "$GK" run >"$dir/gk.log" 2>&1 &
    GK_PID=$!
    PIDS+=("$GK_PID")
    wait_for_line "$dir/gk.log" "listening on"
    PORT="$(grep -m1 "listening on" "$dir/gk.log" | sed 's/.*listening on [^ ]*:\([0-9]*\).*/\1/')"
    wait_for_line "$dir/gk.log" "synced the guild's ban list" "$SYNC_TIMEOUT"
    SYNC_MS=$(( $(date +%s%3N) - t0 ))
    RSS="$(settled_rss "$GK_PID")"
    BYTES="$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '$1 == "guildkey_ban_list_bytes" { print $2 }')"
    DIR="$dir"
}

run 0
base_rss="$RSS"
kill "$GK_PID" 2>/dev/null || true

run "$BANS"
printf 'sync: %d bans at %d pages/s in %.1f s (from the process start); lists hold %s bytes\n' \
    "$BANS" "$RATE" "$(awk -v m="$SYNC_MS" 'BEGIN { print m / 1000 }')" "$BYTES"
printf 'VmRSS settled: %d KiB with no bans, %d KiB with %d (+%.1f MiB)\n' \
    "$base_rss" "$RSS" "$BANS" "$(awk -v a="$RSS" -v b="$base_rss" 'BEGIN { print (a - b) / 1024 }')"

calls_before="$(grep -c 'bans/' "$DIR/double.err" || true)"
: >"$WORK/times"
for i in $(seq 0 $(( CHECKS - 1 ))); do
    user=$(( FIRST + (i * 7) % (BANS > 0 ? BANS * 2 : 1) ))
    curl -s -o /dev/null -w '%{time_total}\n' -H @"$DIR/auth" \
        "http://127.0.0.1:$PORT/v1/guilds/$GUILD/bans/$user" >>"$WORK/times"
done
calls_after="$(grep -c 'bans/' "$DIR/double.err" || true)"
sort -n "$WORK/times" | awk -v n="$CHECKS" '
    { t[NR] = $1 * 1000 }
    END {
        p50 = t[int(n * 0.50)]; p99 = t[int(n * 0.99)]; max = t[n]
        printf "%d ban checks from memory: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", n, p50, p99, max
    }'
echo "Discord ban calls during the checks: $(( calls_after - calls_before ))"
