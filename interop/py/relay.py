#!/usr/bin/env python3
"""py-libp2p Circuit Relay v2 *relay* (hop) node, used to verify the py
target/source drivers end to end before the Rust relay exists.

Prints {"event":"ready","role":"relay","peer_id":...,"addrs":[...]} once
listening (each addr ends in /p2p/<id>), then runs until killed or --timeout.
"""

from __future__ import annotations

import argparse
import sys

from interop_common import add_common_args, emit, host_addrs, make_host, setup_io


async def main(args: argparse.Namespace) -> int:
    import trio
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
    from libp2p.relay.circuit_v2.resources import RelayLimits
    from libp2p.tools.anyio_service import background_trio_service

    host, maddrs = make_host([args.listen], muxer=args.muxer, security=args.security)
    limits = RelayLimits(
        duration=args.limit_duration,
        data=args.limit_data,
        max_circuit_conns=args.max_circuits,
        max_reservations=args.max_reservations,
        reservation_ttl=args.reservation_ttl,
    )
    protocol = CircuitV2Protocol(host, limits=limits, allow_hop=True)
    async with host.run(listen_addrs=maddrs):
        # CircuitV2Protocol.run registers /libp2p/circuit/relay/0.2.0/hop
        # (allow_hop=True) and /libp2p/circuit/relay/0.2.0/stop.
        async with background_trio_service(protocol):
            await protocol.event_started.wait()
            emit("ready", role="relay", peer_id=str(host.get_id()),
                 addrs=host_addrs(host))
            if args.timeout > 0:
                await trio.sleep(args.timeout)
            else:
                await trio.sleep_forever()
    return 0


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    p.add_argument("--limit-duration", type=int, default=3600,
                   help="Limit.duration advertised and enforced (s, 0 = none)")
    p.add_argument("--limit-data", type=int, default=1 << 30,
                   help="Limit.data advertised and enforced (bytes, 0 = none)")
    p.add_argument("--max-circuits", type=int, default=8)
    p.add_argument("--max-reservations", type=int, default=16)
    p.add_argument("--reservation-ttl", type=int, default=3600)
    p.add_argument("--timeout", type=float, default=0,
                   help="exit after this many seconds (0 = run until killed)")
    add_common_args(p)
    args = p.parse_args()
    setup_io(args.debug)
    import trio

    try:
        sys.exit(trio.run(main, args))
    except KeyboardInterrupt:
        sys.exit(0)
    except Exception as e:  # noqa: BLE001
        emit("error", role="relay", message=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    cli()
