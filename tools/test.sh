#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints, builds
# everything and runs every test (unit, in-memory wire, DPDK on veths in network
# namespaces, which needs root). .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh --bench
# A clean clone builds once: incremental caches would only take disk (1.8 GB).
export CARGO_INCREMENTAL=0
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== shell scripts parse"
for f in tools/*.sh tools/bench/*.sh .ci/run; do bash -n "$f"; done
echo "== build"
cargo build --workspace -q
echo "== fuzz targets compile (they live outside the workspace; tools/fuzz.sh runs them)"
(cd fuzz && cargo check -q --bins --target-dir ../target/fuzz-check)
echo "== tests"
cargo test --workspace -q 2>&1 | tee /tmp/appliance-test.log
echo "== TLS benchmark suite, smoke run (1 s per cell, debug build: checks that the script runs, not the numbers)"
bash tools/bench/tls.sh --smoke
