//! The simulator over real sockets on 127.0.0.1, driven by a plain blocking
//! tungstenite client (and a rustls client for `wss://`). Every read has a
//! timeout; every wait polls a condition with a deadline.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::instrument::Master;
use dhan_relay::sim::{SimConfig, SimControl, SimStats, SimTls, Simulator};
use dhan_relay::wire::depth::{self, DepthMessage, Side};
use dhan_relay::wire::feed::{self, FeedData, FeedMessage, Full, Quote};
use dhan_relay::wire::request::{encode_subscription, RequestCode, DISCONNECT};
use dhan_relay::wire::DisconnectReason;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tungstenite::{Error as WsError, Message, WebSocket};

/// Upper bound for anything that should happen "soon".
const WAIT: Duration = Duration::from_secs(5);
/// Socket read timeout: how often a blocked read gives control back.
const TICK: Duration = Duration::from_millis(20);

const RELIANCE: InstrumentKey = InstrumentKey::new(Segment::NseEq, 2885);
const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);
const NIFTY_FUT: InstrumentKey = InstrumentKey::new(Segment::NseFno, 35_001);

/// A plain or TLS client socket.
enum Sock {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Plain(s) => s.read(buf),
            Sock::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Plain(s) => s.write(buf),
            Sock::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sock::Plain(s) => s.flush(),
            Sock::Tls(s) => s.flush(),
        }
    }
}

type Client = WebSocket<Sock>;

fn start(cfg: SimConfig) -> (Simulator, SimControl) {
    let sim = Simulator::start(cfg).expect("simulator starts");
    let ctl = sim.control();
    (sim, ctl)
}

fn rate(ticks_per_sec: u32) -> SimConfig {
    SimConfig {
        ticks_per_sec,
        ..SimConfig::default()
    }
}

fn query(token: &str, client_id: &str) -> String {
    format!("/?version=2&token={token}&clientId={client_id}&authType=2")
}

fn tcp(sim: &Simulator) -> TcpStream {
    let tcp = TcpStream::connect(sim.addr()).expect("tcp connect");
    tcp.set_read_timeout(Some(TICK)).unwrap();
    tcp.set_write_timeout(Some(WAIT)).unwrap();
    tcp
}

/// Handshake, retrying the timeouts a short read timeout causes.
fn upgrade(url: String, sock: Sock) -> Result<Client, WsError> {
    let deadline = Instant::now() + WAIT;
    let mut attempt = tungstenite::client(url, sock);
    loop {
        match attempt {
            Ok((ws, _)) => return Ok(ws),
            Err(tungstenite::HandshakeError::Interrupted(mid)) if Instant::now() < deadline => {
                attempt = mid.handshake();
            }
            Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake timed out"),
            Err(tungstenite::HandshakeError::Failure(e)) => return Err(e),
        }
    }
}

fn connect_path(sim: &Simulator, path: &str) -> Result<Client, WsError> {
    upgrade(format!("{}{path}", sim.feed_url()), Sock::Plain(tcp(sim)))
}

fn connect(sim: &Simulator, token: &str, client_id: &str) -> Client {
    connect_path(sim, &query(token, client_id)).expect("upgrade")
}

fn send(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).expect("send request");
}

fn subscribe(ws: &mut Client, code: RequestCode, keys: &[InstrumentKey]) {
    for msg in encode_subscription(code, keys).unwrap() {
        send(ws, &msg);
    }
}

/// What one read produced.
#[derive(Debug)]
enum Got {
    Binary(Vec<u8>),
    Ping,
    Close,
    /// The socket ended without a close handshake (reset, EOF).
    Gone,
    Timeout,
}

/// The next interesting frame before `deadline`.
fn next_event(ws: &mut Client, deadline: Instant) -> Got {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => return Got::Binary(b.to_vec()),
            Ok(Message::Ping(_)) => return Got::Ping,
            Ok(Message::Close(_)) => return Got::Close,
            Ok(_) => {}
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Got::Timeout;
                }
            }
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return Got::Close,
            Err(_) => return Got::Gone,
        }
    }
}

