#!/usr/bin/env bash
# Checks the deployment files in deploy/ (docs/deploy.md) as far as this machine allows:
#   1. the systemd unit: `systemd-analyze verify` on a copy whose ExecStart names an existing
#      binary (the argument, else a stub), failing on any complaint about the unit (verify exits 0
#      on unknown keys and bad values, so its output is read too), and the unit's sandboxing
#      exposure (`systemd-analyze security --offline`);
#   2. deploy/Dockerfile, deploy/relay.toml, the unit and docs/deploy.md agree: config path,
#      data directory, exposed ports, admin address of the HEALTHCHECK, stop timeouts longer than
#      drain_timeout;
#   3. with a binary: it accepts deploy/relay.toml (`--print-config`).
#
# Usage: scripts/check_deploy.sh [PATH/TO/macula-relay]
# Where systemd-analyze is missing, CI (CI=true, as root, with apt-get) installs Debian's systemd
# package; elsewhere those checks print SKIP. Exits 1 on any FAIL, else 0.
set -euo pipefail

BIN=""
if [ $# -gt 0 ] && [ -n "$1" ]; then
  case "$1" in /*) BIN="$1" ;; *) BIN="$PWD/$1" ;; esac
  if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "FAIL: $1 (the macula-relay binary to check with) is not an executable file"
    exit 1
  fi
fi
cd "$(dirname "$0")/.."

UNIT=deploy/macula-relay.service
DOCKERFILE=deploy/Dockerfile
CONFIG=deploy/relay.toml
DOCS=docs/deploy.md
# The highest `systemd-analyze security` exposure accepted, in tenths as --threshold takes it: 25
# is 2.5 (the unit scores 1.6 with systemd 252; an unsandboxed service scores 9.6).
MAX_EXPOSURE=25

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }
skip() { echo "SKIP: $*"; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

for f in "$UNIT" "$DOCKERFILE" "$CONFIG"; do
  [ -f "$f" ] || { echo "FAIL: $f is missing"; exit 1; }
done

# --- helpers -------------------------------------------------------------------------------------

# The value of a top-level `key = value` line of relay.toml (comments and quotes stripped), or
# nothing when the key is not set.
toml_value() {
  sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$CONFIG" | awk 'NR == 1' |
    sed -E 's/[[:space:]]+#.*$//; s/^"(.*)"$/\1/; s/[[:space:]]+$//'
}

# The multiaddrs of relay.toml's `listen` array (one or several lines).
listen_addrs() {
  awk '/^[[:space:]]*listen[[:space:]]*=/ { on = 1 } on { print; if ($0 ~ /\]/) exit }' "$CONFIG" |
    sed -E 's/#.*$//' | { grep -o '"[^"]*"' || true; } | tr -d '"'
}

# The value of the last `Key=` line of the unit.
unit_value() {
  sed -n -E "s/^$1=//p" "$UNIT" | tail -n 1
}

# Seconds of a systemd time span (60, 60s, 1min, 1min 30s).
timespan_secs() {
  local span="$1"
  if [[ "$span" =~ ^[0-9]+s?$ ]]; then
    echo "${span%s}"
  elif command -v systemd-analyze >/dev/null; then
    systemd-analyze timespan "$span" 2>/dev/null | sed -n -E 's/^[[:space:]]*μs: ([0-9]+)$/\1/p' |
      awk '{ print int($1 / 1000000) }'
  fi
}

# Whether the Dockerfile EXPOSEs PORT/PROTO (EXPOSE without a protocol is TCP).
exposed() {
  local port="$1" proto="$2"
  local spec
  # Words, not lines: one EXPOSE names several ports.
  # shellcheck disable=SC2013
  for spec in $(sed -n -E 's/^[[:space:]]*EXPOSE[[:space:]]+//p' "$DOCKERFILE"); do
    if [ "$spec" = "$port/$proto" ] || { [ "$spec" = "$port" ] && [ "$proto" = tcp ]; }; then
      return 0
    fi
  done
  return 1
}

# --- 1. the systemd unit -------------------------------------------------------------------------

echo "== systemd unit ($UNIT)"
if ! command -v systemd-analyze >/dev/null; then
  if [ "$(id -u)" = 0 ] && [ "${CI:-}" = true ] && command -v apt-get >/dev/null; then
    echo "systemd-analyze is missing: apt-get install systemd"
    if ! { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o=Dpkg::Use-Pty=0 \
        --no-install-recommends systemd procps; } >"$TMP/apt.log" 2>&1; then
      tail -n 5 "$TMP/apt.log" | sed 's/^/  /'
      echo "WARNING: installing Debian's systemd package failed"
    fi
  fi
fi

if ! command -v systemd-analyze >/dev/null; then
  skip "systemd-analyze verify: systemd-analyze is not installed (Debian: apt-get install systemd; CI as root installs it)"
  skip "systemd-analyze security: systemd-analyze is not installed"
else
  exec_start=$(unit_value ExecStart)
  exec_path=${exec_start%% *}
  if [ -n "$BIN" ]; then
    stand_in="$BIN"
  else
    # A stub where the real binary is not at hand: verify only needs an executable file.
    stand_in="$TMP/bin/macula-relay"
    mkdir -p "$TMP/bin"
    printf '#!/bin/sh\nexit 0\n' >"$stand_in"
    chmod +x "$stand_in"
  fi
  mkdir -p "$TMP/unit"
  copy="$TMP/unit/macula-relay.service"
  # The same unit, its ExecStart's program replaced (the unit's name must stay the same).
  awk -v from="ExecStart=$exec_path" -v to="ExecStart=$stand_in" \
    'index($0, from) == 1 { $0 = to substr($0, length(from) + 1) } { print }' "$UNIT" >"$copy"
  status=0
  out=$(systemd-analyze verify --man=no "$copy" 2>&1) || status=$?
  # Lines about the unit itself (other units of this machine may have their own problems).
  own=$(printf '%s\n' "$out" | grep -F -e "$copy" -e macula-relay || true)
  if [ "$status" != 0 ] || [ -n "$own" ]; then
    printf '%s\n' "$out" | sed 's/^/  /'
    fail "systemd-analyze verify complains about $UNIT (exit status $status; output above; ExecStart stood in by $stand_in)"
  else
    [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/  (other units) /'
    ok "systemd-analyze verify $UNIT ($(systemd-analyze --version | awk 'NR == 1'); ExecStart: $stand_in)"
  fi

  security_help=$(systemd-analyze security --help 2>/dev/null || true)
  if [[ "$security_help" == *--offline* ]]; then
    status=0
    out=$(systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" --no-pager "$copy" 2>&1) ||
      status=$?
    overall=$(printf '%s\n' "$out" | { grep -o 'Overall exposure level.*' || true; } | awk 'NR == 1')
    if [ "$status" != 0 ]; then
      printf '%s\n' "$out" | { grep -E '✗|Overall|Failed|rror' || true; } | sed 's/^/  /'
      fail "systemd-analyze security: ${overall:-no score} (at most $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10)) accepted: sandboxing was lost)"
    else
      ok "systemd-analyze security: $overall"
    fi
  else
    skip "systemd-analyze security --offline: needs systemd 250 or later"
  fi
fi

# --- 2. Dockerfile, relay.toml, unit and docs agree ----------------------------------------------

echo "== deploy/Dockerfile, deploy/relay.toml, the unit and $DOCS agree"

# The config file's path: where the image puts relay.toml, and what the image and the unit run.
image_config=$(sed -n -E 's|^[[:space:]]*COPY[[:space:]]+deploy/relay\.toml[[:space:]]+([^[:space:]]+).*|\1|p' "$DOCKERFILE")
if [ -z "$image_config" ]; then
  fail "$DOCKERFILE does not COPY deploy/relay.toml"
else
  run_lines=$(grep -E '^[[:space:]]*(CMD|ENTRYPOINT)' "$DOCKERFILE" || true)
  if [[ "$run_lines" == *"\"--config\", \"$image_config\""* ]]; then
    ok "the image runs with --config $image_config, where it copies deploy/relay.toml"
  else
    fail "$DOCKERFILE copies relay.toml to $image_config but its CMD/ENTRYPOINT does not pass --config $image_config"
  fi
  if [[ "$(unit_value ExecStart)" == *"--config $image_config"* ]]; then
    ok "the unit's ExecStart reads the same file"
  else
    fail "$UNIT ExecStart does not pass --config $image_config (the path docs/deploy.md installs relay.toml to)"
  fi
fi

# The binary: where the image installs it is what it runs and health-checks.
image_bin=$(sed -n -E 's|^[[:space:]]*COPY[[:space:]]+--from=builder[[:space:]]+[^[:space:]]+[[:space:]]+([^[:space:]]+).*|\1|p' "$DOCKERFILE" | awk 'NR == 1')
if grep -q -E '^[^#]*cargo build --release --locked --bin macula-relay' "$DOCKERFILE" &&
  grep -q -E "^[[:space:]]*ENTRYPOINT \[\"$image_bin\"" "$DOCKERFILE"; then
  ok "the image builds --bin macula-relay, installs it as $image_bin and runs it"
else
  fail "$DOCKERFILE: the builder must run 'cargo build --release --locked --bin macula-relay' and ENTRYPOINT the binary it copies ($image_bin)"
fi
if awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 } bin && /^name = "macula-relay"/ { found = 1 }
    END { exit !found }' Cargo.toml ||
  { grep -q -E '^name = "macula-relay"' Cargo.toml && [ -f src/main.rs ]; }; then
  ok "Cargo.toml has the macula-relay binary"
else
  fail "Cargo.toml declares no macula-relay binary (src/main.rs or [[bin]] name = \"macula-relay\")"
fi

# The data directory: the image's volume, and the unit's StateDirectory=.
data_dir=$(toml_value data_dir)
if [ -z "$data_dir" ]; then
  fail "$CONFIG does not set data_dir (the image's volume holds the identity key there)"
else
  if grep -q -E "^[[:space:]]*VOLUME[[:space:]]+(\[\"$data_dir\"\]|$data_dir)[[:space:]]*$" "$DOCKERFILE"; then
    ok "data_dir $data_dir is the image's VOLUME"
  else
    fail "data_dir = \"$data_dir\" in $CONFIG, but $DOCKERFILE has no 'VOLUME $data_dir'"
  fi
  if grep -q -E "install -d -o [^ ]+ -g [^ ]+ -m 0?700 $data_dir" "$DOCKERFILE"; then
    ok "the image creates $data_dir owned by its user, mode 0700"
  else
    fail "$DOCKERFILE does not create $data_dir for its user (install -d -o USER -g GROUP -m 0700 $data_dir)"
  fi
  state_dir=$(unit_value StateDirectory)
  if [ "/var/lib/$state_dir" = "$data_dir" ]; then
    ok "the unit's StateDirectory=$state_dir is data_dir"
  else
    fail "$UNIT StateDirectory=$state_dir (/var/lib/$state_dir) differs from data_dir = \"$data_dir\""
  fi
fi
if [ "$(toml_value ephemeral_identity)" = true ]; then
  fail "$CONFIG sets ephemeral_identity = true: the relay would get a new peer id on every start"
fi

# Listen ports: each TCP and UDP port of `listen` is EXPOSEd with its protocol.
addrs=$(listen_addrs)
if [ -z "$addrs" ]; then
  fail "$CONFIG has no listen addresses (keep 'listen = [...]' uncommented)"
fi
for addr in $addrs; do
  for proto in tcp udp; do
    port=$(printf '%s\n' "$addr" | sed -n -E "s|.*/$proto/([0-9]+).*|\1|p")
    if [ -z "$port" ] || [ "$port" = 0 ]; then continue; fi
    if exposed "$port" "$proto"; then
      ok "listen $addr: EXPOSE $port/$proto"
    else
      fail "listen $addr in $CONFIG, but $DOCKERFILE does not EXPOSE $port/$proto"
    fi
  done
done

# Metrics: on every interface of the container (a published port reaches nothing on loopback).
metrics=$(toml_value metrics)
if [ -z "$metrics" ]; then
  fail "$CONFIG does not set metrics, but the image EXPOSEs its port for Prometheus"
else
  metrics_host=${metrics%:*}
  metrics_port=${metrics##*:}
  case "$metrics_host" in
    127.* | localhost | "[::1]") fail "metrics = \"$metrics\" is loopback: unreachable through the container's published port" ;;
    *) ok "metrics $metrics listens beyond loopback" ;;
  esac
  if exposed "$metrics_port" tcp; then
    ok "metrics: EXPOSE $metrics_port/tcp"
  else
    fail "metrics = \"$metrics\" in $CONFIG, but $DOCKERFILE does not EXPOSE $metrics_port/tcp"
  fi
