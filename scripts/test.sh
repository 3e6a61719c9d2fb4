#!/usr/bin/env bash
# The README's test command: installs what is missing, then builds and runs the unit tests and
# short stress runs in three configurations (Release, ASan+UBSan with BRC_DEBUG, TSan), and
# builds a consumer project against the installed package.
#
#   scripts/test.sh                 all three configurations
#   scripts/test.sh release|asan|tsan [...]   only those
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc)
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(release asan tsan)

for preset in "${configs[@]}"; do
  echo "=== brc: $preset: configure, build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$jobs" --target brc_tests brc_stress brc_gc_stress brc_thread_stress
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
echo "=== brc: all passed (${configs[*]})"
