"""The official DhanHQ Python SDK (`dhanhq`, MarketFeed v2), unchanged,
against the relay's `/dhan` endpoint.

Run by `.ci/sdk-test`, which installs the SDK version docs/dhanhq-protocol.md
names into a venv and starts the relay in demo mode:

    python dhan_sdk_test.py http://127.0.0.1:PORT

Pointing the SDK at the relay: `MarketFeed.connect` builds its URL from the
class attribute `MarketFeed.market_feed_wss` ("wss://api-feed.dhan.co" in
dhanhq 2.3.0, `dhanhq/marketfeed.py`), appending
`?version=2&token=…&clientId=…&authType=2`. Setting that one attribute to
`ws://127.0.0.1:PORT/dhan` is the whole change; nothing of the SDK is
patched or wrapped.

What is checked, with ticker, quote and full subscriptions over several
instruments, a subscription added and one removed while connected, and the
SDK's own disconnect:

- every data packet the SDK decodes (its dicts are printed, as a user of the
  SDK would see them) shows the same values, formatted as the SDK formats
  them, as a message the relay's JSON `/ws` sent for the same instrument
  (subscribed in the same mode by a second client);
- every previous-close packet matches `prevClose`/`prevOi` in `GET /prices`;
- after `unsubscribe_symbols` the instrument stops; after
  `close_connection` the relay has released everything the SDK held.
"""

import json
import struct
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone

from dhanhq import DhanContext
from dhanhq.marketfeed import MarketFeed
from websockets.sync.client import connect as ws_connect

SEGMENTS = {0: "IDX_I", 1: "NSE_EQ", 2: "NSE_FNO", 3: "NSE_CURRENCY", 4: "BSE_EQ",
            5: "MCX_COMM", 7: "BSE_CURRENCY", 8: "BSE_FNO"}
CODE = {v: k for k, v in SEGMENTS.items()}
MODE_NAME = {15: "ticker", 17: "quote", 21: "full"}

# (segment code, security id, RequestCode) as the SDK takes them.
TICKER = [(0, "13", 15), (0, "51", 15)]
QUOTE = [(1, "2885", 17), (1, "1333", 17)]
FULL = [(1, "11536", 21), (2, "52002", 21)]
LATER = [(1, "1594", 17)]  # subscribed while connected
INSTRUMENTS = TICKER + QUOTE + FULL
DEADLINE = time.monotonic() + 150


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def get_json(base, path):
    with urllib.request.urlopen(base + path, timeout=5) as r:
        return json.loads(r.read())


def f2(x):
    """A JSON price as the SDK prints the wire's f32: two decimals."""
    return "{:.2f}".format(struct.unpack("<f", struct.pack("<f", x))[0])


