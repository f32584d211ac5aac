#!/usr/bin/env bash
# Kafka throughput: weir's Kafka source and sink against librdkafka's own client (confluent-kafka,
# from Python) on the same broker (noida-db, on loopback), topics and record size, in one run.
#   - read:  a topic of N records of SIZE bytes (one partition) read to its end; weir's job is a
#            bounded Kafka source into a discarding sink, the anchor confluent-kafka's consume().
#   - write: N generated records of SIZE bytes written to a topic; weir's job is a generator into
#            the Kafka sink, the anchor confluent-kafka's produce() and flush().
#   - the sink's guarantees at a 1 s checkpoint interval: exactly-once against at-least-once.
# Each is run REPS times, interleaved; medians are printed, with the ratio weir/anchor as
# records per second. Needs the venv scripts/test.sh makes (noida-db, confluent-kafka).
# Usage: bench/kafka.sh [N] [SIZE] [REPS]   (defaults: 1000000 100 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000} size=${2:-100} reps=${3:-3}
venv=${WEIR_TOOLS_VENV:-$HOME/.cache/weir-tools/venv}
[[ -x $venv/bin/noida-db ]] || { echo "run scripts/test.sh first (it installs noida-db and confluent-kafka into $venv)" >&2; exit 1; }

cargo build --quiet --release --example kafka_bench
source bench/lib.sh
exe=$target/release/examples/kafka_bench
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The broker itself, not the venv's Python wrapper (which would outlive a kill of the wrapper).
noida=$("$venv/bin/python" -c 'import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))')
"$noida" start --host 127.0.0.1 --only kafka --kafka-port "$port" --data-dir "$dir/data" >"$dir/broker.log" 2>&1 &
broker=$!
cleanup() { kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
b=127.0.0.1:$port
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
check() { "$venv/bin/python" scripts/kafka-check.py "$b" "$@"; }
secs() { awk '{print $1}'; }

for r in $(seq "$reps"); do
  for t in in-$r nocp-$r eos-$r alocp-$r; do check create "$t" 1; done
  check bench-produce "in-$r" "$n" "$size" >>"$dir/py-write"
  "$exe" write "$b" "nocp-$r" "$n" "$size" at-least-once | secs >>"$dir/weir-write"
  check bench-consume "in-$r" "$n" >>"$dir/py-read"
  "$exe" read "$b" "in-$r" | secs >>"$dir/weir-read"
  "$exe" write "$b" "alocp-$r" "$n" "$size" at-least-once -D execution.checkpointing.interval=1s | secs >>"$dir/weir-alo"
  "$exe" write "$b" "eos-$r" "$n" "$size" exactly-once -D execution.checkpointing.interval=1s | secs >>"$dir/weir-eos"
done
rate() { python3 -c "print(f'{$n / $1:,.0f}')"; }
ratio() { python3 -c "print(f'{$2 / $1:.2f}')"; }
pr=$(median <"$dir/py-read") wr=$(median <"$dir/weir-read")
pw=$(median <"$dir/py-write") ww=$(median <"$dir/weir-write")
alo=$(median <"$dir/weir-alo") eos=$(median <"$dir/weir-eos")
echo "RESULT kafka n=$n size=$size reps=$reps"
echo "read   confluent-kafka ${pr}s ($(rate "$pr")/s)  weir ${wr}s ($(rate "$wr")/s)  weir/anchor $(ratio "$wr" "$pr")"
echo "write  confluent-kafka ${pw}s ($(rate "$pw")/s)  weir ${ww}s ($(rate "$ww")/s)  weir/anchor $(ratio "$ww" "$pw")"
echo "sink at 1 s checkpoints: at-least-once ${alo}s ($(rate "$alo")/s)  exactly-once ${eos}s ($(rate "$eos")/s)  eos/alo $(ratio "$eos" "$alo")"
