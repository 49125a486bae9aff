//! A simulated trading day, end to end, on an injected clock: market hours
//! in `/prices`, the close (last prices stay, marked closed), and the next
//! morning's maintenance (runs once at its time, swaps in the rewritten
//! master, rolls the watchlist, drops the expired contract from a client's
//! subscriptions, the upstream and the book).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{get_json, wait_for, TempDir, WsClient};
use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::instrument::date::ist_instant;
use dhan_relay::instrument::{Date, WallClock};
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use serde_json::{json, Value};

const SAMPLE: &str = include_str!("../src/instrument/sample-master.csv");
const NOV: InstrumentKey = InstrumentKey::new(Segment::McxComm, 472787);
const DEC: InstrumentKey = InstrumentKey::new(Segment::McxComm, 472794);
const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);

fn day(y: i32, m: u32, d: u32) -> Date {
    Date::from_ymd(y, m, d).unwrap()
}

fn held(sim: &SimControl) -> Vec<InstrumentKey> {
    sim.subscriptions()
        .into_iter()
        .flat_map(|c| c.instruments)
        .map(|(k, _)| k)
        .collect()
}

fn tick(sim: &SimControl, key: InstrumentKey, ltp: f32) {
    sim.inject(&FeedMessage::Data(
        key,
        FeedData::Ticker(Ticker { ltp, ltt: 1 }),
    ));
}

fn listed(prices: &Value, key: InstrumentKey) -> Option<Value> {
    prices["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["exchangeSegment"] == key.segment.name()
                && i["securityId"] == key.security_id.to_string()
        })
        .cloned()
}

