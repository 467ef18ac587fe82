#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need (the pinned
# Claude Code CLI and its unprivileged user, nginx, chromium, PostgreSQL), starts a throwaway
# PostgreSQL cluster with the Supabase stand-in, then runs the whole suite — and the
# WebSocket behaviour suites a second time with PostgreSQL as the store.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-claude-cli.sh
bash scripts/install-test-deps.sh
bash scripts/test-postgres.sh >/dev/null
export CLAUDE_BIN="${CLAUDE_BIN:-$PWD/.tools/claude/node_modules/.bin/claude}"

# cargo-nextest runs every test in a process of its own: the relay's metrics are
# process-wide, and tests that read them must not see another test's relay.
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (once)" >&2
    cargo install cargo-nextest --locked
fi
# Two cores: unit tests and the one integration binary (tests/it), four tests at a time.
cargo nextest run --all-targets --locked --test-threads=4 --no-fail-fast
# The WebSocket behaviour suites again, with PostgreSQL as the store.
RELAY_TEST_STORE=postgres cargo nextest run --locked --test it --test-threads=4 --no-fail-fast \
    -E 'test(/^(ws_relay|ws_limits|races|drain|restart|quotas|versions)::/)'