fi

# Admin API: on loopback, not exposed, and what the HEALTHCHECK asks.
admin=$(toml_value admin)
if [ -z "$admin" ]; then
  fail "$CONFIG does not set admin, but the image's HEALTHCHECK uses the admin API"
else
  case "${admin%:*}" in
    127.* | "[::1]") ok "admin $admin is on loopback" ;;
    *) fail "admin = \"$admin\" in $CONFIG is not loopback (the image's HEALTHCHECK and the docs assume loopback, with no token)" ;;
  esac
  if exposed "${admin##*:}" tcp; then
    fail "$DOCKERFILE EXPOSEs the admin API's port ${admin##*:}"
  fi
  healthcheck=$(awk '/^[[:space:]]*HEALTHCHECK/ { on = 1 } on { print; if ($0 !~ /\\$/) exit }' "$DOCKERFILE")
  if [[ "$healthcheck" == *"\"ctl\", \"--admin\", \"http://$admin\", \"health\""* ]]; then
    ok "HEALTHCHECK runs ctl --admin http://$admin health"
  else
    fail "$DOCKERFILE HEALTHCHECK does not run 'macula-relay ctl --admin http://$admin health' (admin = \"$admin\" in $CONFIG)"
  fi
  env_admin=$(sed -n -E 's/^[[:space:]]*ENV[[:space:]]+MACULA_RELAY_ADMIN=//p' "$DOCKERFILE")
  if [ -n "$env_admin" ] && [ "$env_admin" != "http://$admin" ]; then
    fail "$DOCKERFILE ENV MACULA_RELAY_ADMIN=$env_admin differs from admin = \"$admin\""
  fi
