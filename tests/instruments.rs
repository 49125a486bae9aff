//! Instruments by name: the scrip master loader on the fixture masters,
//! every resolution rule (including the NSE/MCX crude mix-up and expiry
//! rolls), search, the download-and-cache path against a loopback HTTP
//! server, and the whole engine in demo mode with the embedded sample
//! master. Nothing here touches the network beyond 127.0.0.1.

mod common;
use common::{http_get_json, wait_for, WsClient};

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::instrument::date::ist_instant;
use dhan_relay::instrument::source::{self, Origin, Source, SourceConfig, CACHE_FILE};
use dhan_relay::instrument::watch::{plan_rolls, resolve_watchlist, WatchSpec};
use dhan_relay::instrument::{
    Date, Exchange, Kind, Master, ResolveError, Resolved, ResolvedName, WallClock, Watchlist,
};
use dhan_relay::maintenance::DailySchedule;
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use serde_json::json;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/scrip-master.csv");
const SHUFFLED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/scrip-master-shuffled.csv"
);

fn fixture() -> Master {
    Master::parse(&std::fs::read(FIXTURE).unwrap()).unwrap()
}

fn day(y: i32, m: u32, d: u32) -> Date {
    Date::from_ymd(y, m, d).unwrap()
}

/// "Today" for these tests: 2026-11-22, India.
fn today() -> Date {
    day(2026, 11, 22)
}

fn key(segment: Segment, id: u32) -> InstrumentKey {
    InstrumentKey::new(segment, id)
}

fn resolved(m: &Master, q: &str, on: Date) -> (String, InstrumentKey) {
    let i = m
        .resolve(q, on)
        .unwrap_or_else(|e| panic!("{q:?} on {on}: {e}"));
    (i.symbol().to_string(), i.key())
}

// ---------------------------------------------------------------- loading

