#!/usr/bin/env bash
# Runs the controller-at-scale benchmark of BENCHMARKS.md ("Controller at scale"), one run at
# a time (each on a fresh etcd + kube-apiserver), then the plot and the tables.
# Usage: tests/bench/run-all.sh [1000|10000|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/refsync/target}"
tests/servers/install.sh
cargo build --release -p refsync -p refsync-bench
bench="$CARGO_TARGET_DIR/release/refsync-bench"
out=target/bench
mkdir -p "$out"
run() { "$bench" "$@"; }
if [[ "${1:-all}" != 10000 ]]; then
  run --subject refsync   --workload openbao --n 1000 --out "$out/refsync-openbao-1000.json"
  run --subject limit     --workload openbao --n 1000 --out "$out/limit-openbao-1000.json"
  run --subject eso-tuned --workload openbao --n 1000 --out "$out/eso-tuned-openbao-1000.json" --timeout 900
  # At its defaults ESO cannot keep up with 30 s refreshes: each force-sync may take the 30 s cap.
  run --subject eso       --workload openbao --n 1000 --out "$out/eso-openbao-1000.json" --timeout 900 --force-samples 10
  run --subject refsync   --workload fake    --n 1000 --out "$out/refsync-fake-1000.json"
  run --subject limit     --workload fake    --n 1000 --out "$out/limit-fake-1000.json"
fi
if [[ "${1:-all}" != 1000 ]]; then
  run --subject refsync   --workload openbao --n 10000 --out "$out/refsync-openbao-10000.json"
  run --subject limit     --workload openbao --n 10000 --out "$out/limit-openbao-10000.json"
  # 10,000 status writes per 30 s saturate a 2-core apiserver: also measure at ESO's default-like 1 h.
  run --subject refsync   --workload openbao --n 10000 --refresh-secs 3600 --out "$out/refsync-openbao-10000-refresh3600.json"
  run --subject eso-tuned --workload openbao --n 10000 --out "$out/eso-tuned-openbao-10000.json" --timeout 1200
fi
"$bench" --plot --dir "$out" --svg docs/bench-ready-over-time.svg
