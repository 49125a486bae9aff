//! 20-level depth end to end over loopback: `/ws` clients in `depth20`,
//! the engine's depth connection to the demo simulator's `/twentydepth`.

mod common;
use common::{get_json, wait_for, WsClient};

use std::time::Duration;

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::instrument::date::ist_instant;
use dhan_relay::instrument::{Date, WallClock};
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::depth::{DepthBook, DepthRow, Side, ROWS};
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use dhan_relay::wire::request::RequestCode;
use serde_json::Value;

const GRACE: Duration = Duration::from_millis(200);

fn start() -> (Engine, SimControl) {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(0),
        ..Flags::default()
    };
    let mut c = RunConfig::build(&flags, None, &CredentialSources::none()).unwrap();
    c.fanout.unsubscribe_grace = GRACE;
    c.clock = WallClock::fixed(ist_instant(Date::from_ymd(2026, 12, 3).unwrap(), 11, 0));
    let engine = Engine::start(c).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    (engine, sim)
}

fn reliance() -> InstrumentKey {
    InstrumentKey::new(Segment::NseEq, 2885)
}

/// The simulator's open depth connections: (id, instruments).
fn depth_conns(sim: &SimControl) -> Vec<(u64, Vec<InstrumentKey>)> {
    sim.subscriptions()
        .into_iter()
        .filter(|c| c.depth)
        .map(|c| (c.conn, c.instruments.into_keys().collect()))
        .collect()
}

fn depth_requests(sim: &SimControl, code: RequestCode) -> Vec<Vec<InstrumentKey>> {
    sim.requests()
        .into_iter()
        .filter(|r| r.code == code)
        .map(|r| r.instruments)
        .collect()
}

/// A recognisable side: price `base ± i × 0.05`, quantity and orders from `i`.
fn side(key: InstrumentKey, side: Side, base: f64) -> DepthBook {
    let mut rows = [DepthRow::default(); ROWS];
    for (i, r) in rows.iter_mut().enumerate() {
        let step = 0.05 * i as f64;
        *r = DepthRow {
            price: if side == Side::Bid {
                base - step
            } else {
                base + step
            },
            quantity: 100 + i as u32,
            orders: 1 + i as u32,
        };
    }
    DepthBook {
        key,
        side,
        sequence: 7,
        rows,
    }
}

