#!/usr/bin/env bash
# What the metric system costs: the anchor workloads on the embedded cluster (P=1), built from
# BASE (the commit before the metric system: two shared counters per operator, nothing else)
# and from the working tree (every task and operator instance counts records, watermarks, bytes,
# idle and back-pressured time), and the working tree again with a Prometheus reporter that is
# scraped every second while the job runs. Runs interleaved, REPS each; prints one RESULT line
# per run and, per workload, the medians and their ratios to BASE.
# Then, with CALLGRIND=1 (the default), the instructions each build executes per record, counted by
# valgrind's callgrind at two sizes (the difference divided by the difference in records, so
# start-up does not count): exact where wall-clock ratios on a shared machine scatter by tens of
# percent.
# Usage: bench/metrics.sh [REPS] [BASE]   (defaults: 5 0c2deea)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5} base=${2:-0c2deea}
declare -A sizes=([stateless]=1000000000 [keyed]=100000000 [window]=40000000)
k=100000

source bench/lib.sh
dir=$(mktemp -d)
scraper=
cleanup() {
  [[ -n $scraper ]] && kill "$scraper" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# The base build, from an archive of BASE in a fixed place with a target directory of its own
# (both kept, so a rerun builds nothing).
src=$HOME/.cache/weir-bench-base-src
if [[ $(cat "$src/.commit" 2>/dev/null) != $(git rev-parse "$base") ]]; then
  rm -rf "$src" && mkdir -p "$src"
  git archive "$base" | tar -x -C "$src"
  git rev-parse "$base" >"$src/.commit"
fi
(cd "$src" && CARGO_TARGET_DIR=$HOME/.cache/weir-bench-base-target cargo build --quiet --release --example anchors)
cp "$HOME/.cache/weir-bench-base-target/release/examples/anchors" "$dir/anchors-base"
cargo build --quiet --release --example anchors
cp "$target/release/examples/anchors" "$dir/anchors-head"

# The scraped variant: a reporter on a free port, read every second by curl.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$dir/conf"
printf 'metrics.reporter.prom.factory.class: prometheus\nmetrics.reporter.prom.port: "%s"\n' "$port" >"$dir/conf/config.yaml"
(while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$port/metrics" || true; done) &
scraper=$!

run() { # VARIANT WORKLOAD
  local v=$1 w=$2 bin=$dir/anchors-head line
  [[ $v == base ]] && bin=$dir/anchors-base
  if [[ $v == scraped ]]; then
    line=$(WEIR_CONF_DIR=$dir/conf "$bin" "$w" "${sizes[$w]}" 1 "$k" 2>/dev/null | grep RESULT)
  else
    line=$(env -u WEIR_CONF_DIR "$bin" "$w" "${sizes[$w]}" 1 "$k" 2>/dev/null | grep RESULT)
  fi
  echo "${line/RESULT weir/RESULT $v}"
}

for _ in $(seq "$reps"); do
  for w in stateless keyed window; do
    for v in base head scraped; do run "$v" "$w"; done
  done
done | tee "$dir/results"
for w in stateless keyed window; do
  b=$(grep "RESULT base $w " "$dir/results" | sed 's/.*rate=//' | median)
  h=$(grep "RESULT head $w " "$dir/results" | sed 's/.*rate=//' | median)
  s=$(grep "RESULT scraped $w " "$dir/results" | sed 's/.*rate=//' | median)
  python3 -c "print(f'SUMMARY $w n=${sizes[$w]} base=$b metrics=$h scraped=$s metrics/base={$h/$b:.3f} scraped/base={$s/$b:.3f}')"
done

if [[ ${CALLGRIND:-1} != 0 ]]; then
  declare -A small=([stateless]=20000000 [keyed]=2000000 [window]=1000000)
  count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | sed -n 's/.*Collected : //p'; }
  for w in stateless keyed window; do
    n1=${small[$w]} n2=$(( 2 * ${small[$w]} ))
    declare -A per
    for v in base head; do
      a=$(count "$dir/anchors-$v" "$w" "$n1" 1 "$k")
      b=$(count "$dir/anchors-$v" "$w" "$n2" 1 "$k")
      per[$v]=$(python3 -c "print(f'{($b - $a) / $n1:.3f}')")
      echo "INSTRUCTIONS $v $w per_record=${per[$v]} (n=$n1: $a, n=$n2: $b)"
    done
    python3 -c "print(f'SUMMARY instructions $w base={${per[base]}} metrics={${per[head]}} metrics/base={${per[head]} / ${per[base]}:.4f}')"
  done
fi
