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

# Two cores: the unit tests, then the one integration binary (tests/it), four tests at a time.
cargo test --all-targets --locked -- --test-threads=4
# The WebSocket behaviour suites again, with PostgreSQL as the store.
RELAY_TEST_STORE=postgres cargo test --locked --test it -- --test-threads=4 \
    ws_relay:: ws_limits:: races:: drain:: restart:: quotas:: versions::
