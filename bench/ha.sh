#!/usr/bin/env bash
# High availability: time from kill -9 of the leading JobManager to the job processing again under
# the standby, on etcd and on ZooKeeper; and the cost of HA on job submission.
#   Usage: bench/ha.sh [REPS] [TIMEOUT]   Defaults: REPS=5 TIMEOUT=2s
# TIMEOUT is the etcd lease TTL (high-availability.etcd.lease-ttl) and the ZooKeeper session
# timeout (high-availability.zookeeper.client.session-timeout); weir's default for both is 10 s.
# Each run: the service on loopback (Debian's etcd-server / zookeeperd, as the tests use), two
# JobManagers, two one-slot TaskManagers, keyed-sums at parallelism 2 over 100000 keys at 100000
# records/s with a checkpoint every 100 ms and exactly-once file output. After 10 checkpoints the
# leader is killed; "processing again" is the new leader's first completed checkpoint after its
# restore (every task restored and passed a barrier after records; an upper bound that includes up
# to one checkpoint interval). Submission: `weir run -t remote -d` of the same job, command to
# JobID, against the same cluster shape with and without HA (the HA client finds the leader in
# the service itself): the first submission (the artifact is copied to the HA storage directory
# once; that job is cancelled at once) and the second (the steady state: the job measured above).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5} timeout=${2:-2s}
cargo build --quiet --release --bin weir
source bench/lib.sh
exec python3 bench/ha.py "$target/release/weir" "$reps" "$timeout"
