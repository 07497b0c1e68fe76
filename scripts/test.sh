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

# Under sudo, cargo may live in the invoking user's home (setup.sh checked it exists).
if ! command -v cargo >/dev/null 2>&1; then
    for h in "$HOME" "$(getent passwd "${SUDO_USER:-}" 2>/dev/null | cut -d: -f6)"; do
        if [ -n "$h" ] && [ -x "$h/.cargo/bin/cargo" ]; then
            export PATH="$h/.cargo/bin:$PATH"
            if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$h/.rustup" ]; then export RUSTUP_HOME="$h/.rustup"; fi
            break
        fi
    done
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets -- --test-threads=2 $*"
cargo test --all-targets -- --test-threads=2 "$@"
