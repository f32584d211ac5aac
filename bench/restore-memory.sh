#!/usr/bin/env bash
# Memory of a restore of large keyed state in the disk backend: the `wide` workload (examples/
# anchors, K keys of WIDTH bytes each, P=1) runs 2K records with a checkpoint every second, then
# the same job starts from its last retained checkpoint with one record, R times: it loads the
# whole state into its store, takes a final checkpoint and ends. Prints the state file's size
# and each restore run's peak resident memory and wall time.
#   Usage: bench/restore-memory.sh [K] [WIDTH] [R]
#   Defaults: K=262144 WIDTH=1000 (about 256 MiB) R=2
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-262144} width=${2:-1000} runs=${3:-2}
cargo build --quiet --release --example anchors
source bench/lib.sh
bin=${ANCHORS_BIN:-$target/release/examples/anchors}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/populate" "$work/restore"
conf='execution.checkpointing.interval: 1s\nexecution.checkpointing.num-retained: 1\nstate.backend.type: disk\nstate.backend.disk.dir: %s\n'
printf "$conf"'execution.checkpointing.dir: %s\n' "$work" "$work/cp" >"$work/populate/config.yaml"
WEIR_CONF_DIR=$work/populate "$bin" wide $((2 * k)) 1 "$k" "$width" >/dev/null 2>&1
chk=$(ls -d "$work"/cp/*/chk-*)
echo "state files: $(du -cb "$chk"/*.state | tail -1 | cut -f1) bytes ($chk)"
printf "$conf"'execution.checkpointing.dir: %s\nexecution.savepoint.path: %s\n' "$work" "$work/cp2" "$chk" \
  >"$work/restore/config.yaml"
for i in $(seq "$runs"); do
  t0=$(ms)
  WEIR_CONF_DIR=$work/restore "$bin" wide 1 1 "$k" "$width" >/dev/null 2>"$work/err"
  echo "restore run=$i $(grep '^peak_rss_mib=' "$work/err") wall_ms=$(( $(ms) - t0 ))"
  rm -rf "$work/cp2"
done
