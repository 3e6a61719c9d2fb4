#!/usr/bin/env bash
# Installs the Debian packages brc needs, if any is missing. Idempotent. Sourced or run by
# scripts/test.sh and scripts/bench.sh; usable alone: `scripts/deps.sh [extra packages...]`.
set -euo pipefail

packages=(cmake g++ make libabsl-dev catch2 libtbb-dev libbenchmark-dev libgc-dev "$@")
# The benchmark report (bench/report.py) and the CPython comparison need a python3; any one on
# PATH will do, else Debian's.
command -v python3 >/dev/null 2>&1 || packages+=(python3)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "brc: installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "brc: cannot install packages without root. Run this, then try again:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
