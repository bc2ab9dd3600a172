#!/usr/bin/env python3
"""End-to-end check on 127.0.0.1: relay + py target + py source.

  e2e.py                          # relay = py-libp2p hop (relay.py)
  e2e.py --relay rust             # relay = Rust example binary (relay_node)
  e2e.py --relay mock --relay-extra "--limit zero --reservation no-voucher"
                                  # scriptable relay probing the py client
  e2e.py --relay-addr /ip4/127.0.0.1/tcp/P/p2p/ID   # an already running relay

Scenarios:
  transfer-<N>   target reserves, source dials through the relay, N bytes each
                 way, hashes checked on both sides (default sizes 1 KiB, 4 MiB)
  no-reservation source dials a peer that holds no reservation -> must fail
                 quickly with an error event (relay answers NO_RESERVATION)

Prints one JSON line per scenario on stdout and, last, the plain line
'N passed, N failed'. Exit code 0 iff nothing failed. Every child process is
started by this script and is killed by it (by pid) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RUST_BIN = os.path.normpath(
    os.path.join(HERE, "..", "..", "target", "debug", "examples", "relay_node"))
PY = sys.executable


class Proc:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, name: str, argv: list[str], logdir: str) -> None:
        self.name = name
        self.argv = argv
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.all_lines: list[str] = []
        self.err_path = os.path.join(logdir, f"{name}.stderr")
        self._err = open(self.err_path, "wb")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._err,
                                  stdin=subprocess.DEVNULL, cwd=HERE)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.all_lines.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        """Next stdout line, or None on EOF; raises TimeoutError."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        try:
            return self.lines.get(timeout=left)
        except queue.Empty:
            raise TimeoutError from None

    def wait_event(self, events: set[str], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(deadline)
            if line is None:
                raise RuntimeError(f"{self.name} exited (rc={self.p.wait()}) "
                                   f"before {events}; stderr: {self.stderr_tail()}")
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") in events:
                return obj

    def stderr_tail(self, n: int = 600) -> str:
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self._err.close()


def start_relay(args: argparse.Namespace, logdir: str, procs: list[Proc]) -> str:
    if args.relay_addr:
        return args.relay_addr
    if args.relay in ("py", "mock"):
        script = "relay.py" if args.relay == "py" else "mock_relay.py"
        pr = Proc("relay", [PY, script, "--listen", "/ip4/127.0.0.1/tcp/0"]
                  + args.relay_extra, logdir)
        procs.append(pr)
        ev = pr.wait_event({"ready", "error"}, args.start_timeout)
        if ev["event"] != "ready":
            raise RuntimeError(f"relay error: {ev}")
        return ev["addrs"][0]
    # Rust example: prints each listen multiaddr (with /p2p/<id>) on its own line
    if args.relay_cmd:
        argv = shlex.split(args.relay_cmd)
    else:
        binary = args.relay_bin
        if not os.path.exists(binary):
            raise RuntimeError(f"rust relay binary not found: {binary}")
        key_file = os.path.join(logdir, "relay.key")
        argv = [binary, "--listen", "/ip4/127.0.0.1/tcp/0", "--key-file", key_file,
                "--bandwidth", str(args.bandwidth)] + args.relay_extra
    pr = Proc("relay", argv, logdir)
    procs.append(pr)
    deadline = time.monotonic() + args.start_timeout
    pat = re.compile(r"(/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+)")
    while True:
        line = pr.next_line(deadline)
        if line is None:
            raise RuntimeError(f"rust relay exited rc={pr.p.wait()} without printing "
                               f"a listen addr; stderr: {pr.stderr_tail()}")
        m = pat.search(line)
        if m:
            return m.group(1)


def run_source(target: str, nbytes: int, timeout: float, logdir: str, name: str,
               extra: list[str]) -> tuple[int, list[dict], Proc]:
    pr = Proc(name, [PY, "source.py", "--target", target, "--bytes", str(nbytes),
                     "--timeout", str(timeout)] + extra, logdir)
    try:
        rc = pr.p.wait(timeout=timeout + 15)
    except subprocess.TimeoutExpired:
        pr.stop()
        rc = -999
    time.sleep(0.05)
    events = []
    for line in pr.all_lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "non-json", "line": line})
    pr.stop()
    return rc, events, pr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relay", choices=["py", "rust", "mock"], default="py")
    ap.add_argument("--relay-bin", default=DEFAULT_RUST_BIN)
    ap.add_argument("--relay-cmd", default="",
                    help="any relay command printing '<multiaddr>/p2p/<id>' lines "
                         "(implies --relay rust parsing)")
    ap.add_argument("--relay-addr", default="",
                    help="use an already running relay (multiaddr with /p2p/ID)")
    ap.add_argument("--bandwidth", default="0", help="--bandwidth for the rust relay")
    ap.add_argument("--relay-extra", default="",
                    help="extra args (one string, split on spaces) for the relay")
    ap.add_argument("--show-relay-events", action="store_true",
                    help="print the relay's own JSON events at the end")
    ap.add_argument("--sizes", default="1024,4194304",
                    help="comma-separated transfer sizes in bytes")
    ap.add_argument("--timeout", type=float, default=60, help="per-source timeout")
    ap.add_argument("--start-timeout", type=float, default=30)
    ap.add_argument("--no-negative", action="store_true",
                    help="skip the no-reservation scenario")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    args.relay_extra = args.relay_extra.split()
    if args.relay_cmd:
        args.relay = "rust"

    logdir = tempfile.mkdtemp(prefix="macula-py-e2e-")
    procs: list[Proc] = []
    passed = failed = 0

    def report(name: str, ok: bool, **kw: object) -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(json.dumps({"scenario": name, "ok": ok, **kw}), flush=True)

    try:
        try:
            relay_addr = start_relay(args, logdir, procs)
            tg = Proc("target", [PY, "target.py", "--relay", relay_addr], logdir)
            procs.append(tg)
            ready = tg.wait_event({"ready", "error"}, args.start_timeout)
            if ready["event"] != "ready":
                raise RuntimeError(f"target: {ready}")
        except Exception as e:  # noqa: BLE001
            report("setup", False, message=f"{type(e).__name__}: {e}",
                   stderr={p.name: p.stderr_tail() for p in procs})
            print(f"{passed} passed, {failed} failed", flush=True)
            return 1
        report("reserve", True, relay=relay_addr, circuit_addr=ready["circuit_addr"],
               reserved=next((json.loads(l) for l in tg.all_lines
                              if '"reserved"' in l), None))

        for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
            name = f"transfer-{n}"
            rc, events, src = run_source(ready["circuit_addr"], n, args.timeout,
                                         logdir, name, [])
            res = next((e for e in events if e.get("event") == "result"), None)
            err = next((e for e in events if e.get("event") == "error"), None)
            try:
                lst = tg.wait_event({"transfer"}, 10)
            except Exception as e:  # noqa: BLE001
                lst = {"ok": False, "message": f"no listener transfer event: {e}"}
            ok = (rc == 0 and res is not None and res.get("ok") is True
                  and lst.get("ok") is True and lst.get("bytes") == n
                  and lst.get("received_sha256") == res.get("sent_sha256")
                  and lst.get("sent_sha256") == res.get("received_sha256"))
            report(name, ok, rc=rc,
                   source={k: res.get(k) for k in ("ok", "bytes", "elapsed_s",
                                                   "connect_s", "transfer_s",
                                                   "mib_per_s", "sent_sha256",
                                                   "received_sha256")} if res else err,
                   listener={k: lst.get(k) for k in ("ok", "bytes", "message",
                                                     "received_sha256")},
                   stderr=None if ok else src.stderr_tail())

        if not args.no_negative:
            # a syntactically valid peer id that holds no reservation
            bogus = "12D3KooWDqjmEArt1jkvNAD3mnDapPgHrXxdyTuCNmxqHWja3R9F"
            t0 = time.monotonic()
            rc, events, src = run_source(f"{relay_addr}/p2p-circuit/p2p/{bogus}", 16,
                                         min(args.timeout, 30), logdir,
                                         "no-reservation", [])
            dt = time.monotonic() - t0
            err = next((e for e in events if e.get("event") == "error"), None)
            ok = rc not in (0, -999) and err is not None and dt < 25
            report("no-reservation", ok, rc=rc, seconds=round(dt, 2),
                   error=err.get("message") if err else None)
    finally:
        for p in reversed(procs):
            p.stop()
        if args.show_relay_events:
            for p in procs:
                if p.name == "relay":
                    for line in p.all_lines:
                        print(json.dumps({"relay_event": line}), flush=True)
        if not args.keep_logs and failed == 0:
            for f in os.listdir(logdir):
                os.unlink(os.path.join(logdir, f))
            os.rmdir(logdir)
        else:
            print(json.dumps({"logs": logdir}), flush=True)

    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
