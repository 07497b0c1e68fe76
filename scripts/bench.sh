#!/usr/bin/env bash
# The benchmarks: nfsprov against the seed's per-request-SSH way and the floor, on test-bed
# servers of this machine. Rewrites BENCHMARKS.md and crates/bench/plot.svg.
#
#   sudo scripts/bench.sh            # full run (a few minutes)
#   sudo scripts/bench.sh --short    # the short form CI runs (fails only on a ratio regression)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [ "$(id -u)" -ne 0 ]; then
    echo "bench.sh: the test bed needs root: run  sudo $0" >&2
    exit 1
fi
bash "$REPO/scripts/setup.sh"
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
find_cargo || true
exec cargo xtask bench "$@"
