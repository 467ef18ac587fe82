#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need (the
# pinned Claude Code CLI and its unprivileged user, nginx and chromium), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-claude-cli.sh
bash scripts/install-test-deps.sh
export CLAUDE_BIN="${CLAUDE_BIN:-$PWD/.tools/claude/node_modules/.bin/claude}"

# Two cores: run test binaries one at a time, tests inside each in parallel.
cargo test --all-targets --locked -- --test-threads=4
