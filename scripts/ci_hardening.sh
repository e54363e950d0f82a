#!/usr/bin/env bash
# CI hardening checks (issue 7), called by .ci/run after `make test`:
#   1. libFuzzer: each of the four targets (safetensors, config, image, list) for FUZZ_SECONDS (default 60),
#      two at a time, after replaying the seeds and the committed crash regressions;
#   2. the whole Check suite built with AddressSanitizer + UndefinedBehaviorSanitizer (make asan-test;
#      the shipped-model parity runs one head there, SEGATTN_PARITY_QUICK=1);
#   3. one end-to-end predict under valgrind memcheck: zero errors, no leaks (tests/valgrind.supp only
#      hides libgomp's worker-thread TLS, which lives until exit).
# Measured: fuzz ~2.5 min (build + 4 x 60 s, two at a time), asan build ~1 min + suite ~5-6 min, valgrind
# ~15 s: about 9 minutes on 2 cores with the full parity vectors under ASAN. Usage: bash scripts/ci_hardening.sh   (FUZZ_SECONDS=N to change step 1)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
t0=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - t0 )) s)"; }

step "fuzz: build and replay seeds + regressions"
make -j"$JOBS" fuzz-build
make fuzz-regress
step "fuzz: ${FUZZ_SECONDS} s per target"
make -j"$JOBS" fuzz FUZZ_SECONDS="$FUZZ_SECONDS"

step "asan+ubsan: build and run the test suite"
make -j"$JOBS" segattn asan   # some end-to-end tests still call ./segattn directly
make asan-test

step "valgrind: one end-to-end predict"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind -q --suppressions=tests/valgrind.supp --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
    ./segattn predict -q -t 2 -c tests/data/gen_r18_isanet_df46/model.json \
    -w tests/data/gen_r18_isanet_df46/weights.safetensors -o "$out" \
    tests/data/gen_r18_isanet_df46/input0.png tests/data/gen_r18_isanet_df46/input1.png
test -s "$out/input0.png" && test -s "$out/input1.png"

step "hardening checks passed"
