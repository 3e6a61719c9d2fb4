#!/usr/bin/env bash
# The README's test command: installs what is missing, then builds and runs the unit tests and
# short stress runs in three configurations (Release, ASan+UBSan with BRC_DEBUG, TSan), builds a
# consumer project against the installed package, smoke-runs the benchmark suite and report, and
# replays the fuzzer's corpus and fuzzes for a minute (clang, ASan+UBSan, BRC_DEBUG).
#
#   scripts/test.sh                 everything
#   scripts/test.sh release|asan|tsan|fuzz [...]   only those
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc)
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(release asan tsan fuzz)

for preset in "${configs[@]}"; do
  [ "$preset" = fuzz ] && continue
  echo "=== brc: $preset: configure, build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$jobs" --target brc_tests brc_oom_sweep brc_stress brc_gc_stress brc_thread_stress
  echo "=== brc: $preset: unit tests and short stress runs"
  ctest --preset "$preset" -j"$jobs"
done

if [[ " ${configs[*]} " == *" release "* ]]; then
  echo "=== brc: install, then build and run tests/consumer against find_package(brc)"
  prefix=$(mktemp -d)
  trap 'rm -rf "$prefix"' EXIT
  cmake --install build/release --prefix "$prefix" >/dev/null
  cmake -S tests/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build build/consumer -j"$jobs"
  ./build/consumer/consumer
fi
if [[ " ${configs[*]} " == *" release "* ]]; then
  # The benchmark suite and its report in smoke mode: checks that they run, not how fast.
  echo "=== brc: benchmark smoke run (scripts/bench.sh --quick)"
  scripts/bench.sh --quick >build/bench-quick.log 2>&1 || { tail -50 build/bench-quick.log; exit 1; }
  test -s build/report/report.md && test -s build/report/throughput.svg
  python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' build/report/throughput.svg
  # Every benchmark ran and none reported an error (a wrong tree size, a wrong refcount path).
  python3 - build/report/brc_bench.json <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["benchmarks"]
bad = sorted({r["name"] + ": " + r.get("error_message", "") for r in rows if r.get("error_occurred")})
if bad or len(rows) < 100:
    sys.exit("benchmark smoke run: %d rows, errors: %s" % (len(rows), bad))
PY
  tail -25 build/bench-quick.log
fi
if [[ " ${configs[*]} " == *" fuzz "* ]]; then
  echo "=== brc: fuzzer: replay the corpus, then fuzz for 60 s (scripts/fuzz.sh 60)"
  scripts/fuzz.sh 60
fi
echo "=== brc: all passed (${configs[*]})"
