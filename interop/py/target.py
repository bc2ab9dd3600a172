#!/usr/bin/env python3
"""py-libp2p Circuit Relay v2 *target* (listener behind the relay).

  target.py --relay /ip4/127.0.0.1/tcp/PORT/p2p/RELAYID

Connects to the relay, makes a reservation with py-libp2p's circuit v2 client
(CircuitV2Transport.reserve -> HOP RESERVE), registers the STOP handler
(CircuitV2Protocol) and serves /macula-interop/transfer/1.0.0.

stdout, one JSON object per line:
  {"event":"reserved", ...details of the relay's RESERVE answer...}
  {"event":"ready","role":"target","peer_id":..,"circuit_addr":"<relay>/p2p-circuit/p2p/<id>",...}
  {"event":"transfer","role":"listener","ok":true,"bytes":N,...}   (per transfer)
  {"event":"error","message":...}                                  (then exit != 0)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from interop_common import (
    PROTOCOL_ID,
    add_common_args,
    describe_conn_to,
    describe_exc,
    emit,
    host_addrs,
    make_host,
    run_transfer,
    setup_io,
    start_watchdog,
)


class RecordingStream:
    """Thin proxy that records the bytes read from a stream, so the relay's
    raw RESERVE answer can be decoded and reported (the py client discards
    most of it)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.read_bytes = bytearray()

    async def read(self, n: int | None = None) -> bytes:
        data = await self._inner.read(n)
        self.read_bytes += data
        return data

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def describe_hop_status(raw: bytes) -> dict:
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
    import multiaddr

    # raw = uvarint length || HopMessage
    ln, i = 0, 0
    shift = 0
    while True:
        b = raw[i]
        ln |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    msg = HopMessage()
    msg.ParseFromString(raw[i:i + ln])
    out: dict = {
        "type": HopMessage.Type.Name(msg.type),
        "status": msg.status if msg.HasField("status") else None,
    }
    if msg.HasField("reservation"):
        r = msg.reservation
        addrs = []
        for a in r.addrs:
            try:
                addrs.append(str(multiaddr.Multiaddr(a)))
            except Exception:  # noqa: BLE001
                addrs.append("0x" + a.hex())
        out["reservation"] = {
            "expire": r.expire,
            "expire_in_s": r.expire - int(time.time()),
            "addrs": addrs,
            "voucher_len": len(r.voucher) if r.HasField("voucher") else None,
            # the signed envelope exactly as it was on the wire (see check_voucher)
            "voucher_hex": r.voucher.hex() if r.HasField("voucher") else None,
        }
    else:
        out["reservation"] = None
    if msg.HasField("limit"):
        out["limit"] = {
            "duration": msg.limit.duration if msg.limit.HasField("duration") else None,
            "data": msg.limit.data if msg.limit.HasField("data") else None,
        }
    else:
        out["limit"] = None
    return out


def check_voucher(voucher: bytes, relay_id: Any, my_id: Any, expire: int) -> dict:
    """Opens a reservation voucher (a signed envelope, domain ``libp2p-relay-rsvp``, payload
    type 0x0302) with py-libp2p's own envelope code, checks its signature, and that the relay we
    reserved on signed it, that it names that relay and us, and that it expires when the
    reservation does. ``verified`` is the verdict; the other fields say why."""
    from libp2p.peer.envelope import unmarshal_envelope
    from libp2p.peer.id import ID
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import Voucher
    from libp2p.relay.circuit_v2.resources import RELAY_RSVP_DOMAIN, VOUCHER_PAYLOAD_TYPE

    out: dict = {"domain": RELAY_RSVP_DOMAIN, "verified": False, "error": None}
    try:
        env = unmarshal_envelope(voucher)
        signer = ID.from_pubkey(env.public_key)
        out["signer"] = str(signer)
        out["payload_type"] = bytes(env.payload_type).hex()
        try:
            env.validate(RELAY_RSVP_DOMAIN)  # raises ValueError on a bad signature
            out["signature_ok"] = True
        except ValueError as e:
            out["signature_ok"] = False
            out["error"] = str(e)
        payload = Voucher()
        payload.ParseFromString(bytes(env.raw_payload))
        out["relay"] = str(ID(payload.relay)) if payload.HasField("relay") else None
        out["peer"] = str(ID(payload.peer)) if payload.HasField("peer") else None
        out["expiration"] = payload.expiration if payload.HasField("expiration") else None
        out["signer_is_relay"] = signer == relay_id
        out["names_relay"] = out["relay"] == str(relay_id)
        out["names_self"] = out["peer"] == str(my_id)
        out["expiration_matches"] = out["expiration"] == expire
        out["verified"] = bool(
            out["signature_ok"]
            and bytes(env.payload_type) == VOUCHER_PAYLOAD_TYPE
            and out["signer_is_relay"]
            and out["names_relay"]
            and out["names_self"]
            and out["expiration_matches"]
        )
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    return out


async def _stop_on_signal(done: Any) -> None:
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        async for _ in sigs:
            done.set()
            return


