#!/usr/bin/env bash
# Installs Apache Flink VERSION's distribution (its bin/ scripts and jars, enough for Flink's own
# CLI) from the Python package index, where the PyFlink packages carry it, into
# ~/.cache/weir-tools/flink-VERSION, once. The tests run Flink's own CLI against weir clusters
# with it. Prints Flink's home. Needs python3 with pip; running Flink needs Java 11 or 17.
# Usage: scripts/install-flink.sh VERSION   (1.20.3 or 2.3.0)
set -euo pipefail
v=${1:?usage: scripts/install-flink.sh VERSION}
home=$HOME/.cache/weir-tools/flink-$v
if [[ ! -x $home/bin/flink ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download -q --no-deps -d "$work" "apache-flink-libraries==$v" "apache-flink==$v" >&2
  python3 -m zipfile -e "$work"/apache_flink-"$v"-*.whl "$work/flink" >/dev/null
  if compgen -G "$work/apache-flink-libraries-$v.tar.gz" >/dev/null; then
    # 1.x ships its jars as a source archive.
    tar xzf "$work/apache-flink-libraries-$v.tar.gz" -C "$work"
    libs=$work/apache-flink-libraries-$v/deps
  else
    python3 -m zipfile -e "$work"/apache_flink_libraries-"$v"-*.whl "$work/libs" >/dev/null
    libs=$work/libs/pyflink
  fi
  rm -rf "$home.partial" && mkdir -p "$home.partial/log"
  cp -r "$work/flink/pyflink/bin" "$work/flink/pyflink/conf" "$home.partial/"
  cp -r "$libs/lib" "$libs/opt" "$libs/plugins" "$home.partial/"
  cp "$libs"/bin/*.jar "$home.partial/bin/" 2>/dev/null || true
  chmod +x "$home.partial"/bin/*.sh "$home.partial/bin/flink"
  mv "$home.partial" "$home"
fi
echo "$home"
