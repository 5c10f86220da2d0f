#!/usr/bin/env bash
# guildkey on PostgreSQL, for "scale out", all in one run on one machine:
#
#   1. GET /v1/verify under wrk on a PostgreSQL-backed listener beside a
#      SQLite-backed one, each seeded with the same keys (verification is
#      from memory either way: goal PostgreSQL >= 0.95 x SQLite);
#   2. start-up (process start to "listening on") and resident memory with
#      1,000,000 keys in PostgreSQL (goal < 5 s), SQLite beside it;
#   3. create / revoke through the service on PostgreSQL with 1,000,000
#      keys, p50 and p99 (SQLite beside it), and what other connections'
#      commits cost the index;
#   4. propagation across two instances on one database: revokes through
#      instance A, each timed until instance B's in-memory authenticate
#      refuses the key (goal p99 < 100 ms, never above 1 s), on PostgreSQL
#      and on SQLite (two instances on one file) for comparison; then with
#      real processes (`guildkey keys revoke` per key, `guildkey run`
#      polled over HTTP).
#
#   GUILDKEY_TEST_POSTGRES=postgres://user:pass@127.0.0.1/postgres bench/pg.sh
#   ROUNDS=3 STARTUP_KEYS=200000 GUILDKEY_TEST_POSTGRES=... bench/pg.sh   # shorter
#
# The URL (PG_ADMIN_URL, or GUILDKEY_TEST_POSTGRES as the test suite names
# it) is a role that may create databases: the script makes its own
# (gkbench_<pid>_*) and drops them at exit. Not part of CI. Needs cargo;
# installs wrk from Debian when missing. Honours CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
ADMIN="${PG_ADMIN_URL:-${GUILDKEY_TEST_POSTGRES:-}}"
if [[ -z $ADMIN ]]; then
    echo "set GUILDKEY_TEST_POSTGRES (or PG_ADMIN_URL) to a PostgreSQL URL that may create databases," >&2
    echo "e.g. postgres://guildkey:guildkey@127.0.0.1/postgres; this script makes and drops its own there" >&2
    exit 2
fi
DURATION="${DURATION:-3}"
ROUNDS="${ROUNDS:-9}"
WARMUP="${WARMUP:-2}"
THREADS="${THREADS:-2}"
VERIFY_KEYS="${VERIFY_KEYS:-100000}"
STARTUP_KEYS="${STARTUP_KEYS:-1000000}"
STARTUP_RUNS="${STARTUP_RUNS:-3}"
CHANGES="${CHANGES:-500}"
PROPAGATION="${PROPAGATION:-1000}"
# Propagation once more on the big database (B's index then holds
# STARTUP_KEYS keys); 0 skips it.
PROPAGATION_BIG="${PROPAGATION_BIG:-200}"
# The most random pause before each revoke of the propagation runs (ms):
# de-phases them from the 250 ms watch tick.
PAUSE_MS="${PAUSE_MS:-250}"
# Propagation between real processes too: keys revoked by `guildkey keys
# revoke` processes, a `guildkey run` polled over HTTP; 0 skips it.
PROCESSES="${PROCESSES:-200}"

if ! command -v wrk >/dev/null; then
    echo "installing wrk" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

echo "building (release)" >&2
cargo build --release -q -p guildkey -p guildkey-bench -p discord-double
BIN="${CARGO_TARGET_DIR:-target}/release"
GK="$BIN/guildkey"
BENCH="$BIN/gkbench"

