//! Option chains end to end: the real engine (live mode) against the
//! simulator over 127.0.0.1 — a configured chain subscribes exactly the
//! CE/PE of ATM ± N for the nearest expiry, follows the underlying three
//! strikes up with no moment where the centre is missing, moves to the
//! next expiry when its own expires, serves `/api/chains` and
//! `subscribe_chain`, and a bad chain configuration is a start-up error
//! naming it.

mod common;
use common::{wait_for, WsClient};

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::instrument::date::ist_instant;
use dhan_relay::instrument::{Date, Kind, Master, WallClock};
use dhan_relay::sim::{SimConfig, SimControl, Simulator};
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::upstream::Credentials;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use serde_json::{json, Value};

const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);
const GRACE: Duration = Duration::from_millis(400);

fn sim() -> Simulator {
    Simulator::start(SimConfig {
        ticks_per_sec: 0,
        ..SimConfig::default()
    })
    .expect("simulator starts")
}

/// Seconds since the epoch at `hh:mm` India time on `y-m-d`.
fn at(y: i32, m: u32, d: u32, hh: u32, mm: u32) -> u64 {
    let date = Date::from_ymd(y, m, d).unwrap();
    ist_instant(date, hh, mm)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The run config for `extra` against `sim`, on a clock the test moves.
fn config(sim: &Simulator, extra: &str, clock: &Arc<AtomicU64>) -> Result<RunConfig, String> {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        feed_url: Some(sim.feed_url()),
        ..Flags::default()
    };
    let text = format!("chain_interval_ms = 50\n{extra}");
    let mut c = RunConfig::build(
        &flags,
        Some((Path::new("relay.toml"), &text)),
        &CredentialSources::given(&Credentials::new("1000000001", "tok")),
    )?;
    c.fanout.unsubscribe_grace = GRACE;
    let secs = Arc::clone(clock);
    c.clock = WallClock::new(move || UNIX_EPOCH + Duration::from_secs(secs.load(SeqCst)));
    Ok(c)
}

fn start(sim: &Simulator, extra: &str, clock: &Arc<AtomicU64>) -> Engine {
    let engine = Engine::start(config(sim, extra, clock).unwrap()).expect("engine starts");
    let control = sim.control();
    wait_for("upstream up", || !control.subscriptions().is_empty());
    engine
}

fn held(sim: &SimControl) -> BTreeSet<InstrumentKey> {
    sim.subscriptions()
        .into_iter()
        .filter(|c| !c.depth)
        .flat_map(|c| c.instruments.into_keys())
        .collect()
}

fn price(sim: &SimControl, key: InstrumentKey, ltp: f32) {
    sim.inject(&FeedMessage::Data(
        key,
        FeedData::Ticker(Ticker {
            ltp,
            ltt: 1_764_750_000,
        }),
    ));
}

/// The CE and PE keys of NIFTY options expiring `expiry` with strikes in
/// `lo..=hi`, read from the master independently of the chain code.
fn window(expiry: Date, lo: f64, hi: f64) -> BTreeSet<InstrumentKey> {
    let m = Master::sample();
    m.iter()
        .filter(|i| {
            i.kind() == Kind::Option
                && i.underlying() == "NIFTY"
                && i.expiry() == Some(expiry)
                && i.strike().is_some_and(|s| (lo..=hi).contains(&s))
        })
        .map(|i| i.key())
        .collect()
}

/// Every NIFTY option held upstream.
fn held_options(sim: &SimControl) -> BTreeSet<InstrumentKey> {
    let m = Master::sample();
    held(sim)
        .into_iter()
        .filter(|k| {
            m.get(*k)
                .is_some_and(|i| i.kind() == Kind::Option && i.underlying() == "NIFTY")
        })
        .collect()
}

