#!/usr/bin/env bash
# Checkpoints of large keyed state in the disk backend, full against incremental, in one run:
# the keyed anchor workload (examples/anchors, a running count per key, P=1) over K keys, N
# records (the keys in turn, so every key is written once per K records), checkpoints every
# second into a local directory, with `state.backend.type: disk` and `state.backend.incremental`
# false, then true. From the coordinator's log: each checkpoint's whole size, the bytes it wrote,
# and its duration, over the checkpoints taken once the state had all K keys; and the process's
# peak resident memory. With WIDTH > 0, the `wide` workload instead: WIDTH bytes of state per key
# (K=1048576 WIDTH=1000 make about 1 GiB of keyed state).
#   Usage: bench/disk-state.sh [K] [N] [CACHE] [WIDTH]
#   Defaults: K=36000000 N=2K CACHE=100000 WIDTH=0
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-36000000} cache=${3:-100000} width=${4:-0}
n=${2:-$((2 * k))}
cargo build --quiet --release --example anchors
source bench/lib.sh
bin=$target/release/examples/anchors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for incremental in false true; do
  mkdir -p "$work/conf-$incremental"
  printf 'execution.checkpointing.interval: 1s\nexecution.checkpointing.dir: %s/cp-%s\nstate.backend.type: disk\nstate.backend.incremental: %s\nstate.backend.disk.dir: %s\nstate.backend.disk.cache-entries: %s\n' \
    "$work" "$incremental" "$incremental" "$work" "$cache" >"$work/conf-$incremental/config.yaml"
  if [ "$width" -gt 0 ]; then job=(wide "$n" 1 "$k" "$width"); else job=(keyed "$n" 1 "$k"); fi
  WEIR_LOG=weir_runtime=info,weir_checkpoint=info WEIR_CONF_DIR=$work/conf-$incremental "$bin" "${job[@]}" 2>"$work/log-$incremental" \
    | sed -n 's/.*rate=/rate=/p' >"$work/rate-$incremental"
  rm -rf "$work/cp-$incremental"
done
python3 - "$k" "$work" "$width" <<'PY'
import re, statistics, sys
k, work, width = sys.argv[1], sys.argv[2], sys.argv[3]
for inc in ("false", "true"):
    rows, rss = [], "?"
    for line in open(f"{work}/log-{inc}"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if line.startswith("peak_rss_mib="):
            rss = line.split("=")[1].strip()
        m = re.search(r"checkpoint complete.*checkpoint=(\d+) bytes=(\d+) written=(\d+) duration_ms=(\d+)", line)
        if m:
            rows.append(tuple(int(x) for x in m.groups()))
    if not rows:
        sys.exit(f"no checkpoint completed (incremental={inc}); see {work}/log-{inc}")
    biggest = max(r[1] for r in rows)
    full = [r for r in rows if r[1] >= 0.95 * biggest]
    rate = open(f"{work}/rate-{inc}").read().strip()
    mode = "incremental" if inc == "true" else "full"
    print(f"RESULT disk-state {mode} keys={k} width={width} checkpoints={len(rows)} (at full size: {len(full)}) "
          f"state={statistics.median(r[1] for r in full) / 2**20:.0f} MiB "
          f"written median={statistics.median(r[2] for r in full) / 2**20:.1f} MiB "
          f"duration median={statistics.median(r[3] for r in full)} ms max={max(r[3] for r in full)} ms "
          f"peak_rss={rss} MiB {rate}")
PY