/// The next binary frame within [`WAIT`]; pings are skipped.
fn next_frame(ws: &mut Client) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    loop {
        match next_event(ws, deadline) {
            Got::Binary(b) => return b,
            Got::Ping => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

/// Every packet of the next binary frame, decoded.
fn next_packets(ws: &mut Client) -> Vec<FeedMessage> {
    let frame = next_frame(ws);
    feed::packets(&frame)
        .map(|p| p.expect("simulator packets decode").message)
        .collect()
}

/// Packets until `n` have arrived.
fn collect(ws: &mut Client, n: usize) -> Vec<FeedMessage> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(next_packets(ws));
    }
    out
}

/// Asserts that nothing but pings arrives for `quiet`.
fn assert_silent(ws: &mut Client, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        match next_event(ws, deadline) {
            Got::Timeout => return,
            Got::Ping => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

/// Reads and discards for `d` (frames already in flight).
fn discard_for(ws: &mut Client, d: Duration) {
    let deadline = Instant::now() + d;
    while !matches!(next_event(ws, deadline), Got::Timeout) {}
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_stats(ctl: &SimControl, what: &str, cond: impl Fn(&SimStats) -> bool) {
    wait_until(what, || cond(&ctl.stats()));
}

fn key_of(m: &FeedMessage) -> InstrumentKey {
    match m {
        FeedMessage::Data(k, _) => *k,
        FeedMessage::Disconnect(r) => panic!("unexpected disconnect {r}"),
    }
}

fn is_market_status(m: &[FeedMessage]) -> bool {
    matches!(m, [FeedMessage::Data(_, FeedData::MarketStatus)])
}

fn ticks(p: f32) -> i64 {
    (f64::from(p) / 0.05).round() as i64
}

fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn assert_plausible_quote(q: &Quote) {
    assert!(q.ltp > 0.0 && q.ltq > 0);
    assert!((i64::from(q.ltt) - now_epoch()).abs() <= 5, "LTT is now");
    assert!(q.low <= q.ltp && q.ltp <= q.high && q.low <= q.open && q.open <= q.high);
    assert!(q.volume > 0);
}

fn assert_consistent_book(f: &Full) {
    assert_plausible_quote(&f.quote);
    let ltp = ticks(f.quote.ltp);
    let bid0 = ticks(f.depth[0].bid_price);
    let ask0 = ticks(f.depth[0].ask_price);
    assert!(bid0 <= ltp && ltp <= ask0 && bid0 < ask0, "{f:?}");
    for (i, level) in f.depth.iter().enumerate() {
        assert_eq!(ticks(level.bid_price), bid0 - i as i64);
        assert_eq!(ticks(level.ask_price), ask0 + i as i64);
        assert!(level.bid_qty > 0 && level.ask_qty > 0);
        assert!(level.bid_orders > 0 && level.ask_orders > 0);
    }
}

/// Reads the disconnect packet and the close frame a refused login gets.
fn expect_refusal(ws: &mut Client) -> DisconnectReason {
    let frame = next_frame(ws);
    let packet = feed::decode(&frame).expect("disconnect packet decodes");
    assert_eq!(packet.bytes.len(), frame.len(), "one packet in the frame");
    let FeedMessage::Disconnect(reason) = packet.message else {
        panic!("expected a disconnect packet, got {:?}", packet.message)
    };
    let deadline = Instant::now() + WAIT;
    match next_event(ws, deadline) {
        Got::Close => {}
        other => panic!("expected a close frame after the disconnect packet, got {other:?}"),
    }
    reason
}

#[test]
fn subscriptions_drive_the_stream_in_each_mode() {
    let (sim, ctl) = start(rate(400));
    assert!(sim.feed_url().starts_with("ws://127.0.0.1:"));
    let mut ws = connect(&sim, "tok", "1100003626");
    assert!(
        is_market_status(&next_packets(&mut ws)),
        "market status first"
    );
    assert_eq!(ctl.stats().connects, 1);
    assert_eq!(ctl.stats().open, 1);

    // Ticker: a prev-close for each, then only code 2 for exactly these two.
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[RELIANCE, NIFTY]);
    let first = collect(&mut ws, 2);
    let prev: BTreeSet<_> = first[..2]
        .iter()
        .map(|m| match m {
            FeedMessage::Data(k, FeedData::PrevClose(p)) => {
                assert!(p.prev_close > 0.0);
                *k
            }
            other => panic!("expected prev close first, got {other:?}"),
        })
        .collect();
    assert_eq!(prev, BTreeSet::from([RELIANCE, NIFTY]));
    let stream = collect(&mut ws, 40);
    let mut seen = BTreeSet::new();
    for m in &stream {
        let FeedMessage::Data(key, FeedData::Ticker(t)) = m else {
            panic!("expected ticker packets only, got {m:?}")
        };
        assert!(t.ltp > 0.0);
        assert!((i64::from(t.ltt) - now_epoch()).abs() <= 5);
        seen.insert(*key);
    }
    assert_eq!(seen, BTreeSet::from([RELIANCE, NIFTY]));
    let subs = ctl.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].client_id, "1100003626");
    assert_eq!(subs[0].instruments.get(&RELIANCE), Some(&Mode::Ticker));

    // Full for one of them: once the first code 8 shows, that instrument is
    // full only, the other still ticker, and no second prev close.
    subscribe(&mut ws, RequestCode::SubscribeFull, &[RELIANCE]);
    loop {
        let msgs = next_packets(&mut ws);
        if msgs
            .iter()
            .any(|m| matches!(m, FeedMessage::Data(k, FeedData::Full(_)) if *k == RELIANCE))
        {
            break;
        }
    }
    let (mut fulls, mut tickers) = (0, 0);
    for m in collect(&mut ws, 40) {
        match m {
            FeedMessage::Data(k, FeedData::Full(f)) if k == RELIANCE => {
                assert_consistent_book(&f);
                assert_eq!(f.oi, 0, "no OI for cash equities");
                fulls += 1;
            }
            FeedMessage::Data(k, FeedData::Ticker(_)) if k == NIFTY => tickers += 1,
            other => panic!("unexpected after mode switch: {other:?}"),
        }
    }
    assert!(fulls > 5 && tickers > 5, "{fulls} full, {tickers} ticker");
    assert_eq!(
        ctl.subscriptions()[0].instruments.get(&RELIANCE),
        Some(&Mode::Full)
    );

    // Unsubscribe with the ticker code removes both, the full one too.
    subscribe(&mut ws, RequestCode::UnsubscribeTicker, &[RELIANCE, NIFTY]);
    wait_until("unsubscribe applied", || {
        ctl.subscriptions()
            .first()
            .is_some_and(|s| s.instruments.is_empty())
    });
    discard_for(&mut ws, Duration::from_millis(50));
    assert_silent(&mut ws, Duration::from_millis(250));
    assert!(ctl.stats().packets_sent >= 84);
}

