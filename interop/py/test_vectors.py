#!/usr/bin/env python3
"""Offline self-test of the payload generators (no network, no libp2p needed).

Checks interop_common against an independent re-implementation and the
published vectors in interop/js/README.md.
Ends with the plain line 'N passed, N failed'; exit 0 iff none failed.
"""

from __future__ import annotations

import hashlib
import struct
import sys

from interop_common import (
    DOWN_SEED,
    UP_SEED,
    XorshiftGen,
    payload_sha256,
)


def ref_xorshift(seed: int, n: int) -> bytes:
    x, out = seed, bytearray()
    while len(out) < n:
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out += struct.pack("<I", x)
    return bytes(out[:n])


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


CASES = [
    # (name, got, expected)
    ("up first 16 bytes",
     lambda: XorshiftGen(UP_SEED).take(16).hex(),
     lambda: "19460c513e552ee03a8fb97bb5a88301"),
    ("up 1023 bytes sha256",
     lambda: sha(XorshiftGen(UP_SEED).take(1023)),
     lambda: "5fad45daee993cf0c43098508c79c0448ba3e2a634869de5e415194dbca980e8"),
    ("down 1 MiB sha256",
     lambda: sha(XorshiftGen(DOWN_SEED).take(1 << 20)),
     lambda: "2afb71fd76bf7fc8651f1815dac807dd917d744fe02afc467e12ffaf746ab5e3"),
    ("odd chunking == reference (70001 bytes)",
     lambda: (lambda g: b"".join(g.take(k) for k in (3, 65536, 4462)))(
         XorshiftGen(UP_SEED)),
     lambda: ref_xorshift(UP_SEED, 70001)),
    ("split takes == one take",
     lambda: (lambda g: g.take(5) + g.take(1000) + g.take(18))(XorshiftGen(DOWN_SEED)),
     lambda: ref_xorshift(DOWN_SEED, 1023)),
    ("up 1 KiB sha256",
     lambda: payload_sha256(UP_SEED, 1024).hex(),
     lambda: sha(ref_xorshift(UP_SEED, 1024))),
    ("down 1 KiB sha256 starts 9acca758",
     lambda: payload_sha256(DOWN_SEED, 1024).hex()[:8],
     lambda: "9acca758"),
    ("N=0 sha256 is sha256('')",
     lambda: payload_sha256(UP_SEED, 0).hex(),
     lambda: sha(b"")),
]


def main() -> int:
    passed = failed = 0
    for name, got, exp in CASES:
        try:
            ok = got() == exp()
        except Exception as e:  # noqa: BLE001
            ok = False
            name += f" ({type(e).__name__}: {e})"
        print(("ok   " if ok else "FAIL ") + name)
        passed += ok
        failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
