//! The whole engine over real sockets on 127.0.0.1: the built-in simulator
//! upstream, WebSocket and HTTP clients downstream.

mod common;
use common::{held, http_get, http_get_json, wait_for, WsClient};

use std::net::TcpStream;
use std::time::{Duration, Instant};

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::evloop::Threads;
use dhan_relay::instrument::date::ist_instant;
use dhan_relay::instrument::{Date, WallClock};
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::feed::{DepthLevel, FeedData, FeedMessage, Full, Quote, Ticker};
use dhan_relay::wire::request::RequestCode;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

fn config() -> RunConfig {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(0),
        ..Flags::default()
    };
    let mut c = RunConfig::build(&flags, None, &CredentialSources::none()).unwrap();
    // Exactly the watchlist upstream: no demo option chain (tests/chains.rs).
    c.chains.clear();
    c.fanout.unsubscribe_grace = Duration::from_millis(200);
    // A Thursday at 11:00 India time: markets open, `/prices` says active.
    c.clock = WallClock::fixed(ist_instant(Date::from_ymd(2026, 12, 3).unwrap(), 11, 0));
    c
}

fn start(tweak: impl FnOnce(&mut RunConfig)) -> (Engine, SimControl) {
    let mut c = config();
    tweak(&mut c);
    let engine = Engine::start(c).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    (engine, sim)
}

/// Caps a socket's kernel receive buffer, so a client that never reads
/// backs up into the relay quickly.
fn shrink_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket fd and a pointer to a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

fn key(i: u32) -> InstrumentKey {
    InstrumentKey::new(Segment::NseEq, i)
}

fn full_sample(ltp: f32) -> Full {
    Full {
        quote: Quote {
            ltp,
            ltq: 25,
            ltt: 1_729_412_345,
            avg_price: 1460.05,
            volume: 123_456,
            total_sell_qty: 500,
            total_buy_qty: 600,
            open: 1450.0,
            close: 1440.5,
            high: 1470.0,
            low: 1449.95,
        },
        oi: 9,
        oi_day_high: 10,
        oi_day_low: 8,
        depth: std::array::from_fn(|i| DepthLevel {
            bid_qty: 100 + i as u32,
            ask_qty: 200 + i as u32,
            bid_orders: 1 + i as u16,
            ask_orders: 2 + i as u16,
            bid_price: [1465.35, 1465.3, 1465.25, 1465.2, 1465.15][i],
            ask_price: [1465.45, 1465.5, 1465.55, 1465.6, 1465.65][i],
        }),
    }
}

#[test]
fn greets_with_status_and_delivers_exact_values_in_each_mode() {
    let (engine, sim) = start(|_| {});
    let mut c = WsClient::connect(engine.addr(), "/ws");
    assert_eq!(
        c.recv(),
        json!({"type": "status", "state": "connected", "message": "Connected to price feed"})
    );
    let k = key(2885);
    c.subscribe(k, "full");
    wait_for("upstream full subscription", || {
        held(&sim).contains(&(k, Mode::Full))
    });
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker {
            ltp: 1465.4,
            ltt: 1_729_412_345,
        }),
    ));
    let t = c.recv_type("ticker");
    assert_eq!(t["ltp"], json!(1465.4));
    assert_eq!(t["ltt"], json!(1_729_412_345));
    assert_eq!(t["securityId"], "2885");
    assert_eq!(t["exchangeSegment"], "NSE_EQ");
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Quote(full_sample(1465.5).quote),
    ));
    let q = c.recv_type("quote");
    for (field, v) in [
        ("ltp", json!(1465.5)),
        ("ltq", json!(25)),
        ("avgPrice", json!(1460.05)),
        ("volume", json!(123_456)),
        ("totalSellQuantity", json!(500)),
        ("totalBuyQuantity", json!(600)),
        ("open", json!(1450.0)),
        ("close", json!(1440.5)),
        ("high", json!(1470.0)),
        ("low", json!(1449.95)),
    ] {
        assert_eq!(q[field], v, "{field}");
    }
    sim.inject(&FeedMessage::Data(k, FeedData::Full(full_sample(1465.6))));
    let f = c.recv_type("full");
    assert_eq!(f["ltp"], json!(1465.6));
    assert_eq!(
        (
            f["oi"].clone(),
            f["oiDayHigh"].clone(),
            f["oiDayLow"].clone()
        ),
        (json!(9), json!(10), json!(8))
    );
    let depth = f["depth"].as_array().unwrap();
    assert_eq!(depth.len(), 5);
    assert_eq!(
        depth[4],
        json!({"bidQuantity": 104, "askQuantity": 204, "bidOrders": 5, "askOrders": 6,
        "bidPrice": 1465.15, "askPrice": 1465.65})
    );
    engine.shutdown();
}

