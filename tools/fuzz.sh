#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a bounded time each, on the stable toolchain.
#
#   bash tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, all targets)
#
# cargo-fuzz needs nightly; this box has stable only. libFuzzer itself comes with the
# libfuzzer-sys crate, and the coverage instrumentation it needs is a set of stable
# codegen flags, so the targets are built with those directly (no sanitizer: Rust code
# is memory-safe, and what we look for is panics, overflows and failed asserts, which
# abort). Findings land in fuzz/artifacts/; the growing corpus in target/fuzz-corpus/.
# Not part of CI: it is minutes of CPU. Bounded: every run has -max_total_time.
set -euo pipefail
cd "$(dirname "$0")/.."
# FUZZ_JOBS=N runs N targets at a time (default 1). libFuzzer's limit is wall time, so
# each log ends with the CPU time the target really got (user+sys), which is what
# FUZZING.md records when the box is shared.
jobs=${FUZZ_JOBS:-1}
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v -e '^appliance-fuzz$' -e '^seeds$')
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
# --target keeps RUSTFLAGS off build scripts.
(cd fuzz && cargo build --release --target "$triple" --target-dir ../target/fuzz "${bins[@]}")
mkdir -p fuzz/artifacts target/fuzz-logs
run_one() {
    local t=$1 work=target/fuzz-corpus/$1 log=target/fuzz-logs/$1.log rc=0
    mkdir -p "$work"
    local seeds=()
    [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
    echo "== $t: ${secs}s"
    # The whole libFuzzer output goes to target/fuzz-logs/TARGET.log; its last status
    # line (runs, coverage, features, corpus, exec/s) is what FUZZING.md records.
    /usr/bin/time -f 'cpu: %U s user + %S s system, wall %e s' -a -o "$log.cpu" \
        timeout $((secs + 60)) "target/fuzz/$triple/release/$t" -max_total_time="$secs" \
        -rss_limit_mb=2048 -artifact_prefix="fuzz/artifacts/$t-" "$work" "${seeds[@]}" \
        > "$log" 2>&1 || rc=1
    [ -f "$log.cpu" ] && tail -1 "$log.cpu" >> "$log" && rm -f "$log.cpu"
    grep -E '^#[0-9]+[[:space:]]+DONE|^Done|ERROR|panicked|SUMMARY|^cpu:' "$log" || true
    if ls fuzz/artifacts/"$t"-* >/dev/null 2>&1; then
        echo "!! $t: findings in fuzz/artifacts/" >&2
        rc=1
    fi
    return $rc
}
status=0
running=0
for t in "${targets[@]}"; do
    if [ "$jobs" -le 1 ]; then
        run_one "$t" || status=1
        continue
    fi
    if [ "$running" -ge "$jobs" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
exit $status
