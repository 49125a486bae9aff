#!/usr/bin/env python3
"""Reference values for src/chain/greeks.rs, computed with scipy.

Prints JSON: one object per case with the model, right, inputs, the price at
`vol`, the implied volatility recovered from that price (scipy's brentq to
1e-15), and delta, gamma, theta (per calendar day) and vega (per 1 percentage
point of vol) at that implied volatility; plus cases priced below intrinsic
value, whose "iv" is null.

    python3 -m venv /tmp/gvenv && /tmp/gvenv/bin/pip install scipy
    /tmp/gvenv/bin/python3 tools/greeks_reference.py
"""
import json
import math

from scipy.optimize import brentq
from scipy.stats import norm


def forward(model, s, t, r):
    d = math.exp(-r * t)
    return (s, d) if model == "Black76" else (s / d, d)


def price(model, right, s, k, t, r, vol):
    f, d = forward(model, s, t, r)
    sd = vol * math.sqrt(t)
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if right == "Call":
        return d * (f * norm.cdf(d1) - k * norm.cdf(d2))
    return d * (k * norm.cdf(-d2) - f * norm.cdf(-d1))


def greeks(model, right, s, k, t, r, vol):
    f, d = forward(model, s, t, r)
    sd = vol * math.sqrt(t)
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    pdf = norm.pdf(d1)
    decay = -d * f * pdf * vol / (2 * math.sqrt(t))
    if model == "Black76":
        delta = d * norm.cdf(d1) if right == "Call" else -d * norm.cdf(-d1)
        gamma = d * pdf / (f * sd)
        theta = decay + r * price(model, right, s, k, t, r, vol)
    else:
        if right == "Call":
            delta, carry = norm.cdf(d1), -r * k * d * norm.cdf(d2)
        else:
            delta, carry = -norm.cdf(-d1), r * k * d * norm.cdf(-d2)
        gamma = pdf / (s * sd)
        theta = decay + carry
    return delta, gamma, theta / 365.0, d * f * pdf * math.sqrt(t) / 100.0


HOURS = 1.0 / (365.0 * 24.0)
# (model, right, underlying, strike, years, rate, vol, label)
CASES = [
    # NIFTY-like index options on spot (Black-Scholes).
    ("BlackScholes", "Call", 25800.0, 25800.0, 30 / 365, 0.065, 0.14, "atm"),
    ("BlackScholes", "Put", 25800.0, 25800.0, 30 / 365, 0.065, 0.14, "atm"),
    ("BlackScholes", "Call", 25800.0, 23500.0, 30 / 365, 0.065, 0.18, "deep itm"),
    ("BlackScholes", "Put", 25800.0, 28000.0, 30 / 365, 0.065, 0.18, "deep itm"),
    ("BlackScholes", "Call", 25800.0, 28000.0, 30 / 365, 0.065, 0.18, "deep otm"),
    ("BlackScholes", "Put", 25800.0, 23500.0, 30 / 365, 0.065, 0.18, "deep otm"),
    ("BlackScholes", "Call", 25800.0, 25850.0, 4 * HOURS, 0.065, 0.12, "expiry day"),
    ("BlackScholes", "Put", 25800.0, 25700.0, 4 * HOURS, 0.065, 0.12, "expiry day"),
    ("BlackScholes", "Call", 1450.0, 1500.0, 90 / 365, 0.065, 0.25, "stock"),
    ("BlackScholes", "Put", 1450.0, 1400.0, 1.0, 0.065, 0.25, "stock, a year"),
    # CRUDEOIL-like options on futures (Black-76).
    ("Black76", "Call", 6000.0, 6000.0, 20 / 365, 0.065, 0.30, "atm"),
    ("Black76", "Put", 6000.0, 6000.0, 20 / 365, 0.065, 0.30, "atm"),
    ("Black76", "Call", 6000.0, 5000.0, 20 / 365, 0.065, 0.35, "deep itm"),
    ("Black76", "Put", 6000.0, 7100.0, 20 / 365, 0.065, 0.35, "deep itm"),
    ("Black76", "Call", 6000.0, 7100.0, 20 / 365, 0.065, 0.35, "deep otm"),
    ("Black76", "Put", 6000.0, 5000.0, 20 / 365, 0.065, 0.35, "deep otm"),
    ("Black76", "Call", 6000.0, 6050.0, 3 * HOURS, 0.065, 0.28, "expiry day"),
    ("Black76", "Put", 6000.0, 5950.0, 3 * HOURS, 0.065, 0.28, "expiry day"),
]


def main():
    out = []
    for model, right, s, k, t, r, vol, label in CASES:
        p = price(model, right, s, k, t, r, vol)
        iv = brentq(
            lambda v: price(model, right, s, k, t, r, v) - p, 1e-4, 5.0, xtol=1e-15, rtol=1e-15
        )
        delta, gamma, theta, vega = greeks(model, right, s, k, t, r, iv)
        out.append(dict(model=model, right=right, underlying=s, strike=k, years=t, rate=r,
                        vol=vol, label=label, price=p, iv=iv, delta=delta, gamma=gamma,
                        theta=theta, vega=vega))
    # Below intrinsic: no implied volatility exists.
    for model, right, s, k, t, r in [
        ("BlackScholes", "Call", 25800.0, 25000.0, 30 / 365, 0.065),
        ("BlackScholes", "Put", 25800.0, 27000.0, 30 / 365, 0.065),
        ("Black76", "Call", 6000.0, 5500.0, 20 / 365, 0.065),
        ("Black76", "Put", 6000.0, 6500.0, 20 / 365, 0.065),
    ]:
        f, d = forward(model, s, t, r)
        intrinsic = d * max(f - k if right == "Call" else k - f, 0.0)
        out.append(dict(model=model, right=right, underlying=s, strike=k, years=t, rate=r,
                        label="below intrinsic", price=intrinsic - 1.0, iv=None))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