async def main(args: argparse.Namespace) -> int:
    import multiaddr
    import trio
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
    from libp2p.relay.circuit_v2.transport import CircuitV2Transport
    from libp2p.tools.anyio_service import background_trio_service

    relay_ma = multiaddr.Multiaddr(args.relay)
    relay_info = info_from_p2p_addr(relay_ma)
    relay_id = relay_info.peer_id

    listen = [] if args.listen == "none" else [args.listen]
    host, maddrs = make_host(listen, muxer=args.muxer, security=args.security)
    my_id = host.get_id()
    transfers = 0
    done = trio.Event()

    async def handle_transfer(stream: Any) -> None:
        nonlocal transfers
        peer = str(stream.muxed_conn.peer_id)
        try:
            with trio.fail_after(args.transfer_timeout):
                res = await run_transfer(stream, "listener", max_bytes=args.max_bytes)
            emit("transfer", role="listener", peer=peer, **res)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, trio.Cancelled):
                raise
            emit("transfer", role="listener", peer=peer, ok=False,
                 message=describe_exc(e))
            try:
                await stream.reset()
            except Exception:  # noqa: BLE001
                pass
        transfers += 1
        if args.exit_after and transfers >= args.exit_after:
            done.set()

    # STOP role only (+ CLIENT so reserve() is allowed to refresh); no HOP.
    config = RelayConfig(roles=RelayRole.STOP | RelayRole.CLIENT)
    protocol = CircuitV2Protocol(host, limits=config.limits, allow_hop=False)

    async with host.run(listen_addrs=maddrs):
        host.set_stream_handler(PROTOCOL_ID, handle_transfer)
        async with background_trio_service(protocol):  # registers STOP handler
            await protocol.event_started.wait()
            transport = CircuitV2Transport(host, protocol, config)
            async with trio.open_nursery() as nursery:
                with trio.fail_after(args.connect_timeout):
                    await host.connect(relay_info)
                    raw_stream = await host.new_stream(relay_id, [HOP_ID])
                    rec = RecordingStream(raw_stream)
                    ok = await transport.reserve(rec, relay_id, nursery)
                try:
                    details = describe_hop_status(bytes(rec.read_bytes))
                except Exception as e:  # noqa: BLE001
                    details = {"decode_error": f"{type(e).__name__}: {e}"}
                try:
                    await raw_stream.close()
                except Exception:  # noqa: BLE001
                    pass
                if not ok:
                    emit("error", role="target",
                         message="reservation refused or failed", response=details)
                    return 2
                res = details.get("reservation") or {}
                voucher_check = None
                if res.get("voucher_hex"):
                    voucher_check = check_voucher(bytes.fromhex(res["voucher_hex"]),
                                                  relay_id, my_id, res.get("expire"))
                emit("reserved", role="target", relay=str(relay_id),
                     relay_conn=describe_conn_to(host, relay_id),
                     voucher_check=voucher_check, **details)

                base = str(relay_ma)
                if f"/p2p/{relay_id}" not in base:
                    base = f"{base}/p2p/{relay_id}"
                circuit = f"{base}/p2p-circuit/p2p/{my_id}"
                emit("ready", role="target", peer_id=str(my_id),
                     circuit_addr=circuit, relay=str(relay_id),
                     listen_addrs=host_addrs(host), protocol=PROTOCOL_ID)

                nursery.start_soon(_stop_on_signal, done)
                if args.timeout > 0:
                    with trio.move_on_after(args.timeout):
                        await done.wait()
                else:
                    await done.wait()
                nursery.cancel_scope.cancel()
    emit("exit", role="target", transfers=transfers)
    return 0


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--relay", required=True,
                   help="relay multiaddr including /p2p/<relay id>")
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0",
                   help="own TCP listen addr ('none' to not listen)")
    p.add_argument("--connect-timeout", type=float, default=30,
                   help="max seconds for connect + reservation")
    p.add_argument("--transfer-timeout", type=float, default=120,
                   help="max seconds per incoming transfer")
    p.add_argument("--max-bytes", type=int, default=1 << 30,
                   help="refuse transfers with N larger than this")
    p.add_argument("--exit-after", type=int, default=0,
                   help="exit after serving this many transfers (0 = never)")
    p.add_argument("--timeout", type=float, default=0,
                   help="exit after this many seconds (0 = run until killed)")
    add_common_args(p)
    args = p.parse_args()
    setup_io(args.debug)
    import trio

    if args.timeout > 0:
        start_watchdog(args.timeout + 15, "target")
    try:
        sys.exit(trio.run(main, args))
    except KeyboardInterrupt:
        sys.exit(0)
    except trio.TooSlowError:
        emit("error", role="target",
             message=f"timeout: connect/reserve took > {args.connect_timeout}s")
        sys.exit(1)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, SystemExit):
            raise
        emit("error", role="target", message=describe_exc(e))
        sys.exit(1)


if __name__ == "__main__":
    cli()
