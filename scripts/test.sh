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
# The interop tests fail (rather than skip) when their peers are missing, and append their
# results to $MACULA_INTEROP_RESULTS, from which interop/matrix.mjs rewrites the matrix in
# interop/README.md.
export MACULA_INTEROP_RESULTS="$PWD/target/interop-results"
rm -rf "$MACULA_INTEROP_RESULTS"
status=0
# --no-fail-fast: a failing test binary does not hide the results of the later ones.
MACULA_REQUIRE_INTEROP=1 cargo test --locked --no-fail-fast || status=$?

if [ -x interop/js/node_modules/.bin/node ] && [ -d "$MACULA_INTEROP_RESULTS" ]; then
  echo "== interop matrix"
  if ! interop/js/node_modules/.bin/node interop/matrix.mjs --results "$MACULA_INTEROP_RESULTS" \
    --readme interop/README.md --cargo-status "$status"; then
    [ "$status" != 0 ] || status=1
  fi
fi
exit "$status"
