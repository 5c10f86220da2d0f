#!/usr/bin/env bash
# guildkey listener benchmark: GET /v1/verify under wrk on loopback, beside
# (a) a bare axum endpoint serving an equally sized static JSON and (b) the
# naive design (a SQLite lookup by hash and a last-used UPDATE per request),
# all measured in one run (the machine drifts between runs); then the
# handler's p99 from /metrics, resident memory with 1,000,000 keys, start-up
# time with 100,000 keys, and the cost of changes by this process and by others.
#
#   bench/run.sh                 # 9 rounds of 3 s per server and connection count
#   ROUNDS=3 DURATION=3 bench/run.sh
#
# Not part of CI. Needs cargo; installs wrk from Debian when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION="${DURATION:-3}"
ROUNDS="${ROUNDS:-9}"
WARMUP="${WARMUP:-2}"
THREADS="${THREADS:-2}"

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
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The port a server bound (port 0: any free one) from its "listening on" line.
port_from_log() {
    for _ in $(seq 1 200); do
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

echo "seeding 10,000 keys" >&2
"$BENCH" seed "$WORK/gk.db" 10000 "$WORK/token"
"$BENCH" copy "$WORK/gk.db" "$WORK/naive.db"

# The Discord double: guildkey's bot connects to it; the listener does not need it.
"$BIN/discord-double" --port 0 </dev/null >"$WORK/double.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "REST base URL" "$WORK/double.log" && break; sleep 0.05; done
DISCORD_BASE="$(grep "REST base URL" "$WORK/double.log" | sed 's/.*: //')"

export DISCORD_TOKEN="MTEwMDAwMDAwMDAwMDAwMDAwMQ.bench.token"
export DISCORD_API_BASE_URL="$DISCORD_BASE"
export GUILDKEY_REGISTER_COMMANDS=none
export RUST_LOG=warn,guildkey=info

DATABASE_URL="sqlite://$WORK/gk.db" GUILDKEY_HTTP_BIND="127.0.0.1:0" "$GK" run >"$WORK/gk.log" 2>&1 &
PIDS+=($!)
GK_PORT="$(port_from_log "$WORK/gk.log")"
wait_http "http://127.0.0.1:$GK_PORT/healthz"

# The verify body, for the bare server to serve the same number of bytes.
curl -fs -H "Authorization: Bearer $(cat "$WORK/token")" "http://127.0.0.1:$GK_PORT/v1/verify" >"$WORK/body.json"
grep -q '"success":true' "$WORK/body.json" || { echo "verify failed: $(cat "$WORK/body.json")" >&2; exit 1; }

"$BENCH" bare 0 "$WORK/body.json" 2>"$WORK/bare.log" &
PIDS+=($!)
"$BENCH" naive 0 "$WORK/naive.db" 2>"$WORK/naive.log" &
PIDS+=($!)
BARE_PORT="$(port_from_log "$WORK/bare.log")"
NAIVE_PORT="$(port_from_log "$WORK/naive.log")"
wait_http "http://127.0.0.1:$BARE_PORT/v1/verify"
wait_http "http://127.0.0.1:$NAIVE_PORT/v1/verify"
curl -fs -H "Authorization: Bearer $(cat "$WORK/token")" "http://127.0.0.1:$NAIVE_PORT/v1/verify" | grep -q '"success":true'

# The token goes into the request from a file, not onto a command line.
cat >"$WORK/auth.lua" <<EOF
local f = assert(io.open("$WORK/token"))
wrk.headers["Authorization"] = "Bearer " .. f:read("*a")
f:close()
EOF

# wrk latency to microseconds.
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us/,"",v); print v } else if (v ~ /ms$/) { sub(/ms/,"",v); print v*1000 } else { sub(/s/,"",v); print v*1000000 } }'; }

