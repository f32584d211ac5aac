#!/usr/bin/env bash
# Cluster figures, weir against Apache Flink 1.20.3 on this machine, in one run:
#   start: from the start command to one TaskManager registered;
#   submit: a client submitting a trivial job and seeing it finish (its own start included);
#   submit-other-first/-cached: the same for a job of another program (the anchors example) on a
#   cluster of the stock executable: uploaded, fetched and run in a worker process, then cached;
#   memory: resident memory of the idle JobManager plus TaskManager;
#   recovery: kill -9 of the TaskManager running a job to the job running again on a spare
#   TaskManager (fixed-delay restarts, no delay; each system's default heartbeats).
# Usage: bench/cluster.sh [REPS]   (FLINK=0 skips Flink). Uses ports 8081 and 6123 for Flink.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
cargo build --quiet --release --bin weir
source bench/lib.sh
weir=$target/release/weir
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
args='{"count": 1000}'

for i in $(seq "$reps"); do
  t0=$(ms)
  "$weir" cluster start --taskmanagers 1 --slots 2 --dir "$dir/c" -D rest.port=0 -D jobmanager.rpc.port=0 >"$dir/rest" 2>/dev/null
  echo "weir start $(( $(ms) - t0 ))" >>"$dir/weir"
  rest=$(cat "$dir/rest")
  t0=$(ms)
  "$weir" run -t remote -m "$rest" generate --args "$args" -p 1 >/dev/null 2>&1
  echo "weir submit $(( $(ms) - t0 ))" >>"$dir/weir"
  jm=$(python3 -c "import json; print(json.load(open('$dir/c/cluster.json'))['jobmanager'])")
  tm=$(python3 -c "import json; print(json.load(open('$dir/c/cluster.json'))['taskmanagers'][0])")
  echo "weir memory $(( $(rss_kb "$jm") + $(rss_kb "$tm") ))" >>"$dir/weir"
  "$weir" cluster stop --dir "$dir/c" 2>/dev/null
done

# Another program's job: the anchors example submits to a cluster of the stock executable, so its
# artifact is uploaded, fetched by the TaskManager and run in a worker process ("first"); the next
# submission finds it in the blob store and the TaskManager's cache ("cached").
cargo build --quiet --release --example anchors
anchors=$target/release/examples/anchors
for i in $(seq "$reps"); do
  XDG_CACHE_HOME=$dir/cache-$i "$weir" cluster start --taskmanagers 1 --slots 2 --dir "$dir/a" -D rest.port=0 \
    -D jobmanager.rpc.port=0 >"$dir/rest" 2>/dev/null
  rest=$(cat "$dir/rest")
  for phase in first cached; do
    t0=$(ms)
    "$anchors" --weir run -t remote -m "$rest" stateless --args '{"n": 1000, "p": 1, "keys": 10}' -p 1 >/dev/null 2>&1
    echo "weir submit-other-$phase $(( $(ms) - t0 ))" >>"$dir/weir"
  done
  "$weir" cluster stop --dir "$dir/a" 2>/dev/null
done

# Recovery: two TaskManagers, a job on one, kill -9 it, time until the job runs again.
for i in $(seq "$reps"); do
  "$weir" cluster start --taskmanagers 2 --slots 1 --dir "$dir/r" -D rest.port=0 -D jobmanager.rpc.port=0 \
    -D restart-strategy.type=fixed-delay -D restart-strategy.fixed-delay.attempts=3 -D restart-strategy.fixed-delay.delay=0ms >"$dir/rest" 2>/dev/null
  rest=$(cat "$dir/rest")
  id=$("$weir" run -t remote -m "$rest" -d generate --args '{"rate": 1000}' -p 1 | sed -n 's/.*JobID //p')
  until curl -sf "$rest/jobs/$id" | grep -q '"state":"RUNNING"'; do sleep 0.01; done
  tmid=$(curl -sf "$rest/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["weir-taskmanagers"][0])')
  pid=$(curl -sf "$rest/taskmanagers/$tmid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"].split(":")[1])')
  # Kill and poll from one process, every millisecond, so the figure is not the poller's.
  python3 - "$rest" "$id" "$tmid" "$pid" >>"$dir/weir" <<'PY'
import json, os, signal, sys, time, urllib.request
rest, job, victim, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.monotonic()
os.kill(pid, signal.SIGKILL)
while time.monotonic() - t0 < 30:
    j = json.load(urllib.request.urlopen(f"http://{rest}/jobs/{job}"))
    # As for Flink below: every task runs again (RUNNING, past INITIALIZING), without the victim.
    if j["state"] == "RUNNING" and victim not in j["weir-taskmanagers"] \
            and all(v["status"] == "RUNNING" for v in j["vertices"]):
        break
    time.sleep(0.001)