#[test]
fn the_fixture_loads_and_reports_every_bad_row_by_line() {
    let m = fixture();
    let r = m.report();
    assert_eq!(r.rows, 816, "{r}");
    assert_eq!(m.len(), 816);
    assert_eq!(r.bad, 9, "{r}");
    let expected = [
        (23, "security id 'ABC'"),
        (64, "unknown exchange 'NCDEX'"),
        (105, "fields where the header has 18"),
        (146, "expiry '2026-13-45 14:30:00'"),
        (187, "empty trading symbol"),
        (228, "no closing quote"),
        (269, "unknown segment 'X'"),
        (310, "SEM_LOT_UNITS 'many'"),
        (383, "duplicate NSE_EQ:2885 (first on line 248)"),
    ];
    let got: Vec<(usize, &str)> = r
        .problems
        .iter()
        .map(|p| (p.line, p.reason.as_str()))
        .collect();
    for ((line, reason), (gl, gr)) in expected.iter().zip(&got) {
        assert_eq!(line, gl, "{got:?}");
        assert!(
            gr.contains(reason),
            "line {line}: {gr:?} should say {reason:?}"
        );
    }
    // The line numbers point at the rows themselves.
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(lines[22].contains(",ABC,"), "{}", lines[22]);
    assert!(lines[382].contains("RELIANCE2"), "{}", lines[382]);
    assert!(lines[247].contains(",RELIANCE,"), "{}", lines[247]);
    // NSE and BSE commodity rows are well-formed but not on the feed.
    let mut unsupported = r.unsupported.clone();
    unsupported.sort();
    assert_eq!(
        unsupported,
        [("BSE M".to_string(), 1), ("NSE M".to_string(), 2)]
    );
    let summary = r.to_string();
    assert!(
        summary.contains("816 instruments") && summary.contains("line 23"),
        "{summary}"
    );
    // Every segment letter arrives at its feed segment.
    for seg in Segment::ALL {
        assert!(m.iter().any(|i| i.key().segment == seg), "no {seg} row");
    }
    // Quoted fields, with commas and escaped quotes; the extra columns are ignored.
    let bbtc = m.get(key(Segment::BseEq, 501425)).unwrap();
    assert_eq!(bbtc.name(), r#"THE "BOMBAY BURMAH" TRADING, CORP"#);
    let ports = m.get(key(Segment::NseEq, 15083)).unwrap();
    assert_eq!(ports.name(), "ADANI PORTS AND SPECIAL ECONOMIC ZONE, LTD");
    assert_eq!(ports.expiry(), None, "0001-01-01 is a placeholder");
    let infy = m.get(key(Segment::NseFno, 61900)).unwrap();
    assert_eq!(infy.expiry(), Some(day(2026, 11, 24)), "date-only expiry");
    let crude = m.get(key(Segment::McxComm, 472794)).unwrap();
    assert_eq!(crude.symbol(), "CRUDEOIL-18Dec2026-FUT");
    assert_eq!(crude.instrument(), "FUTCOM");
    assert_eq!(crude.kind(), Kind::Future);
    assert_eq!(crude.lot_size(), 100.0);
    assert_eq!(crude.underlying(), "CRUDEOIL");
    assert_eq!(crude.exchange(), Exchange::Mcx);
    // The look-alikes on NSE/BSE commodity segments were never loaded.
    assert!(m
        .iter()
        .all(|i| i.key().security_id.0 != 600101 && i.key().security_id.0 != 700101));
}

#[test]
fn shuffled_columns_and_lf_endings_load_the_same_instruments() {
    let sample = Master::sample();
    let shuffled = Master::parse(&std::fs::read(SHUFFLED).unwrap()).unwrap();
    assert_eq!(shuffled.report().bad, 0, "{}", shuffled.report());
    assert_eq!(shuffled.len(), sample.len());
    let fix = fixture();
    for a in sample.iter() {
        for other in [&shuffled, &fix] {
            let b = other.get(a.key()).unwrap_or_else(|| panic!("{a} missing"));
            assert_eq!(
                (
                    a.symbol(),
                    a.name(),
                    a.custom_symbol(),
                    a.instrument(),
                    a.expiry()
                ),
                (
                    b.symbol(),
                    b.name(),
                    b.custom_symbol(),
                    b.instrument(),
                    b.expiry()
                )
            );
            assert_eq!(
                (a.lot_size(), a.strike(), a.option_type()),
                (b.lot_size(), b.strike(), b.option_type())
            );
        }
    }
}

// ------------------------------------------------------------- resolution

#[test]
fn the_default_watchlist_resolves_as_the_replaced_backend_had_it() {
    for m in [Master::sample(), fixture()] {
        assert_eq!(resolved(&m, "NIFTY", today()).1, key(Segment::IdxI, 13));
        assert_eq!(resolved(&m, "SENSEX", today()).1, key(Segment::IdxI, 51));
        assert_eq!(
            resolved(&m, "RELIANCE", today()).1,
            key(Segment::NseEq, 2885)
        );
        assert_eq!(
            resolved(&m, " reliance ", today()).1,
            key(Segment::NseEq, 2885)
        );
        assert_eq!(
            resolved(&m, "BSE:RELIANCE", today()).1,
            key(Segment::BseEq, 500325)
        );
        assert_eq!(
            resolved(&m, "CRUDEOIL", today()),
            (
                "CRUDEOIL-18Dec2026-FUT".to_string(),
                key(Segment::McxComm, 472794)
            )
        );
    }
}

#[test]
fn crude_oil_is_the_nearest_unexpired_mcx_future_and_nothing_else() {
    let m = fixture();
    // The Nov contract trades on its expiry day, then rolls to Dec.
    assert_eq!(
        resolved(&m, "CRUDEOIL", day(2026, 11, 19)).0,
        "CRUDEOIL-19Nov2026-FUT"
    );
    assert_eq!(
        resolved(&m, "CRUDEOIL", day(2026, 11, 20)).0,
        "CRUDEOIL-18Dec2026-FUT"
    );
    assert_eq!(
        resolved(&m, "MCX:CRUDEOIL", today()).0,
        "CRUDEOIL-18Dec2026-FUT"
    );
    assert_eq!(
        resolved(&m, "CRUDEOIL FUT", today()).0,
        "CRUDEOIL-18Dec2026-FUT"
    );
    // Not the mini contract, not the nearer option on the future.
    assert_eq!(
        resolved(&m, "CRUDEOILM", today()).0,
        "CRUDEOILM-18Dec2026-FUT"
    );
    assert_eq!(
        resolved(&m, "CRUDEOIL 5500 CE", today()).0,
        "CRUDEOIL-16Dec2026-5500-CE"
    );

    // Nearer crude contracts on other exchanges, even on segments the feed
    // carries, can not win: the choice is made within MCX.
    let mut text = std::fs::read_to_string(FIXTURE).unwrap();
    for (exch, seg, id) in [
        ("NSE", "D", 990001),
        ("BSE", "D", 990002),
        ("NSE", "C", 990003),
    ] {
        text.push_str(&format!(
            "{exch},{seg},{id},FUTCOM,0,CRUDEOIL-23Nov2026-FUT,100.0,CRUDEOIL NOV FUT,INE0,2026-11-23 23:30:00,-0.01000,XX,100.0000,M,FUTCOM,NA,CRUDEOIL,\r\n"
        ));
    }
    let mixed = Master::parse(text.as_bytes()).unwrap();
    assert_eq!(mixed.len(), 819);
    assert_eq!(
        resolved(&mixed, "CRUDEOIL", today()).1,
        key(Segment::McxComm, 472794),
        "an NSE/BSE contract expiring sooner must not be chosen"
    );
    // Asking for another exchange on purpose is allowed, and explicit; two
    // equally near contracts there are an ambiguity, not a guess.
    assert_eq!(
        resolved(&mixed, "BSE:CRUDEOIL", today()).1,
        key(Segment::BseFno, 990002)
    );
    let e = mixed
        .resolve("NSE:CRUDEOIL", today())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("ambiguous symbol 'NSE:CRUDEOIL'") && e.contains("NSE_FNO 990001"),
        "{e}"
    );

    // After the last listed contract: an error naming the last expiry.
    let e = m.resolve("CRUDEOIL", day(2028, 1, 10)).unwrap_err();
    assert!(matches!(e, ResolveError::NoContract { .. }));
    assert_eq!(
        e.to_string(),
        "no unexpired MCX future for 'CRUDEOIL' as of 2028-01-10 (the last one expired on 2027-11-18)"
    );
}