#[test]
fn two_clients_share_one_upstream_subscription_released_after_both_leave() {
    let (engine, sim) = start(|_| {});
    let k = key(11);
    let mut a = WsClient::connect(engine.addr(), "/ws");
    let mut b = WsClient::connect(engine.addr(), "/ws");
    a.subscribe(k, "ticker");
    b.subscribe(k, "ticker");
    wait_for("subscription", || held(&sim).contains(&(k, Mode::Ticker)));
    std::thread::sleep(Duration::from_millis(100));
    let subs = |sim: &SimControl| {
        sim.requests()
            .iter()
            .filter(|r| r.code == RequestCode::SubscribeTicker && r.instruments.contains(&k))
            .count()
    };
    assert_eq!(subs(&sim), 1, "exactly one upstream subscribe");
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker { ltp: 10.5, ltt: 1 }),
    ));
    assert_eq!(a.recv_type("ticker")["ltp"], json!(10.5));
    assert_eq!(b.recv_type("ticker")["ltp"], json!(10.5));
    // The list is published by the fanout at most every 100 ms.
    let entry = || {
        let (code, active) = http_get_json(engine.addr(), "/api/v2/subscriptions/active");
        assert_eq!(code, 200);
        active["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["securityId"] == "11")
            .cloned()
    };
    wait_for("the subscription listed", || entry().is_some());
    let entry = entry().unwrap();
    assert_eq!(
        (entry["mode"].clone(), entry["clients"].clone()),
        (json!("ticker"), json!(2))
    );
    drop(a);
    std::thread::sleep(Duration::from_millis(400));
    assert!(held(&sim).contains(&(k, Mode::Ticker)), "b still holds it");
    b.send(json!({"type": "unsubscribe", "instruments": [{"exchangeSegment": "NSE_EQ", "securityId": "11"}]}));
    wait_for("upstream unsubscribe after the grace period", || {
        !held(&sim).iter().any(|(hk, _)| *hk == k)
    });
    engine.shutdown();
}

#[test]
fn mode_upgrades_and_downgrades_reach_the_simulator() {
    let (engine, sim) = start(|_| {});
    let k = key(12);
    let mut a = WsClient::connect(engine.addr(), "/ws");
    let mut b = WsClient::connect(engine.addr(), "/ws");
    a.subscribe(k, "ticker");
    wait_for("ticker", || held(&sim).contains(&(k, Mode::Ticker)));
    b.subscribe(k, "full");
    wait_for("full", || held(&sim).contains(&(k, Mode::Full)));
    drop(b);
    wait_for("back to ticker", || held(&sim).contains(&(k, Mode::Ticker)));
    // The ticker client gets ticker messages even from full packets.
    sim.inject(&FeedMessage::Data(k, FeedData::Full(full_sample(99.95))));
    let t = a.recv_type("ticker");
    assert_eq!(t["ltp"], json!(99.95));
    engine.shutdown();
}

#[test]
fn a_new_subscriber_gets_the_last_value_at_once() {
    let (engine, sim) = start(|_| {});
    let k = key(13);
    let mut a = WsClient::connect(engine.addr(), "/ws");
    a.subscribe(k, "ticker");
    wait_for("sub", || held(&sim).contains(&(k, Mode::Ticker)));
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker { ltp: 42.05, ltt: 7 }),
    ));
    a.recv_type("ticker");
    let mut b = WsClient::connect(engine.addr(), "/ws");
    b.recv_type("status");
    b.subscribe(k, "ticker");
    let snap = b.recv_type("ticker");
    assert_eq!(
        (snap["ltp"].clone(), snap["ltt"].clone()),
        (json!(42.05), json!(7))
    );
    engine.shutdown();
}