# One wrk run: "req/s p50_us p99_us".
load() { # port conns seconds
    local out
    out="$(wrk -t"$THREADS" -c"$2" -d"${3}s" --latency -s "$WORK/auth.lua" "http://127.0.0.1:$1/v1/verify")"
    if echo "$out" | grep -q "Non-2xx"; then echo "port $1 answered non-2xx: $out" >&2; exit 1; fi
    echo "$(echo "$out" | awk '/Requests\/sec/ { print $2 }') \
$(echo "$out" | awk '$1 == "50%" { print $2 }' | to_us) $(echo "$out" | awk '$1 == "99%" { print $2 }' | to_us)"
}

# The machine drifts within seconds (other tenants' load comes and goes),
# so the three servers take turns: ROUNDS rounds of bare and guildkey (in
# alternating order) and naive, each ratio taken within a round, and the
# medians reported.
echo
echo "== GET /v1/verify, wrk -t$THREADS, $ROUNDS rounds of ${DURATION}s per server, 10,000 keys =="
RESULTS="$WORK/results"
: >"$RESULTS"
for c in 8 64; do
    for port in "$BARE_PORT" "$GK_PORT" "$NAIVE_PORT"; do load "$port" "$c" "$WARMUP" >/dev/null; done
    for round in $(seq 1 "$ROUNDS"); do
        # Who goes first alternates, so neither always runs in the other's wake.
        if (( round % 2 )); then order="bare guildkey"; else order="guildkey bare"; fi
        for name in $order; do
            port="$BARE_PORT"; [[ $name == guildkey ]] && port="$GK_PORT"
            echo "$c $round $name $(load "$port" "$c" "$DURATION")" >>"$RESULTS"
        done
        echo "$c $round naive $(load "$NAIVE_PORT" "$c" "$DURATION")" >>"$RESULTS"
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
    for name in ("bare", "guildkey", "naive"):
        r = runs[(c, name)]
        print(f"{name:<9} c={c:<3} {med(x[1] for x in r):10.0f} req/s   p50 {med(x[2] for x in r):7.0f} us   "
              f"p99 {med(x[3] for x in r):7.0f} us   (median of {len(r)}; req/s per round: "
              f"{', '.join(f'{x[1]:.0f}' for x in r)})")
print()
for c in (8, 64):
    by_round = lambda name: {x[0]: x for x in runs[(c, name)]}
    b, g, n = by_round("bare"), by_round("guildkey"), by_round("naive")
    thr = [g[k][1] / b[k][1] for k in b]
    naive = [g[k][1] / n[k][1] for k in b]
    p50 = [g[k][2] / b[k][2] for k in b]
    target = " (target <= 1.15)" if c == 8 else ""
    print(f"c={c:<3} guildkey/bare throughput {med(thr):.2f} (target >= 0.9; rounds {', '.join(f'{x:.2f}' for x in thr)})   "
          f"guildkey/naive {med(naive):.1f} (target >= 5)   p50 guildkey/bare {med(p50):.2f}{target} "
          f"(rounds {', '.join(f'{x:.2f}' for x in p50)})")
PY

echo
echo "== handler service time (from /metrics, bucket upper bounds) =="
curl -fs "http://127.0.0.1:$GK_PORT/metrics" | "$BENCH" p99 /v1/verify
echo "guildkey RSS with 10,000 keys after load: $(awk '/VmRSS/ { printf "%.1f MiB", $2/1024 }' /proc/"${PIDS[1]}"/status)"

# Stop the load-test servers before the memory runs.
for pid in "${PIDS[@]:1}"; do kill "$pid" 2>/dev/null || true; done

startup() { # keys
    DATABASE_URL="sqlite://$WORK/k$1.db" GUILDKEY_HTTP_BIND="127.0.0.1:0" "$BENCH" startup -- "$GK" run
}

echo
echo "== start-up and memory =="
"$BENCH" seed "$WORK/k100000.db" 100000 "$WORK/token100k"
for i in 1 2 3; do echo "100,000 keys, run $i: $(startup 100000)"; done
"$BENCH" seed "$WORK/k1000000.db" 1000000 "$WORK/token1m"
echo "1,000,000 keys: $(startup 1000000)   (rss_mib is VmRSS 2 s after 'listening on')"

echo
echo "== changes with 1,000,000 keys (in-process): 20 own creates and revokes, then other processes' commits =="
"$BENCH" changes "$WORK/k1000000.db" 20
