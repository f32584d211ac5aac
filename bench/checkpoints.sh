#!/usr/bin/env bash
# Checkpoint overhead and size on the keyed anchor workload (examples/anchors), in one run:
#  1. throughput without checkpoints and with a checkpoint every second (alternating runs);
#  2. checkpoint size and duration for K keys of keyed state (from the coordinator's log).
#   Usage: bench/checkpoints.sh [N] [K] [REPS] [BIGK]
#   Defaults: N=300000000 K=100000 REPS=3 BIGK=5000000
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300000000} k=${2:-100000} reps=${3:-3} bigk=${4:-5000000}
cargo build --quiet --release --example anchors
source bench/lib.sh
bin=$target/release/examples/anchors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/conf"
printf 'execution.checkpointing.interval: 1s\nexecution.checkpointing.dir: %s/cp\n' "$work" > "$work/conf/config.yaml"

rate() { sed -n 's/.*rate=//p'; }
plain=() with=()
for _ in $(seq "$reps"); do
  plain+=("$("$bin" keyed "$n" 1 "$k" 2>/dev/null | rate)")
  with+=("$(WEIR_CONF_DIR=$work/conf "$bin" keyed "$n" 1 "$k" 2>/dev/null | rate)")
done
python3 - "$n" "$k" "${plain[*]}" "${with[*]}" <<'PY'
import statistics, sys
n, k = sys.argv[1:3]
plain = [float(x) for x in sys.argv[3].split()]
with_cp = [float(x) for x in sys.argv[4].split()]
p, w = statistics.median(plain), statistics.median(with_cp)
print(f"RESULT keyed n={n} keys={k} no-checkpoints={p:.0f} rec/s checkpoints-1s={w:.0f} rec/s "
      f"loss={100 * (1 - w / p):.1f}% (runs: {plain} vs {with_cp})")
PY
# Size and duration of full checkpoints of BIGK keys.
WEIR_LOG=weir_runtime=info,weir_checkpoint=info WEIR_CONF_DIR=$work/conf "$bin" keyed "$n" 1 "$bigk" 2>&1 >/dev/null \
  | sed 's/\x1b\[[0-9;]*m//g' | grep 'checkpoint complete' \
  | sed -n 's/.*checkpoint=\([0-9]*\) bytes=\([0-9]*\) duration_ms=\([0-9]*\).*/\1 \2 \3/p' \
  | python3 -c '
import sys, statistics
rows = [tuple(int(x) for x in l.split()) for l in sys.stdin if l.strip()]
if not rows:
    sys.exit("no checkpoint completed")
sizes = [r[1] for r in rows]; durs = [r[2] for r in rows]
print(f"RESULT state keys='"$bigk"' checkpoints={len(rows)} size={statistics.median(sizes)/2**20:.1f} MiB "
      f"duration median={statistics.median(durs)} ms max={max(durs)} ms (full; heap backend)")'
