#!/usr/bin/env bash
# Coverage-guided fuzzing of every outside-input parser with cargo-fuzz
# (libFuzzer): one target per parser in fuzz/fuzz_targets/, each run for a
# time budget on its corpus (fuzz/corpus/<target>, grown across runs and not
# committed) plus the committed seeds (fuzz/seeds/<target>).
#
#   scripts/cargo-fuzz.sh              # 60 seconds per target
#   scripts/cargo-fuzz.sh 300          # 300 seconds per target
#   scripts/cargo-fuzz.sh 120 token    # only the named targets
#
# Prints per target the executions, the corpus size after the run and the
# findings: inputs that crashed, broke a property (an assert) or hung, saved
# in fuzz/artifacts/<target>/. Replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
# then fix the parser and keep the input as a unit test beside it.
#
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly
# flags it needs. SANITIZER (address, the default, or none) picks the
# sanitizer; FUZZ_NICE the niceness of the build and runs (19). The first
# build instruments guildkey's whole dependency tree (10+ minutes); it lives
# in fuzz/target, apart from the main target/. scripts/fuzz.sh runs the
# proptest properties, which stay the CI-sized check.
# Exit code: 0 no findings, 1 findings, 2 bad usage or build failure.

set -uo pipefail
cd "$(dirname "$0")/../fuzz"

budget=60
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    budget="$1"
    shift
elif [[ "${1:-}" == -* ]]; then
    sed -n '2,23p' "$0" >&2
    exit 2
fi
sanitizer="${SANITIZER:-address}"
nice=(nice -n "${FUZZ_NICE:-19}")
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
    echo "installing cargo-fuzz" >&2
    "${nice[@]}" cargo install cargo-fuzz --locked || exit 2
fi

"${nice[@]}" cargo fuzz build --sanitizer "$sanitizer" || exit 2
mapfile -t all < <(cargo fuzz list)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $t "* ]] || { echo "no target $t; there are: ${all[*]}" >&2; exit 2; }
done

count() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
new_artifacts() { find "artifacts/$1" -maxdepth 1 -type f -newermt "@$2" 2>/dev/null; } # target since
echo "fuzzing ${#targets[@]} targets, $budget s each, sanitizer $sanitizer"
printf '%-10s %12s %8s %9s %8s\n' TARGET EXECUTIONS CORPUS FINDINGS SECONDS
total_findings=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [[ -d "seeds/$t" ]] && seeds=("seeds/$t")
    start=$(date +%s)
    log="artifacts/$t.log"
    # New inputs go to the first corpus directory; the seeds are only read.
    "${nice[@]}" cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$budget" -timeout=10 -print_final_stats=1 >"$log" 2>&1
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [[ -n "$execs" ]] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    findings=$(new_artifacts "$t" "$start" | wc -l)
    printf '%-10s %12s %8d %9d %8d\n' "$t" "${execs:-?}" "$(count "corpus/$t")" "$findings" "$secs"
    if ((findings)); then
        grep -E -m3 -A3 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer' "$log" | sed 's/^/    /'
        new_artifacts "$t" "$start" | head -3 | sed 's/^/    saved: fuzz\//'
    fi
    total_findings=$((total_findings + findings))
done
echo "total: $total_findings findings (logs in fuzz/artifacts/<target>.log)"
((total_findings == 0))