WORK="$(mktemp -d)"
PIDS=()
DBS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for db in "${DBS[@]}"; do "$BENCH" pg-drop "$ADMIN" "$db" || echo "failed to drop database $db" >&2; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A new PostgreSQL database, dropped at exit; its URL in DB_URL. (Not
# called in $(...): the name must reach DBS in this shell.)
pg_database() { # suffix
    local name="gkbench_$$_$1"
    DBS+=("$name")
    DB_URL="$("$BENCH" pg-create "$ADMIN" "$name")"
}

# The port a server bound (port 0: any free one) from its "listening on" line.
port_from_log() {
    for _ in $(seq 1 600); do
        grep -q "listening on" "$1" 2>/dev/null && break
        sleep 0.05
    done
    grep -m1 "listening on" "$1" | sed 's/.*listening on [^ ]*:\([0-9]*\).*/\1/'
}
wait_http() {
    for _ in $(seq 1 200); do
        curl -fs -o /dev/null "$1" 2>/dev/null && return 0
        curl -s -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing answers at $1" >&2
    return 1
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

export DISCORD_TOKEN="MTEwMDAwMDAwMDAwMDAwMDAwMQ.bench.token"
export GUILDKEY_REGISTER_COMMANDS=none
export RUST_LOG=warn,guildkey=info

# One Discord double per listener (each bot has a gateway of its own); its
# REST base URL in DISCORD_BASE. (Not called in $(...), as pg_database.)
start_double() { # name
    "$BIN/discord-double" --port 0 </dev/null >"$WORK/double-$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do grep -qs "REST base URL" "$WORK/double-$1.log" && break; sleep 0.05; done
    DISCORD_BASE="$(grep "REST base URL" "$WORK/double-$1.log" | sed 's/.*: //')"
}

# ---------------------------------------------------------------------------
echo "seeding $VERIFY_KEYS keys into SQLite and into PostgreSQL" >&2
pg_database verify
PG_VERIFY="$DB_URL"
"$BENCH" seed "$WORK/verify.db" "$VERIFY_KEYS" "$WORK/token-sqlite"
"$BENCH" seed "$PG_VERIFY" "$VERIFY_KEYS" "$WORK/token-postgres"

declare -A PORT PID
for backend in sqlite postgres; do
    url="sqlite://$WORK/verify.db"
    [[ $backend == postgres ]] && url="$PG_VERIFY"
    start_double "$backend"
    DATABASE_URL="$url" DISCORD_API_BASE_URL="$DISCORD_BASE" GUILDKEY_HTTP_BIND="127.0.0.1:0" "$GK" run \
        >"$WORK/gk-$backend.log" 2>&1 &
    PIDS+=($!)
    PID[$backend]=$!
    PORT[$backend]="$(port_from_log "$WORK/gk-$backend.log")"
    wait_http "http://127.0.0.1:${PORT[$backend]}/healthz"
    curl -fs -H "Authorization: Bearer $(cat "$WORK/token-$backend")" \
        "http://127.0.0.1:${PORT[$backend]}/v1/verify" >"$WORK/body-$backend.json"
    grep -q '"success":true' "$WORK/body-$backend.json" \
        || { echo "$backend: verify failed: $(cat "$WORK/body-$backend.json")" >&2; exit 1; }
    # The token goes into the request from a file, not onto a command line.
    cat >"$WORK/auth-$backend.lua" <<EOF
local f = assert(io.open("$WORK/token-$backend"))
wrk.headers["Authorization"] = "Bearer " .. f:read("*a")
f:close()
EOF
done

# wrk latency to microseconds.
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us/,"",v); print v } else if (v ~ /ms$/) { sub(/ms/,"",v); print v*1000 } else { sub(/s/,"",v); print v*1000000 } }'; }

# One wrk run: "req/s p50_us p99_us".
load() { # backend conns seconds
    local out
    out="$(wrk -t"$THREADS" -c"$2" -d"${3}s" --latency -s "$WORK/auth-$1.lua" "http://127.0.0.1:${PORT[$1]}/v1/verify")"
    if echo "$out" | grep -q "Non-2xx"; then echo "$1 answered non-2xx: $out" >&2; exit 1; fi
    echo "$(echo "$out" | awk '/Requests\/sec/ { print $2 }') \
$(echo "$out" | awk '$1 == "50%" { print $2 }' | to_us) $(echo "$out" | awk '$1 == "99%" { print $2 }' | to_us)"
}

echo
echo "== 1. GET /v1/verify, wrk -t$THREADS, $ROUNDS rounds of ${DURATION}s per listener, $VERIFY_KEYS keys each =="
RESULTS="$WORK/results"
: >"$RESULTS"
for c in 8 64; do
    for backend in sqlite postgres; do load "$backend" "$c" "$WARMUP" >/dev/null; done
    for round in $(seq 1 "$ROUNDS"); do
        # Who goes first alternates, so neither always runs in the other's wake.
        if (( round % 2 )); then order="sqlite postgres"; else order="postgres sqlite"; fi
        for backend in $order; do
            echo "$c $round $backend $(load "$backend" "$c" "$DURATION")" >>"$RESULTS"
        done
    done
done
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
runs = {}
for c, rnd, name, rps, p50, p99 in rows:
    runs.setdefault((int(c), name), []).append((int(rnd), float(rps), float(p50), float(p99)))
med = statistics.median
for c in (8, 64):
    for name in ("sqlite", "postgres"):
        r = runs[(c, name)]
        print(f"{name:<9} c={c:<3} {med(x[1] for x in r):10.0f} req/s   p50 {med(x[2] for x in r):7.0f} us   "
              f"p99 {med(x[3] for x in r):7.0f} us   (median of {len(r)}; req/s per round: "
              f"{', '.join(f'{x[1]:.0f}' for x in r)})")
print()
for c in (8, 64):
    by_round = lambda name: {x[0]: x for x in runs[(c, name)]}
    s, p = by_round("sqlite"), by_round("postgres")
    thr = [p[k][1] / s[k][1] for k in s]
    p50 = [p[k][2] / s[k][2] for k in s]
    print(f"c={c:<3} postgres/sqlite throughput {med(thr):.2f} (target >= 0.95; rounds {', '.join(f'{x:.2f}' for x in thr)})   "
          f"p50 postgres/sqlite {med(p50):.2f} (rounds {', '.join(f'{x:.2f}' for x in p50)})")