#[test]
fn bad_input_gets_an_error_and_a_healthy_client_keeps_receiving() {
    let (engine, sim) = start(|c| c.fanout.max_instruments_per_message = 3);
    let k = key(14);
    let mut good = WsClient::connect(engine.addr(), "/ws");
    good.subscribe(k, "ticker");
    wait_for("sub", || held(&sim).contains(&(k, Mode::Ticker)));
    let mut bad = WsClient::connect(engine.addr(), "/ws");
    bad.recv_type("status");
    let cases = [
        ("{oops".to_string(), "malformed JSON"),
        (json!({"type": "dance"}).to_string(), "unknown type"),
        (json!({"type": "subscribe", "instruments": [{"exchangeSegment": "XYZ", "securityId": "1"}]}).to_string(), "unknown exchangeSegment 'XYZ'"),
        (json!({"type": "subscribe", "instruments": [{"exchangeSegment": "NSE_EQ", "securityId": "abc"}]}).to_string(), "securityId 'abc'"),
        (json!({"type": "subscribe", "instruments": [{"symbol": "A"}, {"symbol": "B"}, {"symbol": "C"}, {"symbol": "D"}]}).to_string(), "too many instruments"),
        (json!({"type": "subscribe", "instruments": [{"symbol": "NOSUCH"}]}).to_string(), "symbols not found: NOSUCH"),
        (json!({"type": "subscribe", "instruments": [{"symbol": "NIFTY"}], "mode": "depth"}).to_string(), "unknown mode 'depth'"),
    ];
    for (text, expected) in cases {
        bad.0.send(Message::text(text.clone())).unwrap();
        let e = bad.recv_type("error");
        assert!(
            e["message"].as_str().unwrap().contains(expected),
            "{text} → {e}"
        );
        sim.inject(&FeedMessage::Data(
            k,
            FeedData::Ticker(Ticker { ltp: 1.5, ltt: 1 }),
        ));
        assert_eq!(good.recv_type("ticker")["ltp"], json!(1.5));
    }
    // Oversized frame: closed with 1009.
    let mut big = WsClient::connect(engine.addr(), "/ws");
    big.recv_type("status");
    let _ = big.0.send(Message::text("x".repeat(70_000)));
    assert_eq!(big.close_code(), Some(CloseCode::Size));
    // Binary frame: closed with 1003.
    let mut bin = WsClient::connect(engine.addr(), "/ws");
    bin.recv_type("status");
    bin.0.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(bin.close_code(), Some(CloseCode::Unsupported));
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker { ltp: 2.5, ltt: 2 }),
    ));
    assert_eq!(good.recv_type("ticker")["ltp"], json!(2.5));
    engine.shutdown();
}

#[test]
fn a_client_that_never_reads_is_conflated_then_closed_and_others_are_unharmed() {
    let (engine, sim) = start(|c| {
        c.fanout.client_queue_bytes = 16 * 1024;
        c.fanout.slow_client_timeout = Duration::from_millis(1500);
    });
    let keys: Vec<_> = (100..150).map(key).collect();
    let subscribe_all = |c: &mut WsClient| {
        let list: Vec<Value> = keys
            .iter()
            .map(|k| json!({"exchangeSegment": "NSE_EQ", "securityId": k.security_id.to_string()}))
            .collect();
        c.send(json!({"type": "subscribe", "instruments": list}));
    };
    // The slow client: a tiny receive buffer, and it never reads.
    let mut slow = WsClient::connect(engine.addr(), "/ws");
    shrink_receive_buffer(slow.0.get_ref());
    subscribe_all(&mut slow);
    let mut good = WsClient::connect(engine.addr(), "/ws");
    good.recv_type("status");
    subscribe_all(&mut good);
    wait_for("subs", || held(&sim).len() >= 53);
    let mut last = 0.0;
    let started = Instant::now();
    let mut max_gap = Duration::ZERO;
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(4) && n < 40_000 {
        for k in &keys {
            n += 1;
            sim.inject(&FeedMessage::Data(
                *k,
                FeedData::Ticker(Ticker {
                    ltp: n as f32,
                    ltt: n,
                }),
            ));
        }
        // The good client keeps up.
        let t0 = Instant::now();
        loop {
            let v = good.recv_type("ticker");
            if v["ltp"].as_f64().unwrap() >= f64::from(n) {
                last = v["ltp"].as_f64().unwrap();
                break;
            }
        }
        max_gap = max_gap.max(t0.elapsed());
    }
    assert_eq!(last, f64::from(n));
    assert!(
        max_gap < Duration::from_millis(500),
        "healthy client stalled for {max_gap:?}"
    );
    wait_for("the slow client to be closed", || {
        let (_, stats) = http_get(engine.addr(), "/stats");
        let stats: Value = serde_json::from_str(&stats).unwrap();
        stats["counters"]["fanout_slow_closes_total"]
            .as_u64()
            .unwrap()
            >= 1
            && stats["counters"]["fanout_clients"] == 1
    });
    let (_, stats) = http_get(engine.addr(), "/stats");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert!(
        stats["counters"]["fanout_conflated_total"]
            .as_u64()
            .unwrap()
            > 0,
        "{stats}"
    );
    // The healthy client is still served.
    sim.inject(&FeedMessage::Data(
        keys[0],
        FeedData::Ticker(Ticker { ltp: 0.5, ltt: 1 }),
    ));
    assert_eq!(good.recv_type("ticker")["ltp"], json!(0.5));
    engine.shutdown();
}

