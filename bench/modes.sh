#!/usr/bin/env bash
# Deployment modes, wall time of a trivial job from the user's command until it is done and (for
# per-job and application mode) the cluster is gone, weir against Apache Flink 1.20.3 in one run:
#   weir session: `weir run -t remote` on a running session cluster (the client's start included);
#   weir per-job: `weir run -t per-job` (cluster started for the job, gone when the command returns);
#   weir application: `weir run-application -t process weir -- generate ARGS` until the
#   application's JobManager (which ran main and started its TaskManager) is gone;
#   with DOCKER=1 also per-job with the docker provider (TaskManagers as containers) and
#   `run-application -t docker` (JobManager and TaskManagers as containers), until the last
#   container and the network are gone; the image is built once, in a warm-up run not counted;
#   flink application: bin/standalone-job.sh with the job's class plus bin/taskmanager.sh, until
#   the job finished and both processes are gone (Flink's standalone application mode).
# Usage: bench/modes.sh [REPS]   (FLINK=0 skips Flink, DOCKER=1 adds the docker targets). Uses ports
# 8081 and 6123 for Flink.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
cargo build --quiet --release --bin weir
source bench/lib.sh
weir=$target/release/weir
dir=$(mktemp -d)
cleanup() {
  "$weir" cluster stop --dir "$dir/c" >/dev/null 2>&1 || true
  [[ -n ${usrlib:-} ]] && rm -f "$usrlib/bench.jar"
  rm -rf "$dir"
}
trap cleanup EXIT
args='{"count": 1000}'

rest=$("$weir" cluster start --taskmanagers 1 --slots 1 --dir "$dir/c" -D rest.port=0 -D jobmanager.rpc.port=0)
for _ in $(seq "$reps"); do
  t0=$(ms)
  "$weir" run -t remote -m "$rest" generate --args "$args" -p 1 >/dev/null 2>&1
  echo "weir session $(( $(ms) - t0 ))" >>"$dir/results"
done
"$weir" cluster stop --dir "$dir/c" >/dev/null
mkdir -p "$dir/pj"
for _ in $(seq "$reps"); do
  t0=$(ms)
  TMPDIR=$dir/pj "$weir" run -t per-job generate --args "$args" -p 1 >/dev/null
  echo "weir per-job $(( $(ms) - t0 ))" >>"$dir/results"
done
jrs=(-D "job-result-store.storage-path=$dir/jrs" -D parallelism.default=1)
for _ in $(seq "$reps"); do
  t0=$(ms)
  pid=$(TMPDIR=$dir/pj "$weir" run-application -t process "${jrs[@]}" "$weir" -- generate "$args" | sed -n 's/.*JobManager pid \([0-9]*\).*/\1/p')
  # Gone once it exited (a zombie waits for init, its parent the client having returned).
  for _ in $(seq 3000); do [[ $(ps -o stat= -p "$pid" 2>/dev/null) =~ ^[^Z] ]] || break; sleep 0.002; done
  echo "weir application $(( $(ms) - t0 ))" >>"$dir/results"
done
grep -h '"status"' "$dir"/jrs/*.json | sort | uniq -c | sed 's/^/CHECK applications /'
if [[ ${DOCKER:-0} != 0 ]]; then
  gone() { for _ in $(seq 3000); do docker inspect "$1" >/dev/null 2>&1 || return 0; sleep 0.01; done; }
  "$weir" run-application -t docker "${jrs[@]}" "$weir" -- generate "$args" >/dev/null  # builds the image
  for i in $(seq 0 "$reps"); do
    t0=$(ms)
    name=$("$weir" run-application -t docker "${jrs[@]}" "$weir" -- generate "$args" | sed -n 's/.*JobManager container \([^)]*\)).*/\1/p')
    gone "$name"
    for _ in $(seq 3000); do docker network inspect "$name" >/dev/null 2>&1 || break; sleep 0.01; done
    (( i > 0 )) && echo "weir application-docker $(( $(ms) - t0 ))" >>"$dir/results"
    t0=$(ms)
    TMPDIR=$dir/pj "$weir" run -t per-job -D resourcemanager.provider=docker generate --args "$args" -p 1 >/dev/null 2>&1
    (( i > 0 )) && echo "weir per-job-docker $(( $(ms) - t0 ))" >>"$dir/results"
  done
  docker rmi "$(docker images -q weir-artifact)" >/dev/null 2>&1 || true
fi

if [[ ${FLINK:-1} != 0 ]]; then
  source bench/flink.sh
  flink_env 1 "$dir"
  usrlib=$home/usrlib && mkdir -p "$usrlib" && cp "$root/bench.jar" "$usrlib/bench.jar"
  for _ in $(seq "$(( reps < 3 ? reps : 3 ))"); do
    t0=$(ms)
    "$home/bin/standalone-job.sh" start --job-classname Bench stateless 1000 1 >/dev/null
    "$home/bin/taskmanager.sh" start >/dev/null
    jm=$(cat /tmp/flink-*-standalonejob.pid 2>/dev/null | head -n 1)
    # The JobManager exits by itself once the job is done; then the TaskManager is stopped.
    for _ in $(seq 12000); do kill -0 "$jm" 2>/dev/null || break; sleep 0.01; done
    "$home/bin/taskmanager.sh" stop >/dev/null 2>&1 || true
    tm=$(cat /tmp/flink-*-taskexecutor.pid 2>/dev/null | head -n 1 || true)
    for _ in $(seq 3000); do [[ -n $tm ]] && kill -0 "$tm" 2>/dev/null || break; sleep 0.01; done
    echo "flink application $(( $(ms) - t0 ))" >>"$dir/results"
    rm -f /tmp/flink-*-standalonejob.pid /tmp/flink-*-taskexecutor.pid
    sleep 1
  done
fi

sed "s/^/RESULT /" "$dir/results"
flink=$(awk '$1=="flink" {print $3}' "$dir/results" | median || true)
for mode in session per-job application per-job-docker application-docker; do
  w=$(awk -v m="$mode" '$1=="weir" && $2==m {print $3}' "$dir/results" | median)
  [[ -z $w ]] && continue
  if [[ -n ${flink:-} ]]; then
    echo "SUMMARY weir $mode=${w}ms flink application=${flink}ms ratio=$(python3 -c "print(f'{$flink/max($w,1):.0f}x')")"
  else
    echo "SUMMARY weir $mode=${w}ms"
  fi
done