#[test]
fn futures_and_options_by_shape_resolve_the_nearest_expiry() {
    let m = fixture();
    let t = today();
    assert_eq!(
        resolved(&m, "NIFTY FUT", t),
        ("NIFTY-Nov2026-FUT".into(), key(Segment::NseFno, 52001))
    );
    assert_eq!(
        resolved(&m, "NIFTY FUT", day(2026, 11, 25)).0,
        "NIFTY-Dec2026-FUT"
    );
    assert_eq!(resolved(&m, "BANKNIFTY FUT", t).0, "BANKNIFTY-Nov2026-FUT");
    assert_eq!(resolved(&m, "RELIANCE FUT", t).0, "RELIANCE-Nov2026-FUT");
    assert_eq!(resolved(&m, "SENSEX FUT", t).1.segment, Segment::BseFno);
    assert_eq!(resolved(&m, "INFY FUT", t).0, "INFY-Nov2026-FUT");
    // Weekly options: 17 Nov has expired, 24 Nov is next.
    let (sym, k) = resolved(&m, "NIFTY 25000 CE", t);
    assert_eq!(sym, "NIFTY-Nov2026-25000-CE");
    assert_eq!(m.get(k).unwrap().expiry(), Some(day(2026, 11, 24)));
    let pe = m.resolve("nifty 25000 pe", day(2026, 11, 25)).unwrap();
    assert_eq!(
        (pe.expiry(), pe.strike()),
        (Some(day(2026, 12, 1)), Some(25000.0))
    );
    assert_eq!(
        resolved(&m, "NIFTY 24250 PUT", t).0,
        "NIFTY-Nov2026-24250-PE"
    );
    assert_eq!(
        resolved(&m, "USDINR 84.25 CE", t).1.segment,
        Segment::NseCurrency
    );
    // Currencies: NSE before BSE unless asked.
    assert_eq!(resolved(&m, "USDINR", t).1.segment, Segment::NseCurrency);
    assert_eq!(
        resolved(&m, "BSE:USDINR", t).1.segment,
        Segment::BseCurrency
    );
    // Custom symbols and company names.
    assert_eq!(resolved(&m, "NIFTY DEC FUT", t).0, "NIFTY-Dec2026-FUT");
    assert_eq!(resolved(&m, "Nifty 50", t).1, key(Segment::IdxI, 13));
    assert_eq!(
        resolved(&m, "RELIANCE INDUSTRIES LTD", t).1,
        key(Segment::NseEq, 2885)
    );
    assert_eq!(
        resolved(&m, "BSE:RELIANCE INDUSTRIES LTD", t).1,
        key(Segment::BseEq, 500325)
    );
    // A trading symbol names its contract, expired or not.
    assert_eq!(resolved(&m, "NIFTY-Oct2026-FUT", t).0, "NIFTY-Oct2026-FUT");
}