/// The network and fanout loops on one thread.
#[test]
fn upstream_drop_is_announced_and_data_resumes_after_reconnect() {
    drop_is_announced_and_data_resumes(Threads::Compact, false);
}

/// The same with the network loop on a thread of its own, busy-polling
/// its sockets.
#[test]
fn a_busy_polling_network_thread_relays_and_reconnects() {
    drop_is_announced_and_data_resumes(Threads::Spread, true);
}

fn drop_is_announced_and_data_resumes(threads: Threads, busy_poll: bool) {
    let (engine, sim) = start(|c| {
        c.threads = threads;
        c.busy_poll = busy_poll;
    });
    assert_eq!(
        http_get_json(engine.addr(), "/stats").1["threads"],
        threads.name()
    );
    let k = key(15);
    let mut c = WsClient::connect(engine.addr(), "/ws");
    c.recv_type("status");
    c.subscribe(k, "ticker");
    wait_for("sub", || held(&sim).contains(&(k, Mode::Ticker)));
    sim.drop_connections();
    let down = c.recv_type("status");
    assert!(
        down["message"]
            .as_str()
            .unwrap()
            .starts_with("Price feed disconnected"),
        "{down}"
    );
    assert_eq!(c.recv_type("status")["message"], "Connected to price feed");
    wait_for("resubscribed", || held(&sim).contains(&(k, Mode::Ticker)));
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker { ltp: 7.25, ltt: 3 }),
    ));
    assert_eq!(c.recv_type("ticker")["ltp"], json!(7.25));
    engine.shutdown();
}

/// Arrival groups: messages that came within 2 ms of the one before are
/// taken to be from the same write.
fn arrival_groups(arrivals: &[Instant]) -> usize {
    1 + arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(2))
        .count()
}