#[test]
fn quote_mode_and_open_interest_for_derivatives() {
    let (sim, _ctl) = start(rate(1_000));
    let mut ws = connect(&sim, "tok", "C");
    next_packets(&mut ws);
    subscribe(&mut ws, RequestCode::SubscribeQuote, &[NIFTY_FUT]);
    let msgs = collect(&mut ws, 80);
    let FeedMessage::Data(_, FeedData::PrevClose(prev)) = msgs[0] else {
        panic!("prev close first: {:?}", msgs[0])
    };
    assert!(prev.prev_oi > 0, "derivatives carry a previous OI");
    let (mut quotes, mut ois, mut last_volume, mut last_oi) = (0, 0, 0, 0);
    for m in &msgs[1..] {
        assert_eq!(key_of(m), NIFTY_FUT);
        match m {
            FeedMessage::Data(_, FeedData::Quote(q)) => {
                assert_plausible_quote(q);
                assert!(q.volume >= last_volume);
                last_volume = q.volume;
                quotes += 1;
            }
            FeedMessage::Data(_, FeedData::Oi(oi)) => {
                assert!(oi.oi >= last_oi && oi.oi >= prev.prev_oi);
                last_oi = oi.oi;
                ois += 1;
            }
            other => panic!("quote mode sends quote and OI only: {other:?}"),
        }
    }
    assert!(quotes >= 60 && ois >= 3, "{quotes} quotes, {ois} OI");
}

