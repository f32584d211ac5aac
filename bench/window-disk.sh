#!/usr/bin/env bash
# Tumbling windows on the disk state backend against the heap backend, in one run: the window
# anchor workload (examples/anchors: N records over K keys in one-second event-time tumbling
# windows, a sum per key and window, P=1), no checkpoints, R alternating runs of each backend.
# Prints each run's records/s and peak resident memory, and the median disk/heap ratio.
#   Usage: bench/window-disk.sh [N] [K] [CACHE] [R]
#   Defaults: N=20000000 K=1000000 CACHE=100000 R=3
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000000} k=${2:-1000000} cache=${3:-100000} runs=${4:-3}
cargo build --quiet --release --example anchors
source bench/lib.sh
bin=$target/release/examples/anchors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/heap" "$work/disk"
: >"$work/heap/config.yaml"
printf 'state.backend.type: disk\nstate.backend.disk.dir: %s\nstate.backend.disk.cache-entries: %s\n' \
  "$work" "$cache" >"$work/disk/config.yaml"
for i in $(seq "$runs"); do
  for backend in heap disk; do
    out=$(WEIR_CONF_DIR=$work/$backend "$bin" window "$n" 1 "$k" 2>"$work/err")
    rate=$(sed -n 's/.*rate=//p' <<<"$out")
    rss=$(sed -n 's/^peak_rss_mib=//p' "$work/err")
    echo "$backend run=$i rate=$rate peak_rss_mib=$rss"
    echo "$rate" >>"$work/rates-$backend"
  done
done
heap=$(median <"$work/rates-heap") disk=$(median <"$work/rates-disk")
python3 -c "print(f'median records/s: heap {$heap:,.0f}, disk {$disk:,.0f}; disk/heap = {$disk / $heap:.3f}')"