#[test]
fn a_flush_interval_gathers_updates_into_fewer_writes_and_loses_none() {
    let (engine, sim) = start(|_| {});
    let k = key(16);
    let mut c = WsClient::connect(engine.addr(), "/ws");
    c.recv_type("status");
    c.send(json!({"type": "options", "flushIntervalUs": 100001}));
    assert!(c.recv_type("error")["message"]
        .as_str()
        .unwrap()
        .contains("flushIntervalUs"));
    c.send(json!({"type": "options", "flushIntervalUs": 50000}));
    assert_eq!(c.recv_type("options")["flushIntervalUs"], 50000);
    c.subscribe(k, "ticker");
    wait_for("sub", || held(&sim).contains(&(k, Mode::Ticker)));
    // 60 updates 5 ms apart (300 ms): one write per 50 ms means about 7
    // groups of arrivals instead of 60.
    let injector = {
        let sim = sim.clone();
        std::thread::spawn(move || {
            for n in 1..=60u32 {
                sim.inject(&FeedMessage::Data(
                    k,
                    FeedData::Ticker(Ticker {
                        ltp: n as f32,
                        ltt: n,
                    }),
                ));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut arrivals = Vec::new();
    for n in 1..=60u32 {
        let v = c.recv_type("ticker");
        assert_eq!(v["ltp"], json!(n as f64), "every update, in order");
        arrivals.push(Instant::now());
    }
    injector.join().unwrap();
    let groups = arrival_groups(&arrivals);
    assert!((2..=14).contains(&groups), "{groups} groups of arrivals");
    // Back to writing at once.
    c.send(json!({"type": "options", "flushIntervalUs": 0}));
    assert_eq!(c.recv_type("options")["flushIntervalUs"], 0);
    engine.shutdown();
}

#[test]
fn rest_endpoints_say_what_they_claim() {
    let (engine, sim) = start(|_| {});
    let nifty = InstrumentKey::new(Segment::IdxI, 13);
    wait_for("watchlist subscribed", || {
        held(&sim).contains(&(nifty, Mode::Ticker))
    });
    sim.inject(&FeedMessage::Data(
        nifty,
        FeedData::Ticker(Ticker {
            ltp: 25760.85,
            ltt: 1_770_109_795,
        }),
    ));
    wait_for("price in /prices", || {
        let (_, body) = http_get(engine.addr(), "/prices");
        serde_json::from_str::<Value>(&body).unwrap()["NIFTY"] == json!(25760.85)
    });
    let (code, body) = http_get(engine.addr(), "/prices");
    assert_eq!(code, 200);
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["status"], "active");
    assert_eq!(p["markets"]["NSE"], "open");
    assert!(p.get("SENSEX").is_some() && p.get("RELIANCE").is_some());
    assert!(p["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["symbol"] == "NIFTY" && i["ltt"] == 1_770_109_795 && i["market"] == "open"));
    let (code, body) = http_get(engine.addr(), "/health");
    assert_eq!(code, 200);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (h["status"].clone(), h["demo"].clone()),
        (json!("ok"), json!(true))
    );
    let (code, metrics) = http_get(engine.addr(), "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("dhan_relay_upstream_connections_up 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dhan_relay_tick_to_wire_seconds{quantile=\"0.99\"}"));
    let (code, _) = http_get(engine.addr(), "/nope");
    assert_eq!(code, 404);
    let (code, _) = http_get(engine.addr(), "/ws");
    assert_eq!(code, 426, "plain GET on a WebSocket path");
    // /ws/prices pushes the same object, once a second.
    let mut p = WsClient::connect(engine.addr(), "/ws/prices");
    let first = p.recv();
    assert_eq!(first["NIFTY"], json!(25760.85));
    let t0 = Instant::now();
    let second = p.recv();
    assert!(second.get("timestamp").is_some());
    assert!(
        t0.elapsed() > Duration::from_millis(500),
        "about once a second"
    );
    // Health goes 503 when the upstream is gone for good.
    // A new token for the demo account revokes the relay's: 807 now and on
    // every reconnect.
    let _ = sim.issue_token("demo-client", Duration::from_secs(60));
    wait_for("503 with the 807", || {
        let (code, body) = http_get(engine.addr(), "/health");
        code == 503
            && serde_json::from_str::<Value>(&body).unwrap()["upstream"]["lastDisconnect"]["code"]
                == 807
    });
    let (_, body) = http_get(engine.addr(), "/health");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        h["upstream"]["lastDisconnect"]["name"],
        "access_token_expired"
    );
    let (_, prices) = http_get(engine.addr(), "/prices");
    let p: Value = serde_json::from_str(&prices).unwrap();
    assert!(
        p["status"]
            .as_str()
            .unwrap()
            .starts_with("upstream down: 807"),
        "{p}"
    );
    assert!(!body.contains("eyJ"), "no token in /health: {body}");
    engine.shutdown();
}

#[test]
fn a_foreign_origin_is_refused() {
    let (engine, _sim) = start(|_| {});
    let err = WsClient::connect_with(engine.addr(), "/ws", Some("https://evil.example"))
        .err()
        .unwrap();
    match err {
        tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(WsClient::connect_with(engine.addr(), "/ws", Some("http://localhost:3000")).is_ok());
    engine.shutdown();
}

#[test]
fn shutdown_closes_clients_and_disconnects_upstream() {
    let (engine, sim) = start(|_| {});
    let mut c = WsClient::connect(engine.addr(), "/ws");
    c.recv_type("status");
    engine.shutdown();
    assert_eq!(c.close_code(), Some(CloseCode::Away));
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.code == RequestCode::Disconnect));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let (engine, _sim) = start(|_| {});
    let mut c = config();
    c.listen = vec![dhan_relay::config::ListenSpec::plain(engine.addr())];
    let err = Engine::start(c).err().unwrap().to_string();
    assert!(err.contains("in use"), "{err}");
    engine.shutdown();
}
