#!/usr/bin/env python3
"""Order round trips through the relay against the same calls straight to
the broker, alternating, in one run: what the relay adds to an order (the
front door, the channel to the broker thread, parsing, the guards, the
audit record, the answer back).

Start a paper broker and a relay in front of it, then run this:

    dhan-relay sim --rate 200          # prints the feed URL; REST and order-update URLs on stderr
    DHAN_CLIENT_ID=1000000001 DHAN_ACCESS_TOKEN=paper dhan-relay run \\
        --feed-url ws://127.0.0.1:FEED --rest-url http://127.0.0.1:REST \\
        --config trading.toml         # [trading] enabled = true, order_stream_url = ...
    python3 tools/order_latency.py --relay http://127.0.0.1:8000 \\
        --broker http://127.0.0.1:REST --orders 100

Each side places `--orders` MARKET orders of 1 RELIANCE (BUY and SELL
alternating, so the paper account stays flat), at most 9 a second (DhanHQ's
limit is 10), on one kept-alive connection each. Prints one JSON line:
per side p50/p90/p99/max in microseconds, and the relay's p50 minus the
broker's.
"""
import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse


def connection(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def timed(conn, method, path, body, headers):
    data = json.dumps(body)
    t0 = time.perf_counter()
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    answer = resp.read()
    elapsed = time.perf_counter() - t0
    if resp.status != 200:
        raise SystemExit(f"{method} {path}: HTTP {resp.status}: {answer[:300]!r}")
    return elapsed * 1e6


def summary(samples):
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return {
        "n": len(s),
        "p50": round(statistics.median(s)),
        "p90": round(pick(0.90)),
        "p99": round(pick(0.99)),
        "max": round(s[-1]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--client-id", default="1000000001")
    ap.add_argument("--token", default="paper")
    ap.add_argument("--orders", type=int, default=100)
    a = ap.parse_args()
    relay, broker = connection(a.relay), connection(a.broker)
    json_h = {"Content-Type": "application/json"}
    dhan_h = dict(json_h, **{"access-token": a.token, "client-id": a.client_id})
    times = {"relay": [], "broker": []}
    for i in range(a.orders):
        side = "BUY" if i % 2 == 0 else "SELL"
        mine = {"symbol": "RELIANCE", "side": side, "quantity": 1,
                "orderType": "MARKET", "productType": "INTRADAY"}
        theirs = {"dhanClientId": a.client_id, "transactionType": side, "exchangeSegment": "NSE_EQ",
                  "productType": "INTRADAY", "orderType": "MARKET", "validity": "DAY",
                  "securityId": "2885", "quantity": 1, "price": 0, "triggerPrice": 0}
        # Alternate which goes first, so neither always gets a warm cache.
        order = [("relay", relay, "/api/orders", mine, json_h), ("broker", broker, "/v2/orders", theirs, dhan_h)]
        if i % 2:
            order.reverse()
        for name, conn, path, body, headers in order:
            times[name].append(timed(conn, "POST", path, body, headers))
        time.sleep(0.111)
    out = {k: summary(v) for k, v in times.items()}
    out["relay_adds_p50_us"] = out["relay"]["p50"] - out["broker"]["p50"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
