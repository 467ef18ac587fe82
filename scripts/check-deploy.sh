#!/usr/bin/env bash
# No Docker engine runs in CI: check the deploy kit (deploy/) without one. The compose file
# must parse and wire what README "Scaling" promises; nginx.conf's replicas must be compose
# services on the port the image listens on. (nginx itself checks and runs deploy/nginx.conf
# in the integration tests: tests/it/support/balancer.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools/pyyaml"
if ! python3 -c 'import yaml' 2>/dev/null && [[ ! -d "$TOOLS/yaml" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS" "PyYAML==6.0.2"
fi
PYTHONPATH="$TOOLS${PYTHONPATH:+:$PYTHONPATH}" python3 - <<'PY'
import re, sys, yaml

def fail(message):
    sys.exit(f"check-deploy: {message}")

compose = yaml.safe_load(open("deploy/compose.yaml"))
services = compose.get("services") or fail("deploy/compose.yaml has no services")
for name in ("nginx", "relay1", "relay2", "redis", "postgres"):
    name in services or fail(f"service {name} missing")
if not services["redis"]["image"].startswith("redis:7"):
    fail("Redis must be version 7")
port = re.search(r"\bPORT=(\d+)", open("Dockerfile").read()).group(1)
drain_default = 600
for name in ("relay1", "relay2"):
    relay = services[name]
    relay["build"]["dockerfile"] == "Dockerfile" and relay["build"]["context"] == ".." or fail(f"{name} is not the repository's image")
    env = relay["environment"]
    env["REDIS_URL"].startswith("redis://redis:") or fail(f"{name}: REDIS_URL does not name the redis service")
    "@postgres:" in env["DATABASE_URL"] or fail(f"{name}: DATABASE_URL does not name the postgres service")
    grace = int(str(relay["stop_grace_period"]).rstrip("s"))
    grace > drain_default + 20 or fail(f"{name}: stop_grace_period {grace}s would cut a drain short")
mounts = services["postgres"]["volumes"]
any("sql/supabase_standin.sql:/docker-entrypoint-initdb.d/" in m for m in mounts) or fail("postgres does not load the stand-in")
any(m.startswith("./nginx.conf:/etc/nginx/conf.d/") for m in services["nginx"]["volumes"]) or fail("nginx does not use deploy/nginx.conf")

site = open("deploy/nginx.conf").read()
replicas = re.findall(r"^\s*server (\S+?):(\d+)\b", site, re.M)
replicas or fail("nginx.conf names no replica")
for host, replica_port in replicas:
    host in services or fail(f"nginx.conf names {host}, which is no compose service")
    replica_port == port or fail(f"nginx.conf sends to port {replica_port}, the image listens on {port}")
{h for h, _ in replicas} == {s for s in services if s.startswith("relay")} or fail("nginx.conf and compose.yaml list different replicas")
for needed in ("proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade", "proxy_set_header Connection $connection_upgrade"):
    needed in site or fail(f"nginx.conf lacks `{needed}` (WebSocket upgrade)")
re.search(r"^\s*(ip_hash|hash|sticky)\b", site, re.M) is None or fail("nginx.conf must not pin browsers to a replica")
print("check-deploy: deploy/compose.yaml and deploy/nginx.conf agree")
PY
