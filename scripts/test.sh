#!/usr/bin/env bash
# Everything CI checks: formatting, clippy, and the whole test suite (which starts real sshd
# servers in mount namespaces, so it needs root).
#
#   sudo scripts/test.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

step() { printf '\n==> %s\n' "$*"; }

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

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --lib --bins --tests -- --test-threads=2 $*"
cargo test --lib --bins --tests -- --test-threads=2 "$@"

step "benchmarks, short form (fails only if nfsprov's speed ratios regress)"
cargo bench --bench nfsprov -- --short
