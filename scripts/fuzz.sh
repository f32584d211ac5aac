#!/usr/bin/env bash
# Fuzzes every decoder of bytes that cross a process boundary (fuzz/fuzz_targets) with cargo-fuzz
# (libFuzzer), each for SECONDS (default 15), and fails on any crash, panic, leak of time or memory.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# cargo-fuzz is installed under ~/.cache/weir-tools on first use. It passes rustc `-Z` flags for
# the coverage instrumentation, which a stable toolchain takes with RUSTC_BOOTSTRAP=1; no sanitizer
# is used (safe Rust throughout: the bugs to find are panics, hangs and unbounded allocations).
# A crash leaves its input in fuzz/artifacts/TARGET/; replay it with
#   RUSTC_BOOTSTRAP=1 ~/.cache/weir-tools/bin/cargo-fuzz run --fuzz-dir fuzz --sanitizer none TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
shift || true
tools="$HOME/.cache/weir-tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  echo "== installing cargo-fuzz into ~/.cache/weir-tools" >&2
  cargo install cargo-fuzz@0.13.2 --locked --root "$tools"
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${WEIR_FUZZ_TARGET_DIR:-$HOME/.cache/weir-fuzz-target}"
fuzz=("$tools/bin/cargo-fuzz")
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir fuzz)
fi
"${fuzz[@]}" build --fuzz-dir fuzz --sanitizer none --release
for t in "${targets[@]}"; do
  # The corpus grows from run to run, outside the clone (a fresh clone keeps what earlier found).
  corpus="${WEIR_FUZZ_CORPUS:-$HOME/.cache/weir-fuzz-corpus}/$t"
  # (A target without seeds has no directory in a clone: git keeps no empty ones.)
  mkdir -p "$corpus" "fuzz/seeds/$t"
  echo "== fuzzing $t for ${seconds} s" >&2
  # Seeds (valid inputs) come first; what the run finds goes into the corpus for the next run.
  log="$(mktemp)"
  status=0
  "${fuzz[@]}" run --fuzz-dir fuzz --sanitizer none --release "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1 \
    || status=$?
  grep -E "^stat::(number_of_executed_units|new_units_added)|panicked|ERROR|SUMMARY" "$log" || true
  if [ "$status" != 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed (exit $status); its input is in fuzz/artifacts/$t/" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
done
echo "== fuzzing: ${#targets[@]} targets, ${seconds} s each, no failure" >&2
