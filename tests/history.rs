//! `/api/history` end to end: the real engine against the built-in
//! simulator over 127.0.0.1. Quotes with chosen trade times spanning three
//! minutes are injected; a `/ws` client records what it receives, the test
//! builds 1-minute bars from those ticks on its own, and the relay's bars
//! must be the same.

mod common;
use common::bars::{bars_of, reference_bars, seen, Seen};
use common::{http_get_json, wait_for, WsClient};

use std::time::SystemTime;

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Quote};
use serde_json::Value;

#[test]
fn history_bars_equal_bars_built_from_the_ticks_clients_received() {
    // Three minutes ending a minute ago (trade times ahead of the wall
    // clock would be capped on the feed clock).
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    session(now - now % 60 - 240);
}

/// A replay of an earlier day: its bars are served just as today's are
/// (the wall clock's date must not clear them).
#[test]
fn an_earlier_days_bars_are_served_like_todays() {
    // 2026-11-27 09:15 India time.
    session(1_795_751_100);
}

/// Quotes for three minutes from `m0`, then the relay's bars against the
/// bars built from the ticks the client received.
fn session(m0: u32) {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(0),
        ..Flags::default()
    };
    let mut config = RunConfig::build(&flags, None, &CredentialSources::none()).unwrap();
    config.chains.clear();
    let engine = Engine::start(config).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    let addr = engine.addr();
    let rel = InstrumentKey::new(Segment::NseEq, 2885);
    let mut ws = WsClient::connect(addr, "/ws");
    ws.recv_type("status");
    ws.subscribe(rel, "quote");
    wait_for("RELIANCE held upstream", || {
        sim.subscriptions()
            .iter()
            .any(|c| c.instruments.contains_key(&rel))
    });

    let plan: Vec<(u32, f32, u32)> = vec![
        (m0 + 1, 1400.0, 50_000),
        (m0 + 10, 1402.5, 50_300),
        (m0 + 20, 1398.0, 50_450),
        (m0 + 59, 1399.5, 50_500),
        (m0 + 61, 1401.0, 50_800),
        (m0 + 30, 1300.0, 50_800), // late: the minute before
        (m0 + 75, 1405.25, 51_000),
        (m0 + 119, 1404.0, 51_200),
        (m0 + 121, 1406.0, 51_260),
        (m0 + 150, 1407.5, 51_300),
        (m0 + 178, 1403.0, 51_420),
    ];
    let mut ticks: Vec<Seen> = Vec::new();
    for &(ltt, ltp, volume) in &plan {
        sim.inject(&FeedMessage::Data(
            rel,
            FeedData::Quote(Quote {
                ltp,
                ltt,
                volume,
                ..Quote::default()
            }),
        ));
        let q = ws.recv_where(|v| v["type"] == "quote" && v["ltt"] == ltt);
        ticks.push(seen(&q));
    }
    let want = reference_bars(&ticks);
    assert_eq!(want.len(), 3);

    let history = |q: &str| -> Value {
        let (code, v) = http_get_json(addr, &format!("/api/history?{q}"));
        assert_eq!(code, 200, "{v}");
        v
    };
    let raw = |v: &Value| v["bars"].as_array().unwrap().clone();
    wait_for("two finished bars and the forming one", || {
        let (code, v) = http_get_json(addr, "/api/history?symbol=RELIANCE&interval=1m");
        assert_eq!(code, 200, "held upstream: never 404 {v}");
        let bars = raw(&v);
        bars.len() == 3 && bars[2]["partial"] == true && bars[1]["partial"].is_null()
    });
    let v = history("exchangeSegment=NSE_EQ&securityId=2885&interval=1m");
    assert_eq!(v["symbol"], "RELIANCE");
    assert_eq!(v["interval"], "1m");
    let got = bars_of(&v);
    assert_eq!(got, want);
    assert!(
        common::counter(addr, "history_late_ticks_total") >= 1,
        "the late tick was counted"
    );

    // 15-minute bars: the same volume, at most two buckets.
    let fifteen = raw(&history("symbol=RELIANCE&interval=15m"));
    assert!((1..=2).contains(&fifteen.len()));
    let total: u64 = fifteen.iter().map(|b| b["v"].as_u64().unwrap()).sum();
    assert_eq!(total, want.iter().map(|b| b.5).sum::<u64>());
    assert_eq!(fifteen.last().unwrap()["partial"], true);

    // Nobody ticks again: the sweep closes the last minute once it ended
    // on the feed clock (about 5 s here), so it is stored, not partial.
    common::wait_or(
        "the last minute swept into the store",
        || {
            let bars = raw(&history("symbol=RELIANCE"));
            bars.len() == 3 && bars[2]["partial"].is_null()
        },
        || format!("{}", history("symbol=RELIANCE")),
    );
    let (code, v) = http_get_json(
        addr,
        "/api/history?exchangeSegment=NSE_EQ&securityId=999999",
    );
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not subscribed"),
        "{v}"
    );
    engine.shutdown();
}