fi

# Stopping: SIGTERM drains; whatever stops the node waits longer than drain_timeout.
drain=$(toml_value drain_timeout)
drain=${drain:-30}
grep -q -E '^[[:space:]]*STOPSIGNAL[[:space:]]+SIGTERM' "$DOCKERFILE" ||
  fail "$DOCKERFILE has no STOPSIGNAL SIGTERM (SIGTERM starts the drain)"
[ "$(unit_value KillSignal)" = SIGTERM ] || fail "$UNIT KillSignal= is not SIGTERM (SIGTERM starts the drain)"
stop_secs=$(timespan_secs "$(unit_value TimeoutStopSec)")
if [ -z "$stop_secs" ]; then
  fail "$UNIT has no readable TimeoutStopSec= (it must exceed drain_timeout = $drain)"
elif [ "$stop_secs" -gt "$drain" ]; then
  ok "the unit's TimeoutStopSec=${stop_secs}s exceeds drain_timeout = $drain"
else
  fail "$UNIT TimeoutStopSec=${stop_secs}s does not exceed drain_timeout = $drain in $CONFIG: systemd would kill a draining node"
fi
docs_files="$DOCKERFILE"
[ -f "$DOCS" ] && docs_files="$docs_files $DOCS"
found=0
# shellcheck disable=SC2086
while read -r file value; do
  found=1
  if [ "$value" -le "$drain" ]; then
    fail "$file: a Docker stop timeout of $value s does not exceed drain_timeout = $drain"
  fi
