#!/usr/bin/env python3
"""What one /ws client gets from option chains: per chain, how many chain
messages arrived and how often, how big they are, the longest silence
between two of them, and how many rows carried an implied volatility.

Start a relay in demo mode with the chains configured, then run this as a
client subscribed to the same chains (`nearest` is the default expiry):

    cat > chains.toml <<'EOF'
    chain_interval_ms = 250
    [[chains]]
    underlying = "NIFTY"
    strikes = 10
    [[chains]]
    underlying = "NIFTY"
    expiry = "next"
    strikes = 10
    [[chains]]
    underlying = "SENSEX"
    strikes = 10
    [[chains]]
    underlying = "NIFTY"
    expiry = "monthly"
    strikes = 10
    EOF
    dhan-relay run --listen 127.0.0.1:8000 --config chains.toml --demo-rate 100000
    python3 tools/chain_load.py --url ws://127.0.0.1:8000/ws --seconds 30 \\
        --chain NIFTY:nearest --chain NIFTY:next --chain SENSEX:nearest --chain NIFTY:monthly

Each `--chain UNDERLYING:EXPIRY` sends one
`{"type":"subscribe_chain","underlying":U,"expiry":E,"strikes":N}`; the
count starts when the subscriptions are sent and runs for `--seconds`.
Prints one JSON line: per chain id (`UNDERLYING:YYYY-MM-DD`, as the chain
messages name it) the messages, their rate per second, their mean size in
bytes, the largest gap between two of them in ms (the first is measured
from the subscription), the rows seen in all, the row sides (ce and pe
counted apart) whose `iv` was not null, how many distinct ATM strikes the
messages named and how often the ATM changed from one message to the next;
plus the server's other messages by type. Standard library only: a
minimal WebSocket client (no TLS, no extensions).
"""
import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.parse


class WebSocket:
    """A client WebSocket: text frames out (masked), frames in."""

    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlparse(url)
        if u.scheme != "ws":
            raise SystemExit(f"{url}: only ws:// is supported")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise SystemExit(f"{url}: upgrade refused: {head.decode(errors='replace')[:300]}")
        self.buf = bytearray(rest)

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self.send(0x1, text.encode())

    def recv(self):
        """The next data message as (opcode, payload); answers pings, joins
        fragments; raises ConnectionError on close."""
        parts, first_op = [], None
        while True:
            b0, b1 = self._take(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            mask = self._take(4) if b1 & 0x80 else None
            payload = self._take(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self.send(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode == 0x8:  # close
                raise ConnectionError(f"server closed: {payload[2:].decode(errors='replace')}")
            if opcode != 0x0:
                first_op = opcode
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def close(self):
        try:
            self.send(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    ap.add_argument("--chain", action="append", required=True, metavar="UNDERLYING:EXPIRY",
                    help="a chain to subscribe (EXPIRY: nearest, next, monthly or YYYY-MM-DD); repeatable")
    ap.add_argument("--strikes", type=int, default=10, help="strikes each side of ATM (default 10)")
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()

    ws = WebSocket(a.url)
    for spec in a.chain:
        underlying, _, expiry = spec.partition(":")
        ws.send_text(json.dumps({"type": "subscribe_chain", "underlying": underlying,
                                 "expiry": expiry or "nearest", "strikes": a.strikes}))
    start = time.monotonic()
    end = start + a.seconds
    chains, others, errors = {}, {}, []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        ws.sock.settimeout(left)
        try:
            _, payload = ws.recv()
        except (socket.timeout, TimeoutError):
            break
        now = time.monotonic()
        msg = json.loads(payload)
        kind = msg.get("type")
        if kind != "chain":
            others[kind] = others.get(kind, 0) + 1
            if kind == "error" and len(errors) < 5:
                errors.append(msg)
            continue
        c = chains.setdefault(msg.get("id"), {"n": 0, "bytes": 0, "last": start, "gap": 0.0,
                                              "rows": 0, "iv": 0, "atm": set(),
                                              "moves": 0, "prev_atm": msg.get("atm")})
        c["n"] += 1
        c["bytes"] += len(payload)
        c["gap"] = max(c["gap"], now - c["last"])
        c["last"] = now
        rows = msg.get("rows") or []
        c["rows"] += len(rows)
        c["iv"] += sum(1 for r in rows for side in ("ce", "pe")
                       if isinstance(r.get(side), dict) and r[side].get("iv") is not None)
        c["atm"].add(msg.get("atm"))
        if msg.get("atm") != c["prev_atm"]:
            c["moves"] += 1
            c["prev_atm"] = msg.get("atm")
    elapsed = time.monotonic() - start
    ws.close()

    out = {"seconds": round(elapsed, 2), "chains": {}}
    for cid, c in sorted(chains.items()):
        out["chains"][cid] = {
            "messages": c["n"],
            "per_s": round(c["n"] / elapsed, 2),
            "mean_bytes": round(c["bytes"] / c["n"]),
            "max_gap_ms": round(c["gap"] * 1000, 1),
            "rows": c["rows"],
            "sides_with_iv": c["iv"],
            "atms_seen": len(c["atm"]),
            "atm_changes": c["moves"],
        }
    out["other_messages"] = others
    if errors:
        out["errors"] = errors
    print(json.dumps(out))
    return 0 if chains else 1


if __name__ == "__main__":
    sys.exit(main())
