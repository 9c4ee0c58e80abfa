#!/usr/bin/env bash
# The demo: the gateway plus a simulated Iqra platform in one process, on the embedded store
# (no Redis server needed). Extra arguments go to `iqra-gateway demo` (e.g. `--port 8080`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bootstrap_venv .
bootstrap_node_packages
exec .venv/bin/iqra-gateway demo "$@"
