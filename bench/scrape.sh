#!/usr/bin/env bash
# How long Prometheus waits for a TaskManager running P subtasks of every operator: a one-slot-
# per-subtask TaskManager runs the `generate` job at parallelism P (200 000 records a second, in a
# worker process that reports its metrics to the TaskManager every second; RATE records a second
# in all), and its reporter's page is fetched REPS times. Prints the number of series, the page's
# size and the median and slowest fetch. Usage: bench/scrape.sh [P] [REPS] [RATE]
# (defaults: 100 20 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
p=${1:-100} reps=${2:-20} rate=${3:-200000}

cargo build --quiet --release --bin weir
source bench/lib.sh
weir=$target/release/weir
dir=$(mktemp -d)
cleanup() { "$weir" cluster stop --dir "$dir/c" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

lo=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
hi=$(( lo + 4 ))
rest=$("$weir" cluster start --taskmanagers 1 --slots "$p" --dir "$dir/c" -D rest.port=0 -D jobmanager.rpc.port=0 \
  -D metrics.reporter.prom.factory.class=prometheus -D "metrics.reporter.prom.port=$lo-$hi" 2>/dev/null)
"$weir" run -t remote -m "$rest" -d generate --args "{\"rate\": $rate}" -p "$p" >/dev/null 2>&1
# Reports arrive every second and rates are brought up to date every 5 s.
sleep 12
tm=
for port in $(seq "$lo" "$hi"); do
  page=$(curl -s "http://127.0.0.1:$port/metrics" || true)
  if grep -q '^flink_taskmanager_Status_Process_CPU_Time' <<<"$page"; then tm=$port; fi
done
[[ -n $tm ]] || { echo "no TaskManager reporter answered on $lo-$hi" >&2; exit 1; }
curl -s "http://127.0.0.1:$tm/metrics" >"$dir/page"
series=$(grep -vc '^#' "$dir/page")
subtasks=$(grep '^flink_taskmanager_job_task_numRecordsIn{' "$dir/page" | wc -l)
for _ in $(seq "$reps"); do
  curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$tm/metrics"
done | awk '{print $1 * 1000}' >"$dir/times"
echo "RESULT scrape p=$p rate=$rate tasks=$subtasks series=$series bytes=$(wc -c <"$dir/page") median_ms=$(median <"$dir/times") max_ms=$(sort -n "$dir/times" | tail -1)"
