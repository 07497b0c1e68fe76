# Shared by the scripts: put cargo on PATH when it lives in the invoking user's home (sudo).
find_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    local h
    for h in "$HOME" "$(getent passwd "${SUDO_USER:-}" 2>/dev/null | cut -d: -f6)"; do
        if [ -n "$h" ] && [ -x "$h/.cargo/bin/cargo" ]; then
            export PATH="$h/.cargo/bin:$PATH"
            if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$h/.rustup" ]; then export RUSTUP_HOME="$h/.rustup"; fi
            return 0
        fi
    done
    return 1
}
