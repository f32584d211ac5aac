#!/usr/bin/env bash
# What internal TLS costs: the keyed anchor at parallelism P over P one-slot TaskManagers (every
# keyed exchange crosses between processes), on two session clusters started alike, one proving the
# cluster secret only (what `cluster start` does by itself) and one with mutual TLS on every
# internal connection as well (security.ssl.internal.*, a certificate made here with openssl).
# Runs interleaved, REPS each; prints one RESULT line per run and the medians.
# Usage: bench/tls.sh [N] [P] [K] [REPS]   (defaults: 20000000 2 100000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000000} p=${2:-2} k=${3:-100000} reps=${4:-3}

cargo build --quiet --release --example anchors
source bench/lib.sh
bin=$target/release/examples/anchors
dir=$(mktemp -d)
cleanup() {
  for c in plain tls; do "$bin" --weir cluster stop --dir "$dir/$c" >/dev/null 2>&1 || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
  -out "$dir/cert.pem" -days 1 -subj /CN=weir-bench 2>/dev/null
cat "$dir/cert.pem" "$dir/key.pem" >"$dir/internal.pem"
tls=(-D security.ssl.internal.enabled=true -D "security.ssl.internal.keystore=$dir/internal.pem"
  -D "security.ssl.internal.truststore=$dir/cert.pem")

declare -A rest
rest[plain]=$("$bin" --weir cluster start --taskmanagers "$p" --slots 1 --dir "$dir/plain" -D rest.port=0 -D jobmanager.rpc.port=0)
rest[tls]=$("$bin" --weir cluster start --taskmanagers "$p" --slots 1 --dir "$dir/tls" -D rest.port=0 -D jobmanager.rpc.port=0 "${tls[@]}")
for _ in $(seq "$reps"); do
  for c in plain tls; do
    t0=$(date +%s%N)
    "$bin" --weir run -t remote -m "${rest[$c]}" keyed --args "{\"n\": $n, \"p\": $p, \"keys\": $k}" >/dev/null 2>"$dir/err" \
      || { cat "$dir/err"; exit 1; }
    t1=$(date +%s%N)
    python3 -c "s=($t1-$t0)/1e9; print(f'RESULT $c keyed n=$n p=$p keys=$k secs={s:.3f} rate={$n/s:.0f}')"
  done
done | tee "$dir/results"
for c in plain tls; do
  echo "median $c: $(grep "RESULT $c " "$dir/results" | sed 's/.*rate=//' | median) rec/s"
done
