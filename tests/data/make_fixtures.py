#!/usr/bin/env python3
"""Writes the instrument masters used by the relay's tests and demo mode.

    python3 tests/data/make_fixtures.py

Outputs (deterministic; commit them):
  src/instrument/sample-master.csv      clean, embedded in the binary (demo mode)
  tests/data/scrip-master.csv           the sample plus more rows and every quirk:
                                        CRLF, quoted fields, extra columns, bad rows,
                                        segments the feed does not carry
  tests/data/scrip-master-shuffled.csv  the sample with the columns in another order

Shapes follow DhanHQ's compact api-scrip-master.csv. Contracts straddle
2026-11-22 (the date the tests use as "today"): some expired, the nearest a
few days out. Security ids are realistic in size, not DhanHQ's real ones
(except the few well-known ones: NIFTY 13, SENSEX 51, RELIANCE 2885/500325).
"""
import datetime as dt
import os
import random

COLUMNS = ["SEM_EXM_EXCH_ID", "SEM_SEGMENT", "SEM_SMST_SECURITY_ID", "SEM_INSTRUMENT_NAME",
           "SEM_EXPIRY_CODE", "SEM_TRADING_SYMBOL", "SEM_LOT_UNITS", "SEM_CUSTOM_SYMBOL",
           "SEM_EXPIRY_DATE", "SEM_STRIKE_PRICE", "SEM_OPTION_TYPE", "SEM_TICK_SIZE",
           "SEM_EXPIRY_FLAG", "SEM_EXCH_INSTRUMENT_TYPE", "SEM_SERIES", "SM_SYMBOL_NAME"]

MON = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def d(s):
    return dt.date.fromisoformat(s)


def row(exch, seg, sid, inst, ts, lot, cs, expiry="", strike="", opt="", tick="5.0000",
        flag="NA", etype="", series="NA", name="", code=""):
    return {"SEM_EXM_EXCH_ID": exch, "SEM_SEGMENT": seg, "SEM_SMST_SECURITY_ID": str(sid),
            "SEM_INSTRUMENT_NAME": inst, "SEM_EXPIRY_CODE": code, "SEM_TRADING_SYMBOL": ts,
            "SEM_LOT_UNITS": lot, "SEM_CUSTOM_SYMBOL": cs, "SEM_EXPIRY_DATE": expiry,
            "SEM_STRIKE_PRICE": strike, "SEM_OPTION_TYPE": opt, "SEM_TICK_SIZE": tick,
            "SEM_EXPIRY_FLAG": flag, "SEM_EXCH_INSTRUMENT_TYPE": etype or inst,
            "SEM_SERIES": series, "SM_SYMBOL_NAME": name}


def index(exch, sid, ts, cs, name):
    return row(exch, "I", sid, "INDEX", ts, "1.0", cs, tick="0.0000", etype="INDEX",
               series="X", name=name)


def equity(exch, sid, ts, cs, name, series=None, expiry=""):
    return row(exch, "E", sid, "EQUITY", ts, "1.0", cs, expiry=expiry,
               etype="ES" if exch == "NSE" else "EQ",
               series=series or ("EQ" if exch == "NSE" else "A"), name=name)


def future(exch, seg, sid, inst, under, expiry, lot, time="14:30:00", code=0, ts_day=False,
           name=None, tick="5.0000"):
    e = d(expiry)
    mon = e.strftime("%b")
    ts = f"{under}-{e.day:02d}{mon}{e.year}-FUT" if ts_day else f"{under}-{mon}{e.year}-FUT"
    return row(exch, seg, sid, inst, ts, lot, f"{under} {MON[e.month - 1]} FUT",
               expiry=f"{expiry} {time}", strike="-0.01000", opt="XX", tick=tick, flag="M",
               name=name or under, code=str(code))