done < <(grep -o -E -H -- '(--stop-timeout|docker stop -t|docker stop --time)[ =][0-9]+' $docs_files |
  sed -E 's/^([^:]+):.*[ =]([0-9]+)$/\1 \2/')
if [ "$found" = 1 ]; then
  ok "the Docker stop timeouts in $docs_files exceed drain_timeout = $drain"
else
  fail "neither $docs_files gives a Docker stop timeout (--stop-timeout N, docker stop -t N) longer than drain_timeout = $drain"
fi
nofile=$(unit_value LimitNOFILE)
if [ -n "$nofile" ] && [ "${nofile%%:*}" -ge 65536 ] 2>/dev/null; then
  ok "the unit's LimitNOFILE=$nofile"
else
  fail "$UNIT LimitNOFILE= is missing or below 65536 ($nofile)"
fi

# --- 3. the binary reads relay.toml --------------------------------------------------------------

echo "== the binary and $CONFIG"
if [ -z "$BIN" ]; then
  skip "--print-config on $CONFIG: no binary given (scripts/check_deploy.sh target/debug/macula-relay)"
else
  status=0
  out=$("$BIN" --config "$CONFIG" --print-config 2>&1) || status=$?
  if [ "$status" = 0 ]; then
    ok "$BIN --config $CONFIG --print-config accepts every key"
  else
    printf '%s\n' "$out" | sed 's/^/  /'
    fail "$BIN refuses $CONFIG (output above)"
  fi
fi

if [ "$failures" -gt 0 ]; then
  echo "check_deploy: $failures problem(s) found"
  exit 1
fi
echo "check_deploy: all checks that could run passed"