#[test]
fn defaults_start_at_the_sample_masters_levels_and_indices_trade_no_volume() {
    let master = Master::sample();
    let level = |k: InstrumentKey| master.get(k).and_then(|i| i.reference_price()).unwrap();
    let near = |k: InstrumentKey, p: f32| {
        let r = level(k);
        assert!(
            (f64::from(p) - r).abs() <= r * 0.05,
            "{k}: {p} is not within 5 % of {r}"
        );
    };
    assert_eq!(level(NIFTY), 25_800.0);
    let sensex = InstrumentKey::new(Segment::IdxI, 51);
    let banknifty = InstrumentKey::new(Segment::IdxI, 25);
    let (sim, _ctl) = start(rate(600));
    let mut ws = connect(&sim, "tok", "C");
    next_packets(&mut ws);
    subscribe(&mut ws, RequestCode::SubscribeQuote, &[NIFTY, RELIANCE]);
    subscribe(&mut ws, RequestCode::SubscribeFull, &[sensex]);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[banknifty]);
    let (mut index_quotes, mut fulls, mut tickers, mut traded) = (0, 0, 0, 0);
    for m in collect(&mut ws, 120) {
        let FeedMessage::Data(key, data) = m else {
            panic!("{m:?}")
        };
        match data {
            FeedData::PrevClose(p) => {
                near(key, p.prev_close);
                if key.segment == Segment::IdxI {
                    assert_eq!(p.prev_oi, 0, "{key}");
                }
            }
            FeedData::Quote(q) if key == NIFTY => {
                near(key, q.ltp);
                assert_eq!(
                    (q.ltq, q.volume, q.total_buy_qty, q.total_sell_qty),
                    (0, 0, 0, 0),
                    "an index trades no quantity"
                );
                assert!(q.low <= q.ltp && q.ltp <= q.high);
                index_quotes += 1;
            }
            FeedData::Quote(q) => {
                assert_eq!(key, RELIANCE);
                near(key, q.ltp);
                assert_plausible_quote(&q);
                traded += 1;
            }
            FeedData::Full(f) => {
                assert_eq!(key, sensex);
                near(key, f.quote.ltp);
                assert_eq!((f.quote.volume, f.quote.ltq), (0, 0));
                assert_eq!((f.oi, f.oi_day_high, f.oi_day_low), (0, 0, 0));
                assert!(f.depth.iter().all(|l| l.bid_qty == 0 && l.ask_qty == 0));
                fulls += 1;
            }
            FeedData::Ticker(t) => {
                assert_eq!(key, banknifty);
                near(key, t.ltp);
                tickers += 1;
            }
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
    assert!(
        index_quotes > 5 && fulls > 5 && tickers > 5 && traded > 5,
        "{index_quotes} index quotes, {fulls} full, {tickers} tickers, {traded} traded"
    );
}

#[test]
fn high_rates_batch_packets_into_frames() {
    let (sim, _ctl) = start(rate(20_000));
    let mut ws = connect(&sim, "tok", "C");
    next_packets(&mut ws);
    let keys: Vec<_> = (0..50)
        .map(|i| InstrumentKey::new(Segment::NseEq, 1000 + i))
        .collect();
    subscribe(&mut ws, RequestCode::SubscribeTicker, &keys);
    let mut most = 0;
    let mut total = 0;
    while total < 2_000 {
        let n = next_packets(&mut ws).len();
        most = most.max(n);
        total += n;
    }
    assert!(most > 1, "several packets share a frame at 20,000/s");
}

#[test]
fn refused_logins_get_the_right_disconnect_code() {
    let (sim, ctl) = start(SimConfig {
        expired_tokens: vec!["old-token".into()],
        ..SimConfig::default()
    });
    let cases = [
        (
            "/?version=2&clientId=C&authType=2",
            DisconnectReason::AuthFailed,
        ),
        (&query("", "C") as &str, DisconnectReason::AuthFailed),
        (
            "/?version=2&token=t&authType=2",
            DisconnectReason::InvalidClientId,
        ),
        (&query("t", ""), DisconnectReason::InvalidClientId),
        (&query("old-token", "C"), DisconnectReason::TokenExpired),
    ];
    for (path, reason) in cases {
        let mut ws = connect_path(&sim, path).expect("the upgrade itself succeeds");
        assert_eq!(expect_refusal(&mut ws), reason, "{path}");
    }
    assert_eq!(ctl.stats().auth_rejects, 5);
    assert_eq!(ctl.stats().connects, 5);

    // expire_token: later connects with it are refused.
    let mut ok = connect(&sim, "fresh", "C");
    assert!(is_market_status(&next_packets(&mut ok)));
    ctl.expire_token("fresh");
    let mut ws = connect(&sim, "fresh", "C");
    assert_eq!(expect_refusal(&mut ws), DisconnectReason::TokenExpired);
    assert_eq!(ctl.stats().open, 1, "open connections are not touched");

    // Bad path and version fail the upgrade itself.
    assert!(matches!(
        connect_path(&sim, "/feed?version=2&token=t&clientId=C"),
        Err(WsError::Http(r)) if r.status() == 404
    ));
    assert!(matches!(
        connect_path(&sim, "/?version=1&token=t&clientId=C"),
        Err(WsError::Http(r)) if r.status() == 400
    ));
}

#[test]
fn a_sixth_connection_of_one_client_gets_805() {
    let (sim, ctl) = start(SimConfig::default());
    let mut five: Vec<_> = (0..5).map(|_| connect(&sim, "tok", "C1")).collect();
    for ws in &mut five {
        assert!(is_market_status(&next_packets(ws)));
    }
    let mut sixth = connect(&sim, "tok", "C1");
    assert_eq!(
        expect_refusal(&mut sixth),
        DisconnectReason::TooManyConnections
    );
    let mut other = connect(&sim, "tok", "C2");
    assert!(
        is_market_status(&next_packets(&mut other)),
        "other clients unaffected"
    );
    assert_eq!(ctl.stats().open, 6);

    // Closing one frees its slot.
    let mut closed = five.pop().unwrap();
    closed.close(None).unwrap();
    wait_stats(&ctl, "a slot freed", |s| s.open == 5);
    let mut again = connect(&sim, "tok", "C1");
    assert!(is_market_status(&next_packets(&mut again)));
}

#[test]
fn inject_raw_frames_and_the_request_log() {
    let (sim, ctl) = start(SimConfig {
        max_per_connection: 3,
        ..SimConfig::default()
    });
    let mut ws = connect(&sim, "tok", "C");
    let mut bystander = connect(&sim, "tok", "C");
    next_packets(&mut ws);
    next_packets(&mut bystander);
    subscribe(&mut ws, RequestCode::SubscribeQuote, &[NIFTY_FUT]);
    let prev = next_packets(&mut ws);
    assert!(matches!(prev[..], [FeedMessage::Data(k, FeedData::PrevClose(_))] if k == NIFTY_FUT));

    // Exact bytes, to the subscriber only, whatever the mode.
    let msg = FeedMessage::Data(
        NIFTY_FUT,
        FeedData::Ticker(feed::Ticker {
            ltp: 24_321.5,
            ltt: 1_700_000_000,
        }),
    );
    let mut expected = Vec::new();
    msg.encode(&mut expected);
    ctl.inject(&FeedMessage::Data(
        RELIANCE,
        FeedData::Oi(feed::Oi { oi: 1 }),
    ));
    ctl.inject(&msg);
    assert_eq!(next_frame(&mut ws), expected);

    // A malformed frame, as is, to everyone.
    ctl.send_raw(vec![2, 40, 0, 1]);
    assert_eq!(next_frame(&mut ws), vec![2, 40, 0, 1]);
    assert_eq!(next_frame(&mut bystander), vec![2, 40, 0, 1]);
    assert!(feed::packets(&[2, 40, 0, 1]).all(|p| p.is_err()));

    // An injected disconnect goes to every connection; they stay open.
    ctl.inject(&FeedMessage::Disconnect(DisconnectReason::Other(999)));
    for c in [&mut ws, &mut bystander] {
        let got = next_packets(c);
        assert_eq!(
            got,
            vec![FeedMessage::Disconnect(DisconnectReason::Other(999))]
        );
    }

    // Over 100 in one message: rejected whole, but logged.
    let many: Vec<_> = (0..101)
        .map(|i| InstrumentKey::new(Segment::NseEq, i))
        .collect();
    let text = encode_subscription(RequestCode::SubscribeTicker, &many[..100])
        .unwrap()
        .remove(0)
        .replace(r#""InstrumentCount":100"#, r#""InstrumentCount":101"#)
        .replace(
            "]}",
            r#",{"ExchangeSegment":"NSE_EQ","SecurityId":"100"}]}"#,
        );
    send(&mut ws, &text);
    // Unparseable requests are counted, not logged.
    send(&mut ws, "{not json");
    send(
        &mut ws,
        r#"{"RequestCode":15,"InstrumentCount":2,"InstrumentList":[]}"#,
    );
    // Up to the per-connection limit of 3: two new ones fit (the third is a
    // mode change), the two after that do not.
    subscribe(
        &mut ws,
        RequestCode::SubscribeTicker,
        &[RELIANCE, NIFTY, NIFTY_FUT],
    );
    subscribe(&mut ws, RequestCode::SubscribeTicker, &many[..2]);
    wait_stats(&ctl, "rejections counted", |s| {
        s.rejected_requests == 3 && s.rejected_instruments == 2
    });
    let subs = ctl.subscriptions();
    let mine = subs.iter().find(|s| !s.instruments.is_empty()).unwrap();
    assert_eq!(
        mine.instruments.keys().copied().collect::<Vec<_>>(),
        vec![NIFTY, RELIANCE, NIFTY_FUT],
        "the 101 were not applied, nor the two past the limit"
    );
    assert_eq!(
        mine.instruments[&NIFTY_FUT],
        Mode::Ticker,
        "latest subscribe wins"
    );

    let log = ctl.requests();
    let codes: Vec<_> = log.iter().map(|r| (r.code, r.instruments.len())).collect();
    assert_eq!(
        codes,
        vec![
            (RequestCode::SubscribeQuote, 1),
            (RequestCode::SubscribeTicker, 101),
            (RequestCode::SubscribeTicker, 3),
            (RequestCode::SubscribeTicker, 2),
        ]
    );
    assert_eq!(log[0].instruments, vec![NIFTY_FUT]);
    assert!(log.iter().all(|r| r.conn == mine.conn));
}

#[test]
fn disconnect_request_and_send_disconnect_close_cleanly() {
    let (sim, ctl) = start(SimConfig::default());
    let mut ws = connect(&sim, "tok", "C");
    next_packets(&mut ws);
    send(&mut ws, DISCONNECT);
    assert!(matches!(
        next_event(&mut ws, Instant::now() + WAIT),
        Got::Close
    ));
    wait_stats(&ctl, "closed", |s| s.open == 0);

    let mut a = connect(&sim, "tok", "C");
    let mut b = connect(&sim, "tok", "D");
    next_packets(&mut a);
    next_packets(&mut b);
    ctl.send_disconnect(DisconnectReason::TokenExpired);
    for c in [&mut a, &mut b] {
        assert_eq!(expect_refusal(c), DisconnectReason::TokenExpired);
    }
    wait_stats(&ctl, "both closed", |s| s.open == 0);
    assert_eq!(
        ctl.requests()[0].code,
        RequestCode::Disconnect,
        "RequestCode 12 is logged"
    );
}

#[test]
fn stalled_sends_nothing_and_dropped_sockets_close() {
    let (sim, ctl) = start(SimConfig {
        ticks_per_sec: 500,
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    });
    let mut ws = connect(&sim, "tok", "C");
    next_packets(&mut ws);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[RELIANCE]);
    collect(&mut ws, 10);

    ctl.set_stalled(true);
    discard_for(&mut ws, Duration::from_millis(60));
    // No ticks, no pings; and a stall longer than pong_timeout drops no one.
    let deadline = Instant::now() + Duration::from_millis(400);
    assert!(matches!(next_event(&mut ws, deadline), Got::Timeout));
    // Requests are not read while stalled.
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[NIFTY]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ctl.subscriptions()[0].instruments.len(), 1);
    ctl.set_stalled(false);

    let resumed = collect(&mut ws, 20);
    assert!(
        resumed.iter().any(|m| key_of(m) == NIFTY),
        "the request is read after"
    );
    assert_eq!(ctl.stats().dropped_for_silence, 0);

    // Dropping sockets works even while stalled.
    ctl.set_stalled(true);
    ctl.drop_connections();
    let deadline = Instant::now() + WAIT;
    loop {
        match next_event(&mut ws, deadline) {
            Got::Binary(_) | Got::Ping => {} // already in flight
            Got::Gone | Got::Close => break,
            Got::Timeout => panic!("socket not closed"),
        }
    }
    wait_stats(&ctl, "no open connections", |s| s.open == 0);
    ctl.set_stalled(false);
}