def option(exch, seg, sid, inst, under, expiry, strike, opt, lot, time="14:30:00", weekly=False,
           ts_day=False, name=None):
    e = d(expiry)
    mon = e.strftime("%b")
    k = f"{strike:g}"
    ts = (f"{under}-{e.day:02d}{mon}{e.year}-{k}-{opt}" if ts_day
          else f"{under}-{mon}{e.year}-{k}-{opt}")
    cs = f"{under} {e.day:02d} {MON[e.month - 1]} {k} {'CALL' if opt == 'CE' else 'PUT'}"
    return row(exch, seg, sid, inst, ts, lot, cs, expiry=f"{expiry} {time}",
               strike=f"{strike:.5f}", opt=opt, flag="W" if weekly else "M",
               name=name or under, code="0")


EQUITIES = [  # NSE id, BSE id, symbol, custom symbol, name
    (2885, 500325, "RELIANCE", "Reliance Industries", "RELIANCE INDUSTRIES LTD"),
    (11536, 532540, "TCS", "TCS", "TATA CONSULTANCY SERV LT"),
    (1333, 500180, "HDFCBANK", "HDFC Bank", "HDFC BANK LTD"),
    (1594, 500209, "INFY", "Infosys", "INFOSYS LIMITED"),
    (4963, 532174, "ICICIBANK", "ICICI Bank", "ICICI BANK LTD."),
    (3045, 500112, "SBIN", "State Bank of India", "STATE BANK OF INDIA"),
    (1660, 500875, "ITC", "ITC", "ITC LTD"),
    (3456, 500570, "TATAMOTORS", "Tata Motors", "TATA MOTORS LIMITED"),
    (3499, 500470, "TATASTEEL", "Tata Steel", "TATA STEEL LIMITED"),
    (16669, 532977, "BAJAJ-AUTO", "Bajaj Auto", "BAJAJ AUTO LIMITED"),
    (11483, 500510, "LT", "Larsen & Toubro", "LARSEN & TOUBRO LTD."),
    (5900, 532215, "AXISBANK", "Axis Bank", "AXIS BANK LIMITED"),
    (3787, 507685, "WIPRO", "Wipro", "WIPRO LTD"),
    (2031, 500520, "M&M", "Mahindra & Mahindra", "MAHINDRA & MAHINDRA LTD"),
    (1394, 500696, "HINDUNILVR", "Hindustan Unilever", "HINDUSTAN UNILEVER LTD."),
    (10604, 532454, "BHARTIARTL", "Bharti Airtel", "BHARTI AIRTEL LIMITED"),
    (1922, 500247, "KOTAKBANK", "Kotak Mahindra Bank", "KOTAK MAHINDRA BANK LTD"),
    (3351, 524715, "SUNPHARMA", "Sun Pharma", "SUN PHARMACEUTICAL IND L"),
]