#[test]
fn ambiguous_and_unknown_names_list_the_closest_candidates() {
    let m = fixture();
    let t = today();
    // Two different securities with one company name.
    let e = m.resolve("TATA STEEL LIMITED", t).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ResolveError::Ambiguous { .. }), "{msg}");
    assert!(
        msg.contains("TATASTEEL (NSE_EQ 3499)") && msg.contains("TATASTLPP (NSE_EQ 5098)"),
        "{msg}"
    );
    // Four December contracts (three weeklies and the monthly) share a
    // trading symbol.
    let e = m.resolve("NIFTY-Dec2026-25000-CE", t).unwrap_err();
    match &e {
        ResolveError::Ambiguous { candidates, .. } => assert_eq!(candidates.len(), 4, "{e}"),
        other => panic!("{other}"),
    }
    // Typos and partial names.
    let e = m.resolve("RELAINCE", t).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("unknown symbol 'RELAINCE'; closest: RELIANCE (NSE_EQ 2885)"),
        "{e}"
    );
    let e = m.resolve("CRUDOIL", t).unwrap_err().to_string();
    assert!(
        e.contains("CRUDEOIL-18Dec2026-FUT (MCX_COMM 472794)"),
        "{e}"
    );
    let e = m.resolve("TATA", t).unwrap_err().to_string();
    assert!(e.contains("TATAMOTORS") && e.contains("TATASTEEL"), "{e}");
    let e = m.resolve("NOSUCHTHING", t).unwrap_err().to_string();
    assert!(e.starts_with("unknown symbol 'NOSUCHTHING'"), "{e}");
    let e = m.resolve("MCX:RELIANCE", t).unwrap_err().to_string();
    assert!(e.starts_with("unknown symbol 'MCX:RELIANCE'"), "{e}");
    assert!(m.resolve("", t).is_err());
    // An underlying with options only: unknown as a bare name, with itself
    // among the candidates (and no endless "did you mean" recursion).
    let mut text = std::fs::read_to_string(FIXTURE).unwrap();
    text.push_str("NSE,D,990010,OPTSTK,0,ONLYOPT-Nov2026-100-CE,10.0,ONLYOPT 24 NOV 100 CALL,X,2026-11-24 14:30:00,100.00000,CE,5.0000,M,OPTSTK,NA,ONLYOPT,\r\n");
    let only = Master::parse(text.as_bytes()).unwrap();
    let e = only.resolve("ONLYOP", t).unwrap_err().to_string();
    assert!(e.contains("ONLYOPT-Nov2026-100-CE"), "{e}");
    let e = only.resolve("ONLYOPX", t).unwrap_err().to_string();
    assert!(e.contains("ONLYOPT-Nov2026-100-CE"), "{e}");
    assert_eq!(
        resolved(&only, "ONLYOPT 100 CE", t).1,
        key(Segment::NseFno, 990010)
    );
}

#[test]
fn bulk_resolution_suggests_for_a_few_and_sums_up_the_rest() {
    let m = fixture();
    let t = today();
    // resolve_exact keeps resolve's answers; only unknown names differ.
    for q in [
        "NIFTY",
        "CRUDEOIL",
        "NSE:RELIANCE",
        "NIFTY 25000 CE",
        "RELIANCE INDUSTRIES LTD",
        "TATA STEEL LIMITED",
        "NIFTY-Dec2026-25000-CE",
    ] {
        match (m.resolve(q, t), m.resolve_exact(q, t)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{q}"),
            (Err(a), Err(b)) => assert_eq!(a, b, "{q}"),
            (a, b) => panic!("{q}: {a:?} vs {b:?}"),
        }
    }
    match m.resolve_exact("RELAINCE", t) {
        Err(ResolveError::Unknown { candidates, .. }) => assert!(candidates.is_empty()),
        other => panic!("{other:?}"),
    }
    // A 1,000-name subscribe: three hits, an ambiguity, a typo, and near
    // misses; candidates for the first three unknown names only (an
    // ambiguity lists its own).
    let mut names: Vec<String> = ["NIFTY", "TATA STEEL LIMITED", "RELAINCE", "crudeoil"]
        .map(String::from)
        .to_vec();
    names.extend((0..995).map(|i| format!("RELIANCX{i}")));
    names.push("BSE:RELIANCE".into());
    let r: Resolved = m.resolve_many(&names, t, 3);
    let found: Vec<(usize, InstrumentKey)> = r
        .found
        .iter()
        .map(|f: &ResolvedName| (f.index, f.key))
        .collect();
    assert_eq!(
        found,
        [
            (0, key(Segment::IdxI, 13)),
            (3, key(Segment::McxComm, 472794)),
            (999, key(Segment::BseEq, 500325)),
        ]
    );
    assert_eq!(r.failed, 997);
    let e = r.error.unwrap();
    assert!(
        e.starts_with("997 of 1000 symbols not resolved: TATA STEEL LIMITED (ambiguous: TATASTEEL (NSE_EQ 3499), TATASTLPP (NSE_EQ 5098)"),
        "{e}"
    );
    assert!(
        e.contains(", RELAINCE (did you mean RELIANCE (NSE_EQ 2885)?), "),
        "{e}"
    );
    assert!(
        e.contains(", RELIANCX0 (did you mean RELIANCE (NSE_EQ 2885)"),
        "{e}"
    );
    assert!(
        e.contains(", RELIANCX1 (did you mean RELIANCE (NSE_EQ 2885)?), RELIANCX2, RELIANCX3, "),
        "no candidates after the third unknown name: {e}"
    );
    assert!(e.ends_with(", RELIANCX17, … and 977 more"), "{e}");
}

