#!/usr/bin/env bash
# Clean-build time of each engine crate alone: a fresh target dir and a tiny binary crate
# that depends only on that engine (with the same features as the benchmark), built with
# the dev and the release profile. Crate downloads are not timed (`cargo fetch` first).
# Reports wall seconds and CPU seconds (user+sys of cargo and all its children); on a
# shared machine the CPU figure is the more stable one (CPU s / cores ~ idle wall time).
#
# Usage: bench/state-engines/build-times.sh [engine...]    (default: fjall redb rocksdb sled)
# Target dirs go under ${CARGO_TARGET_DIR:-/tmp/engines-target}/buildtime/.
set -euo pipefail

engines=("$@")
[ ${#engines[@]} -gt 0 ] || engines=(fjall redb rocksdb sled)
target_base="${CARGO_TARGET_DIR:-/tmp/engines-target}/buildtime"
work=$(mktemp -d /tmp/state-engines-buildtime.XXXXXX)
trap 'rm -rf "$work"' EXIT

dep_line() {
  case "$1" in
    fjall) echo 'fjall = "=3.1.13"' ;;
    redb) echo 'redb = "=4.4.0"' ;;
    rocksdb) echo 'rocksdb = { version = "=0.25.0", default-features = false, features = ["lz4", "bindgen-runtime"] }' ;;
    sled) echo 'sled = "=0.34.7"' ;;
    *) echo "unknown engine $1" >&2; exit 1 ;;
  esac
}

echo "| engine | dev wall s | dev CPU s | release wall s | release CPU s | crates in dep tree |"
echo "|---|---:|---:|---:|---:|---:|"
for e in "${engines[@]}"; do
  crate="$work/bt-$e"
  mkdir -p "$crate/src"
  cat >"$crate/Cargo.toml" <<EOF
[package]
name = "bt-$e"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
$(dep_line "$e")
EOF
  echo "use $e as _; fn main() {}" >"$crate/src/main.rs"
  (cd "$crate" && cargo fetch -q)
  row="| $e"
  for profile in dev release; do
    tdir="$target_base/$e-$profile"
    rm -rf "$tdir"
    TIMEFORMAT='%R %U %S'
    if ! { time (cd "$crate" && CARGO_TARGET_DIR="$tdir" cargo build -q --profile "$profile" 2>"$work/err-$e-$profile"); } 2>"$work/time-$e-$profile"; then
      echo "build of $e ($profile) failed:" >&2; cat "$work/err-$e-$profile" >&2; row="$row | failed | failed"; continue
    fi
    row="$row | $(awk '{ printf "%.0f | %.0f", $1, $2 + $3 }' "$work/time-$e-$profile")"
  done
  units=$(cd "$crate" && cargo tree -e normal,build --prefix none | sed 's/ (\*)//' | sort -u | wc -l)
  echo "$row | $((units - 1)) |"
done
