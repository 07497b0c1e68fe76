#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a bounded time (libFuzzer through cargo fuzz).
#
#   scripts/fuzz.sh                 # each target 25 s (FUZZ_SECS), as CI does
#   FUZZ_SECS=300 scripts/fuzz.sh render client_spec
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/, read only) and keeps
# what it finds in target/fuzz-corpus/<target>/ (not committed). A crash or a failed property
# stops the script; libFuzzer prints the input and saves it under fuzz/artifacts/<target>/ —
# turn it into a regression test beside the parser (see ARCHITECTURE.md, Testing).
# Needs cargo-fuzz (scripts/setup.sh installs it) and a C++ compiler; root is not needed.
# The first build (release, instrumented, AddressSanitizer) of nfsprov and its dependencies
# took 12.8 minutes of CPU here (41 minutes on 2 cores shared with other builds); later builds
# rebuild only nfsprov and the targets (about 2 minutes of CPU).
# Measured and not taken (2026-11-26, 2 cores at load 8-20): an unoptimized build (--dev,
# ASan) took 558 s of CPU against ~770 s, but ran each target 66-380 times fewer inputs in its
# 25 s than CI-46 (render 285 vs 45,680; hootie_body 520 vs 197,527), though at that load the
# five runs got 33 s of CPU in their 125 s, a quarter of a core. FUZZ_BUILD replaces the
# build flags below; CI's scripts/test.sh sets it (no ASan, 16 codegen units: see there).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
find_cargo || true

SECS=${FUZZ_SECS:-25}
# cargo fuzz builds with AddressSanitizer (-Zsanitizer=address) and other -Z flags: a stable
# toolchain takes them with RUSTC_BOOTSTRAP=1, so CI needs no nightly.
export RUSTC_BOOTSTRAP=1
# Overflow checks and debug assertions are on: an overflow is a crash, as in a debug build.
# shellcheck disable=SC2206 # FUZZ_BUILD may hold several flags
FLAGS=(${FUZZ_BUILD:---debug-assertions})

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --locked (scripts/setup.sh does)" >&2
    exit 1
fi

# --build-only: check the format and build the targets, run nothing (scripts/test.sh runs this
# in the background while the tests run; its fuzz step then finds the build done).
BUILD_ONLY=0
if [ "${1:-}" = "--build-only" ]; then
    BUILD_ONLY=1
    shift
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

printf '==> cargo fmt (fuzz/)\n'
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
printf '==> cargo fuzz build %s\n' "${FLAGS[*]}"
cargo fuzz build "${FLAGS[@]}"
if [ "$BUILD_ONLY" -eq 1 ]; then
    echo "fuzz.sh: ${#targets[@]} targets built"
    exit 0
fi
for t in "${targets[@]}"; do
    work="${CARGO_TARGET_DIR:-$REPO/target}/fuzz-corpus/$t"
    mkdir -p "$work"
    printf '==> fuzz %s for %s s\n' "$t" "$SECS"
    # The first corpus directory receives new inputs; the seeds stay as committed.
    # (libFuzzer's progress lines are left out of the log.)
    set +e
    cargo fuzz run "${FLAGS[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)'
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "fuzz.sh: $t failed (exit $status); the input is under fuzz/artifacts/$t/" >&2
        exit "$status"
    fi
done
echo "fuzz.sh: ${#targets[@]} targets, ${SECS} s each: no crash"
