#!/usr/bin/env bash
# Prepare a Debian 12 machine for building, testing and demoing nfsprov.
#
#   sudo scripts/setup.sh
#
# Idempotent: installs only the Debian packages that are missing (with a policy-rc.d in place
# so no service is started), creates /etc/exports.d and /run/sshd, and checks that a Rust
# toolchain (cargo) is installed. It never downloads a toolchain itself; it installs
# cargo-fuzz from crates.io (scripts/fuzz.sh) when missing.
set -euo pipefail

PACKAGES=(
    openssh-server openssh-client nfs-kernel-server curl jq iproute2 util-linux
    ca-certificates build-essential pkg-config
    nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind dbus
    slapd ldap-utils openssl
    btrfs-progs
    xfsprogs
    postgresql
)
POLICY_RC=/usr/sbin/policy-rc.d

step() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    die "run me as root, e.g.: sudo $0"
fi

# --- Debian packages ---------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    step "packages: all ${#PACKAGES[@]} already installed"
else
    step "packages: installing ${missing[*]}"
    created_policy=0
    cleanup_policy() {
        if [ "$created_policy" -eq 1 ]; then rm -f "$POLICY_RC"; fi
    }
    trap cleanup_policy EXIT
    if [ ! -e "$POLICY_RC" ]; then
        # Keep apt from starting sshd/nfsd/slapd/postgresql: the test bed runs its own instances.
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    step "apt-get update"
    apt-get update -qq
    step "apt-get install"
    apt-get install -y -qq "${missing[@]}" >/dev/null
    cleanup_policy
    created_policy=0
    trap - EXIT
fi

# --- directories the test bed needs ----------------------------------------------------------
step "directories: /etc/exports.d /run/sshd"
mkdir -p /etc/exports.d /run/sshd

# --- Rust toolchain --------------------------------------------------------------------------
# Under sudo, PATH is reset and HOME may point at root: also look in the invoking user's home.
cargo_dirs=("$HOME/.cargo/bin")
if [ -n "${SUDO_USER:-}" ]; then
    sudo_home=$(getent passwd "$SUDO_USER" | cut -d: -f6 || true)
    [ -n "$sudo_home" ] && cargo_dirs+=("$sudo_home/.cargo/bin")
fi
cargo_path=$(command -v cargo || true)
if [ -z "$cargo_path" ]; then
    for d in "${cargo_dirs[@]}"; do
        if [ -x "$d/cargo" ]; then
            cargo_path="$d/cargo"
            rustup_home="$(dirname "$(dirname "$d")")/.rustup"
            if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$rustup_home" ]; then export RUSTUP_HOME="$rustup_home"; fi
            break
        fi
    done
fi
if [ -z "$cargo_path" ]; then
    cat >&2 <<'EOF'
setup: cargo (the Rust toolchain) was not found on PATH or in ~/.cargo/bin.
Install Rust with rustup for the user that will build nfsprov, then run this again:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile default
    . "$HOME/.cargo/env"

(clippy and rustfmt, used by scripts/test.sh, are part of the default profile.)
EOF
    exit 1
fi
step "rust: $("$cargo_path" --version) ($cargo_path)"

# --- cargo-fuzz (scripts/fuzz.sh) ------------------------------------------------------------
# Built from source: about 1.5 minutes of CPU (16 minutes on a 2-core machine shared by other
# builds). It works with a stable toolchain: scripts/fuzz.sh sets RUSTC_BOOTSTRAP=1.
if "$cargo_path" fuzz --version >/dev/null 2>&1; then
    step "cargo-fuzz: $("$cargo_path" fuzz --version)"
else
    step "cargo-fuzz: cargo install cargo-fuzz --locked"
    "$cargo_path" install cargo-fuzz --locked
fi
step "setup done"
