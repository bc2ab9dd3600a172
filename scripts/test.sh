#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, and the interop suites against
# js-libp2p and py-libp2p peers. Installs what the interop suites need (npm and pip packages
# from their registries) on first run. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f interop/js/package-lock.json ]; then
  echo "== interop/js: npm ci"
  (cd interop/js && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ -f interop/py/setup.sh ]; then
  echo "== interop/py: setup"
  bash interop/py/setup.sh
fi

echo "== cargo test"
# The interop tests fail (rather than skip) when their peers are missing.
MACULA_REQUIRE_INTEROP=1 cargo test --locked
