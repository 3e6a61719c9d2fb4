#!/usr/bin/env bash
# The README's main command: installs what is missing, builds Release and runs the benchmark
# suite, printing the comparison against the baselines.
#
#   scripts/bench.sh [--quick] [extra Google Benchmark flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

quick=0
args=()
for a in "$@"; do
  if [ "$a" = "--quick" ]; then quick=1; else args+=("$a"); fi
done

cmake --preset bench >/dev/null
cmake --build --preset bench -j"$(nproc)" --target brc_bench
mkdir -p build/report
if [ $quick -eq 1 ]; then
  flags=(--benchmark_min_time=0.01 --benchmark_repetitions=1)
else
  flags=(--benchmark_repetitions=5 --benchmark_report_aggregates_only=true)
fi
./build/bench/bench/brc_bench "${flags[@]}" \
  --benchmark_out=build/report/brc_bench.json --benchmark_out_format=json "${args[@]}"
echo "brc: raw results in build/report/brc_bench.json"
