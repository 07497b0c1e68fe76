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

step "fuzzing: every target in fuzz/ for ${FUZZ_SECS:-25} s (scripts/fuzz.sh)"
if [ "$#" -eq 0 ]; then
    bash "$REPO/scripts/fuzz.sh"
else
    echo "(not run with the filter '$*')"
fi

step "cargo xtask bench --short   (profile bench-ci; fails only if nfsprov's speed ratios regress)"
cargo xtask bench --short
