#!/usr/bin/env bash
# Tumbling windows on the disk state backend against the heap backend: the window anchor workload
# (examples/anchors: N records over K keys in one-second event-time tumbling windows, a sum per
# key and window, P=1) through bench/disk-vs-heap.sh.
#   Usage: bench/window-disk.sh [N] [K] [CACHE] [R]
#   Defaults: N=20000000 K=1000000 CACHE=100000 R=3
exec "$(dirname "$0")/disk-vs-heap.sh" window "$@"
