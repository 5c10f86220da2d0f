#!/usr/bin/env bash
# guildkey's memory per guild on the gateway: resident memory (VmRSS) of
# `guildkey run` connected to the Discord double with the demo world alone
# (baseline, 2 guilds) and with GUILDS synthetic guilds more (default 10,000),
# once every guild is in serenity's cache and the RSS has settled; printed
# with the difference per guild in KiB.
#
#   bench/guilds.sh                 # 10,000 guilds, 3 rounds (about a minute)
#   GUILDS=2000 ROUNDS=3 bench/guilds.sh
#
# Not part of CI. Needs cargo and curl. Honours CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
GUILDS="${GUILDS:-10000}"
ROUNDS="${ROUNDS:-3}"
# RSS has settled when SETTLE consecutive 1 s samples differ by at most 1 %.
SETTLE="${SETTLE:-3}"
CACHE_TIMEOUT="${CACHE_TIMEOUT:-600}"

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

wait_for_line() { # file pattern
    for _ in $(seq 1 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "no '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}
kib() { awk -v k="$2" '$1 == k":" { print $2 }' /proc/"$1"/status; }
now_ms() { date +%s%3N; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

# One measurement (round $2): the double with $1 synthetic guilds, a fresh
# database, and `guildkey run` on it. Appends "guilds rss_kib hwm_kib" to
# $RESULTS and prints what it measured.
measure() {
    local n="$1" dir="$WORK/run-$1-$2"
    mkdir -p "$dir"
    "$BIN/discord-double" --port 0 --guilds "$n" </dev/null >"$dir/double.log" 2>&1 &
    local double_pid=$!
    PIDS+=("$double_pid")
    wait_for_line "$dir/double.log" "synthetic guilds:"
    local base last
    base="$(grep "REST base URL" "$dir/double.log" | sed 's/.*: //')"
    # The double sends GUILD_CREATEs in guild id order and serenity caches them in the
    # order received, so the guild with the highest id is the last one cached: the last
    # synthetic guild, or without any the other demo guild.
    if (( n > 0 )); then
        last="$(sed -n 's/.*synthetic guilds: .*last \([0-9]*\)).*/\1/p' "$dir/double.log")"
    else
        last="$(sed -n 's/^Other Guild \([0-9]*\):.*/\1/p' "$dir/double.log")"
    fi

    # A guild.read key for that guild; its secret goes into a header file, not onto a
    # command line.
    export DATABASE_URL="sqlite://$dir/gk.db?mode=rwc"
    local secret
    secret="$("$GK" keys create --guild "$last" --name bench --scopes guild.read 2>"$dir/cli.log")"
    (umask 077 && printf 'Authorization: Bearer %s\n' "$secret" >"$dir/auth")
    unset secret

    local t0 gk_pid port
    t0="$(now_ms)"
    DISCORD_API_BASE_URL="$base" GUILDKEY_HTTP_BIND="127.0.0.1:0" "$GK" run >"$dir/gk.log" 2>&1 &
    gk_pid=$!
    PIDS+=("$gk_pid")
    wait_for_line "$dir/gk.log" "listening on"
    port="$(grep -m1 "listening on" "$dir/gk.log" | sed 's/.*listening on [^ ]*:\([0-9]*\).*/\1/')"

    # Every guild is cached once the last one is (GET /v1/guilds/{id} reads the cache).
    local deadline=$(( $(date +%s) + CACHE_TIMEOUT ))
    until curl -fs -o "$dir/guild.json" -H @"$dir/auth" "http://127.0.0.1:$port/v1/guilds/$last" 2>/dev/null; do
        if (( $(date +%s) > deadline )); then
            echo "guild $last not cached after ${CACHE_TIMEOUT}s; guildkey log:" >&2
            tail -20 "$dir/gk.log" >&2
            exit 1
        fi
        kill -0 "$gk_pid" 2>/dev/null || { echo "guildkey exited:" >&2; cat "$dir/gk.log" >&2; exit 1; }
        sleep 0.2
    done
    local cache_ms=$(( $(now_ms) - t0 ))
    grep -q '"success":true' "$dir/guild.json" || { echo "unexpected: $(cat "$dir/guild.json")" >&2; exit 1; }

    # Then until the RSS holds still (the event handlers run after the cache update).
    local samples=() rss
    for _ in $(seq 1 60); do
        sleep 1
        samples+=("$(kib "$gk_pid" VmRSS)")
        (( ${#samples[@]} >= SETTLE )) || continue
        if printf '%s\n' "${samples[@]: -$SETTLE}" |
            awk '{ if (NR == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1 } END { exit !(hi - lo <= hi / 100) }'; then
            break
        fi
    done
    local hwm
    rss="$(kib "$gk_pid" VmRSS)"
    hwm="$(kib "$gk_pid" VmHWM)"
    echo "$n $rss $hwm" >>"$RESULTS"
    printf 'round %d, %6d guilds: VmRSS %s (peak VmHWM %s), all cached %.1f s after start\n' \
        "$2" "$(( n + 2 ))" "$(mib "$rss")" "$(mib "$hwm")" "$(awk -v m="$cache_ms" 'BEGIN { print m / 1000 }')"

    kill "$gk_pid" "$double_pid" 2>/dev/null || true
    wait "$gk_pid" "$double_pid" 2>/dev/null || true
}

RESULTS="$WORK/results"
: >"$RESULTS"
echo
echo "== guildkey run: resident memory with the demo world (2 guilds) and with $GUILDS guilds more =="
for round in $(seq 1 "$ROUNDS"); do
    for n in 0 "$GUILDS"; do
        measure "$n" "$round"
    done
done
python3 - "$RESULTS" "$GUILDS" <<'PY'
import statistics, sys
rows = [tuple(int(x) for x in line.split()) for line in open(sys.argv[1])]
n = int(sys.argv[2])
base = statistics.median(r[1] for r in rows if r[0] == 0)
many = statistics.median(r[1] for r in rows if r[0] == n)
rounds = sum(1 for r in rows if r[0] == 0)
print()
print(f"baseline RSS (2 guilds):          {base / 1024:8.1f} MiB")
print(f"RSS with {n:,} guilds more:   {many / 1024:8.1f} MiB")
print(f"difference:                       {(many - base) / 1024:8.1f} MiB = {(many - base) / n:.1f} KiB per guild"
      + (f" (medians of {rounds} rounds)" if rounds > 1 else ""))
PY
