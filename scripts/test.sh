#!/usr/bin/env bash
# Runs every ocisnap test on a Debian machine, as root: installs what the tests
# need (Debian packages, npm dependencies, the native addon), builds, and runs
# vitest. Safe to run again; CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
ensure_root
ensure_debian_packages
ensure_node_modules
npm run --silent build
exec npx vitest run "$@"