#[test]
fn search_ranks_exact_prefix_substring_and_renders_the_api_object() {
    let m = fixture();
    let r = m.search("relia", 20);
    assert_eq!(
        r[0].to_json(),
        json!({"symbol":"RELIANCE","name":"RELIANCE INDUSTRIES LTD","exchangeSegment":"NSE_EQ",
               "securityId":"2885","instrument":"EQUITY","expiry":null,"lotSize":1,"tickSize":0.05})
    );
    assert_eq!(r[1].key(), key(Segment::BseEq, 500325));
    assert_eq!(
        r[2].symbol(),
        "RELIANCE-Oct2026-FUT",
        "futures by expiry after equities"
    );
    let fut = r
        .iter()
        .find(|i| i.symbol() == "RELIANCE-Nov2026-FUT")
        .unwrap();
    assert_eq!(fut.to_json()["expiry"], "2026-11-24");
    assert_eq!(fut.to_json()["lotSize"], 500);
    // Exact beats prefix: "NIFTY" the index, then things starting NIFTY.
    let n = m.search("nifty", 5);
    assert_eq!(n[0].key(), key(Segment::IdxI, 13));
    assert!(n[1..]
        .iter()
        .all(|i| i.symbol().to_uppercase().starts_with("NIFTY")
            || i.name().starts_with("NIFTY")
            || i.custom_symbol().to_uppercase().starts_with("NIFTY")));
    // Substring only (name): after all prefix matches.
    let s = m.search("INDUSTRIES", 20);
    assert!(
        s.iter().any(|i| i.key() == key(Segment::NseEq, 2885)),
        "{s:?}"
    );
    assert!(m.search("qqqq", 20).is_empty());
}

// --------------------------------------------------------------- watchlist

#[test]
fn watchlists_resolve_strictly_against_a_real_master_and_leniently_against_the_sample() {
    let m = fixture();
    let specs = vec![
        WatchSpec::by_symbol("NIFTY"),
        WatchSpec::by_key("MYREL", key(Segment::BseEq, 500325)),
        WatchSpec::by_symbol("CRUDEOIL"),
    ];
    let r = resolve_watchlist(&specs, &m, today(), true).unwrap();
    assert_eq!(r.items.len(), 3);
    assert_eq!(r.items[2].key, key(Segment::McxComm, 472794));
    assert_eq!(r.rolling, ["CRUDEOIL"]);
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("CRUDEOIL-18Dec2026-FUT") && n.contains("expires 2026-12-18")));
    let mut bad = specs.clone();
    bad.push(WatchSpec {
        line: Some(12),
        ..WatchSpec::by_symbol("RELAINCE")
    });
    let e = resolve_watchlist(&bad, &m, today(), true).unwrap_err();
    assert!(
        e.contains("watchlist 'RELAINCE' (config line 12)") && e.contains("closest: RELIANCE"),
        "{e}"
    );
    let lenient = resolve_watchlist(&bad, &m, today(), false).unwrap();
    assert_eq!(lenient.items.len(), 3);
    assert_eq!(lenient.skipped.len(), 1);
}

#[test]
fn the_daily_check_rolls_an_expired_future_once_at_the_configured_time() {
    let m = fixture();
    let nov19 = day(2026, 11, 19);
    let r = resolve_watchlist(
        &[
            WatchSpec::by_symbol("CRUDEOIL"),
            WatchSpec::by_symbol("NIFTY"),
        ],
        &m,
        nov19,
        true,
    )
    .unwrap();
    assert_eq!(
        r.items[0].key,
        key(Segment::McxComm, 472787),
        "Nov on its expiry day"
    );
    let at = "08:45".parse().unwrap();
    let mut schedule = DailySchedule::new(at, nov19);
    assert_eq!(schedule.due(ist_instant(nov19, 23, 0)), None, "same day");
    let nov20 = day(2026, 11, 20);
    assert_eq!(
        schedule.due(ist_instant(nov20, 8, 44)),
        None,
        "before 08:45"
    );
    assert_eq!(schedule.due(ist_instant(nov20, 8, 45)), Some(nov20));
    assert_eq!(schedule.due(ist_instant(nov20, 9, 0)), None, "once a day");
    let (rolls, warnings) = plan_rolls(&m, &r.items, &r.rolling, nov20);
    assert!(warnings.is_empty());
    assert_eq!(rolls.len(), 1);
    assert_eq!(
        (rolls[0].from, rolls[0].to),
        (key(Segment::McxComm, 472787), key(Segment::McxComm, 472794))
    );
    assert!(rolls[0].message.contains("CRUDEOIL-19Nov2026-FUT (MCX_COMM 472787) (expired 2026-11-19) to CRUDEOIL-18Dec2026-FUT"), "{}", rolls[0].message);
    // Beyond the last contract: a warning, and the entry keeps what it has.
    let (rolls, warnings) = plan_rolls(&m, &r.items, &r.rolling, day(2028, 1, 1));
    assert!(
        rolls.is_empty() && warnings[0].contains("keeps MCX_COMM:472787"),
        "{warnings:?}"
    );
    // The Watchlist does the same and moves itself.
    let mut w = Watchlist::new(r);
    assert!(w.roll_on(&m, nov19).is_empty());
    let rolls = w.roll_on(&m, nov20);
    assert_eq!(rolls.len(), 1);
    assert_eq!(w.key_of("crudeoil"), Some(key(Segment::McxComm, 472794)));
    assert_eq!(w.symbol_of(key(Segment::IdxI, 13)), Some("NIFTY"));
    assert_eq!(
        w.items().iter().map(|i| i.key).collect::<Vec<_>>(),
        [key(Segment::McxComm, 472794), key(Segment::IdxI, 13)]
    );
}

