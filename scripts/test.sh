#!/usr/bin/env bash
# Everything CI checks: formatting, clippy, both test tiers, a bounded fuzzing run and the
# benchmarks' short form.
# The fast tier (`cargo test`: no root, no servers) runs inside the end-to-end tier's command,
# which starts real sshd, exportfs and ganesha servers in namespaces, so this needs root.
#
#   sudo scripts/test.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

step() { printf '\n==> [%4ds] %s\n' "$SECONDS" "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the tests start sshd in mount namespaces and need root: run  sudo $0" >&2
    exit 1
fi

step "setup"
bash "$REPO/scripts/setup.sh"

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
find_cargo || true

# Two builds need nothing the steps before them make: the fuzz targets (instrumented, their
# own workspace and target directory) and the bench's (profile bench-ci, a target directory of
# its own so that its cargo never waits for the tests' cargo's lock). They run in the
# background from here at the lowest CPU and I/O priority: they take the time the end-to-end
# tests leave idle while they wait on servers, and cannot slow the steps before theirs much.
# Their steps wait for them and print their logs; a failed build fails its step.
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
mkdir -p "$TARGET"
export NFSPROV_BENCH_TARGET_DIR="$TARGET/bench-build"
BACKGROUND=()
background() { # log-file command...
    local log=$1
    shift
    # setsid: its own process group, killed as one. A new session is also a new scheduler
    # autogroup, which the kernel weighs against this one whatever the processes' nice values
    # (seen: clippy took 522 s instead of 152 s beside the two "niced" builds); so the
    # autogroup is niced too.
    setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 ionice -c 3 "$@"' \
        background "$@" >"$log" 2>&1 &
    BACKGROUND+=("$!")
}
stop_background() {
    for pid in "${BACKGROUND[@]}"; do
        kill -- "-$pid" 2>/dev/null || true
    done
}
trap stop_background EXIT
# wait_background <index> <log>: its exit status; its log printed either way.
wait_background() {
    local rc=0
    wait "${BACKGROUND[$1]}" || rc=$?
    cat "$2"
    return "$rc"
}
# CI's fuzz build leaves out AddressSanitizer and splits codegen in 16 units: the code fuzzed
# (request parsers, renderers) is safe Rust, and overflow checks and debug assertions stay on.
# Measured alone on 2 cores (2026-11-26), 16 units each: with ASan 1238 s of CPU, 11:25 wall;
# without, 950 s, 8:49 (that build had its dependencies at opt-level 1, which with ASan saved
# nothing: 1230 s). Waiting for this build was most of CI 53's fuzz step, 686 s of its 1843 s;
# CI 54, without ASan, took 1624 s. The 15 s runs, alone, did 2.3-3 times the inputs of CI
# 53's ASan runs (render 108,945 against 46,564). A local `scripts/fuzz.sh` still uses ASan.
export FUZZ_BUILD="${FUZZ_BUILD:---debug-assertions --codegen-units 16 -s none}"
if [ "$#" -eq 0 ]; then
    background "$TARGET/fuzz-build.log" bash "$REPO/scripts/fuzz.sh" --build-only
else
    BACKGROUND+=("")
fi
background "$TARGET/bench-build.log" env CARGO_TARGET_DIR="$NFSPROV_BENCH_TARGET_DIR" \
    cargo build --profile bench-ci -p nfsprov -p nfsprov-bench

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

# tests/matrix.rs writes one summary per backend here; stale ones must not pass for fresh.
MATRIX_SUMMARIES=("${CARGO_TARGET_DIR:-$REPO/target}"/matrix-summary-{knfsd,ganesha,ganesha-probe}.txt)
rm -f "${MATRIX_SUMMARIES[@]}"

step "cargo xtask e2e $*   (both tiers, one PostgreSQL for the run; then xtask/src/e2e.rs POSTGRES_TESTS on PostgreSQL)"
cargo xtask e2e "$@"

step "the backend matrix (tests/matrix.rs): every client form and option, create and PATCH"
for f in "${MATRIX_SUMMARIES[@]}"; do
    if [ -f "$f" ]; then
        cat "$f"
    elif [ "$#" -eq 0 ]; then
        echo "test.sh: $f is missing: the matrix did not run" >&2
        exit 1
    else
        echo "(not run with the filter '$*': $f)"
    fi
done

# 15 s per target: CI's fuzzing is a bounded smoke run from the committed seeds (hundreds of
# thousands of inputs per target here); longer runs are for `FUZZ_SECS=300 scripts/fuzz.sh`.
export FUZZ_SECS="${FUZZ_SECS:-15}"
step "fuzzing: every target in fuzz/ for $FUZZ_SECS s (scripts/fuzz.sh; its build ran in the background)"
if [ "$#" -eq 0 ]; then
    wait_background 0 "$TARGET/fuzz-build.log"
    bash "$REPO/scripts/fuzz.sh"
else
    echo "(not run with the filter '$*')"
fi

step "cargo xtask bench --short   (profile bench-ci, built in the background; fails only if nfsprov's speed ratios regress)"
wait_background 1 "$TARGET/bench-build.log"
cargo xtask bench --short