MORE_EQUITIES = [  # fixture only
    (15083, 532921, "ADANIPORTS", "Adani Ports", "ADANI PORTS AND SPECIAL ECONOMIC ZONE, LTD"),
    (25, 512599, "ADANIENT", "Adani Enterprises", "ADANI ENTERPRISES LIMITED"),
    (236, 500820, "ASIANPAINT", "Asian Paints", "ASIAN PAINTS LIMITED"),
    (317, 500034, "BAJFINANCE", "Bajaj Finance", "BAJAJ FINANCE LIMITED"),
    (16675, 532978, "BAJAJFINSV", "Bajaj Finserv", "BAJAJ FINSERV LTD."),
    (526, 500547, "BPCL", "BPCL", "BHARAT PETROLEUM CORP  LT"),
    (547, 500825, "BRITANNIA", "Britannia", "BRITANNIA INDUSTRIES LTD"),
    (694, 500087, "CIPLA", "Cipla", "CIPLA LTD"),
    (20374, 533278, "COALINDIA", "Coal India", "COAL INDIA LTD"),
    (881, 500124, "DRREDDY", "Dr Reddys Lab", "DR. REDDY S LABORATORIES"),
    (910, 505200, "EICHERMOT", "Eicher Motors", "EICHER MOTORS LTD"),
    (1232, 500300, "GRASIM", "Grasim", "GRASIM INDUSTRIES LTD"),
    (7229, 532281, "HCLTECH", "HCL Tech", "HCL TECHNOLOGIES LTD"),
    (467, 500010, "HDFCLIFE", "HDFC Life", "HDFC LIFE INS CO LTD"),
    (1348, 500182, "HEROMOTOCO", "Hero Motocorp", "HERO MOTOCORP LIMITED"),
    (1363, 500440, "HINDALCO", "Hindalco", "HINDALCO  INDUSTRIES  LTD"),
    (5258, 532187, "INDUSINDBK", "IndusInd Bank", "INDUSIND BANK LIMITED"),
    (11723, 500228, "JSWSTEEL", "JSW Steel", "JSW STEEL LIMITED"),
    (10999, 532500, "MARUTI", "Maruti Suzuki", "MARUTI SUZUKI INDIA LTD."),
    (17963, 500790, "NESTLEIND", "Nestle", "NESTLE INDIA LIMITED"),
    (11630, 532555, "NTPC", "NTPC", "NTPC LTD"),
    (2475, 500312, "ONGC", "ONGC", "OIL AND NATURAL GAS CORP."),
    (14977, 532898, "POWERGRID", "Power Grid", "POWER GRID CORP. LTD."),
    (21808, 540719, "SBILIFE", "SBI Life", "SBI LIFE INSURANCE CO LTD"),
    (3432, 500800, "TATACONSUM", "Tata Consumer", "TATA CONSUMER PRODUCT LTD"),
    (13538, 532755, "TECHM", "Tech Mahindra", "TECH MAHINDRA LIMITED"),
    (3506, 500114, "TITAN", "Titan", "TITAN COMPANY LIMITED"),
    (11532, 532538, "ULTRACEMCO", "UltraTech Cement", "ULTRATECH CEMENT LIMITED"),
    (14366, 532822, "IDEA", "Vodafone Idea", "VODAFONE IDEA LIMITED"),
    (3063, 500113, "SAIL", "SAIL", "STEEL AUTHORITY OF INDIA"),
    (9480, 532488, "DIVISLAB", "Divis Lab", "DIVI S LABORATORIES LTD"),
    (4717, 500271, "MFSL", "Max Financial", "MAX FINANCIAL SERV LTD"),
    (13611, 532810, "PFC", "Power Finance", "POWER FIN CORP LTD."),
    (15355, 532955, "RECLTD", "REC", "REC LIMITED"),
    (2963, 500550, "SIEMENS", "Siemens", "SIEMENS LTD"),
    (1023, 500116, "IDBI", "IDBI Bank", "IDBI BANK LIMITED"),
    (4668, 532149, "BANKINDIA", "Bank of India", "BANK OF INDIA"),
    (10794, 532483, "CANBK", "Canara Bank", "CANARA BANK"),
    (2263, 500260, "BANDHANBNK", "Bandhan Bank", "BANDHAN BANK LIMITED"),
    (6364, 532532, "JPASSOCIAT", "JP Associates", "JAIPRAKASH ASSOCIATES LTD"),
]

NSE_IDX_FUT = ["2026-10-27", "2026-11-24", "2026-12-29", "2027-01-26"]
BSE_IDX_FUT = ["2026-10-29", "2026-11-26", "2026-12-31", "2027-01-28"]
NIFTY_WEEKLY = ["2026-11-17", "2026-11-24", "2026-12-01", "2026-12-08", "2026-12-29"]
CRUDE_FUT = ["2026-10-19", "2026-11-19", "2026-12-18", "2027-01-19", "2027-02-18",
             "2027-03-19", "2027-04-20", "2027-05-19", "2027-06-18", "2027-07-20",
             "2027-08-19", "2027-09-20", "2027-10-19", "2027-11-18"]
CRUDE_OPT = ["2026-11-17", "2026-12-16", "2027-01-15"]