// ------------------------------------------------------- download + cache

/// A loopback HTTP server answering every GET with `body`; counts requests.
fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            h.fetch_add(1, SeqCst);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    (format!("http://{addr}/api-data/api-scrip-master.csv"), hits)
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/api-scrip-master.csv")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dhan-relay-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn url_source(url: &str, cache: &Path) -> SourceConfig {
    SourceConfig {
        cache_dir: Some(cache.to_path_buf()),
        timeout: Duration::from_secs(10),
        ..SourceConfig::new(Source::Url(url.to_string()))
    }
}

#[test]
fn downloads_are_cached_for_the_day_and_the_cache_and_sample_are_fallbacks() {
    let cache = temp_dir("cache");
    let (url, hits) = serve(std::fs::read(FIXTURE).unwrap());
    let now = SystemTime::now();

    let first = source::load(&url_source(&url, &cache), now).unwrap();
    assert_eq!(hits.load(SeqCst), 1);
    assert_eq!(first.master.len(), 816);
    assert!(first.authoritative());
    let cached = cache.join(CACHE_FILE);
    assert_eq!(
        first.origin,
        Origin::Downloaded {
            url: url.clone(),
            cached: Some(cached.clone())
        }
    );
    assert!(
        first.describe().contains("816 instruments"),
        "{}",
        first.describe()
    );

    // Same day: the cache, no request.
    let again = source::load(&url_source(&url, &cache), now).unwrap();
    assert_eq!(hits.load(SeqCst), 1, "served from the cache");
    assert!(matches!(again.origin, Origin::Cache { stale: false, .. }));
    assert!(again.warnings.is_empty());

    // Two days later with the network gone: the stale cache, and how old.
    let later = now + Duration::from_secs(2 * 86_400 + 3600);
    let stale = source::load(&url_source(&dead_url(), &cache), later).unwrap();
    assert!(
        matches!(stale.origin, Origin::Cache { stale: true, .. }),
        "{:?}",
        stale.origin
    );
    assert_eq!(stale.master.len(), 816);
    assert!(stale.authoritative());
    let w = stale.warnings.join(" | ");
    assert!(
        w.contains("cannot download") && w.contains("2 days ago"),
        "{w}"
    );
    assert!(
        stale.describe().contains("2 days old"),
        "{}",
        stale.describe()
    );

    // A later day with the network back: downloaded again.
    let fresh = source::load(&url_source(&url, &cache), later).unwrap();
    assert_eq!(hits.load(SeqCst), 2);
    assert!(matches!(fresh.origin, Origin::Downloaded { .. }));

    // No cache and no network: the embedded sample, with a warning.
    let empty = temp_dir("nocache");
    let fallback = source::load(&url_source(&dead_url(), &empty), now).unwrap();
    assert_eq!(fallback.origin, Origin::Fallback);
    assert!(!fallback.authoritative());
    assert_eq!(fallback.master.len(), Master::sample().len());
    assert!(
        fallback.warnings.iter().any(|w| w.contains("sample")),
        "{:?}",
        fallback.warnings
    );

    // Something that is not a master (an HTML error page) is a failure too.
    let (html, _) = serve(b"<html>Access denied</html>".to_vec());
    let h = source::load(&url_source(&html, &empty), now).unwrap();
    assert_eq!(h.origin, Origin::Fallback);
    assert!(
        h.warnings[0].contains("not a DhanHQ scrip master"),
        "{:?}",
        h.warnings
    );
    assert!(
        !empty.join(CACHE_FILE).exists(),
        "a bad download is not cached"
    );

    // An explicit file that is missing is an error, not a fallback.
    let e = source::load(
        &SourceConfig::new(Source::File("/nonexistent/master.csv".into())),
        now,
    )
    .unwrap_err();
    assert!(
        e.contains("cannot read instruments file /nonexistent/master.csv"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

// ------------------------------------------------------------- end to end

/// A controllable wall clock (seconds since the epoch).
fn clock_at(t: SystemTime) -> (WallClock, Arc<AtomicU64>) {
    let secs = Arc::new(AtomicU64::new(
        t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
    ));
    let s = Arc::clone(&secs);
    (
        WallClock::new(move || UNIX_EPOCH + Duration::from_secs(s.load(SeqCst))),
        secs,
    )
}

fn demo_config(file: Option<(&Path, &str)>, rate: u32, clock: WallClock) -> RunConfig {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(rate),
        ..Flags::default()
    };
    let mut c = RunConfig::build(&flags, file, &CredentialSources::none()).unwrap();
    // Exactly what the test subscribes upstream: no demo option chain.
    c.chains.clear();
    c.fanout.unsubscribe_grace = Duration::from_millis(200);
    c.clock = clock;
    c
}

fn held(sim: &SimControl) -> Vec<InstrumentKey> {
    sim.subscriptions()
        .into_iter()
        .flat_map(|c| c.instruments)
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn the_engine_serves_the_default_watchlist_search_and_symbol_subscriptions() {
    // The shipped example config, in demo mode on the embedded sample.
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dhan-relay.example.toml"
    ));
    let text = std::fs::read_to_string(path).unwrap();
    let (clock, _) = clock_at(ist_instant(today(), 12, 0));
    let engine = Engine::start(demo_config(Some((path, &text)), 400, clock)).unwrap();
    let addr = engine.addr();
    let names: Vec<&str> = engine
        .watchlist()
        .iter()
        .map(|w| w.symbol.as_str())
        .collect();
    assert_eq!(names, ["NIFTY", "SENSEX", "RELIANCE", "CRUDEOIL"]);

    // /prices: the four symbols, with prices from the simulator.
    wait_for("four prices", || {
        let (_, p) = http_get_json(addr, "/prices");
        ["NIFTY", "SENSEX", "RELIANCE", "CRUDEOIL"]
            .iter()
            .all(|s| p[*s].is_number())
    });
    let (code, p) = http_get_json(addr, "/prices");
    assert_eq!(code, 200);
    let crude = p["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["symbol"] == "CRUDEOIL")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            crude["exchangeSegment"].clone(),
            crude["securityId"].clone()
        ),
        (json!("MCX_COMM"), json!("472794"))
    );
    let (_, w) = http_get_json(addr, "/api/watchlist");
    assert_eq!(
        w["watchlist"][0],
        json!({"symbol":"NIFTY","exchangeSegment":"IDX_I","securityId":"13"})
    );
    assert_eq!(w["watchlist"][3]["securityId"], "472794");

    // Search.
    let (code, s) = http_get_json(addr, "/api/instruments?q=relia&limit=20");
    assert_eq!(code, 200);
    assert_eq!(
        (s["query"].clone(), s["count"].clone()),
        (
            json!("relia"),
            json!(s["results"].as_array().unwrap().len())
        )
    );
    assert_eq!(
        s["results"][0],
        json!({"symbol":"RELIANCE","name":"RELIANCE INDUSTRIES LTD","exchangeSegment":"NSE_EQ",
               "securityId":"2885","instrument":"EQUITY","expiry":null,"lotSize":1,"tickSize":0.05})
    );
    let (_, s) = http_get_json(addr, "/api/instruments?q=crudeoil%20dec+fut");
    assert_eq!(s["query"], "crudeoil dec fut");
    assert_eq!(s["results"][0]["symbol"], "CRUDEOIL-18Dec2026-FUT");
    assert_eq!(s["results"][0]["expiry"], "2026-12-18");
    let (_, s) = http_get_json(addr, "/api/instruments?q=n&limit=500");
    assert_eq!(s["count"], 100, "limit capped at 100");
    let (_, s) = http_get_json(addr, "/api/instruments?q=n");
    assert_eq!(s["count"], 20, "limit defaults to 20");
    for bad in [
        "/api/instruments",
        "/api/instruments?q=",
        "/api/instruments?q=%20",
        "/api/instruments?q=x&limit=0",
        "/api/instruments?q=x&limit=ten",
    ] {
        let (code, e) = http_get_json(addr, bad);
        assert_eq!(code, 400, "{bad}");
        assert!(e["error"].is_string(), "{bad}: {e}");
    }

    // Subscribing by symbol, through the master; updates carry the symbol.
    let mut c = WsClient::connect(addr, "/ws");
    c.recv();
    c.send(json!({"type":"subscribe","instruments":[{"symbol":"RELIANCE"},{"symbol":"NIFTY FUT"},{"exchangeSegment":"BSE_EQ","securityId":"500325"}]}));
    let rel = c.recv_where(|v| v["securityId"] == "2885");
    assert_eq!(
        (rel["symbol"].clone(), rel["exchangeSegment"].clone()),
        (json!("RELIANCE"), json!("NSE_EQ"))
    );
    let fut = c.recv_where(|v| v["exchangeSegment"] == "NSE_FNO");
    assert_eq!(
        (fut["symbol"].clone(), fut["securityId"].clone()),
        (json!("NIFTY-Nov2026-FUT"), json!("52001"))
    );
    let bse = c.recv_where(|v| v["securityId"] == "500325");
    assert_eq!(
        bse["symbol"], "RELIANCE",
        "named from the master though subscribed by id"
    );
    // Errors name the closest candidates; the connection stays up.
    c.send(json!({"type":"subscribe","instruments":[{"symbol":"RELAINCE"}]}));
    let e = c.recv_type("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("did you mean RELIANCE (NSE_EQ 2885)"),
        "{e}"
    );
    c.send(json!({"type":"subscribe","instruments":[{"symbol":"NIFTY-Dec2026-25000-CE"}]}));
    let e = c.recv_type("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("(ambiguous: NIFTY-Dec2026-25000-CE (NSE_FNO 60012)"),
        "{e}"
    );
    c.send(json!({"type":"unsubscribe","instruments":[{"symbol":"NIFTY FUT"}]}));
    c.send(json!({"type":"subscribe","instruments":[{"symbol":"NOSUCH"}]}));
    let e = c.recv_type("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("symbols not found: NOSUCH"),
        "{e}"
    );
    let sim = engine.demo_simulator().unwrap().control();
    wait_for("NIFTY FUT released upstream", || {
        !held(&sim).contains(&key(Segment::NseFno, 52001))
    });
    engine.shutdown();
}

#[test]
fn a_watchlist_future_rolls_to_the_next_contract_after_expiry() {
    let nov19 = day(2026, 11, 19);
    let (clock, secs) = clock_at(ist_instant(nov19, 10, 0));
    let file = "roll_at = \"08:45\"\n[[watchlist]]\nsymbol = \"CRUDEOIL\"\n[[watchlist]]\nsymbol = \"NIFTY\"\n";
    let engine =
        Engine::start(demo_config(Some((Path::new("roll.toml"), file)), 0, clock)).unwrap();
    let addr = engine.addr();
    let sim = engine.demo_simulator().unwrap().control();
    let nov = key(Segment::McxComm, 472787);
    let dec = key(Segment::McxComm, 472794);
    wait_for("Nov contract subscribed", || held(&sim).contains(&nov));
    let set = |t: SystemTime| secs.store(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), SeqCst);
    // The next morning, before the check time: nothing moves.
    let nov20 = day(2026, 11, 20);
    set(ist_instant(nov20, 8, 40));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        http_get_json(addr, "/api/watchlist").1["watchlist"][0]["securityId"],
        "472787"
    );
    // At the check time: Dec replaces Nov, upstream too.
    set(ist_instant(nov20, 8, 46));
    wait_for("the roll", || {
        http_get_json(addr, "/api/watchlist").1["watchlist"][0]["securityId"] == "472794"
    });
    wait_for("Dec subscribed, Nov released", || {
        let h = held(&sim);
        h.contains(&dec) && !h.contains(&nov)
    });
    assert!(sim
        .subscriptions()
        .iter()
        .flat_map(|c| c.instruments.clone())
        .any(|(k, m)| k == dec && m == Mode::Ticker));
    // A subscriber by symbol now gets the new contract, named CRUDEOIL.
    sim.inject(&dhan_relay::wire::feed::FeedMessage::Data(
        dec,
        dhan_relay::wire::feed::FeedData::Ticker(dhan_relay::wire::feed::Ticker {
            ltp: 5545.0,
            ltt: 1,
        }),
    ));
    wait_for("CRUDEOIL priced from Dec", || {
        http_get_json(addr, "/prices").1["CRUDEOIL"] == json!(5545.0)
    });
    engine.shutdown();
}