#[test]
fn a_trading_day_closes_then_the_maintenance_swaps_the_master_and_drops_the_expired_contract() {
    let dir = TempDir::new("trading-day");
    let master_file = dir.0.join("master.csv");
    std::fs::write(&master_file, SAMPLE).unwrap();
    let config_text = format!(
        "instruments = \"{}\"\nmaintenance_at = \"08:30\"\n\
         [[watchlist]]\nsymbol = \"CRUDEOIL\"\n[[watchlist]]\nsymbol = \"NIFTY\"\n",
        master_file.display()
    );
    // Thursday 19 November 2026, 10:00 India time: the November crude
    // future's last day.
    let nov19 = day(2026, 11, 19);
    let secs = Arc::new(AtomicU64::new(0));
    let set = |t: SystemTime| secs.store(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), SeqCst);
    set(ist_instant(nov19, 10, 0));
    let clock = {
        let s = Arc::clone(&secs);
        WallClock::new(move || UNIX_EPOCH + Duration::from_secs(s.load(SeqCst)))
    };
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(0),
        ..Flags::default()
    };
    let mut config = RunConfig::build(
        &flags,
        Some((Path::new("relay.toml"), &config_text)),
        &CredentialSources::none(),
    )
    .unwrap();
    config.fanout.unsubscribe_grace = Duration::from_millis(200);
    config.clock = clock;
    let engine = Engine::start(config).unwrap();
    let addr = engine.addr();
    let sim = engine.demo_simulator().unwrap().control();
    wait_for("watchlist subscribed", || {
        let h = held(&sim);
        h.contains(&NOV) && h.contains(&NIFTY)
    });

    // A client holds the November contract by id (it does not roll).
    let mut client = WsClient::connect(addr, "/ws");
    client.subscribe(NOV, "ticker");
    tick(&sim, NOV, 5544.5);
    tick(&sim, NIFTY, 25760.85);
    client.recv_where(|v| v["securityId"] == "472787" && v["ltp"] == json!(5544.5));
    wait_for("both priced", || {
        let p = get_json(addr, "/prices");
        p["NIFTY"] == json!(25760.85) && p["CRUDEOIL"] == json!(5544.5)
    });
    let p = get_json(addr, "/prices");
    assert_eq!(p["status"], "active");
    assert_eq!(
        p["markets"],
        json!({"NSE": "open", "BSE": "open", "CURRENCY": "open", "MCX": "open"})
    );
    assert_eq!(listed(&p, NOV).unwrap()["market"], "open");
    // DhanHQ's market-status packet (a bare header) is reflected by time.
    sim.inject(&FeedMessage::Data(NIFTY, FeedData::MarketStatus));
    wait_for("market-status packet reflected", || {
        get_json(addr, "/stats")["day"]["marketStatusPackets"]["IDX_I"].is_string()
    });

    // 16:00: NSE has closed, MCX trades on.
    set(ist_instant(nov19, 16, 0));
    let p = get_json(addr, "/prices");
    assert_eq!(p["status"], "active", "MCX is open");
    assert_eq!(listed(&p, NIFTY).unwrap()["market"], "closed");
    assert_eq!(listed(&p, NOV).unwrap()["market"], "open");

    // 23:58: MCX closed at 23:55 (US standard time): everything is closed,
    // the last prices stay served.
    set(ist_instant(nov19, 23, 58));
    let p = get_json(addr, "/prices");
    assert_eq!(p["status"], "closed");
    assert_eq!(p["CRUDEOIL"], json!(5544.5), "last price stays");
    assert_eq!(listed(&p, NOV).unwrap()["market"], "closed");
    assert_eq!(get_json(addr, "/stats")["day"]["maintenance"]["runs"], 0);

    // Overnight DhanHQ publishes a master without the expired contract and
    // with a new listing.
    let next_day: String = SAMPLE
        .lines()
        .filter(|l| !l.contains(",472787,"))
        .chain([
            "NSE,E,999001,EQUITY,,NEWLISTCO,1.0,New Listing Co,,,,0.0500,NA,ES,EQ,NEWLISTCO,100",
        ])
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&master_file, next_day).unwrap();
    let nov20 = day(2026, 11, 20);
    set(ist_instant(nov20, 8, 29));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        get_json(addr, "/stats")["day"]["maintenance"]["runs"],
        0,
        "not before 08:30"
    );
    assert_eq!(
        get_json(addr, "/api/instruments?q=NEWLISTCO")["results"],
        json!([]),
        "yesterday's master still in use"
    );

    // 08:31: the maintenance runs.
    set(ist_instant(nov20, 8, 31));
    let expired = client.recv_type("expired");
    assert_eq!(expired["instruments"][0]["securityId"], "472787");
    assert_eq!(expired["instruments"][0]["expiry"], "2026-11-19");
    assert!(expired["message"]
        .as_str()
        .unwrap()
        .contains("unsubscribed"));
    wait_for("the run recorded", || {
        get_json(addr, "/stats")["day"]["maintenance"]["lastRun"]["removedFromBook"] == 1
    });
    let stats = get_json(addr, "/stats");
    let m = &stats["day"]["maintenance"];
    assert_eq!(m["runs"], 1);
    let last = &m["lastRun"];
    assert_eq!(
        (
            last["date"].clone(),
            last["masterSwapped"].clone(),
            last["rolled"].clone(),
            last["expiredDropped"].clone()
        ),
        (json!("2026-11-20"), json!(true), json!(1), json!(1)),
        "{last}"
    );
    assert!(
        last["summary"].as_str().unwrap().contains("day summary"),
        "{last}"
    );
    assert!(
        m["nextRunAt"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-21T08:30"),
        "{m}"
    );
    // The new master answers searches; the watchlist rolled to December.
    let found = get_json(addr, "/api/instruments?q=NEWLISTCO");
    assert_eq!(found["results"][0]["securityId"], "999001", "{found}");
    assert_eq!(
        get_json(addr, "/api/watchlist")["watchlist"][0]["securityId"],
        "472794"
    );
    wait_for("Dec held upstream, Nov released", || {
        let h = held(&sim);
        h.contains(&DEC) && !h.contains(&NOV)
    });
    // The book forgot it: /prices no longer lists it.
    assert!(listed(&get_json(addr, "/prices"), NOV).is_none());
    // The client is still served: the next contract by subscribing again.
    client.subscribe(DEC, "ticker");
    tick(&sim, DEC, 5566.0);
    client.recv_where(|v| v["securityId"] == "472794" && v["ltp"] == json!(5566.0));

    // Once a day.
    set(ist_instant(nov20, 12, 0));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(get_json(addr, "/stats")["day"]["maintenance"]["runs"], 1);
    let metrics = common::http_get(addr, "/metrics").1;
    assert!(
        metrics.contains("dhan_relay_maintenance_runs_total 1"),
        "{metrics}"
    );
    engine.shutdown();
}