def sample_rows():
    rows = [
        index("NSE", 13, "NIFTY", "Nifty 50", "NIFTY"),
        index("NSE", 25, "BANKNIFTY", "Nifty Bank", "BANKNIFTY"),
        index("NSE", 27, "FINNIFTY", "Nifty Fin Service", "FINNIFTY"),
        index("NSE", 442, "MIDCPNIFTY", "Nifty Midcap Select", "MIDCPNIFTY"),
        index("NSE", 21, "INDIA VIX", "India VIX", "INDIA VIX"),
        index("NSE", 29, "NIFTYIT", "Nifty IT", "NIFTY IT"),
        index("BSE", 51, "SENSEX", "SENSEX", "SENSEX"),
        index("BSE", 69, "BANKEX", "BANKEX", "BANKEX"),
    ]
    for nse, bse, sym, cs, name in EQUITIES:
        rows.append(equity("NSE", nse, sym, cs, name))
        rows.append(equity("BSE", bse, sym, cs, name))
    # NSE index and stock futures, near/next/far (+ one expired).
    sid = 52000
    for under, lot, tick in [("NIFTY", "75.0", "10.0000"), ("BANKNIFTY", "35.0", "20.0000"),
                             ("FINNIFTY", "65.0", "10.0000")]:
        for i, e in enumerate(NSE_IDX_FUT):
            rows.append(future("NSE", "D", sid, "FUTIDX", under, e, lot, code=max(i - 1, 0),
                               tick=tick))
            sid += 1
    for under, lot in [("RELIANCE", "500.0"), ("TCS", "175.0"), ("HDFCBANK", "550.0"),
                       ("SBIN", "750.0"), ("TATASTEEL", "5500.0")]:
        for i, e in enumerate(NSE_IDX_FUT):
            rows.append(future("NSE", "D", sid, "FUTSTK", under, e, lot, code=max(i - 1, 0)))
            sid += 1
    # NIFTY weekly + monthly options.
    sid = 60000
    for e in NIFTY_WEEKLY:
        for k in (25000, 25500, 26000):
            for o in ("CE", "PE"):
                rows.append(option("NSE", "D", sid, "OPTIDX", "NIFTY", e, k, o, "75.0",
                                   weekly=e != "2026-12-29"))
                sid += 1
    for e in ["2026-11-24", "2026-12-29"]:
        for k in (57000, 58000):
            for o in ("CE", "PE"):
                rows.append(option("NSE", "D", sid, "OPTIDX", "BANKNIFTY", e, k, o, "35.0"))
                sid += 1
        for k in (1500, 1600):
            for o in ("CE", "PE"):
                rows.append(option("NSE", "D", sid, "OPTSTK", "RELIANCE", e, k, o, "500.0"))
                sid += 1
    # BSE index futures and options.
    sid = 1100000
    for i, e in enumerate(BSE_IDX_FUT):
        rows.append(future("BSE", "D", sid, "FUTIDX", "SENSEX", e, "20.0", code=max(i - 1, 0)))
        sid += 1
        rows.append(future("BSE", "D", sid, "FUTIDX", "BANKEX", e, "30.0", code=max(i - 1, 0)))
        sid += 1
    for e in ["2026-11-26", "2026-12-03"]:
        for k in (84000, 85000):
            for o in ("CE", "PE"):
                rows.append(option("BSE", "D", sid, "OPTIDX", "SENSEX", e, k, o, "20.0",
                                   weekly=True))
                sid += 1
    # MCX commodities: monthly crude and mini crude a year out, options on futures.
    sid = 472780
    for i, e in enumerate(CRUDE_FUT):
        rows.append(future("MCX", "M", sid, "FUTCOM", "CRUDEOIL", e, "100.0", time="23:30:00",
                           code=max(i - 1, 0), ts_day=True, tick="100.0000"))
        rows.append(future("MCX", "M", sid + 1, "FUTCOM", "CRUDEOILM", e, "10.0",
                           time="23:30:00", code=max(i - 1, 0), ts_day=True, tick="100.0000"))
        sid += 7
    sid = 480100
    for e in CRUDE_OPT:
        for k in (5400, 5500, 5600):
            for o in ("CE", "PE"):
                rows.append(option("MCX", "M", sid, "OPTFUT", "CRUDEOIL", e, k, o, "100.0",
                                   time="23:30:00", ts_day=True))
                sid += 1
    sid = 481000
    for under, lot, dates in [
            ("NATURALGAS", "1250.0", ["2026-11-24", "2026-12-28", "2027-01-26"]),
            ("NATGASMINI", "250.0", ["2026-11-24", "2026-12-28", "2027-01-26"]),
            ("GOLD", "100.0", ["2026-12-04", "2027-02-05", "2027-04-05"]),
            ("GOLDM", "10.0", ["2026-12-03", "2027-01-05", "2027-02-04"]),
            ("SILVER", "30.0", ["2026-12-04", "2027-03-05", "2027-05-05"]),
            ("SILVERM", "5.0", ["2026-11-30", "2027-02-26", "2027-04-30"]),
            ("COPPER", "2500.0", ["2026-11-30", "2026-12-31", "2027-01-29"])]:
        for i, e in enumerate(dates):
            rows.append(future("MCX", "M", sid, "FUTCOM", under, e, lot, time="23:30:00",
                               code=i, ts_day=True, tick="100.0000"))
            sid += 1
    # Currency derivatives on both exchanges.
    sid = 8000
    for exch, base in (("NSE", 8000), ("BSE", 1200)):
        sid = base
        for under in ("USDINR", "EURINR", "GBPINR"):
            for i, e in enumerate(["2026-11-26", "2026-12-29", "2027-01-27"]):
                rows.append(future(exch, "C", sid, "FUTCUR", under, e, "1.0", time="12:30:00",
                                   code=i, ts_day=True, tick="0.2500"))
                sid += 1
    sid = 9100
    for k in (84.0, 84.25):
        for o in ("CE", "PE"):
            rows.append(option("NSE", "C", sid, "OPTCUR", "USDINR", "2026-11-27", k, o, "1.0",
                               time="12:30:00", weekly=True, ts_day=True))
            sid += 1
    return rows


