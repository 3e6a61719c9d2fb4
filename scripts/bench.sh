#!/usr/bin/env bash
# The README's main command: installs what is missing, builds Release, runs the benchmark suite
# (brc beside a plain counter, std::atomic, std::shared_ptr and Boehm GC; CPython's collector
# when python3 is present), prints the comparison table and writes the report:
#   build/report/report.md        tables with medians, spread and ratios; which floors hold
#   build/report/throughput.svg   throughput against thread count (oversubscribed rows shaded)
#   build/report/brc_bench.json   raw Google Benchmark JSON, every repetition
#   build/report/cpython_gc.json  raw CPython collector samples
#   build/report/handoff_rss.json resident memory of a hand-off (bench/rss/handoff_rss.cc)
#
#   scripts/bench.sh [--quick] [extra Google Benchmark flags...]
# --quick is a smoke run (tiny sizes, 2 repetitions): it checks that the suite and the report
# run, not how fast anything is. The full run takes under 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

quick=0
args=()
for a in "$@"; do
  if [ "$a" = "--quick" ]; then quick=1; else args+=("$a"); fi
done

cmake --preset bench >/dev/null
cmake --build --preset bench -j"$(nproc)" --target brc_bench brc_handoff_rss
out=build/report
mkdir -p "$out"
rm -f "$out/brc_bench.json" "$out/cpython_gc.json" "$out/handoff_rss.json" "$out/report.md" \
  "$out/throughput.svg"

# The file gets every repetition; the console shows the aggregates.
flags=(--benchmark_display_aggregates_only=true
       --benchmark_out="$out/brc_bench.json" --benchmark_out_format=json)
report_flags=()
if [ $quick -eq 1 ]; then
  export BRC_BENCH_QUICK=1
  flags+=(--benchmark_min_time=0.01 --benchmark_repetitions=2)
  report_flags+=(--quick)
else
  flags+=(--benchmark_repetitions=5)
fi
start=$(date +%s)
./build/bench/bench/brc_bench "${flags[@]}" "${args[@]}"

echo "=== brc: resident memory of a hand-off (brc_handoff_rss)"
rss=()
if ./build/bench/bench/brc_handoff_rss ${report_flags[@]+"${report_flags[@]}"} \
     --json "$out/handoff_rss.json"; then
  rss=(--rss "$out/handoff_rss.json")
else
  echo "brc: the hand-off memory measurement failed; the report goes on without it" >&2
fi

cpython=()
if command -v python3 >/dev/null 2>&1; then
  echo "=== brc: CPython's collector on the same graph shapes ($(python3 -c 'import sys; print(sys.version.split()[0])'))"
  if python3 bench/cpython_gc.py ${report_flags[@]+"${report_flags[@]}"} --out "$out/cpython_gc.json"; then
    cpython=(--cpython "$out/cpython_gc.json")
  else
    echo "brc: the CPython measurement failed; the report goes on without it" >&2
  fi
  echo "=== brc: report ($(( $(date +%s) - start )) s of measurement)"
  python3 bench/report.py --bench "$out/brc_bench.json" ${cpython[@]+"${cpython[@]}"} \
    --build-info build/bench/bench/build_info.json --notes bench/floor_notes.md \
    ${rss[@]+"${rss[@]}"} \
    --out-dir "$out" ${report_flags[@]+"${report_flags[@]}"}
  echo "brc: report in $out/report.md and $out/throughput.svg; raw results in $out/*.json"
else
  echo "brc: no python3: raw results in $out/brc_bench.json, no report" >&2
fi
