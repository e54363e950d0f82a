#!/usr/bin/env bash
# Installs segattn's build and test dependencies from Debian's archive, then builds ./segattn.
# Usage: bash scripts/setup.sh        (uses sudo when not run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PACKAGES=(
  build-essential pkg-config       # gcc with OpenMP, make
  libstb-dev libcjson-dev          # image I/O, JSON
  check                            # unit-test framework
  python3-numpy python3-torch      # converter tests (build models with PyTorch, convert without it)
  parallel                         # shard + merge test of `segattn eval`
  clang libclang-rt-14-dev valgrind  # fuzzing, sanitizers, memcheck (make fuzz / make asan)
)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
make -j"$(nproc)"
