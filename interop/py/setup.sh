#!/usr/bin/env bash
# Build interop/py/.venv from the pinned lock, idempotently.
#
#   bash interop/py/setup.sh            # install missing Debian packages, build venv
#   PYTHON=python3.11 bash setup.sh     # choose the interpreter (default: python3.11,
#                                       # else python3; must be >= 3.10)
#   FORCE=1 bash setup.sh               # rebuild the venv from scratch
#
# Debian packages needed (only fastecdsa is compiled from source):
#   build-essential  (gcc, make)      -- compile fastecdsa's C extension
#   libgmp-dev                        -- fastecdsa links against GMP (gmp.h)
#   python3-dev      (Debian python)  -- Python.h; a pyenv/python.org build ships it
#   python3-venv     (Debian python)  -- ensurepip for `python3 -m venv`
# Network: PyPI only (pip), Debian mirrors only (apt-get).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
LOCK="$HERE/requirements.txt"
STAMP="$VENV/.lock-stamp"

log() { echo "[setup.sh] $*" >&2; }

# ---- interpreter ---------------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
PYBIN="$(command -v "$PYTHON" || true)"
[[ -n "$PYBIN" ]] || { log "no $PYTHON on PATH"; exit 1; }
PYVER="$("$PYBIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"$PYBIN" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { log "$PYBIN is Python $PYVER; py-libp2p 0.8.1 needs >= 3.10"; exit 1; }
[[ "$PYVER" == "3.11" ]] || log "warning: lock was generated on CPython 3.11, using $PYVER"

# ---- Debian packages -----------------------------------------------------
need=()
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if command -v dpkg-query >/dev/null 2>&1; then
  have_deb libgmp-dev || need+=(libgmp-dev)
  { command -v gcc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; } || need+=(build-essential)
  inc="$("$PYBIN" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  if [[ ! -f "$inc/Python.h" ]]; then
    case "$PYBIN" in /usr/bin/*) need+=(python3-dev) ;; *)
      log "Python.h missing in $inc and $PYBIN is not Debian's python; fix that build"; exit 1 ;;
    esac
  fi
  if ! "$PYBIN" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    case "$PYBIN" in /usr/bin/*) need+=(python3-venv) ;; *)
      log "$PYBIN lacks ensurepip/venv"; exit 1 ;;
    esac
  fi
  if ((${#need[@]})); then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
      command -v sudo >/dev/null 2>&1 && SUDO="sudo" \
        || { log "need root to apt-get install: ${need[*]}"; exit 1; }
    fi
    log "installing Debian packages: ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  else
    log "Debian packages present (libgmp-dev, gcc/make, Python headers)"
  fi
else
  log "not a Debian system: make sure a C compiler, GMP headers and Python headers exist"
fi

# ---- venv ----------------------------------------------------------------
want_stamp="$(cat "$LOCK" | sha256sum | cut -d' ' -f1) $("$PYBIN" -c 'import sys; print(sys.version)' | head -1)"
if [[ "${FORCE:-0}" == 1 ]]; then rm -rf "$VENV"; fi
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] \
   && "$VENV/bin/python" -c 'import libp2p' >/dev/null 2>&1; then
  log "venv up to date: $VENV"
  exit 0
fi
if [[ -x "$VENV/bin/python" ]] && \
   [[ "$("$VENV/bin/python" -c 'import sys; print(sys.version)' | head -1)" != "$("$PYBIN" -c 'import sys; print(sys.version)' | head -1)" ]]; then
  log "venv built with another interpreter; rebuilding"
  rm -rf "$VENV"
fi
[[ -x "$VENV/bin/python" ]] || { log "creating venv with $PYBIN ($PYVER)"; "$PYBIN" -m venv "$VENV"; }

log "installing pinned requirements"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$LOCK"
"$VENV/bin/python" -m pip check
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import libp2p, fastecdsa, coincurve  # noqa: F401  (fastecdsa = the compiled one)
from libp2p.relay.circuit_v2.transport import CircuitV2Transport  # noqa: F401
assert md.version("libp2p") == "0.8.1", md.version("libp2p")
print("[setup.sh] ok: libp2p", md.version("libp2p"))
EOF
echo "$want_stamp" > "$STAMP"
log "done: $VENV"