PY
echo
for backend in sqlite postgres; do
    echo "$backend handler service time (/metrics, bucket upper bounds): $(curl -fs "http://127.0.0.1:${PORT[$backend]}/metrics" | "$BENCH" p99 /v1/verify)"
    echo "$backend listener RSS with $VERIFY_KEYS keys after load: $(awk '/VmRSS/ { printf "%.1f MiB", $2/1024 }' /proc/"${PID[$backend]}"/status)"
done

# Stop the listeners and their doubles before the start-up runs.
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

# ---------------------------------------------------------------------------
echo
echo "== 2. start-up with $STARTUP_KEYS keys (process start to 'listening on'; rss_mib is VmRSS 2 s after) =="
pg_database big
PG_BIG="$DB_URL"
"$BENCH" seed "$PG_BIG" "$STARTUP_KEYS" "$WORK/token-big-postgres"
"$BENCH" seed "$WORK/big.db" "$STARTUP_KEYS" "$WORK/token-big-sqlite"
start_double startup
export DISCORD_API_BASE_URL="$DISCORD_BASE"
for backend in postgres sqlite; do
    url="sqlite://$WORK/big.db"
    [[ $backend == postgres ]] && url="$PG_BIG"
    : >"$WORK/startup-$backend"
    for i in $(seq 1 "$STARTUP_RUNS"); do
        line="$(DATABASE_URL="$url" GUILDKEY_HTTP_BIND="127.0.0.1:0" "$BENCH" startup -- "$GK" run)"
        echo "$backend, run $i: $line"
        echo "$line" >>"$WORK/startup-$backend"
    done
    target=""
    [[ $backend == postgres ]] && target=" (target < 5000 ms)"
    echo "$backend: median startup_ms=$(sed 's/.*startup_ms=\([0-9]*\).*/\1/' "$WORK/startup-$backend" | median) \
rss_mib=$(sed 's/.*rss_mib=\([0-9.]*\).*/\1/' "$WORK/startup-$backend" | median)$target"
done
echo "diagnosis: the same rows from PostgreSQL read two other ways than the store's pages (gkbench pg-scan):"
"$BENCH" pg-scan "$PG_BIG" | sed 's/^/  /'

# ---------------------------------------------------------------------------
echo
echo "== 3. create / revoke through the service with $STARTUP_KEYS keys ($CHANGES of each, in-process), then other connections' commits =="
for backend in postgres sqlite; do
    url="sqlite://$WORK/big.db"
    [[ $backend == postgres ]] && url="$PG_BIG"
    echo "$backend:"
    "$BENCH" changes "$url" "$CHANGES" | sed 's/^/  /'
done
echo "a full reload while the upkeep runs (another connection overflows the change log), with $STARTUP_KEYS keys:"
for backend in postgres sqlite; do
    url="sqlite://$WORK/big.db"
    [[ $backend == postgres ]] && url="$PG_BIG"
    echo "$backend:"
    "$BENCH" reload-outage "$url" | sed 's/^/  /'
done

# ---------------------------------------------------------------------------
echo
echo "== 4. propagation across two instances on one database: $PROPAGATION keys created, then revoked, through A; B polled (goal p99 < 100 ms, never > 1 s) =="
pg_database propagation
PG_PROP="$DB_URL"
echo "postgres:"
"$BENCH" propagation "$PG_PROP" "$PROPAGATION" "$PAUSE_MS" | sed 's/^/  /'
echo "sqlite:"
"$BENCH" propagation "sqlite://$WORK/propagation.db" "$PROPAGATION" "$PAUSE_MS" | sed 's/^/  /'
if (( PROPAGATION_BIG > 0 )); then
    echo "postgres, on the database with $STARTUP_KEYS keys ($PROPAGATION_BIG keys):"
    "$BENCH" propagation "$PG_BIG" "$PROPAGATION_BIG" "$PAUSE_MS" | sed 's/^/  /'
fi
if (( PROCESSES > 0 )); then
    for backend in postgres sqlite; do
        url="sqlite://$WORK/processes.db"
        if [[ $backend == postgres ]]; then pg_database processes; url="$DB_URL"; fi
        start_double "processes-$backend"
        DATABASE_URL="$url" DISCORD_API_BASE_URL="$DISCORD_BASE" GUILDKEY_HTTP_BIND="127.0.0.1:0" "$GK" run \
            >"$WORK/gk-processes-$backend.log" 2>&1 &
        PIDS+=($!)
        port="$(port_from_log "$WORK/gk-processes-$backend.log")"
        wait_http "http://127.0.0.1:$port/healthz"
        echo "$backend, real processes:"
        "$BENCH" propagation-http "$url" "$GK" "$port" "$PROCESSES" "$PAUSE_MS" | sed 's/^/  /'
    done
fi