#[test]
fn an_explicit_master_file_is_authoritative_for_the_watchlist() {
    let file = format!("instruments = \"{FIXTURE}\"\n\n[[watchlist]]\nsymbol = \"RELAINCE\"\n");
    let (clock, _) = clock_at(ist_instant(today(), 12, 0));
    let err = Engine::start(demo_config(
        Some((Path::new("relay.toml"), &file)),
        0,
        clock.clone(),
    ))
    .expect_err("an unknown watchlist symbol in a real master is a config error")
    .to_string();
    assert!(
        err.contains("watchlist 'RELAINCE' (config line 4)") && err.contains("closest: RELIANCE"),
        "{err}"
    );
    // The same entry against the embedded sample is left out with a warning.
    let lenient = "[[watchlist]]\nsymbol = \"RELAINCE\"\n[[watchlist]]\nsymbol = \"NIFTY\"\n";
    let engine = Engine::start(demo_config(
        Some((Path::new("relay.toml"), lenient)),
        0,
        clock.clone(),
    ))
    .unwrap();
    assert_eq!(engine.watchlist().len(), 1);
    engine.shutdown();
    // And the fixture through --instruments resolves what the sample lacks.
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(0),
        instruments: Some(FIXTURE.into()),
        ..Flags::default()
    };
    let mut c = RunConfig::build(
        &flags,
        Some((
            Path::new("r.toml"),
            "[[watchlist]]\nsymbol = \"ADANIPORTS\"\n",
        )),
        &CredentialSources::none(),
    )
    .unwrap();
    c.clock = clock;
    let engine = Engine::start(c).unwrap();
    assert_eq!(engine.watchlist()[0].key, key(Segment::NseEq, 15083));
    assert_eq!(engine.instruments().report().bad, 9);
    engine.shutdown();
}