#[test]
fn pings_arrive_and_silent_clients_are_dropped() {
    let (sim, ctl) = start(SimConfig {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(400),
        ..SimConfig::default()
    });
    // Never reads, so never answers a ping.
    let mut mute = connect(&sim, "tok", "C");
    let mut live = connect(&sim, "tok", "C");
    assert!(is_market_status(&next_packets(&mut live)));
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(900) {
        if let Got::Ping = next_event(&mut live, start + Duration::from_millis(900)) {
            pings += 1;
        }
    }
    assert!(pings >= 5, "{pings} pings in 900 ms at 100 ms");
    wait_stats(&ctl, "the mute client dropped", |s| {
        s.dropped_for_silence == 1
    });
    let s = ctl.stats();
    assert_eq!(s.open, 1, "the answering client stays");
    assert!(s.pongs_received >= 4, "{s:?}");
    // The mute client finds its socket gone after what was in flight.
    let deadline = Instant::now() + WAIT;
    loop {
        match next_event(&mut mute, deadline) {
            Got::Binary(_) | Got::Ping => {}
            Got::Gone | Got::Close => break,
            Got::Timeout => panic!("mute socket still open"),
        }
    }
}

fn tls_client(sim: &Simulator, path: &str) -> Client {
    tls_client_trusting(sim, &sim.ca_pem().expect("self-signed certificate"), path)
}

