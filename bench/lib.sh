# Sourced by the benchmark scripts (from the repository's root): the cargo target directory
# ($target), a clock in milliseconds (ms) and the median of numbers on stdin (median).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ms() { local n; n=$(date +%s%N); echo $(( n / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
