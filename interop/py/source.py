#!/usr/bin/env python3
"""py-libp2p Circuit Relay v2 *source* (dials the target through the relay).

  source.py --target <relay-ma>/p2p/RELAYID/p2p-circuit/p2p/TARGETID --bytes N

Dials via py-libp2p's CircuitV2Transport.dial (HOP CONNECT), upgrades the
relayed stream with noise + yamux, opens /macula-interop/transfer/1.0.0 and
runs one transfer of N bytes to the target (--bytes) and N or --down bytes back.

stdout, one JSON object per line:
  {"event":"ready","role":"source","peer_id":..}
  {"event":"connected","relay":..,"target":..,"connect_s":..}
  {"event":"result","ok":true,"bytes":N,"sent_sha256":..,"received_sha256":..,
   "peer_received_sha256":..,"elapsed_s":..,...}           exit 0 if ok else 1
  {"event":"error","message":..}                            exit 1 (2 on timeout)
Never hangs: everything runs under --timeout (default 60 s), with a hard
os._exit watchdog a few seconds after that.
"""

from __future__ import annotations

import argparse
import sys
import time

from interop_common import (
    PROTOCOL_ID,
    add_common_args,
    describe_conn_to,
    describe_exc,
    emit,
    make_host,
    run_transfer,
    setup_io,
    start_watchdog,
)


async def main(args: argparse.Namespace) -> int:
    import multiaddr
    import trio
    from libp2p.peer.id import ID
    from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
    from libp2p.relay.circuit_v2.transport import CircuitV2Transport
    from libp2p.tools.anyio_service import background_trio_service

    t_start = time.monotonic()
    target_ma = multiaddr.Multiaddr(args.target)

    listen = [] if args.listen == "none" else [args.listen]
    host, maddrs = make_host(listen, muxer=args.muxer, security=args.security)

    # Pure dialer: STOP role only. With RelayRole.CLIENT set,
    # CircuitV2Transport.dial_peer_info() would first send a HOP RESERVE for
    # *us* on the relay and then attach that reservation to the CONNECT.
    roles = RelayRole.STOP | (RelayRole.CLIENT if args.reserve_first else RelayRole(0))
    config = RelayConfig(roles=roles)
    protocol = CircuitV2Protocol(host, limits=config.limits, allow_hop=False)

    async with host.run(listen_addrs=maddrs):
        async with background_trio_service(protocol):
            await protocol.event_started.wait()
            transport = CircuitV2Transport(host, protocol, config)
            emit("ready", role="source", peer_id=str(host.get_id()))

            relay_ma, target_id = transport.parse_circuit_ma(target_ma)
            t_dial = time.monotonic()
            conn = await transport.dial(target_ma)
            t_conn = time.monotonic()
            relay_id = ID.from_base58(relay_ma.get_peer_id())
            emit("connected", role="source", relay=str(relay_ma), target=str(target_id),
                 connect_s=round(t_conn - t_dial, 6),
                 relay_conn=describe_conn_to(host, relay_id),
                 circuit_conn=describe_conn_to(host, target_id))

            stream = await host.new_stream(target_id, [PROTOCOL_ID])
            res = await run_transfer(stream, "dialer", n=args.bytes, down=args.down)
            emit("result", role="source", target=str(target_id),
                 elapsed_s=round(time.monotonic() - t_start, 6),
                 connect_s=round(t_conn - t_dial, 6), **res)
            try:
                await conn.close()
            except Exception:  # noqa: BLE001
                pass
            return 0 if res["ok"] else 1


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True,
                   help="circuit multiaddr <relay>/p2p/RID/p2p-circuit/p2p/TID")
    p.add_argument("--bytes", type=int, required=True, help="payload size N")
    p.add_argument("--down", type=int, default=None,
                   help="bytes listener->dialer (default = --bytes)")
    p.add_argument("--timeout", type=float, default=60,
                   help="overall timeout in seconds (default 60)")
    p.add_argument("--listen", default="none",
                   help="own TCP listen addr (default: none, dial only)")
    p.add_argument("--reserve-first", action="store_true",
                   help="enable RelayRole.CLIENT: py client RESERVEs before CONNECT")
    add_common_args(p)
    args = p.parse_args()
    setup_io(args.debug)
    import trio

    if args.bytes < 0 or (args.down is not None and args.down < 0):
        emit("error", role="source", message="--bytes/--down must be >= 0")
        sys.exit(1)
    start_watchdog(args.timeout + 5, "source")
    code = 1
    try:
        with_timeout = _with_timeout(args)
        code = trio.run(with_timeout)
    except trio.TooSlowError:
        emit("error", role="source", message=f"timeout after {args.timeout}s")
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, SystemExit):
            raise
        emit("error", role="source", message=describe_exc(e))
        code = 1
    sys.stdout.flush()
    # py-libp2p may leave non-daemon threads around; never linger.
    import os
    os._exit(code)


def _with_timeout(args: argparse.Namespace):
    import trio

    async def run() -> int:
        with trio.fail_after(args.timeout):
            return await main(args)

    return run


if __name__ == "__main__":
    cli()