def fixture_extra_rows():
    rows = []
    for nse, bse, sym, cs, name in MORE_EQUITIES:
        rows.append(equity("NSE", nse, sym, cs, name, expiry="0001-01-01"))
        rows.append(equity("BSE", bse, sym, cs, name))
    # Partly paid Tata Steel: same company name as TATASTEEL (an ambiguity).
    rows.append(equity("NSE", 5098, "TATASTLPP", "Tata Steel PP", "TATA STEEL LIMITED",
                       series="E1"))
    # A quote inside a quoted field, and a date-only expiry.
    rows.append(equity("BSE", 501425, "BBTC", "Bombay Burmah", 'THE "BOMBAY BURMAH" TRADING, CORP'))
    rows.append(row("NSE", "D", 61900, "FUTSTK", "INFY-Nov2026-FUT", "400.0", "INFY NOV FUT",
                    expiry="2026-11-24", strike="-0.01000", opt="XX", flag="M", name="INFY",
                    code="0"))
    # Look-alike crude contracts on exchanges the feed does not carry (NSE/BSE
    # commodity segments): nearer than MCX's, and must never be chosen.
    rows.append(future("NSE", "M", 600101, "FUTCOM", "CRUDEOIL", "2026-11-23", "100.0",
                       time="23:30:00", ts_day=True))
    rows.append(future("NSE", "M", 600102, "FUTCOM", "CRUDEOIL", "2026-12-17", "100.0",
                       time="23:30:00", ts_day=True))
    rows.append(future("BSE", "M", 700101, "FUTCOM", "CRUDEOIL", "2026-11-23", "100.0",
                       time="23:30:00", ts_day=True))
    # More NIFTY options to bulk the file out.
    sid = 70000
    for e in NIFTY_WEEKLY[1:4]:
        for k in range(24000, 27001, 250):
            if k % 500 == 0 and k in (25000, 25500, 26000):
                continue
            for o in ("CE", "PE"):
                rows.append(option("NSE", "D", sid, "OPTIDX", "NIFTY", e, k, o, "75.0",
                                   weekly=True))
                sid += 1
    return rows