def hms(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S")


class JsonClient:
    """A `/ws` client of the same instruments in the same modes, collecting
    every update, on a thread of its own."""

    def __init__(self, base):
        self.url = base.replace("http://", "ws://") + "/ws"
        self.messages = []
        self.lock = threading.Lock()
        self.ws = ws_connect(self.url)
        for seg, sid, code in INSTRUMENTS + LATER:
            self.ws.send(json.dumps({"type": "subscribe", "mode": MODE_NAME[code], "instruments": [
                {"exchangeSegment": SEGMENTS[seg], "securityId": sid}]}))
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        try:
            for text in self.ws:
                m = json.loads(text)
                if m.get("type") in ("ticker", "quote", "full"):
                    with self.lock:
                        self.messages.append(m)
        except Exception:
            pass

    def of(self, seg, sid):
        with self.lock:
            return [m for m in self.messages
                    if m["exchangeSegment"] == SEGMENTS[seg] and m["securityId"] == str(sid)]


def same_values(sdk, m):
    """Whether the SDK's dict shows what JSON message `m` says."""
    t = sdk["type"]
    if t == "OI Data":
        return m.get("oi") == sdk["OI"]
    if f2(m["ltp"]) != sdk["LTP"] or hms(m["ltt"]) != sdk["LTT"]:
        return False
    if t == "Ticker Data":
        return True
    pairs = [("LTQ", m.get("ltq")), ("volume", m.get("volume")),
             ("total_sell_quantity", m.get("totalSellQuantity")),
             ("total_buy_quantity", m.get("totalBuyQuantity"))]
    prices = ["avg_price", "open", "close", "high", "low"]
    json_name = {"avg_price": "avgPrice"}
    if any(sdk[k] != v for k, v in pairs):
        return False
    if any(m.get(json_name.get(k, k)) is None or f2(m[json_name.get(k, k)]) != sdk[k] for k in prices):
        return False
    if t == "Full Data":
        if (sdk["OI"], sdk["oi_day_high"], sdk["oi_day_low"]) != (m.get("oi"), m.get("oiDayHigh"), m.get("oiDayLow")):
            return False
        for a, b in zip(sdk["depth"], m["depth"]):
            if (a["bid_quantity"], a["ask_quantity"], a["bid_orders"], a["ask_orders"],
                    a["bid_price"], a["ask_price"]) != (
                    b["bidQuantity"], b["askQuantity"], b["bidOrders"], b["askOrders"],
                    f2(b["bidPrice"]), f2(b["askPrice"])):
                return False
    return True


def main():
    base = sys.argv[1].rstrip("/")
    port = base.rsplit(":", 1)[1]
    MarketFeed.market_feed_wss = f"ws://127.0.0.1:{port}/dhan"

    json_client = JsonClient(base)
    time.sleep(0.5)

    feed = MarketFeed(DhanContext("1000000001", "demo-token"), list(INSTRUMENTS), version="v2")
    feed.run_forever()  # connects and subscribes, as in the SDK's README

    seen = []        # (dict) every packet the SDK decoded
    status = 0

    def read(until, stop=None):
        nonlocal status
        while time.monotonic() < until:
            if time.monotonic() > DEADLINE:
                fail("out of time")
            data = feed.get_data()
            if isinstance(data, str):  # "Markets Open": the market-status packet
                status += 1
                print(data, flush=True)
                continue
            if data is None:
                continue
            print(data, flush=True)
            seen.append(data)
            if stop and stop():
                return

    def packets_of(seg, sid, kind=None):
        return [d for d in seen if d.get("exchange_segment") == seg and str(d.get("security_id")) == sid
                and (kind is None or d["type"] == kind)]

    def have_all():
        want = [(s, i, {15: "Ticker Data", 17: "Quote Data", 21: "Full Data"}[c]) for s, i, c in INSTRUMENTS]
        return all(len(packets_of(s, i, k)) >= 2 for s, i, k in want) and \
            all(packets_of(s, i, "Previous Close") for s, i, _ in INSTRUMENTS)

    read(time.monotonic() + 60, have_all)
    if status < 1:
        fail("no market-status packet on connect")
    if not have_all():
        fail("not every instrument sent data in its mode within 60 s")

    # A subscription added and one removed while connected.
    feed.subscribe_symbols(list(LATER))
    seg, sid, _ = LATER[0]
    read(time.monotonic() + 30, lambda: len(packets_of(seg, sid, "Quote Data")) >= 2)
    if len(packets_of(seg, sid, "Quote Data")) < 2:
        fail("no quotes after subscribe_symbols")
    gone = QUOTE[0]
    feed.unsubscribe_symbols([gone])
    read(time.monotonic() + 1.5)   # in flight before the request lands
    mark = len(seen)
    read(time.monotonic() + 3)
    late = [d for d in seen[mark:] if d.get("exchange_segment") == gone[0] and str(d.get("security_id")) == gone[1]]
    if late:
        fail(f"{len(late)} packets for {gone} after unsubscribe_symbols")

    feed.close_connection()

    # Compare with the relay's own views.
    time.sleep(0.5)
    prices = {(i["exchangeSegment"], i["securityId"]): i for i in get_json(base, "/prices")["instruments"]}
    checked = {"Ticker Data": 0, "Quote Data": 0, "Full Data": 0, "OI Data": 0, "Previous Close": 0}
    for d in seen:
        seg, sid, t = d["exchange_segment"], str(d["security_id"]), d["type"]
        if t == "Previous Close":
            p = prices.get((SEGMENTS[seg], sid))
            if p is None or f2(p["prevClose"]) != d["prev_close"] or p.get("prevOi", d["prev_OI"]) != d["prev_OI"]:
                fail(f"previous close {d} differs from /prices {p}")
        elif not any(same_values(d, m) for m in json_client.of(seg, sid)):
            fail(f"the SDK got {d}, which no /ws message for {SEGMENTS[seg]} {sid} showed")
        checked[t] += 1
    for t in ("Ticker Data", "Quote Data", "Full Data", "Previous Close"):
        if checked[t] == 0:
            fail(f"no {t} checked")
    for seg, sid, _ in INSTRUMENTS:
        if (SEGMENTS[seg], sid) not in prices:
            fail(f"/prices has no {SEGMENTS[seg]} {sid}")

    # The SDK's disconnect released its subscriptions (the JSON client still
    # holds the same instruments, so look at the client count instead).
    stats = get_json(base, "/stats")
    clients = stats.get("counters", {}).get("fanout_clients")
    print(f"checked {checked} against /ws and /prices; relay clients now {clients}", flush=True)
    if clients is not None and clients != 1:
        fail(f"expected only the /ws client left, /stats says {clients}")
    json_client.ws.close()
    print("dhan-sdk: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
