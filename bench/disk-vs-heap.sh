#!/usr/bin/env bash
# A workload of examples/anchors on the disk state backend against the heap backend, in one run:
# N records over K keys at P=1, no checkpoints, R alternating runs of each backend, the disk
# backend's cache holding CACHE entries. Prints each run's records/s and peak resident memory,
# and the median disk/heap ratio.
#   Usage: bench/disk-vs-heap.sh WORKLOAD [N] [K] [CACHE] [R]
#   WORKLOAD: window (one-second event-time tumbling windows, a sum per key and window) or
#   timeouts (a keyed process function moving one event-time timer per key).
#   Defaults: N=20000000 K=1000000 CACHE=100000 R=3
#   BACKENDS="heap disk disk-heap-timers" adds the disk backend with process functions' timers on
#   the heap (state.backend.disk.timer-service.factory: heap); default "heap disk".
set -euo pipefail
cd "$(dirname "$0")/.."
workload=${1:?usage: bench/disk-vs-heap.sh WORKLOAD [N] [K] [CACHE] [R]}
n=${2:-20000000} k=${3:-1000000} cache=${4:-100000} runs=${5:-3}
cargo build --quiet --release --example anchors
source bench/lib.sh
bin=$target/release/examples/anchors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
backends=${BACKENDS:-heap disk}
mkdir -p "$work/heap" "$work/disk" "$work/disk-heap-timers"
: >"$work/heap/config.yaml"
printf 'state.backend.type: disk\nstate.backend.disk.dir: %s\nstate.backend.disk.cache-entries: %s\n' \
  "$work" "$cache" >"$work/disk/config.yaml"
cp "$work/disk/config.yaml" "$work/disk-heap-timers/config.yaml"
echo "state.backend.disk.timer-service.factory: heap" >>"$work/disk-heap-timers/config.yaml"
for i in $(seq "$runs"); do
  for backend in $backends; do
    out=$(WEIR_CONF_DIR=$work/$backend "$bin" "$workload" "$n" 1 "$k" 2>"$work/err") || {
      cat "$work/err" >&2
      exit 1
    }
    rate=$(sed -n 's/.*rate=//p' <<<"$out")
    rss=$(sed -n 's/^peak_rss_mib=//p' "$work/err")
    echo "$backend run=$i rate=$rate peak_rss_mib=$rss"
    echo "$rate" >>"$work/rates-$backend"
  done
done
heap=$(median <"$work/rates-heap")
for backend in $backends; do
  [[ $backend == heap ]] && continue
  other=$(median <"$work/rates-$backend")
  python3 -c "print(f'median records/s: heap {$heap:,.0f}, $backend {$other:,.0f}; $backend/heap = {$other / $heap:.3f}')"
done