fn chains(addr: std::net::SocketAddr) -> Vec<Value> {
    common::get_json(addr, "/api/chains")["chains"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_chain_holds_atm_plus_minus_n_and_follows_the_underlying_without_a_gap() {
    let sim = sim();
    let control = sim.control();
    let clock = Arc::new(AtomicU64::new(at(2026, 12, 3, 10, 0)));
    let engine = start(
        &sim,
        "[[chains]]\nunderlying = \"NIFTY\"\nstrikes = 2\n",
        &clock,
    );
    let addr = engine.addr();
    let d8 = Date::from_ymd(2026, 12, 8).unwrap();

    // The index is held upstream (watchlist and chain) before its price
    // is sent: a packet for an instrument nobody holds goes nowhere.
    wait_for("NIFTY held upstream", || held(&control).contains(&NIFTY));
    price(&control, NIFTY, 25_812.0);
    let first = window(d8, 25_700.0, 25_900.0);
    assert_eq!(first.len(), 10, "5 strikes × CE/PE in the sample");
    wait_for("the window around 25,800", || {
        held_options(&control) == first
    });
    let c = &chains(addr)[0];
    assert_eq!(c["id"], "NIFTY:2026-12-08", "{c}");
    assert_eq!(c["atm"], 25_800.0, "{c}");

    // Three strike steps up: the window follows, with no gap at the centre.
    let next = window(d8, 25_850.0, 26_050.0);
    let old_centre = window(d8, 25_750.0, 25_850.0);
    price(&control, NIFTY, 25_962.0);
    let t0 = Instant::now();
    let mut samples = 0;
    loop {
        let now = held_options(&control);
        samples += 1;
        assert!(
            old_centre.is_subset(&now) || next.is_subset(&now),
            "a moment with neither the old centre nor the new window held: {now:?}"
        );
        if now == next {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the window did not move: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        samples > 5,
        "the old strikes stay for the unsubscribe grace ({samples} samples)"
    );
    wait_for("one re-centre counted", || {
        let c = &chains(addr)[0];
        c["atm"] == 25_950.0 && c["recentres"] == 1
    });

    // A client's chain: the same series is shared, rows ATM ± 2, greeks.
    let mut ws = WsClient::connect(addr, "/ws");
    ws.send(json!({"type":"subscribe_chain","underlying":"nifty","strikes":2}));
    let ok = ws.recv_type("subscribed");
    assert_eq!(ok["chain"], "NIFTY:2026-12-08");
    let atm_ce = window(d8, 25_950.0, 25_950.0)
        .into_iter()
        .find(|k| Master::sample().get(*k).unwrap().symbol().ends_with("CE"))
        .unwrap();
    price(&control, atm_ce, 130.0);
    let msg = ws.recv_where(|m| {
        m["type"] == "chain"
            && m["rows"]
                .as_array()
                .is_some_and(|r| r.iter().any(|row| row["ce"]["ltp"] == 130.0))
    });
    let rows = msg["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{msg}");
    assert_eq!(rows[2]["strike"], 25_950.0);
    assert_eq!(msg["underlyingPrice"], 25_962.0);
    let ce = &rows[2]["ce"];
    let iv = ce["iv"]
        .as_f64()
        .expect("an IV for a price inside the bounds");
    assert!((0.01..2.0).contains(&iv), "{ce}");
    assert!(
        ce["delta"].as_f64().unwrap() > 0.3 && ce["delta"].as_f64().unwrap() < 0.8,
        "{ce}"
    );
    assert_eq!(
        msg["model"], "black-scholes",
        "weekly: no future of that expiry"
    );
    let rest = common::get_json(addr, "/api/chains/NIFTY?expiry=nearest");
    assert_eq!(rest["id"], "NIFTY:2026-12-08");
    assert!(rest.get("type").is_none());
    let (code, body) = common::http_get(addr, "/api/chains/NIFTY?expiry=next");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("2026-12-15"), "{body}");

    // Past its expiry the chain moves to the next one.
    clock.store(at(2026, 12, 9, 9, 0), SeqCst);
    let d15 = Date::from_ymd(2026, 12, 15).unwrap();
    let rolled = window(d15, 25_850.0, 26_050.0);
    wait_for("the window on the 15 December series", || {
        held_options(&control) == rolled
    });
    assert_eq!(chains(addr)[0]["id"], "NIFTY:2026-12-15");
    engine.shutdown();
}

#[test]
fn a_bad_chain_configuration_is_a_start_error_naming_it() {
    let sim = sim();
    let clock = Arc::new(AtomicU64::new(at(2026, 12, 3, 10, 0)));
    let e = config(
        &sim,
        "[[chains]]\nunderlying = \"NIFTY\"\nstrikes = 0\n",
        &clock,
    )
    .unwrap_err();
    assert!(e.contains("strikes") && e.contains("line"), "{e}");
    let e = config(
        &sim,
        "[[chains]]\nunderlying = \"NIFTY\"\nstrike = 5\n",
        &clock,
    )
    .unwrap_err();
    assert!(e.contains("strike"), "{e}");
    for (extra, want) in [
        ("[[chains]]\nunderlying = \"NIFTI\"\n", "NIFTI"),
        ("[[chains]]\nunderlying = \"NIFTY\"\nexpiry = \"2026-12-09\"\n", "2026-12-08"),
        (
            "[limits]\nupstream_connections = 1\ninstruments_per_connection = 30\n[[chains]]\nunderlying = \"NIFTY\"\nstrikes = 10\n",
            "leave room for 26",
        ),
    ] {
        let c = config(&sim, extra, &clock).unwrap();
        let Err(e) = Engine::start(c) else {
            panic!("{extra}: started");
        };
        let e = e.to_string();
        assert!(e.contains(want), "{extra}: {e}");
    }
}
