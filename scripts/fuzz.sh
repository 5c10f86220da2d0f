#!/usr/bin/env bash
# Fuzz every outside-input parser: each property of tests/service/properties.rs is a
# target, run with fresh random inputs for a time budget or a case count.
#
#   scripts/fuzz.sh                 # 10 seconds per target
#   scripts/fuzz.sh 60              # 60 seconds per target
#   scripts/fuzz.sh --cases 200000  # exactly 200000 passing inputs per target
#   scripts/fuzz.sh 30 token config # only targets whose name contains a word
#
# Prints per target the inputs executed (passing cases; inputs a property
# skips are not counted) and the findings (failing runs, with proptest's
# shrunk input). A finding is saved in proptest-regressions/properties.txt and
# replayed first by every later `cargo test --test service properties::`: fix the code,
# keep the shrunk input as a named test in `mod regressions`, commit both.
#
# Proptest is the engine here (fast to build, CI-sized); for coverage-guided
# fuzzing with cargo-fuzz/libFuzzer see scripts/cargo-fuzz.sh. Set
# FUZZ_BATCH to change the cases per run in time mode.
# Exit code: 0 no findings, 1 findings, 2 bad usage or build failure.

set -uo pipefail
cd "$(dirname "$0")/.."

budget=10
cases=""
if [[ "${1:-}" == "--cases" ]]; then
    cases="${2:?--cases needs a number}"
    shift 2
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    budget="$1"
    shift
elif [[ "${1:-}" == -* ]]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
filters=("$@")
batch="${FUZZ_BATCH:-5000}"

# Build once, then run the test binary directly (no cargo overhead per batch).
build_log=$(cargo test --test service --no-run 2>&1) || { echo "$build_log" >&2; exit 2; }
bin=$(echo "$build_log" | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[[ -x "$bin" ]] || { echo "could not find the service test binary (properties::)" >&2; exit 2; }

targets=()
while IFS= read -r name; do
    [[ "$name" == properties::* ]] || continue
    [[ "$name" == properties::regressions::* ]] && continue
    if ((${#filters[@]})); then
        keep=0
        for f in "${filters[@]}"; do [[ "$name" == *"$f"* ]] && keep=1; done
        ((keep)) || continue
    fi
    targets+=("$name")
done < <("$bin" --list 2>/dev/null | sed -n 's/: test$//p')
((${#targets[@]})) || { echo "no target matches: ${filters[*]}" >&2; exit 2; }

mode="$budget s per target"
[[ -n "$cases" ]] && mode="$cases cases per target"
echo "fuzzing ${#targets[@]} targets, $mode"
printf '%-90s %12s %9s %8s\n' TARGET EXECUTIONS FINDINGS SECONDS

total_exec=0
total_findings=0
run_batch() { # name cases -> 0 pass, 1 finding (output in $out)
    out=$(PROPTEST_CASES="$2" "$bin" --exact "$1" --test-threads 1 2>&1)
}
for name in "${targets[@]}"; do
    exec=0
    findings=0
    start=$(date +%s)
    if [[ -n "$cases" ]]; then
        if run_batch "$name" "$cases"; then exec=$cases; else findings=1; fi
    else
        while (($(date +%s) - start < budget)); do
            if run_batch "$name" "$batch"; then
                exec=$((exec + batch))
            else
                findings=$((findings + 1))
                break # the finding is saved; fix it before fuzzing this target on
            fi
        done
    fi
    secs=$(($(date +%s) - start))
    printf '%-90s %12d %9d %8d\n' "$name" "$exec" "$findings" "$secs"
    if ((findings)); then
        echo "$out" | grep -E -A4 '^(Test failed|minimal failing input)|panicked at' | sed 's/^/    /'
    fi
    total_exec=$((total_exec + exec))
    total_findings=$((total_findings + findings))
done
echo "total: $total_exec executions, $total_findings findings"
((total_findings == 0))
