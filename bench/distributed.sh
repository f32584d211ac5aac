#!/usr/bin/env bash
# The anchor workloads at parallelism P on a session cluster of one JobManager and P TaskManagers
# with one slot each, so every exchange crosses between processes: weir against Apache Flink 1.20.3,
# in one run. weir's figure is the wall time of the client command (`anchors --weir run -t remote`:
# process start, hashing the artifact, submission, the job, and the result), Flink's the time its
# client spends in execute(); both clusters are started before and stopped after.
# Usage: bench/distributed.sh [N] [P] [K] [REPS] [WORKLOADS...]
#   Defaults: N=20000000 P=2 K=100000 REPS=3 WORKLOADS="stateless keyed window". FLINK=0 skips Flink.
# Uses ports 8081 and 6123 for Flink.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000000} p=${2:-2} k=${3:-100000} reps=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
workloads=${*:-stateless keyed window}

cargo build --quiet --release --example anchors
source bench/lib.sh
bin=$target/release/examples/anchors
dir=$(mktemp -d)
cleanup() {
  "$bin" --weir cluster stop --dir "$dir/c" >/dev/null 2>&1 || true
  [[ -n ${flink_home:-} ]] && "$flink_home/bin/stop-cluster.sh" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

# weir: the anchors program is its own cluster image.
rest=$("$bin" --weir cluster start --taskmanagers "$p" --slots 1 --dir "$dir/c" -D rest.port=0 -D jobmanager.rpc.port=0)
for w in $workloads; do
  for _ in $(seq "$reps"); do
    t0=$(date +%s%N)
    "$bin" --weir run -t remote -m "$rest" "$w" --args "{\"n\": $n, \"p\": $p, \"keys\": $k}" >/dev/null 2>"$dir/err" \
      || { cat "$dir/err"; exit 1; }
    t1=$(date +%s%N)
    python3 -c "import sys; s=($t1-$t0)/1e9; print(f'RESULT weir-cluster $w n=$n p=$p keys=$k secs={s:.3f} rate={$n/s:.0f}')"
  done | tee "$dir/weir-$w"
done
tms=$(curl -sf "http://$rest/taskmanagers" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["taskmanagers"]))')
echo "weir cluster: $tms TaskManagers"
"$bin" --weir cluster stop --dir "$dir/c" >/dev/null

if [[ ${FLINK:-1} != 0 ]]; then
  flink_home=$(../shared/anchors/flink/setup.sh | tail -n 1)
  root=$(dirname "$flink_home")
  conf=$dir/flink-conf && cp -r "$flink_home/conf" "$conf"
  sed -i "s/numberOfTaskSlots: [0-9]*/numberOfTaskSlots: 1/" "$conf/config.yaml"
  for _ in $(seq "$p"); do echo localhost; done >"$conf/workers"
  export FLINK_HOME=$flink_home FLINK_CONF_DIR=$conf
  "$flink_home/bin/start-cluster.sh" >/dev/null
  for _ in $(seq 1 300); do
    curl -sf localhost:8081/overview 2>/dev/null | grep -q "\"taskmanagers\":$p" && break
    sleep 0.2
  done
  for w in $workloads; do
    for _ in $(seq "$reps"); do
      "$flink_home/bin/flink" run -c Bench "$root/bench.jar" "$w" "$n" "$p" "$k" 2>&1 | grep '^RESULT'
    done | tee "$dir/flink-$w"
  done
  "$flink_home/bin/stop-cluster.sh" >/dev/null 2>&1
fi

for w in $workloads; do
  weir=$(sed -n 's/.*rate=//p' "$dir/weir-$w" | median)
  flink=$( [[ -f $dir/flink-$w ]] && sed -n 's/.*rate=//p' "$dir/flink-$w" | median || echo 0)
  python3 - "$w" "$n" "$p" "$k" "$weir" "$flink" <<'PY'
import sys
w, n, p, k = sys.argv[1:5]
weir, flink = float(sys.argv[5]), float(sys.argv[6] or 0)
ratio = f"{weir / flink:.1f}x" if flink else "n/a"
print(f"SUMMARY {w} n={n} p={p} keys={k} taskmanagers={p} weir={weir:.0f} flink={flink:.0f} weir/flink={ratio}")
PY
done