print(f"weir recovery {round((time.monotonic() - t0) * 1000)}")
PY
  "$weir" cluster stop --dir "$dir/r" 2>/dev/null
done

if [[ ${FLINK:-1} != 0 ]]; then
  source bench/flink.sh
  flink_env 2 "$dir"
  for i in $(seq "$(( reps < 3 ? reps : 3 ))"); do
    t0=$(ms)
    "$home/bin/start-cluster.sh" >/dev/null
    until curl -sf localhost:8081/overview 2>/dev/null | grep -q '"taskmanagers":1'; do sleep 0.05; done
    echo "flink start $(( $(ms) - t0 ))" >>"$dir/flink"
    t0=$(ms)
    "$home/bin/flink" run -c Bench "$root/bench.jar" stateless 1000 1 >/dev/null 2>&1
    echo "flink submit $(( $(ms) - t0 ))" >>"$dir/flink"
    sleep 2
    jm=$(cat /tmp/flink-*-standalonesession.pid | head -n 1)
    tm=$(cat /tmp/flink-*-taskexecutor.pid | head -n 1)
    echo "flink memory $(( $(rss_kb "$jm") + $(rss_kb "$tm") ))" >>"$dir/flink"
    "$home/bin/stop-cluster.sh" >/dev/null 2>&1
    sleep 1
  done

  # Recovery: a job on one TaskManager, a spare started next to it, kill -9 of the first; from the
  # kill until Flink has noticed (the job leaves RUNNING) and runs every task again. Flink's
  # defaults otherwise (heartbeats every 10 s), as weir's run uses weir's defaults.
  cat >>"$conf/config.yaml" <<'YAML'
restart-strategy.type: fixed-delay
restart-strategy.fixed-delay.attempts: 3
restart-strategy.fixed-delay.delay: 0 s
YAML
  sed -i "s/numberOfTaskSlots: [0-9]*/numberOfTaskSlots: 1/" "$conf/config.yaml"
  for i in $(seq "$(( reps < 3 ? reps : 3 ))"); do
    "$home/bin/start-cluster.sh" >/dev/null
    until curl -sf localhost:8081/overview 2>/dev/null | grep -q '"taskmanagers":1'; do sleep 0.05; done
    victim=$(cat /tmp/flink-*-taskexecutor.pid | head -n 1)
    "$home/bin/flink" run -d -c Bench "$root/bench.jar" stateless 1000000000000 1 >/dev/null 2>&1
    "$home/bin/taskmanager.sh" start >/dev/null
    until curl -sf localhost:8081/overview 2>/dev/null | grep -q '"taskmanagers":2'; do sleep 0.05; done
    id=$(curl -sf localhost:8081/jobs | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
    python3 - "$id" "$victim" >>"$dir/flink" <<'PY'
import json, os, signal, sys, time, urllib.request
job, pid = sys.argv[1], int(sys.argv[2])
url = f"http://localhost:8081/jobs/{job}"
def running():
    j = json.load(urllib.request.urlopen(url))
    return j["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in j["vertices"])
while not running():
    time.sleep(0.01)
t0 = time.monotonic()
os.kill(pid, signal.SIGKILL)
noticed = False
while time.monotonic() - t0 < 180:
    if not noticed:
        noticed = not running()
    elif running():
        break
    time.sleep(0.005)
print(f"flink recovery {round((time.monotonic() - t0) * 1000)}")
PY
    curl -sf -X PATCH "localhost:8081/jobs/$id?mode=cancel" >/dev/null || true
    "$home/bin/taskmanager.sh" stop-all >/dev/null 2>&1 || true
    "$home/bin/jobmanager.sh" stop-all >/dev/null 2>&1 || true
    sleep 1
  done
fi

cat "$dir"/weir "$dir"/flink 2>/dev/null | sed "s/^/RESULT /" || true
for what in start submit submit-other-first submit-other-cached memory recovery; do
  w=$(awk -v w="$what" '$2==w {print $3}' "$dir/weir" | median)
  f=$(awk -v w="$what" '$2==w {print $3}' "$dir/flink" 2>/dev/null | median || true)
  unit=ms; [[ $what == memory ]] && unit=kB
  if [[ -n ${f:-} ]]; then
    echo "SUMMARY $what weir=${w}$unit flink=${f}$unit ratio=$(python3 -c "print(f'{$f/max($w,1):.0f}x')")"
  else
    echo "SUMMARY $what weir=${w}$unit"
  fi
done
