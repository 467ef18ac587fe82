#!/usr/bin/env bash
# Installs the Debian packages the integration tests drive: nginx (tests/nginx.rs proxies the
# relay through it like the production deploy) and chromium (tests/ops_console.rs loads the
# ops console in it). Safe to run again: apt-get runs only when a binary is missing, and
# `apt-get update` only right before an install.
set -euo pipefail

missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "nginx and chromium already installed" >&2
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
