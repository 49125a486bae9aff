//! `/dhan`, the DhanHQ-compatible feed, end to end: a raw tungstenite
//! client speaks DhanHQ's Live Market Feed v2 to the engine (built-in
//! simulator upstream, packets injected through its control), and every
//! packet it gets is compared byte for byte with what the simulator sent.

mod common;
use common::{held, wait_for, TempDir, WsClient, READ_TIMEOUT};

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dhan_relay::auth::keys::KeysFile;
use dhan_relay::auth::Scopes;
use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::feed::{
    self, DepthLevel, FeedData, FeedMessage, Full, Oi, PrevClose, Quote, Ticker,
};
use dhan_relay::wire::DisconnectReason;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

fn config(listen: &str, config_text: Option<&str>, keys_file: Option<PathBuf>) -> RunConfig {
    let flags = Flags {
        listen: vec![listen.into()],
        demo_rate: Some(0),
        keys_file,
        ..Flags::default()
    };
    let mut c = RunConfig::build(
        &flags,
        config_text.map(|t| (Path::new("relay.toml"), t)),
        &CredentialSources::none(),
    )
    .unwrap();
    c.fanout.unsubscribe_grace = Duration::from_millis(200);
    c
}

fn start() -> (Engine, SimControl) {
    let engine = Engine::start(config("127.0.0.1:0", None, None)).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    (engine, sim)
}

fn nse(id: u32) -> InstrumentKey {
    InstrumentKey::new(Segment::NseEq, id)
}

fn fno(id: u32) -> InstrumentKey {
    InstrumentKey::new(Segment::NseFno, id)
}

fn bytes(msg: &FeedMessage) -> Vec<u8> {
    let mut b = Vec::new();
    msg.encode(&mut b);
    b
}

/// A client of `/dhan` speaking DhanHQ's protocol, as the SDK does.
struct DhanClient(WebSocket<TcpStream>);

