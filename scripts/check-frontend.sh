#!/usr/bin/env bash
# Drive the unchanged upstream frontend in headless Chromium against the relay (the ignored
# test `frontend::`). Upstream's public/ is not shipped here; give a checkout of
# neighbor-game-ai/DreamCore-V2-sandbox (a work tree or a bare git directory).
#
#   scripts/check-frontend.sh <upstream checkout> [git revision, default HEAD]
set -euo pipefail
cd "$(dirname "$0")/.."

upstream=${1:?usage: scripts/check-frontend.sh <upstream checkout> [revision]}
revision=${2:-HEAD}
public=$(mktemp -d)
trap 'rm -rf "$public"' EXIT

# A bare mirror has no work tree: export public/ from the revision either way.
git -C "$upstream" archive "$revision" public | tar -x -C "$public"

UPSTREAM_PUBLIC_DIR="$public/public" cargo nextest run --test it --run-ignored only \
  -E 'test(/^frontend::/)' --no-capture
