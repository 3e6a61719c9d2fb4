#!/usr/bin/env bash
# Builds brc's libFuzzer target brc_fuzz (tests/fuzz/) with clang, ASan+UBSan and BRC_DEBUG in
# build/fuzz, replays the checked-in corpus (tests/fuzz/corpus/), then fuzzes for a bounded time.
# Exits non-zero on any crash, failed model check, leak or timeout, and prints how to reproduce.
#
#   scripts/fuzz.sh [seconds]   fuzz that long after the replay (default $BRC_FUZZ_SECONDS, else
#                               60); 0 only builds and replays. An hour: scripts/fuzz.sh 3600
#   BRC_FUZZ_JOBS=N             N fuzzing processes instead of 1 (libFuzzer -fork=N)
#
# Inputs that find new coverage go to a scratch directory, build/fuzz/new-corpus (never into the
# repository); crashes to build/fuzz/artifacts/. To fold a long run into the checked-in corpus:
#   build/fuzz/tests/fuzz/brc_fuzz -merge=1 tests/fuzz/corpus build/fuzz/new-corpus
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh clang libclang-rt-14-dev

seconds=${1:-${BRC_FUZZ_SECONDS:-60}}
jobs=${BRC_FUZZ_JOBS:-1}
build=$root/build/fuzz
bin=$build/tests/fuzz/brc_fuzz
corpus=$root/tests/fuzz/corpus
scratch=$build/new-corpus
artifacts=$build/artifacts

echo "=== brc fuzz: configure and build build/fuzz (clang, ASan+UBSan, BRC_DEBUG)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DBRC_SANITIZE=address,undefined -DBRC_DEBUG=ON -DBRC_BUILD_FUZZ=ON \
  -DBRC_BUILD_TESTS=OFF -DBRC_BUILD_STRESS=OFF -DBRC_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target brc_fuzz

mkdir -p "$scratch" "$artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/fuzz/lsan.supp}
# An input is at most 1 KiB (a few hundred operations on at most 48 objects) and runs in
# milliseconds: 10 s per input means a deadlock, 4 GiB a runaway.
common=(-max_len=1024 -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$artifacts/"
        -print_final_stats=1)

failed() {
  local log=$1 unit
  unit=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed 's/Test unit written to //' || true)
  tail -60 "$log"
  echo "brc fuzz: FAILED (full log: $log)" >&2
  if [ -n "$unit" ]; then
    echo "brc fuzz: reproduce with" >&2
    echo "  $bin $unit" >&2
    echo "  BRC_FUZZ_TRACE=1 $bin $unit    # prints each operation" >&2
  fi
  exit 1
}

# libFuzzer writes its fork-mode logs into the current directory: run it in the build directory.
cd "$build"
echo "=== brc fuzz: replay the corpus ($(ls "$corpus" | wc -l) inputs in tests/fuzz/corpus)"
"$bin" "${common[@]}" -runs=0 "$corpus" >replay.log 2>&1 || failed "$build/replay.log"
grep -E "INITED|DONE" replay.log | tail -1

if [ "$seconds" -gt 0 ]; then
  echo "=== brc fuzz: fuzz for ${seconds}s, $jobs process(es); new inputs in build/fuzz/new-corpus"
  extra=()
  [ "$jobs" -gt 1 ] && extra=(-fork="$jobs" -ignore_crashes=0 -ignore_timeouts=0 -ignore_ooms=0)
  # The scratch directory comes first: libFuzzer writes new inputs there and only reads the rest.
  "$bin" "${common[@]}" "${extra[@]}" -max_total_time="$seconds" "$scratch" "$corpus" \
    >fuzz.log 2>&1 || failed "$build/fuzz.log"
  grep -E "^Done [0-9]+ runs|stat::peak_rss_mb" fuzz.log || true
fi
echo "=== brc fuzz: passed"