def bad_rows():
    """(row or raw line, why): every one must be reported with its line, none fatal."""
    eq = lambda **kw: dict(equity("NSE", 99900, "BADROW", "Bad Row", "BAD ROW LTD"), **kw)
    return [
        (eq(SEM_SMST_SECURITY_ID="ABC"), "security id"),
        (dict(future("MCX", "M", 123, "FUTCOM", "GUARSEED", "2026-12-18", "10.0"),
              SEM_EXM_EXCH_ID="NCDEX"), "exchange"),
        ("NSE,E,99901,EQUITY,,SHORTROW,1.0", "fields"),
        (dict(future("NSE", "D", 99902, "FUTSTK", "BADDATE", "2026-11-24", "100.0"),
              SEM_EXPIRY_DATE="2026-13-45 14:30:00"), "expiry"),
        (eq(SEM_SMST_SECURITY_ID="99903", SEM_TRADING_SYMBOL=""), "trading symbol"),
        ('NSE,E,99904,EQUITY,,"UNTERMINATED,1.0,x,,,,5.0000,NA,ES,EQ,X', "quote"),
        (eq(SEM_SMST_SECURITY_ID="99905", SEM_SEGMENT="X"), "segment"),
        (eq(SEM_SMST_SECURITY_ID="99906", SEM_LOT_UNITS="many"), "lot"),
        # Last in the file, so the real RELIANCE row comes first.
        (eq(SEM_SMST_SECURITY_ID="2885", SEM_TRADING_SYMBOL="RELIANCE2"), "duplicate"),
    ]


def csv_field(v):
    if any(c in v for c in ',"\r\n'):
        return '"' + v.replace('"', '""') + '"'
    return v


def write(path, columns, rows, eol="\n", bad=(), quote_all_names=False):
    with open(path, "w", newline="") as f:
        f.write(",".join(columns) + eol)
        for i, r in enumerate(rows):
            fields = []
            for c in columns:
                v = r.get(c, "")
                if quote_all_names and c == "SM_SYMBOL_NAME" and i % 3 == 0:
                    fields.append('"' + v.replace('"', '""') + '"')
                else:
                    fields.append(csv_field(v))
            f.write(",".join(fields) + eol)
            # Spread the bad lines through the file.
            if len(bad) > 1 and i % 40 == 20:
                f.write(render_bad(bad.pop(0), columns) + eol)
        for b in bad:
            f.write(render_bad(b, columns) + eol)


def render_bad(bad, columns):
    line, _ = bad
    if isinstance(line, str):
        return line
    return ",".join(csv_field(line.get(c, "")) for c in columns)


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    sample = sample_rows()
    write(os.path.join(root, "src/instrument/sample-master.csv"), COLUMNS, sample)
    # The fixture: extra columns (one in the middle, one at the end), CRLF,
    # quoted fields, bad rows; shuffled row order.
    rng = random.Random(5)
    rows = sample + fixture_extra_rows()
    rng.shuffle(rows)
    cols = COLUMNS[:8] + ["SEM_ISIN"] + COLUMNS[8:] + ["SEM_UNDERLYING_ID"]
    write(os.path.join(root, "tests/data/scrip-master.csv"), cols,
          [dict(r, SEM_ISIN="INE0000000" + r["SEM_SMST_SECURITY_ID"][-2:].zfill(2),
                SEM_UNDERLYING_ID="") for r in rows],
          eol="\r\n", bad=bad_rows(), quote_all_names=True)
    shuffled = COLUMNS[:]
    random.Random(7).shuffle(shuffled)
    write(os.path.join(root, "tests/data/scrip-master-shuffled.csv"), shuffled, sample)
    print(f"sample: {len(sample)} rows; fixture: {len(rows)} rows + {len(bad_rows())} bad")


if __name__ == "__main__":
    main()