impl DhanClient {
    fn connect(addr: SocketAddr, token: &str) -> DhanClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let url =
            format!("ws://{addr}/dhan?version=2&token={token}&clientId=1000000001&authType=2");
        let (ws, _) = tungstenite::client::client(url, stream)
            .unwrap_or_else(|e| panic!("handshake on /dhan: {e}"));
        DhanClient(ws)
    }

    /// Connects and reads the market-status packet DhanHQ sends first.
    fn ready(addr: SocketAddr) -> DhanClient {
        let mut c = DhanClient::connect(addr, "any-token");
        let first = c.packet();
        assert_eq!(first, [7, 8, 0, 0, 0, 0, 0, 0], "market status on connect");
        c
    }

    fn send(&mut self, v: Value) {
        self.0.send(Message::text(v.to_string())).unwrap();
    }

    fn request(&mut self, code: u8, keys: &[InstrumentKey]) {
        let list: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({"ExchangeSegment": k.segment.name(), "SecurityId": k.security_id.to_string()})
            })
            .collect();
        self.send(
            json!({"RequestCode": code, "InstrumentCount": list.len(), "InstrumentList": list}),
        );
    }

    /// The next binary frame (pings are answered by tungstenite); panics on
    /// a close, a text frame or a timeout.
    fn packet(&mut self) -> Vec<u8> {
        loop {
            match self.0.read().expect("a packet before the timeout") {
                Message::Binary(b) => return b.to_vec(),
                Message::Text(t) => panic!("text on /dhan: {t}"),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The next packet of response code `code`, skipping others.
    fn packet_of(&mut self, code: u8) -> Vec<u8> {
        loop {
            let p = self.packet();
            if p[0] == code {
                return p;
            }
        }
    }

    /// Reads to the close: the binary frames on the way and the close code.
    fn until_close(&mut self) -> (Vec<Vec<u8>>, Option<CloseCode>) {
        let mut got = Vec::new();
        loop {
            match self.0.read() {
                Ok(Message::Binary(b)) => got.push(b.to_vec()),
                Ok(Message::Close(f)) => return (got, f.map(|f| f.code)),
                Ok(_) => {}
                Err(_) => return (got, None),
            }
        }
    }
}

fn disconnect(code: u16) -> Vec<u8> {
    bytes(&FeedMessage::Disconnect(DisconnectReason::from_code(code)))
}

fn quote(ltp: f32) -> Quote {
    Quote {
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
    }
}

fn full(ltp: f32, oi: u32) -> Full {
    Full {
        quote: quote(ltp),
        oi,
        oi_day_high: oi + 10,
        oi_day_low: oi.saturating_sub(10),
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
fn every_packet_reaches_a_dhan_client_byte_for_byte_in_its_mode() {
    let (engine, sim) = start();
    let addr = engine.addr();
    let (kf, kq, kt) = (fno(35001), fno(35002), nse(2885));
    let mut f = DhanClient::ready(addr);
    let mut q = DhanClient::ready(addr);
    let mut t = DhanClient::ready(addr);
    f.request(21, &[kf]);
    q.request(17, &[kq]);
    t.request(15, &[kt]);
    wait_for("upstream subscriptions in each mode", || {
        let h = held(&sim);
        h.contains(&(kf, Mode::Full))
            && h.contains(&(kq, Mode::Quote))
            && h.contains(&(kt, Mode::Ticker))
    });
    // Previous close on subscribe: the simulator's packet, as sent.
    for (c, k) in [(&mut f, kf), (&mut q, kq), (&mut t, kt)] {
        let p = c.packet();
        let decoded = feed::decode(&p).expect("a packet");
        assert!(
            matches!(decoded.message, FeedMessage::Data(key, FeedData::PrevClose(_)) if key == k),
            "{decoded:?}"
        );
    }
    let send = |msg: FeedMessage| {
        sim.inject(&msg);
        bytes(&msg)
    };
    // Full subscriber: every packet type, exactly.
    for msg in [
        FeedMessage::Data(
            kf,
            FeedData::Ticker(Ticker {
                ltp: 101.25,
                ltt: 1_729_412_345,
            }),
        ),
        FeedMessage::Data(kf, FeedData::Quote(quote(101.3))),
        FeedMessage::Data(kf, FeedData::Full(full(101.35, 5000))),
        FeedMessage::Data(kf, FeedData::Oi(Oi { oi: 5010 })),
        FeedMessage::Data(
            kf,
            FeedData::PrevClose(PrevClose {
                prev_close: 99.95,
                prev_oi: 4800,
            }),
        ),
        FeedMessage::Data(kf, FeedData::Full(full(f32::from_bits(0x42CA_B852), 5020))),
    ] {
        let sent = send(msg);
        assert_eq!(f.packet(), sent, "full subscriber, {msg:?}");
    }
    // Quote subscriber: quote, OI and previous close as they come.
    for msg in [
        FeedMessage::Data(kq, FeedData::Quote(quote(55.5))),
        FeedMessage::Data(kq, FeedData::Oi(Oi { oi: 77 })),
        FeedMessage::Data(kq, FeedData::Quote(quote(55.55))),
    ] {
        let sent = send(msg);
        assert_eq!(q.packet(), sent, "quote subscriber, {msg:?}");
    }
    // Ticker subscriber.
    for ltp in [1465.4, 1465.45, 0.05] {
        let msg = FeedMessage::Data(
            kt,
            FeedData::Ticker(Ticker {
                ltp,
                ltt: 1_729_412_400,
            }),
        );
        let sent = send(msg);
        assert_eq!(t.packet(), sent, "ticker subscriber");
    }
    // A second full subscriber of kf gets the previous close and the
    // latest full packet at once.
    let mut late = DhanClient::ready(addr);
    late.request(21, &[kf]);
    let prev = late.packet();
    assert_eq!(
        prev,
        bytes(&FeedMessage::Data(
            kf,
            FeedData::PrevClose(PrevClose {
                prev_close: 99.95,
                prev_oi: 4800
            })
        ))
    );
    assert_eq!(
        late.packet(),
        bytes(&FeedMessage::Data(
            kf,
            FeedData::Full(full(f32::from_bits(0x42CA_B852), 5020))
        ))
    );
    engine.shutdown();
}

#[test]
fn json_and_dhan_clients_share_one_upstream_subscription_in_the_highest_mode() {
    let (engine, sim) = start();
    let addr = engine.addr();
    let k = nse(1333);
    let mut json_client = WsClient::connect(addr, "/ws");
    json_client.recv_type("status");
    json_client.subscribe(k, "quote");
    wait_for("quote upstream", || held(&sim).contains(&(k, Mode::Quote)));
    let mut d = DhanClient::ready(addr);
    d.request(21, &[k]);
    wait_for("full upstream", || held(&sim).contains(&(k, Mode::Full)));
    let times = held(&sim).iter().filter(|(key, _)| *key == k).count();
    assert_eq!(times, 1, "one upstream subscription: {:?}", held(&sim));
    // Both see the same full packet, each in its protocol.
    let msg = FeedMessage::Data(k, FeedData::Full(full(1650.05, 0)));
    sim.inject(&msg);
    assert_eq!(d.packet_of(8), bytes(&msg));
    let v = json_client.recv_where(|v| v["type"] == "quote" && v["ltp"] == json!(1650.05));
    assert_eq!(v["volume"], json!(123_456));
    // The DhanHQ client leaves full (RequestCode 22): back to quote.
    d.request(22, &[k]);
    wait_for("quote upstream again", || {
        held(&sim).contains(&(k, Mode::Quote))
    });
    json_client.unsubscribe(&[k]);
    wait_for("released upstream", || {
        !held(&sim).iter().any(|(key, _)| *key == k)
    });
    engine.shutdown();
}

#[test]
fn bad_input_gets_the_closest_disconnect_code_then_a_close() {
    let (engine, _sim) = start();
    let addr = engine.addr();
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"ExchangeSegment": "NSE_EQ", "SecurityId": (1000 + i).to_string()}))
        .collect();
    let cases: Vec<(&str, Message, u16)> = vec![
        (
            "malformed JSON",
            Message::text("{\"RequestCode\": 15,"),
            814,
        ),
        (
            "unknown RequestCode",
            Message::text(r#"{"RequestCode": 99}"#),
            814,
        ),
        (
            "over 100 instruments",
            Message::text(
                json!({"RequestCode": 15, "InstrumentCount": 101, "InstrumentList": too_many})
                    .to_string(),
            ),
            804,
        ),
        (
            "unknown segment",
            Message::text(
                r#"{"RequestCode":15,"InstrumentCount":1,"InstrumentList":[{"ExchangeSegment":"NSE_XYZ","SecurityId":"1"}]}"#,
            ),
            814,
        ),
        (
            "bad security id",
            Message::text(
                r#"{"RequestCode":15,"InstrumentCount":1,"InstrumentList":[{"ExchangeSegment":"NSE_EQ","SecurityId":"12a"}]}"#,
            ),
            813,
        ),
        ("binary frame", Message::binary(vec![15u8, 0, 0]), 814),
        (
            "depth code on the main feed",
            Message::text(
                r#"{"RequestCode":23,"InstrumentCount":1,"InstrumentList":[{"ExchangeSegment":"NSE_EQ","SecurityId":"1"}]}"#,
            ),
            814,
        ),
    ];
    for (what, msg, code) in cases {
        let mut c = DhanClient::ready(addr);
        c.0.send(msg).unwrap();
        let (packets, close) = c.until_close();
        assert_eq!(packets, vec![disconnect(code)], "{what}");
        assert_eq!(close, Some(CloseCode::Normal), "{what}");
    }
    // The relay is fine: a good client still works.
    let mut ok = DhanClient::ready(addr);
    ok.request(15, &[nse(2885)]);
    assert_eq!(ok.packet()[0], 6);
    engine.shutdown();
}

#[test]
fn request_code_12_closes_cleanly() {
    let (engine, sim) = start();
    let addr = engine.addr();
    let k = nse(11536);
    let mut c = DhanClient::ready(addr);
    c.request(15, &[k]);
    wait_for("subscribed", || held(&sim).contains(&(k, Mode::Ticker)));
    c.send(json!({"RequestCode": 12}));
    // The SDK follows up with a v1 binary header: ignored while closing.
    let _ = c.0.send(Message::binary(vec![12u8; 83]));
    let (packets, close) = c.until_close();
    assert!(
        packets.iter().all(|p| p[0] != 50),
        "no disconnect packet: {packets:?}"
    );
    assert_eq!(close, Some(CloseCode::Normal));
    wait_for("released upstream", || {
        !held(&sim).iter().any(|(key, _)| *key == k)
    });
    engine.shutdown();
}

#[test]
fn with_access_control_the_token_is_an_api_key_and_a_wrong_one_gets_809() {
    let dir = TempDir::new("dhan");
    let keys_file = dir.0.join("keys.toml");
    let mut keys = KeysFile::load(&keys_file).unwrap();
    let reader = keys
        .add(
            "bot",
            Scopes::parse_list("read").unwrap(),
            SystemTime::now(),
        )
        .unwrap()
        .expose()
        .to_string();
    let trader = keys
        .add(
            "trader",
            Scopes::parse_list("trade").unwrap(),
            SystemTime::now(),
        )
        .unwrap()
        .expose()
        .to_string();
    keys.save(&keys_file).unwrap();
    let c = config("127.0.0.1:0", Some("auth = \"on\"\n"), Some(keys_file));
    let engine = Engine::start(c).expect("engine starts");
    let addr = engine.addr();
    for token in ["wrong-token", trader.as_str(), ""] {
        let mut c = DhanClient::connect(addr, token);
        let (packets, close) = c.until_close();
        assert_eq!(packets, vec![disconnect(809)], "token {token:?}");
        assert_eq!(close, Some(CloseCode::Normal));
    }
    let mut ok = DhanClient::connect(addr, &reader);
    assert_eq!(ok.packet(), [7, 8, 0, 0, 0, 0, 0, 0]);
    ok.request(15, &[nse(2885)]);
    assert_eq!(ok.packet()[0], 6, "previous close");
    // /ws still refuses before the upgrade.
    assert!(WsClient::connect_with(addr, "/ws", None).is_err());
    // Revoked while connected: DhanHQ's 809, then the close (4403).
    let keys_file = dir.0.join("keys.toml");
    let mut keys = KeysFile::load(&keys_file).unwrap();
    keys.revoke("bot").unwrap();
    keys.save(&keys_file).unwrap();
    let (packets, close) = ok.until_close();
    assert_eq!(
        packets.last(),
        Some(&disconnect(809)),
        "the last packet says why"
    );
    assert_eq!(close, Some(CloseCode::from(4403)));
    engine.shutdown();
}

#[test]
fn a_dhan_client_that_never_reads_is_conflated_then_closed_like_a_json_one() {
    let mut c = config("127.0.0.1:0", None, None);
    c.fanout.client_queue_bytes = 4 * 1024;
    c.fanout.slow_client_timeout = Duration::from_millis(1500);
    let engine = Engine::start(c).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    let addr = engine.addr();
    let keys: Vec<_> = (100..150).map(nse).collect();
    // The slow client: a tiny receive buffer, and it never reads.
    let mut slow = DhanClient::ready(addr);
    {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 4096;
        // SAFETY: a valid socket fd and a pointer to a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                slow.0.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }
    slow.request(15, &keys);
    let mut good = DhanClient::ready(addr);
    good.request(15, &keys);
    wait_for("subscribed", || held(&sim).len() >= 53);
    let started = std::time::Instant::now();
    let mut n = 0u32;
    let mut last = None;
    while started.elapsed() < Duration::from_secs(4) && n < 40_000 {
        for k in &keys {
            n += 1;
            let msg = FeedMessage::Data(
                *k,
                FeedData::Ticker(Ticker {
                    ltp: n as f32,
                    ltt: n,
                }),
            );
            sim.inject(&msg);
            last = Some(bytes(&msg));
        }
        // The good client keeps up: it reads through to the last packet.
        let want = last.clone().unwrap();
        while good.packet() != want {}
    }
    wait_for("the slow client to be closed", || {
        let stats = common::stats(addr);
        stats["counters"]["fanout_slow_closes_total"]
            .as_u64()
            .unwrap()
            >= 1
            && stats["counters"]["fanout_clients"] == 1
    });
    assert!(common::counter(addr, "fanout_conflated_total") > 0);
    let msg = FeedMessage::Data(keys[0], FeedData::Ticker(Ticker { ltp: 0.5, ltt: 1 }));
    sim.inject(&msg);
    assert_eq!(
        good.packet(),
        bytes(&msg),
        "the good client is still served"
    );
    engine.shutdown();
}
