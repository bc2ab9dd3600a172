#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, and the interop suites against
# js-libp2p and py-libp2p peers and js-libp2p in headless Chromium. Installs what the interop
# suites need (npm and pip packages from their registries, Debian's chromium) on first run.
# Loopback only.
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
# The browser tests (tests/browser.rs): Debian's Chromium, driven by Playwright from
# interop/browser (its own package; `npm ci` brings playwright-core, esbuild and js-libp2p).
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "== chromium: apt-get install chromium"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o=Dpkg::Use-Pty=0 chromium >/dev/null) ||
      echo "WARNING: installing chromium failed; the browser tests will fail"
  else
    echo "WARNING: /usr/bin/chromium is missing (install Debian's chromium package); the browser tests will fail"
  fi
fi
# The NAT lab (tests/nat_lab.rs): network namespaces need root, `ip` (iproute2) and `nft`.
if [ "$(id -u)" = 0 ] && ! command -v nft >/dev/null; then
  echo "== nftables: apt-get install nftables iproute2"
  if command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o=Dpkg::Use-Pty=0 nftables iproute2 >/dev/null) ||
      echo "WARNING: installing nftables failed; the NAT lab will fail"
  fi
fi
if [ -f interop/browser/package-lock.json ]; then
  echo "== interop/browser: npm ci"
  (cd interop/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

status=0
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== cargo install cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "== cargo fmt --check"
cargo fmt --check || status=$?

echo "== feature matrix: clippy on each feature set, the core's tests without features"
# The relay behaviour alone (no default features), each feature alone, and all of them.
for features in "--no-default-features" "--no-default-features --features node" \
  "--no-default-features --features registry" "--no-default-features --features admin" \
  "--no-default-features --features cli" "--all-features"; do
  echo "-- cargo clippy $features"
  # shellcheck disable=SC2086
  cargo clippy --locked $features --all-targets -- -D warnings || status=$?
done
cargo test --locked --no-default-features --lib || status=$?

echo "== cargo nextest run"
# The interop and browser tests are compiled as ignored unless MACULA_REQUIRE_INTEROP=1 (build.rs);
# with it they run and fail (rather than skip) when their peers are missing. They append their
# results to $MACULA_INTEROP_RESULTS, from which interop/matrix.mjs rewrites the matrix in
# interop/README.md.
export MACULA_REQUIRE_INTEROP=1
export MACULA_INTEROP_RESULTS="$PWD/target/interop-results"
rm -rf "$MACULA_INTEROP_RESULTS"
# The benchmark smoke test starts the benchmark helper examples as processes: build them first
# (the tests that run the node use the `macula-relay` binary, which Cargo builds for them).
cargo build --locked --examples --bins
# Each test in its own process, bounded by the `ci` profile of .config/nextest.toml (a hung test
# is killed and named after 10 minutes); --no-fail-fast: a failure does not hide later results.
rm -f target/tmp/nat-lab-matrix.md target/tmp/nat-lab-interop.md
cargo nextest run --locked --profile ci --no-fail-fast || status=$?
if [ -f target/tmp/nat-lab-matrix.md ] || [ -f target/tmp/nat-lab-interop.md ]; then
  echo "== NAT lab matrices -> docs/nat-lab.md"
  python3 - docs/nat-lab.md <<'PYEOF' || status=$?
import os, sys
page_path = sys.argv[1]
page = open(page_path).read()
for name in ("matrix", "interop"):
    path = f"target/tmp/nat-lab-{name}.md"
    if not os.path.exists(path):
        continue
    start, end = f"<!-- nat-lab-{name}:start -->", f"<!-- nat-lab-{name}:end -->"
    head, rest = page.split(start, 1)
    _, tail = rest.split(end, 1)
    page = head + start + "\n" + open(path).read().rstrip() + "\n" + end + tail
open(page_path, "w").write(page)
PYEOF
fi
echo "== deployment files (systemd unit, Dockerfile, relay.toml)"
bash scripts/check_deploy.sh target/debug/macula-relay || status=$?
echo "== cargo test --doc"
cargo test --locked --doc || status=$?
echo "== cargo doc (broken or private links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps || status=$?

if [ -x interop/js/node_modules/.bin/node ] && [ -d "$MACULA_INTEROP_RESULTS" ]; then
  echo "== interop matrix"
  if ! interop/js/node_modules/.bin/node interop/matrix.mjs --results "$MACULA_INTEROP_RESULTS" \
    --readme interop/README.md --cargo-status "$status"; then
    [ "$status" != 0 ] || status=1
  fi
fi
exit "$status"
