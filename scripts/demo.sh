#!/usr/bin/env bash
# The demo: the gateway plus a simulated Iqra platform in one process, on the embedded store
# (no Redis server needed). Extra arguments go to `iqra-gateway demo` (e.g. `--port 8080`).
# Installs only what the demo needs: .venv with the project, and the browser bundles of static/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# An install for the tests (".[test]") includes the demo's.
bootstrap_venv . '.[test]'
bootstrap_node_packages static
_step "starting iqra-gateway demo $*"
exec .venv/bin/iqra-gateway demo "$@"