fn tls_client_trusting(sim: &Simulator, pem: &str, path: &str) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = Sock::Tls(Box::new(rustls::StreamOwned::new(conn, tcp(sim))));
    upgrade(format!("{}{path}", sim.feed_url()), sock).expect("wss upgrade")
}

#[test]
fn wss_with_the_self_signed_certificate() {
    let (sim, ctl) = start(SimConfig {
        tls: SimTls::SelfSigned,
        ticks_per_sec: 200,
        ..SimConfig::default()
    });
    assert!(sim.feed_url().starts_with("wss://localhost:"));
    assert!(sim
        .ca_pem()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // Clients that fail TLS (plain HTTP, garbage) affect no one.
    let mut plain = tcp(&sim);
    plain
        .write_all(b"GET /?version=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut garbage = tcp(&sim);
    garbage.write_all(&[0x16, 3, 1, 0xff, 0xff, 0, 0]).unwrap();

    let mut ws = tls_client(&sim, &query("tok", "C"));
    assert!(is_market_status(&next_packets(&mut ws)));
    subscribe(&mut ws, RequestCode::SubscribeFull, &[RELIANCE]);
    let msgs = collect(&mut ws, 6);
    assert!(matches!(
        msgs[0],
        FeedMessage::Data(_, FeedData::PrevClose(_))
    ));
    for m in &msgs[1..] {
        let FeedMessage::Data(k, FeedData::Full(f)) = m else {
            panic!("full packets expected: {m:?}")
        };
        assert_eq!(*k, RELIANCE);
        assert_consistent_book(f);
    }
    let mut refused = tls_client(&sim, &query("", "C"));
    assert_eq!(expect_refusal(&mut refused), DisconnectReason::AuthFailed);
    assert_eq!(ctl.stats().connects, 2);
}

/// The first `n` LTPs of `key` from a fresh simulator with `seed`.
fn first_prices(seed: u64, key: InstrumentKey, n: usize) -> Vec<f32> {
    let (sim, _ctl) = start(SimConfig {
        seed,
        ticks_per_sec: 1_000,
        ..SimConfig::default()
    });
    let mut ws = connect(&sim, "tok", "C");
    next_packets(&mut ws);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[key]);
    collect(&mut ws, n + 1)
        .iter()
        .filter_map(|m| match m {
            FeedMessage::Data(k, FeedData::Ticker(t)) if *k == key => Some(t.ltp),
            FeedMessage::Data(k, FeedData::PrevClose(p)) if *k == key => Some(p.prev_close),
            _ => None,
        })
        .take(n)
        .collect()
}

#[test]
fn same_seed_same_prices() {
    let a = first_prices(42, RELIANCE, 50);
    let b = first_prices(42, RELIANCE, 50);
    assert_eq!(a.len(), 50);
    assert_eq!(a, b);
    assert_ne!(a, first_prices(43, RELIANCE, 50));
}

#[test]
fn twenty_level_depth_feed() {
    let (sim, ctl) = start(rate(200));
    let mut ws = connect_path(&sim, "/twentydepth?token=tok&clientId=C&authType=2").unwrap();
    // A main-feed code and a BSE instrument are both refused here.
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[RELIANCE]);
    send(
        &mut ws,
        r#"{"RequestCode":23,"InstrumentCount":1,"InstrumentList":[{"ExchangeSegment":"BSE_EQ","SecurityId":"500325"}]}"#,
    );
    subscribe(&mut ws, RequestCode::SubscribeDepth, &[RELIANCE]);
    let frame = next_frame(&mut ws);
    let books: Vec<_> = depth::packets(&frame)
        .map(|p| match p.expect("depth packets decode").message {
            DepthMessage::Book(b) => b,
            other => panic!("expected a book, got {other:?}"),
        })
        .collect();
    assert_eq!(books.len(), 2, "bid and ask in one frame");
    assert_eq!((books[0].side, books[1].side), (Side::Bid, Side::Ask));
    assert_eq!(books[0].sequence, books[1].sequence);
    for b in &books {
        assert_eq!(b.key, RELIANCE);
    }
    let best_bid = books[0].rows[0].price;
    let best_ask = books[1].rows[0].price;
    assert!(best_bid < best_ask);
    for i in 1..depth::ROWS {
        assert!(books[0].rows[i].price < books[0].rows[i - 1].price);
        assert!(books[1].rows[i].price > books[1].rows[i - 1].price);
    }
    assert_eq!(ctl.stats().rejected_requests, 2);
    assert_eq!(ctl.subscriptions()[0].instruments[&RELIANCE], Mode::Full);

    // Depth disconnects use the depth header.
    ctl.send_disconnect(DisconnectReason::TokenExpired);
    loop {
        let frame = next_frame(&mut ws);
        if let Ok(p) = depth::decode(&frame) {
            if let DepthMessage::Disconnect(r) = p.message {
                assert_eq!(r, DisconnectReason::TokenExpired);
                break;
            }
        }
    }
}