/// The rows of `side` ("bids" or "asks") of a depth20 message as sent.
/// Prices are read from the text with `str::parse` (exact), not through
/// serde_json's `f64` (which may be off by an ulp without its
/// `float_roundtrip` feature).
fn rows_of(text: &str, side: &str) -> Vec<(f64, u64, u64)> {
    let v: Value = serde_json::from_str(text).unwrap();
    let start = text.find(&format!("\"{side}\":[")).unwrap();
    let prices: Vec<f64> = text[start..]
        .split("\"price\":")
        .skip(1)
        .take(20)
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .collect();
    v[side]
        .as_array()
        .unwrap()
        .iter()
        .zip(prices)
        .map(|(r, price)| {
            (
                price,
                r["quantity"].as_u64().unwrap(),
                r["orders"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn expected(book: &DepthBook) -> Vec<(f64, u64, u64)> {
    book.rows
        .iter()
        .map(|r| (r.price, u64::from(r.quantity), u64::from(r.orders)))
        .collect()
}

/// The next depth20 message's text.
fn recv_depth20(client: &mut WsClient) -> String {
    loop {
        let text = client.recv_text();
        if text.starts_with(r#"{"type":"depth20""#) {
            return text;
        }
    }
}

/// Injects both sides and waits for `client` to show them.
fn inject_and_receive(
    sim: &SimControl,
    client: &mut WsClient,
    bids: &DepthBook,
    asks: &DepthBook,
) -> String {
    sim.inject_depth(bids);
    sim.inject_depth(asks);
    loop {
        let text = recv_depth20(client);
        if rows_of(&text, "asks") == expected(asks) {
            return text;
        }
    }
}

#[test]
fn depth20_opens_the_depth_feed_on_demand_shares_it_and_closes_it_after_the_grace() {
    let (engine, sim) = start();
    let addr = engine.addr();
    assert!(
        depth_conns(&sim).is_empty(),
        "no depth connection before a client asks"
    );

    let mut a = WsClient::connect(addr, "/ws");
    a.subscribe(reliance(), "depth20");
    wait_for("a depth connection holding RELIANCE", || {
        let conns = depth_conns(&sim);
        conns.len() == 1 && conns[0].1 == vec![reliance()]
    });
    assert_eq!(
        depth_requests(&sim, RequestCode::SubscribeDepth),
        vec![vec![reliance()]],
        "RequestCode 23 with the instrument"
    );
    wait_for("/health shows the depth connection", || {
        get_json(addr, "/health")["upstream"]["depth"]["connectionsUp"] == 1
    });
    // depth20 implies full mode on the main feed.
    wait_for("full mode on the main feed", || {
        sim.subscriptions()
            .iter()
            .any(|c| !c.depth && c.instruments.get(&reliance()) == Some(&Mode::Full))
    });

    let bids = side(reliance(), Side::Bid, 1465.4);
    let asks = side(reliance(), Side::Ask, 1465.45);
    let text = inject_and_receive(&sim, &mut a, &bids, &asks);
    let msg: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(msg["exchangeSegment"], "NSE_EQ");
    assert_eq!(msg["securityId"], "2885");
    assert_eq!(msg["symbol"], "RELIANCE");
    assert_eq!(rows_of(&text, "bids"), expected(&bids), "20 bids as sent");
    assert_eq!(rows_of(&text, "asks"), expected(&asks), "20 asks as sent");
    assert_eq!(msg["bids"].as_array().unwrap().len(), 20);

    // The main feed still flows to a depth20 client.
    sim.inject(&FeedMessage::Data(
        reliance(),
        FeedData::Ticker(Ticker {
            ltp: 1465.5,
            ltt: 1_729_412_345,
        }),
    ));
    let t = a.recv_type("ticker");
    assert_eq!(t["ltp"], 1465.5);

    // A second client shares the subscription and gets the book at once.
    std::thread::sleep(Duration::from_millis(150)); // the book's snapshot
    let mut b = WsClient::connect(addr, "/ws");
    b.subscribe(reliance(), "depth20");
    let snap = recv_depth20(&mut b);
    assert_eq!(
        rows_of(&snap, "asks"),
        expected(&asks),
        "snapshot on subscribe"
    );
    assert_eq!(
        rows_of(&snap, "bids"),
        expected(&bids),
        "snapshot on subscribe"
    );
    let bids2 = side(reliance(), Side::Bid, 1465.0);
    let asks2 = side(reliance(), Side::Ask, 1466.0);
    let to_b = inject_and_receive(&sim, &mut b, &bids2, &asks2);
    assert_eq!(rows_of(&to_b, "bids"), expected(&bids2));
    let to_a = inject_and_receive(&sim, &mut a, &bids2, &asks2);
    assert_eq!(rows_of(&to_a, "bids"), expected(&bids2));
    assert_eq!(
        depth_requests(&sim, RequestCode::SubscribeDepth).len(),
        1,
        "one upstream depth subscription for both clients"
    );
    assert_eq!(depth_conns(&sim).len(), 1);

    // A second instrument, then dropped: RequestCode 24 for it alone.
    let fno = InstrumentKey::new(Segment::NseFno, 35001);
    b.subscribe(fno, "depth20");
    wait_for("both on the depth connection", || {
        depth_conns(&sim).first().map(|c| c.1.len()) == Some(2)
    });
    b.unsubscribe(&[fno]);
    wait_for("RequestCode 24 for the dropped instrument", || {
        depth_requests(&sim, RequestCode::UnsubscribeDepth) == vec![vec![fno]]
    });
    assert_eq!(depth_conns(&sim).len(), 1, "RELIANCE keeps it open");

    // The last depth20 client leaves: after the grace, the connection closes.
    drop(a);
    b.unsubscribe(&[reliance()]);
    std::thread::sleep(GRACE / 2);
    assert_eq!(depth_conns(&sim).len(), 1, "kept during the grace");
    wait_for("the depth connection closed", || {
        depth_conns(&sim).is_empty()
    });
    assert_eq!(sim.subscriptions().len(), 1, "the main feed stays up");
    wait_for("/health shows no depth connection", || {
        get_json(addr, "/health")["upstream"]["depth"]["connectionsUp"] == 0
    });
    let stats = get_json(addr, "/stats");
    assert!(stats["depth"]["counters"]["upstream_frames_total"].as_u64() >= Some(2));
    engine.shutdown();
}

#[test]
fn depth20_outside_nse_is_an_error_naming_the_segments() {
    let (engine, sim) = start();
    let mut c = WsClient::connect(engine.addr(), "/ws");
    let nifty = InstrumentKey::new(Segment::IdxI, 13);
    c.subscribe_many(&[nifty, reliance()], "depth20");
    let e = c.recv_type("error");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("NSE_EQ and NSE_FNO"), "{m}");
    assert!(m.contains("IDX_I 13"), "{m}");
    // The NSE instrument in the same message is subscribed.
    wait_for("RELIANCE on the depth feed", || {
        depth_conns(&sim).iter().any(|c| c.1 == vec![reliance()])
    });
    assert!(depth_requests(&sim, RequestCode::SubscribeDepth)
        .iter()
        .all(|r| !r.contains(&nifty)));
    engine.shutdown();
}

/// The next binary frame from a `/dhan/twentydepth` client socket.
fn next_binary(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> Vec<u8> {
    loop {
        match ws.read().expect("a frame before the timeout") {
            tungstenite::Message::Binary(b) => return b.to_vec(),
            tungstenite::Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

fn depth_request(code: u8, key: InstrumentKey) -> tungstenite::Message {
    tungstenite::Message::text(format!(
        r#"{{"RequestCode":{code},"InstrumentCount":1,"InstrumentList":[{{"ExchangeSegment":"{}","SecurityId":"{}"}}]}}"#,
        key.segment.name(),
        key.security_id
    ))
}

fn encoded(book: &DepthBook) -> Vec<u8> {
    let mut b = Vec::new();
    dhan_relay::wire::depth::DepthMessage::Book(*book).encode(&mut b);
    b
}

#[test]
fn dhan_twentydepth_serves_dhans_depth_packets_byte_for_byte_sharing_the_subscription() {
    let (engine, sim) = start();
    let addr = engine.addr();
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{addr}/dhan/twentydepth?token=t&clientId=c&authType=2");
    let (mut dhan, _) = tungstenite::client::client(url, stream).unwrap();
    dhan.send(depth_request(23, reliance())).unwrap();
    let mut json = WsClient::connect(addr, "/ws");
    json.subscribe(reliance(), "depth20");
    wait_for("RELIANCE on one depth connection", || {
        let conns = depth_conns(&sim);
        conns.len() == 1 && conns[0].1 == vec![reliance()]
    });
    wait_for("the JSON client's full subscription", || {
        sim.subscriptions()
            .iter()
            .any(|c| !c.depth && c.instruments.get(&reliance()) == Some(&Mode::Full))
    });
    // A main-feed packet is not for a depth-feed client.
    sim.inject(&FeedMessage::Data(
        reliance(),
        FeedData::Ticker(Ticker {
            ltp: 1465.5,
            ltt: 1_729_412_345,
        }),
    ));
    let bids = side(reliance(), Side::Bid, 1465.4);
    let asks = DepthBook {
        sequence: 8,
        ..side(reliance(), Side::Ask, 1465.45)
    };
    sim.inject_depth(&bids);
    sim.inject_depth(&asks);
    assert_eq!(
        next_binary(&mut dhan),
        encoded(&bids),
        "bid packet byte for byte"
    );
    assert_eq!(
        next_binary(&mut dhan),
        encoded(&asks),
        "ask packet byte for byte"
    );
    let text = inject_and_receive(&sim, &mut json, &bids, &asks);
    assert_eq!(rows_of(&text, "bids"), expected(&bids));
    assert_eq!(next_binary(&mut dhan), encoded(&bids), "injected again");
    assert_eq!(next_binary(&mut dhan), encoded(&asks), "injected again");
    assert_eq!(
        depth_requests(&sim, RequestCode::SubscribeDepth),
        vec![vec![reliance()]],
        "one upstream depth subscription for the /dhan and the /ws client"
    );

    // The docs' unsubscribe code (25) is accepted like the SDK's (24).
    dhan.send(depth_request(25, reliance())).unwrap();
    json.unsubscribe(&[reliance()]);
    wait_for("the depth connection closed after the grace", || {
        depth_conns(&sim).is_empty()
    });

    // A main-feed request on the depth endpoint: the depth feed's
    // disconnect packet (code 50, reason 814), then a close.
    dhan.send(depth_request(15, reliance())).unwrap();
    let packet = next_binary(&mut dhan);
    let decoded = dhan_relay::wire::depth::decode(&packet).unwrap();
    assert_eq!(
        decoded.message,
        dhan_relay::wire::depth::DepthMessage::Disconnect(
            dhan_relay::wire::DisconnectReason::from_code(814)
        )
    );
    engine.shutdown();
}

/// The network thread alone against a simulator, with a depth ring.
fn net_rig(
    max_connections: usize,
) -> (
    dhan_relay::sim::Simulator,
    dhan_relay::upstream::Upstream,
    ringbuf::HeapCons<dhan_relay::tick::DepthTick>,
) {
    use dhan_relay::upstream::{
        derive_depth_url, BackoffConfig, Credentials, Upstream, UpstreamConfig,
    };
    use ringbuf::traits::Split;
    use ringbuf::HeapRb;
    let sim = dhan_relay::sim::Simulator::start(dhan_relay::sim::SimConfig {
        ticks_per_sec: 0,
        ..dhan_relay::sim::SimConfig::default()
    })
    .unwrap();
    let cfg = UpstreamConfig {
        feed_url: sim.feed_url(),
        depth_url: derive_depth_url(&sim.feed_url()),
        credentials: Credentials::new("1100003626", "test-token-secret"),
        max_connections,
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
            auth_failure: Duration::from_secs(60),
        },
        ..UpstreamConfig::default()
    };
    let (prod, _cons) = HeapRb::<dhan_relay::tick::Tick>::new(64).split();
    std::mem::forget(_cons);
    let (depth_prod, depth_cons) = HeapRb::<dhan_relay::tick::DepthTick>::new(64).split();
    let up = Upstream::spawn_with_depth(cfg, prod, Some(depth_prod), None, None, None).unwrap();
    (sim, up, depth_cons)
}

#[test]
fn depth_connections_share_the_accounts_connections_with_the_main_feed() {
    use dhan_relay::upstream::Command;
    let (sim, up, _depth) = net_rig(2);
    let ctl = sim.control();
    wait_for("the main feed up", || ctl.subscriptions().len() == 1);
    // 120 instruments would take three depth connections of 50; the account
    // has two connections and the main feed holds one.
    let keys: Vec<InstrumentKey> = (0..120)
        .map(|i| InstrumentKey::new(Segment::NseFno, 40_000 + i))
        .collect();
    assert!(up.control().send(Command::SubscribeDepth(keys.clone())));
    wait_for("one depth connection with 50 instruments", || {
        let d = depth_conns(&ctl);
        d.len() == 1 && d[0].1.len() == 50
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ctl.subscriptions().len(),
        2,
        "never more than the account's two"
    );
    assert_eq!(depth_conns(&ctl).len(), 1);
    // Dropping the first 50 frees the connection for the next 50.
    let first = depth_conns(&ctl)[0].clone();
    assert!(up
        .control()
        .send(Command::UnsubscribeDepth(keys[..50].to_vec())));
    wait_for("the next 50 on a new depth connection", || {
        let d = depth_conns(&ctl);
        d.len() == 1 && d[0].0 != first.0 && d[0].1.len() == 50 && !d[0].1.contains(&keys[0])
    });
    assert_eq!(ctl.subscriptions().len(), 2);
    // And none wanted: none open.
    assert!(up
        .control()
        .send(Command::UnsubscribeDepth(keys[50..].to_vec())));
    wait_for("no depth connection", || depth_conns(&ctl).is_empty());
    assert_eq!(ctl.subscriptions().len(), 1, "the main feed stays");
    up.shutdown();
}

#[test]
fn new_credentials_restart_the_depth_connection_with_the_new_token() {
    use dhan_relay::upstream::{Command, Credentials};
    use ringbuf::traits::Consumer;
    let (sim, up, mut depth) = net_rig(5);
    let ctl = sim.control();
    assert!(up.control().send(Command::SubscribeDepth(vec![reliance()])));
    wait_for("a depth connection", || depth_conns(&ctl).len() == 1);
    let old = depth_conns(&ctl)[0].0;
    assert!(up.control().send(Command::Credentials(Credentials::new(
        "1100003626",
        "rotated-token"
    ))));
    wait_for("a new depth connection holding RELIANCE", || {
        let d = depth_conns(&ctl);
        d.len() == 1 && d[0].0 != old && d[0].1 == vec![reliance()]
    });
    // The old token is not used again: refusing it changes nothing.
    let rotated = depth_conns(&ctl)[0].0;
    ctl.expire_token("test-token-secret");
    ctl.drop_connections();
    wait_for("a reconnect on the new token", || {
        let d = depth_conns(&ctl);
        d.len() == 1 && d[0].0 != rotated && d[0].1 == vec![reliance()]
    });
    let bids = side(reliance(), Side::Bid, 1465.4);
    ctl.inject_depth(&bids);
    wait_for("the packet on the depth ring", || {
        depth.try_pop().is_some_and(|t| t.book == bids)
    });
    up.shutdown();
}
