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
mkdir -p fuzz/artifacts
status=0
for t in "${targets[@]}"; do
    work=target/fuzz-corpus/$t
    mkdir -p "$work"
    seeds=()
    [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
    echo "== $t: ${secs}s"
    # The whole libFuzzer output goes to target/fuzz-logs/TARGET.log; its last status
    # line (runs, coverage, features, corpus, exec/s) is what FUZZING.md records.
    mkdir -p target/fuzz-logs
    if ! timeout $((secs + 60)) "target/fuzz/$triple/release/$t" -max_total_time="$secs" \
        -rss_limit_mb=2048 -artifact_prefix="fuzz/artifacts/$t-" "$work" "${seeds[@]}" \
        > "target/fuzz-logs/$t.log" 2>&1; then
        status=1
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|^Done|ERROR|panicked|SUMMARY' "target/fuzz-logs/$t.log" || true
    if ls fuzz/artifacts/"$t"-* >/dev/null 2>&1; then
        echo "!! $t: findings in fuzz/artifacts/" >&2
        status=1
    fi
done
exit $status
