#!/usr/bin/env bash
# Installs the Debian packages the integration tests drive: nginx (tests/it/nginx.rs proxies
# the relay through it like the production deploy, tests/it/cluster.rs balances replicas with
# it), redis-server (the cluster's job bus in tests/it/cluster.rs) and chromium
# (tests/it/ops_console.rs loads the ops console in it). Safe to run again: apt-get runs only when a binary is missing, and
# `apt-get update` only right before an install.
set -euo pipefail

missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "nginx, chromium and redis-server already installed" >&2
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "installing ${missing[*]} needs root or sudo" >&2; exit 1; }
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
