#!/usr/bin/env bash
# Recovery with state: kill -9 of a TaskManager running a checkpointed keyed job, to the job
# processing again on a spare TaskManager. "Processing again" is measured as the restarted run's
# first completed checkpoint: every task has then restored its state from the latest checkpoint
# and passed a barrier after records (an upper bound: it includes up to one checkpoint interval
# and that checkpoint's duration). The time to the job RUNNING again on the spare is shown too.
#   Usage: bench/recovery.sh [REPS] [KEYS]   Defaults: REPS=5 KEYS=1000000
# The job: keyed-sums at parallelism 2 over KEYS keys (about 8 bytes of state each, and the
# numbers source's position), 200000 records/s, a checkpoint every 100 ms, exactly-once file
# output; three one-slot TaskManagers, so one is spare. Restarts: fixed-delay, no delay; the
# JobManager notices the loss when the TaskManager's connection drops.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5} keys=${2:-1000000}
cargo build --quiet --release --bin weir
source bench/lib.sh
weir=$target/release/weir
dir=$(mktemp -d)
trap '"$weir" cluster stop --dir "$dir/c" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

for i in $(seq "$reps"); do
  "$weir" cluster start --taskmanagers 3 --slots 1 --dir "$dir/c" -D rest.port=0 -D jobmanager.rpc.port=0 \
    -D restart-strategy.type=fixed-delay -D restart-strategy.fixed-delay.attempts=3 \
    -D restart-strategy.fixed-delay.delay=0ms >"$dir/rest" 2>/dev/null
  rest=$(cat "$dir/rest")
  args="{\"count\": 1000000000, \"keys\": $keys, \"rate\": 200000, \"output\": \"$dir/out-$i\"}"
  id=$("$weir" run -t remote -m "$rest" -d keyed-sums --args "$args" -p 2 -D execution.checkpointing.interval=100ms \
    -D "execution.checkpointing.dir=$dir/cp" | sed -n 's/.*JobID //p')
  python3 - "$rest" "$id" "$keys" >>"$dir/figures" <<'PY'
import json, os, signal, sys, time, urllib.request
rest, job, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])
get = lambda path: json.load(urllib.request.urlopen(f"http://{rest}{path}"))
# Bounded waits: a completed checkpoint that holds every key (the source reaches them all in
# KEYS / 200000 seconds), then the kill.
t = time.monotonic()
while time.monotonic() - t < 120:
    cps = get(f"/jobs/{job}/checkpoints")
    if cps["counts"]["completed"] >= 10 * (keys // 200000 + 2):
        break
    time.sleep(0.05)
else:
    sys.exit("the checkpoints did not reach every key in 120 s")
size = cps["latest"]["completed"]["state_size"]
j = get(f"/jobs/{job}")
victim = j["weir-taskmanagers"][0]
pid = int(get(f"/taskmanagers/{victim}")["path"].split(":")[1])
t0 = time.monotonic()
os.kill(pid, signal.SIGKILL)
running = None
while time.monotonic() - t0 < 60:
    if running is None:
        j = get(f"/jobs/{job}")
        # Every task runs again: each restored its state (INITIALIZING) and went on (RUNNING).
        if j["state"] == "RUNNING" and victim not in j["weir-taskmanagers"] \
                and j["tasks"]["running"] == j["tasks"]["total"]:
            running = time.monotonic() - t0
    cps = get(f"/jobs/{job}/checkpoints")
    restored = cps["latest"]["restored"]
    done = cps["latest"]["completed"]
    if running is not None and restored and done and done["id"] > restored["id"]:
        break
    time.sleep(0.001)
else:
    sys.exit("the job did not complete a checkpoint within 60 s of the kill")
print(f"{round((time.monotonic() - t0) * 1000)} {size} {round(running * 1000)}")
PY
  "$weir" cancel -m "$rest" "$id" >/dev/null 2>&1 || true
  "$weir" cluster stop --dir "$dir/c" >/dev/null 2>&1
  rm -rf "$dir/out-$i" "$dir/cp"
done
python3 - "$keys" "$dir/figures" <<'PY'
import statistics, sys
rows = [tuple(int(x) for x in l.split()) for l in open(sys.argv[2]) if l.strip()]
ms = [r[0] for r in rows]
up = [r[2] for r in rows]
print(f"RESULT recovery keys={sys.argv[1]} checkpoint={statistics.median(r[1] for r in rows) / 2**20:.1f} MiB "
      f"kill-9-to-running median={statistics.median(up)} ms (runs: {up}) "
      f"kill-9-to-first-checkpoint-after-restore median={statistics.median(ms)} ms (runs: {ms})")
PY
