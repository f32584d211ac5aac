#!/usr/bin/env bash
# Runs the anchor workloads on weir, on Apache Flink 1.20.3 (../shared/anchors/flink/run.sh) and as
# hand-written single-threaded loops, in one run, and prints every RESULT line plus a SUMMARY line
# per workload with the median rates and their ratios.
#   Usage: bench/anchors.sh [N] [P] [K] [REPS] [WORKLOADS...]
#   Defaults: N=20000000 P=1 K=100000 REPS=5 WORKLOADS="stateless keyed"
#   FLINK=0 skips Flink (for a quick look without a JDK).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000000} p=${2:-1} k=${3:-100000} reps=${4:-5}
shift $(( $# < 4 ? $# : 4 ))
workloads=${*:-stateless keyed}
flink_run=../shared/anchors/flink/run.sh

cargo build --quiet --release --example anchors
source bench/lib.sh
bin=$target/release/examples/anchors

# Runs "$@" `count` times, printing each RESULT line; sets `rate` to the median rate.
measure() {
  local count=$1 lines
  shift
  lines=$(for _ in $(seq "$count"); do "$@"; done)
  echo "$lines"
  rate=$(echo "$lines" | sed -n 's/.*rate=//p' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
}

for w in $workloads; do
  measure "$reps" "$bin" "$w" "$n" "$p" "$k"; weir=$rate
  measure "$reps" "$bin" loop "$w" "$n" "$k"; loop=$rate
  if [[ ${FLINK:-1} != 0 ]]; then
    measure "$(( reps < 3 ? reps : 3 ))" "$flink_run" "$w" "$n" "$p" "$k"; flink=$rate
  else
    flink=0
  fi
  python3 - "$w" "$n" "$p" "$k" "$weir" "$flink" "$loop" <<'PY'
import sys
w, n, p, k = sys.argv[1:5]
weir, flink, loop = (float(x) for x in sys.argv[5:8])
vs_flink = f"{weir / flink:.1f}x" if flink else "n/a"
print(f"SUMMARY {w} n={n} p={p} keys={k} weir={weir:.0f} flink={flink:.0f} loop={loop:.0f} "
      f"weir/flink={vs_flink} weir/loop={weir / loop:.2f}")
PY
done
