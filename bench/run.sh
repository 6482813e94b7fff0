#!/usr/bin/env bash
# The ocisnap benchmark (issue 5), as root, on a Debian bookworm machine:
# installs what it needs, builds ocisnap and the benchmark, then measures cold
# pull, update pull and deploy against podman and skopeo+umoci and the limits
# of the machine, and writes bench/RESULTS.md. Settings: see bench/README.md
# (BENCH_RUNS=5, BENCH_COMPRESSIONS=gzip,zstd, BENCH_TOOLS=ocisnap,podman,umoci, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
ensure_root
ensure_debian_packages
ensure_node_modules
# ocisnap may not build while parts are being written: the benchmark then
# measures the other tools and says so.
snap=bench/work/ocisnap
rm -rf "$snap"
if npm run --silent build; then
  # Measure a copy: others may rebuild the working tree while this runs.
  mkdir -p "$snap/build/Release"
  cp -a dist package.json "$snap/"
  cp -a build/Release/ocisnap_sys.node "$snap/build/Release/"
  ln -s ../../../node_modules "$snap/node_modules"
else
  echo "bench: ocisnap did not build; measuring without it" >&2
fi
rm -rf bench/work/build
npx tsc -p bench/tsconfig.json
exec node bench/work/build/main.js "$@"
