#!/usr/bin/env bash
# Checks, before anything is built or installed, that this machine can run the test suite, and
# says what to install when it cannot. Exits 1 listing every missing piece at once.
#
# Needed: Rust (cargo, rustc at least Cargo.toml's rust-version), a C compiler (ring and the
# bundled SQLite are C), git (the local CLI's version history); node and npm unless the pinned
# Claude CLI is already in .tools/; root or sudo unless the Debian packages the tests drive
# (nginx, chromium, PostgreSQL) are installed already.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
missing=()

need_msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml")
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    missing+=("Rust >= $need_msrv (cargo and rustc; Debian's packages are older: install it with rustup)")
else
    have=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n%s\n' "$need_msrv" "$have" | sort -V | head -1)" != "$need_msrv" ]; then
        missing+=("Rust >= $need_msrv (this rustc is $have: rustup update)")
    fi
fi
command -v cc >/dev/null || missing+=("a C compiler (apt-get install gcc)")
command -v git >/dev/null || missing+=("git (apt-get install git)")

cli="$ROOT/.tools/claude/node_modules/.bin/claude"
if [ ! -x "$cli" ] && { ! command -v node >/dev/null || ! command -v npm >/dev/null; }; then
    missing+=("node and npm, to install the pinned Claude CLI into .tools/ (apt-get install nodejs npm)")
fi

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    packages=()
    [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
    [ -x /usr/bin/chromium ] || packages+=(chromium)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null \
        || packages+=(postgresql)
    if [ "${#packages[@]}" -gt 0 ]; then
        missing+=("root or sudo, to install ${packages[*]} (or install them as root first)")
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "scripts/test.sh cannot run on this machine yet; install:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
echo "prerequisites: Rust $(rustc --version | awk '{print $2}'), $(cc --version | head -1), $(git --version)" >&2
