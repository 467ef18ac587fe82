#!/usr/bin/env bash
# Installs the pinned Claude Code CLI into <repo>/.tools/claude (project-local, gitignored) and,
# when run as root, creates the unprivileged OS user the local backend runs it as (the CLI
# refuses --dangerously-skip-permissions as root). Safe to run again: it only does what is missing.
# Prints the path of the CLI binary on its last line.
set -euo pipefail

VERSION="2.1.328"
PACKAGE="@anthropic-ai/claude-code"
CLI_USER="${LOCAL_CLI_USER:-dreamcore-cli}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.tools/claude"
BIN="$PREFIX/node_modules/.bin/claude"
INSTALLED_MANIFEST="$PREFIX/node_modules/$PACKAGE/package.json"

installed_version() {
    [ -f "$INSTALLED_MANIFEST" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version || "")' "$INSTALLED_MANIFEST"
}

if [ "$(installed_version)" = "$VERSION" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "claude-code $VERSION already installed" >&2
else
    command -v npm >/dev/null || { echo "npm is required (apt-get install nodejs npm)" >&2; exit 1; }
    mkdir -p "$PREFIX"
    # A pinned manifest of our own, so npm never walks up into another package.json.
    cat >"$PREFIX/package.json" <<JSON
{ "name": "dreamcore-relay-tools", "private": true, "dependencies": { "$PACKAGE": "$VERSION" } }
JSON
    # The package declares node >= 22 but only its postinstall runs under node (it copies the
    # native binary into place), which works on node 20 as well.
    (cd "$PREFIX" && npm install --no-audit --no-fund --engine-strict=false --loglevel=error)
    "$BIN" --version >/dev/null || { echo "installed CLI does not run: $BIN" >&2; exit 1; }
    echo "installed claude-code $VERSION into $PREFIX" >&2
fi

if [ "$(id -u)" -eq 0 ]; then
    if id "$CLI_USER" >/dev/null 2>&1; then
        echo "OS user $CLI_USER exists" >&2
    else
        useradd --create-home --shell /usr/sbin/nologin --user-group "$CLI_USER"
        echo "created OS user $CLI_USER" >&2
    fi
else
    echo "not root: skipping creation of OS user $CLI_USER" >&2
fi

echo "$BIN"
