"""Shared helpers for the py-libp2p Circuit Relay v2 interop drivers.

Everything printed on stdout by the drivers is one JSON object per line
(see ``emit``).  Human/debug logging goes to stderr only: ``setup_io``
redirects ``sys.stdout`` to stderr so that stray ``print`` calls inside
py-libp2p can never corrupt the machine-readable stream.

Transfer protocol ``/macula-interop/transfer/1.0.0``, the one protocol spoken by the
js, py and Rust peers (specified in ../js/README.md):

  dialer -> listener : u64be up || u64be down, then `up` bytes PRNG(UP_SEED)
  listener -> dialer : `down` bytes PRNG(DOWN_SEED)               (concurrently)
  both, once they have sent all their bytes AND received all the peer's:
      write sha256(received bytes) (32 bytes), then read the peer's 32 bytes
      and compare them with sha256(own sent bytes).

  PRNG(seed) = xorshift32 (13/17/5), each u32 state as 4 little-endian bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

PROTOCOL_ID = "/macula-interop/transfer/1.0.0"
HASH_LEN = 32
CHUNK = 64 * 1024  # multiple of 32 so generator blocks stay aligned

_real_stdout = sys.stdout
_emit_lock = threading.Lock()


# --------------------------------------------------------------------------
# stdout / logging
# --------------------------------------------------------------------------
def setup_io(debug: bool) -> None:
    """Route all logging and stray prints to stderr; keep stdout for JSON."""
    sys.stdout = sys.stderr
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # Importing libp2p runs libp2p.utils.logging.setup_logging(), which (with
    # LIBP2P_DEBUG unset) detaches the "libp2p" logger (propagate=False, no
    # handler) so WARNINGs still leak through logging.lastResort. Import it
    # first, then take the logger over.
    import libp2p  # noqa: F401

    lg = logging.getLogger("libp2p")
    lg.handlers.clear()
    lg.propagate = True
    if debug:
        lg.setLevel(logging.DEBUG)
        logging.getLogger("multiaddr").setLevel(logging.INFO)  # very chatty
    else:
        # py-libp2p logs a lot of expected churn at ERROR (e.g. the relay's
        # hop handler when a client closes its RESERVE stream). Keep it off
        # stderr unless asked for (INTEROP_LIBP2P_LOG=ERROR|WARNING|INFO...).
        lg.setLevel(os.environ.get("INTEROP_LIBP2P_LOG", "CRITICAL").upper())


def emit(event: str, **fields: Any) -> None:
    """Print one JSON line on the real stdout and flush it."""
    obj = {"event": event, **fields}
    line = json.dumps(obj, sort_keys=False)
    with _emit_lock:
        _real_stdout.write(line + "\n")
        _real_stdout.flush()


def start_watchdog(seconds: float, what: str) -> None:
    """Hard-kill the process if trio cancellation somehow cannot stop it."""

    def _fire() -> None:
        emit("error", message=f"{what}: hard watchdog fired after {seconds:.0f}s")
        os._exit(3)

    t = threading.Timer(seconds, _fire)
    t.daemon = True
    t.start()


# --------------------------------------------------------------------------
# payload generators
# --------------------------------------------------------------------------
# Payload generator: xorshift32 13/17/5, each u32 state emitted little-endian.
# Pure Python takes about 0.1 s per MiB, so the stream prefix is cached per
# seed and shared by every transfer.
UP_SEED = 0x9E3779B9    # dialer -> listener
DOWN_SEED = 0x7F4A7C15  # listener -> dialer
_xs_cache: dict[int, tuple[bytearray, int]] = {}


def _xorshift_prefix(seed: int, n: int) -> bytearray:
    """The cached stream for seed, at least n bytes long (do not mutate)."""
    buf, x = _xs_cache.get(seed, (bytearray(), seed))
    if len(buf) < n:
        words = (n - len(buf) + 3) // 4
        out = [0] * words
        m = 0xFFFFFFFF
        for i in range(words):
            x ^= (x << 13) & m
            x ^= x >> 17
            x ^= (x << 5) & m
            out[i] = x
        import array

        arr = array.array("I", out)
        if sys.byteorder != "little":
            arr.byteswap()
        buf += arr.tobytes()
        _xs_cache[seed] = (buf, x)
    return buf


class XorshiftGen:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.pos = 0

    def take(self, n: int) -> bytes:
        buf = _xorshift_prefix(self.seed, self.pos + n)
        data = bytes(buf[self.pos:self.pos + n])
        self.pos += n
        return data


def make_gen(direction: str) -> XorshiftGen:
    """direction: 'up' = dialer->listener, 'down' = listener->dialer."""
    return XorshiftGen(UP_SEED if direction == "up" else DOWN_SEED)


def payload_sha256(seed: int, n: int) -> bytes:
    """sha256 of the first n bytes of PRNG(seed)."""
    g = XorshiftGen(seed)
    h = hashlib.sha256()
    left = n
    while left:
        k = min(left, CHUNK)
        h.update(g.take(k))
        left -= k
    return h.digest()


# --------------------------------------------------------------------------
# stream helpers (py-libp2p NetStream: read() raises StreamEOF at EOF)
# --------------------------------------------------------------------------
class TransferError(Exception):
    pass


async def read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            data = await stream.read(n - len(buf))
        except Exception as e:  # StreamEOF / StreamReset / ...
            raise TransferError(
                f"stream ended after {len(buf)}/{n} bytes: {type(e).__name__} {e}"
            ) from e
        if not data:
            raise TransferError(f"stream EOF after {len(buf)}/{n} bytes")
        buf += data
    return bytes(buf)


async def _send_payload(stream: Any, gen: Any, n: int, out: dict) -> None:
    h = hashlib.sha256()
    left = n
    while left:
        chunk = gen.take(min(left, CHUNK))
        h.update(chunk)
        await stream.write(chunk)
        left -= len(chunk)
    out["sent_sha256"] = h.digest()


async def _recv_payload(stream: Any, n: int, expected: Any, out: dict) -> None:
    h = hashlib.sha256()
    matches = True
    left = n
    while left:
        try:
            data = await stream.read(min(left, CHUNK))
        except Exception as e:
            raise TransferError(
                f"payload read failed after {n - left}/{n} bytes: "
                f"{type(e).__name__} {e}"
            ) from e
        if not data:
            raise TransferError(f"payload EOF after {n - left}/{n} bytes")
        h.update(data)
        if matches and expected.take(len(data)) != data:
            matches = False
        left -= len(data)
    out["received_sha256"] = h.digest()
    out["received_matches_expected"] = matches


async def _half_close(stream: Any) -> None:
    try:
        await stream.close_write()  # yamux FIN, read side stays open
    except Exception:  # noqa: BLE001
        pass


async def run_transfer(stream: Any, role: str, n: int | None = None,
                       max_bytes: int | None = None, down: int | None = None) -> dict:
    """Run /macula-interop/transfer/1.0.0 on an open stream.

    The dialer sends the header u64be up || u64be down (up = n, down = `down`
    or n), then `up` bytes dialer->listener while the listener sends `down`
    bytes back. After sending all own bytes AND receiving all peer bytes, each
    side writes the 32-byte sha256 of what it RECEIVED, reads the peer's 32
    bytes and compares them with sha256 of what it SENT, then half-closes (FIN)
    and notes whether the peer half-closed too (EOF within 2 s), without
    requiring it.
    """
    import trio

    t0 = time.monotonic()
    if role == "dialer":
        assert n is not None
        up = n
        dn = n if down is None else down
        await stream.write(up.to_bytes(8, "big") + dn.to_bytes(8, "big"))
        send_n, recv_n = up, dn
        send_gen, exp_gen = make_gen("up"), make_gen("down")
    else:
        hdr = await read_exact(stream, 16)
        up, dn = int.from_bytes(hdr[:8], "big"), int.from_bytes(hdr[8:], "big")
        if max_bytes is not None and max(up, dn) > max_bytes:
            raise TransferError(f"peer requested {up}/{dn} bytes > max {max_bytes}")
        send_n, recv_n = dn, up
        send_gen, exp_gen = make_gen("down"), make_gen("up")

    res: dict = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send_payload, stream, send_gen, send_n, res)
        nursery.start_soon(_recv_payload, stream, recv_n, exp_gen, res)
    t_payload = time.monotonic()

    await stream.write(res["received_sha256"])
    peer_hash = await read_exact(stream, HASH_LEN)
    t1 = time.monotonic()
    # Half-close only after the peer's hash is in (conservative: correctness
    # never depends on a relay forwarding a half-close while the other
    # direction still carries data).
    await _half_close(stream)

    peer_eof = None
    with trio.move_on_after(2):
        try:
            extra = await stream.read(1)
            peer_eof = not extra
        except Exception:  # noqa: BLE001  StreamEOF
            peer_eof = True
    try:
        await stream.close()
    except Exception:  # noqa: BLE001
        pass

    hash_ok = peer_hash == res["sent_sha256"]
    ok = hash_ok and res["received_matches_expected"]
    elapsed = t1 - t0
    return {
        "ok": ok,
        "bytes": up if up == dn else None,
        "sent_bytes": send_n,
        "received_bytes": recv_n,
        "peer_hash_matches_sent": hash_ok,
        "received_matches_expected": res["received_matches_expected"],
        "sent_sha256": res["sent_sha256"].hex(),
        "received_sha256": res["received_sha256"].hex(),
        "peer_received_sha256": peer_hash.hex(),
        "peer_half_closed": peer_eof,
        "payload_s": round(t_payload - t0, 6),
        "transfer_s": round(elapsed, 6),
        "mib_per_s": round(((send_n + recv_n) / (1024 * 1024)) / elapsed, 3)
        if elapsed > 0 else None,
    }


# --------------------------------------------------------------------------
# host construction: TCP + noise (XX) + yamux, ed25519 identity
# --------------------------------------------------------------------------
def make_host(listen_addrs: list[str], muxer: str = "yamux",
              security: str = "noise", key_seed: bytes | None = None) -> Any:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
    from libp2p.security.noise.transport import (
        PROTOCOL_ID as NOISE_PROTOCOL_ID,
        Transport as NoiseTransport,
    )
    from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    key_pair = create_new_key_pair(key_seed) if key_seed else create_new_key_pair()

    sec_opt = None
    if security == "noise":
        sec_opt = {
            NOISE_PROTOCOL_ID: NoiseTransport(
                key_pair, noise_privkey=create_x25519().private_key
            )
        }
    elif security != "default":
        raise ValueError(f"unknown security {security}")

    if muxer == "yamux":
        muxer_opt = {YAMUX_PROTOCOL_ID: Yamux}
    elif muxer == "mplex":
        muxer_opt = {MPLEX_PROTOCOL_ID: Mplex}
    elif muxer == "default":
        muxer_opt = None
    else:
        raise ValueError(f"unknown muxer {muxer}")

    maddrs = [multiaddr.Multiaddr(a) for a in listen_addrs]
    host = new_host(
        key_pair=key_pair,
        sec_opt=sec_opt,
        muxer_opt=muxer_opt,
        listen_addrs=maddrs or None,
    )
    return host, maddrs


def host_addrs(host: Any) -> list[str]:
    out = []
    for a in host.get_addrs():
        s = str(a)
        if "/p2p/" not in s:
            s = f"{s}/p2p/{host.get_id()}"
        out.append(s)
    return out


def describe_conn_to(host: Any, peer_id: Any) -> list[dict]:
    """Muxer / security classes of our live connections to peer_id."""
    out = []
    try:
        conns = host.get_network().connections.get(peer_id, [])
        if not isinstance(conns, list):
            conns = [conns]
        for c in conns:
            m = c.muxed_conn
            sec = getattr(m, "secured_conn", None)
            out.append({
                "muxer": f"{type(m).__module__}.{type(m).__name__}",
                "security": getattr(sec, "negotiated_security_protocol", None)
                or (type(sec).__name__ if sec is not None else None),
            })
    except Exception as e:  # noqa: BLE001
        out.append({"error": f"{type(e).__name__}: {e}"})
    return out


def describe_exc(e: BaseException) -> str:
    """One-line description; unwraps single-member ExceptionGroups."""
    parts = []
    while True:
        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        if isinstance(e, BaseExceptionGroup):
            parts.append(f"{type(e).__name__}: "
                         + " | ".join(describe_exc(x) for x in e.exceptions))
            break
        parts.append(f"{type(e).__name__}: {e}")
        if e.__cause__ is None:
            break
        e = e.__cause__
    return " (cause: ".join(parts) + ")" * (len(parts) - 1)


def add_common_args(p: Any) -> None:
    p.add_argument("--muxer", choices=["yamux", "mplex", "default"], default="yamux",
                   help="stream muxer offered (default: yamux only)")
    p.add_argument("--security", choices=["noise", "default"], default="noise",
                   help="security offered (default: noise only)")
    p.add_argument("--debug", action="store_true", help="verbose logs on stderr")