#[test]
fn drop_stops_everything_promptly() {
    let (sim, ctl) = start(rate(5_000));
    let mut clients: Vec<_> = (0..3)
        .map(|i| connect(&sim, "tok", &format!("C{i}")))
        .collect();
    for ws in &mut clients {
        next_packets(ws);
        subscribe(ws, RequestCode::SubscribeQuote, &[RELIANCE, NIFTY_FUT]);
    }
    // A client stuck mid-handshake does not hold shutdown up.
    let _half_open = tcp(&sim);
    wait_stats(&ctl, "ticks flowing", |s| s.packets_sent > 100);
    let started = Instant::now();
    drop(sim);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        started.elapsed()
    );
    for ws in &mut clients {
        let deadline = Instant::now() + WAIT;
        loop {
            match next_event(ws, deadline) {
                Got::Binary(_) | Got::Ping => {}
                Got::Gone | Got::Close => break,
                Got::Timeout => panic!("socket outlived the simulator"),
            }
        }
    }
    // The control handle outlives the simulator harmlessly.
    ctl.inject(&FeedMessage::Data(RELIANCE, FeedData::MarketStatus));
    assert_eq!(ctl.stats().open, 0);
    assert!(ctl.subscriptions().is_empty());
}

#[test]
fn wss_with_certificate_files_and_clear_errors_for_bad_ones() {
    let dir = std::env::temp_dir().join(format!("dhan-relay-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

    let (sim, _ctl) = start(SimConfig {
        tls: SimTls::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        ..SimConfig::default()
    });
    assert!(sim.feed_url().starts_with("wss://localhost:"));
    assert_eq!(sim.ca_pem(), None, "the caller has the certificate already");
    let mut ws = tls_client_trusting(&sim, &generated.cert.pem(), &query("tok", "C"));
    assert!(is_market_status(&next_packets(&mut ws)));

    // Missing or wrong files: an error naming the file, not a panic.
    let missing = dir.join("missing.pem");
    let swapped = [(missing.clone(), key.clone()), (key.clone(), cert.clone())];
    for (cert, key) in swapped {
        let err = Simulator::start(SimConfig {
            tls: SimTls::Files { cert, key },
            ..SimConfig::default()
        })
        .expect_err("bad TLS files");
        assert!(err.to_string().contains(".pem"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
