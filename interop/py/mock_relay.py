#!/usr/bin/env python3
"""Scriptable Circuit Relay v2 relay used to probe how py-libp2p's *client*
(target/source) reacts to the answer variants a spec-conforming relay (e.g.
the Rust one) may send. It is a plain py-libp2p host (TCP+noise+yamux) with
its own HOP handler instead of CircuitV2Protocol, so every field it sends is
under control and every request it receives is reported.

stdout JSON lines:
  {"event":"ready","role":"mock-relay","peer_id":..,"addrs":[..]}
  {"event":"hop_request","type":"RESERVE"|"CONNECT",...all fields seen...}
  {"event":"stop_response",...what the target answered to STOP CONNECT...}
  {"event":"circuit_closed","bytes_src_to_dst":..,"bytes_dst_to_src":..}

Knobs (see --help): --limit {none,zero,normal,small}, --reservation
{normal,absent,no-voucher,garbage-voucher,no-addrs}, --expire-in S,
--reserve-status CODE, --connect-status CODE, --stop-limit {none,zero,normal}.
With --limit small the relay enforces Limit.data=--small-data bytes per
direction and then resets both streams (like a spec relay).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from interop_common import add_common_args, emit, host_addrs, make_host, setup_io


def _limit(kind: str, small_data: int) -> Any:
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import Limit

    if kind == "none":
        return None
    if kind == "zero":
        return Limit(duration=0, data=0)
    if kind == "small":
        return Limit(duration=120, data=small_data)
    return Limit(duration=120, data=1 << 30)


def _peer_str(b: bytes) -> str:
    from libp2p.peer.id import ID

    try:
        return str(ID(b))
    except Exception:  # noqa: BLE001
        return "0x" + b.hex()


def _describe_hop(msg: Any) -> dict:
    import multiaddr
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage

    d: dict = {"type": HopMessage.Type.Name(msg.type),
               "fields_set": [f.name for f, _ in msg.ListFields()]}
    if msg.HasField("peer"):
        addrs = []
        for a in msg.peer.addrs:
            try:
                addrs.append(str(multiaddr.Multiaddr(a)))
            except Exception:  # noqa: BLE001
                addrs.append("0x" + a.hex())
        d["peer"] = {"id": _peer_str(msg.peer.id), "addrs": addrs}
    if msg.HasField("reservation"):
        d["reservation"] = {"expire": msg.reservation.expire,
                            "voucher_len": len(msg.reservation.voucher)}
    if msg.HasField("limit"):
        d["limit"] = {"duration": msg.limit.duration, "data": msg.limit.data}
    if msg.HasField("status"):
        d["status"] = msg.status
    return d


async def main(args: argparse.Namespace) -> int:
    import trio
    from libp2p.peer.id import ID
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import (
        HopMessage,
        PeerId as PbPeer,
        Reservation as PbReservation,
        StopMessage,
    )
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
    from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP_ID
    from libp2p.relay.circuit_v2.resources import Reservation as PyReservation
    from libp2p.relay.circuit_v2.resources import RelayLimits
    from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

    host, maddrs = make_host([args.listen], muxer=args.muxer, security=args.security)
    reserved: set[ID] = set()

    def reservation_msg(peer: ID) -> Any:
        expire = int(time.time()) + args.expire_in
        r = PbReservation(expire=expire)
        if args.reservation != "no-addrs":
            for a in host_addrs(host):
                import multiaddr

                r.addrs.append(multiaddr.Multiaddr(a).to_bytes())
        if args.reservation == "garbage-voucher":
            r.voucher = b"\x01\x02garbage"
        elif args.reservation not in ("no-voucher",):
            # real signed voucher via py's own implementation
            py_res = PyReservation(peer, RelayLimits(0, 0, 1, 1, args.expire_in), host)
            r.voucher = py_res.voucher
        return r

    async def pipe(src: Any, dst: Any, counter: dict, key: str, budget: int | None) -> None:
        try:
            while True:
                try:
                    data = await src.read(65536)
                except Exception:  # noqa: BLE001  EOF/reset
                    break
                if not data:
                    break
                if budget is not None and counter[key] + len(data) > budget:
                    counter["limit_hit"] = key
                    await src.reset()
                    await dst.reset()
                    return
                counter[key] += len(data)
                await dst.write(data)
            try:
                await dst.close()  # half-close (FIN) towards the other side
            except Exception:  # noqa: BLE001
                pass
        except Exception as e:  # noqa: BLE001
            counter.setdefault("errors", []).append(f"{key}: {type(e).__name__} {e}")

    async def handle_hop(stream: Any) -> None:
        src_peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(15):
                msg = await read_delimited_msg(stream, HopMessage)
        except Exception as e:  # noqa: BLE001
            emit("hop_read_error", peer=str(src_peer), message=f"{type(e).__name__}: {e}")
            await stream.reset()
            return
        emit("hop_request", from_peer=str(src_peer), **_describe_hop(msg))

        if msg.type == HopMessage.RESERVE:
            resp = HopMessage(type=HopMessage.STATUS, status=args.reserve_status)
            if args.reserve_status == 100:
                reserved.add(src_peer)
                if args.reservation != "absent":
                    resp.reservation.CopyFrom(reservation_msg(src_peer))
                lim = _limit(args.limit, args.small_data)
                if lim is not None:
                    resp.limit.CopyFrom(lim)
            await write_delimited_msg(stream, resp)
            emit("hop_response", to_peer=str(src_peer), **_describe_hop(resp))
            await stream.close()
            return

        if msg.type != HopMessage.CONNECT:
            await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS,
                                                         status=401))
            await stream.close()
            return

        dst_peer = ID(msg.peer.id)
        if args.connect_status != 100:
            await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS,
                                                         status=args.connect_status))
            await stream.close()
            return
        if dst_peer not in reserved:
            await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS,
                                                         status=204))
            await stream.close()
            return
        try:
            with trio.fail_after(15):
                dst = await host.new_stream(dst_peer, [STOP_ID])
                stop = StopMessage(type=StopMessage.CONNECT,
                                   peer=PbPeer(id=src_peer.to_bytes()))
                slim = _limit(args.stop_limit, args.small_data)
                if slim is not None:
                    stop.limit.CopyFrom(slim)
                await write_delimited_msg(dst, stop)
                sresp = await read_delimited_msg(dst, StopMessage)
        except Exception as e:  # noqa: BLE001
            emit("stop_error", message=f"{type(e).__name__}: {e}")
            await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS,
                                                         status=203))
            await stream.close()
            return
        emit("stop_response", type=StopMessage.Type.Name(sresp.type),
             status=sresp.status if sresp.HasField("status") else None,
             fields_set=[f.name for f, _ in sresp.ListFields()])
        if not sresp.HasField("status") or sresp.status != 100:
            await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS,
                                                         status=203))
            await stream.close()
            return
        ok = HopMessage(type=HopMessage.STATUS, status=100)
        lim = _limit(args.limit, args.small_data)
        if lim is not None:
            ok.limit.CopyFrom(lim)
        await write_delimited_msg(stream, ok)
        budget = args.small_data if args.limit == "small" else None
        counter: dict = {"src_to_dst": 0, "dst_to_src": 0}
        async with trio.open_nursery() as n:
            n.start_soon(pipe, stream, dst, counter, "src_to_dst", budget)
            n.start_soon(pipe, dst, stream, counter, "dst_to_src", budget)
        emit("circuit_closed", **counter)

    async with host.run(listen_addrs=maddrs):
        host.set_stream_handler(HOP_ID, handle_hop)
        emit("ready", role="mock-relay", peer_id=str(host.get_id()),
             addrs=host_addrs(host))
        if args.timeout > 0:
            await trio.sleep(args.timeout)
        else:
            await trio.sleep_forever()
    return 0


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    p.add_argument("--limit", choices=["none", "zero", "normal", "small"], default="none",
                   help="Limit in RESERVE and CONNECT STATUS answers")
    p.add_argument("--stop-limit", choices=["none", "zero", "normal", "small"],
                   default="none", help="Limit in STOP CONNECT")
    p.add_argument("--small-data", type=int, default=65536)
    p.add_argument("--reservation", default="normal",
                   choices=["normal", "absent", "no-voucher", "garbage-voucher",
                            "no-addrs"])
    p.add_argument("--expire-in", type=int, default=3600)
    p.add_argument("--reserve-status", type=int, default=100)
    p.add_argument("--connect-status", type=int, default=100)
    p.add_argument("--timeout", type=float, default=0)
    add_common_args(p)
    args = p.parse_args()
    setup_io(args.debug)
    import trio

    try:
        sys.exit(trio.run(main, args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    cli()
