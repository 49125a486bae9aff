//! Replay (`src/sim/replay.rs`) over real sockets on 127.0.0.1: recorded
//! frames built in memory with the wire encoders, played by the simulator
//! to plain blocking tungstenite clients and to the relay engine.

mod common;
use common::{http_get, wait_for};

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::record::{FeedKind, RecordedFrame};
use dhan_relay::sim::{FrameSource, ReplayConfig, SimConfig, SimControl, Simulator, Speed};
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::upstream::Credentials;
use dhan_relay::wire::depth::{DepthBook, DepthMessage, DepthRow, Side, ROWS};
use dhan_relay::wire::feed::{self, FeedData, FeedMessage, PrevClose, Ticker};
use dhan_relay::wire::request::{encode_subscription, RequestCode};
use dhan_relay::wire::DisconnectReason;
use serde_json::Value;
use tungstenite::{Error as WsError, Message, WebSocket};

const A: InstrumentKey = InstrumentKey::new(Segment::NseEq, 2885);
const B: InstrumentKey = InstrumentKey::new(Segment::NseEq, 1333);
const C: InstrumentKey = InstrumentKey::new(Segment::NseFno, 35_001);
const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);
/// Socket read timeout: how often a blocked read gives control back.
const TICK: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(10);
/// 2026-12-03 09:15:00 India time, Unix nanoseconds.
const OPEN_NS: u64 = 1_796_269_500_000_000_000;

type Client = WebSocket<TcpStream>;

fn ticker(key: InstrumentKey, ltp: f32, ltt: u32) -> Vec<u8> {
    encode(&FeedMessage::Data(
        key,
        FeedData::Ticker(Ticker { ltp, ltt }),
    ))
}

fn prev_close(key: InstrumentKey, price: f32) -> Vec<u8> {
    encode(&FeedMessage::Data(
        key,
        FeedData::PrevClose(PrevClose {
            prev_close: price,
            prev_oi: 7,
        }),
    ))
}

fn encode(msg: &FeedMessage) -> Vec<u8> {
    let mut b = Vec::new();
    msg.encode(&mut b);
    b
}

fn depth_side(key: InstrumentKey, side: Side, sequence: u32) -> Vec<u8> {
    let mut b = Vec::new();
    DepthMessage::Book(DepthBook {
        key,
        side,
        sequence,
        rows: [DepthRow {
            price: 100.5,
            quantity: 10,
            orders: 2,
        }; ROWS],
    })
    .encode(&mut b);
    b
}

/// A main-feed frame of `packets`, received `ms` after [`OPEN_NS`].
fn frame(ms: u64, packets: &[&[u8]]) -> RecordedFrame {
    RecordedFrame {
        recv_unix_ns: OPEN_NS + ms * 1_000_000,
        conn: 0,
        feed: FeedKind::Main,
        payload: packets.concat(),
    }
}

fn source(frames: Vec<RecordedFrame>) -> FrameSource {
    let frames = Arc::new(frames);
    Arc::new(move || Ok(Box::new(frames.as_ref().clone().into_iter()) as Box<_>))
}

fn replay(frames: Vec<RecordedFrame>, speed: Speed) -> ReplayConfig {
    ReplayConfig {
        source: source(frames),
        speed,
        from: None,
        to: None,
        looped: false,
        on_send: None,
    }
}

fn start(replay: ReplayConfig) -> (Simulator, SimControl) {
    let sim = Simulator::start(SimConfig {
        replay: Some(replay),
        ..SimConfig::default()
    })
    .expect("simulator starts");
    let ctl = sim.control();
    (sim, ctl)
}

fn connect_path(sim: &Simulator, path: &str) -> Client {
    let tcp = TcpStream::connect(sim.addr()).unwrap();
    tcp.set_read_timeout(Some(TICK)).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut attempt = tungstenite::client(format!("{}{path}", sim.feed_url()), tcp);
    loop {
        match attempt {
            Ok((ws, _)) => return ws,
            Err(tungstenite::HandshakeError::Interrupted(mid)) if Instant::now() < deadline => {
                attempt = mid.handshake();
            }
            Err(e) => panic!("handshake: {e}"),
        }
    }
}

/// A feed client, past the market-status packet every login gets.
fn connect(sim: &Simulator) -> Client {
    let mut ws = connect_path(sim, "/?version=2&token=tok&clientId=C1&authType=2");
    let status = next_frame(&mut ws).expect("market status");
    assert_eq!(status[0], feed::code::MARKET_STATUS);
    ws
}

fn subscribe(ws: &mut Client, code: RequestCode, keys: &[InstrumentKey]) {
    for msg in encode_subscription(code, keys).unwrap() {
        ws.send(Message::text(msg)).unwrap();
    }
}

/// The next binary frame within `within`, `None` on silence.
fn next_frame_within(ws: &mut Client, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => return Some(b.to_vec()),
            Ok(Message::Close(_)) => panic!("closed by the server"),
            Ok(_) => {}
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return None;
                }
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn next_frame(ws: &mut Client) -> Option<Vec<u8>> {
    next_frame_within(ws, WAIT)
}

/// Frames until `within` of silence.
fn frames_until_quiet(ws: &mut Client, within: Duration) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| next_frame_within(ws, within)).collect()
}

fn finished(ctl: &SimControl) {
    assert!(ctl.wait_replay_finished(WAIT), "replay did not finish");
}

#[test]
fn a_client_gets_exactly_its_instruments_packets_batched_as_recorded() {
    let (a1, b1, c1) = (ticker(A, 1.0, 1), ticker(B, 2.0, 1), ticker(C, 3.0, 1));
    let (a2, b2, c2) = (ticker(A, 1.5, 2), ticker(B, 2.5, 2), ticker(C, 3.5, 2));
    let status = encode(&FeedMessage::Data(
        InstrumentKey::new(Segment::IdxI, 0),
        FeedData::MarketStatus,
    ));
    let bid = depth_side(A, Side::Bid, 9);
    let ask = depth_side(A, Side::Ask, 9);
    // The clock starts at the feed client's subscription; the depth client
    // subscribes well within the 300 ms before the second frame.
    let frames = vec![
        frame(0, &[&a1, &b1, &c1]),
        frame(300, &[&c2]),
        frame(301, &[&a2]),
        RecordedFrame {
            feed: FeedKind::Depth,
            ..frame(302, &[&bid, &ask])
        },
        frame(303, &[&b2, &c2]),
        frame(304, &[&status]),
    ];
    let (sim, ctl) = start(replay(frames, Speed::Times(1.0)));
    let mut depth = connect_path(&sim, "/twentydepth?token=tok&clientId=C1&authType=2");
    let mut ws = connect(&sim);
    // Quote mode: packets still come as recorded (ticker here).
    subscribe(&mut ws, RequestCode::SubscribeQuote, &[A, B]);
    wait_for("feed subscription", || {
        ctl.subscriptions()
            .iter()
            .any(|s| !s.depth && !s.instruments.is_empty())
    });
    subscribe(&mut depth, RequestCode::SubscribeDepth, &[A]);
    finished(&ctl);
    let got = frames_until_quiet(&mut ws, Duration::from_millis(300));
    let want: Vec<Vec<u8>> = vec![[a1, b1].concat(), a2, b2, status];
    assert_eq!(got, want);
    assert_eq!(next_frame(&mut depth), Some([bid, ask].concat()));
    let s = ctl.stats();
    assert_eq!((s.replay_frames, s.replay_packets), (6, 10));
    assert_eq!((s.queue_drops, s.replay_disconnects), (0, 0));
}

/// Six frames 100 ms apart: (elapsed from the first to the last received).
fn spread_at(speed: f64) -> Duration {
    let frames = (0..6)
        .map(|i| frame(i * 100, &[&ticker(A, 1.0, i as u32)]))
        .collect();
    let (sim, _ctl) = start(replay(frames, Speed::Times(speed)));
    let mut ws = connect(&sim);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[A]);
    let first = next_frame(&mut ws).expect("first frame");
    let t0 = Instant::now();
    assert_eq!(first, ticker(A, 1.0, 0));
    for i in 1..6 {
        assert_eq!(next_frame(&mut ws), Some(ticker(A, 1.0, i)));
    }
    t0.elapsed()
}

#[test]
fn frames_keep_the_recorded_spacing_scaled_by_speed() {
    let real = spread_at(1.0);
    let fast = spread_at(10.0);
    assert!(real >= Duration::from_millis(400), "1x: {real:?}");
    assert!(real < Duration::from_millis(2_000), "1x: {real:?}");
    assert!(fast * 3 < real, "10x {fast:?} vs 1x {real:?}");
}

#[test]
fn from_and_to_keep_india_times_from_inclusive_to_exclusive() {
    let minute = 60_000;
    let frames = vec![
        frame(0, &[&ticker(A, 1.0, 0)]),           // 09:15
        frame(5 * minute, &[&ticker(A, 2.0, 0)]),  // 09:20
        frame(14 * minute, &[&ticker(A, 3.0, 0)]), // 09:29
        frame(15 * minute, &[&ticker(A, 4.0, 0)]), // 09:30
    ];
    let mut cfg = replay(frames, Speed::Max);
    cfg.from = Some((9, 20));
    cfg.to = Some((9, 30));
    let (sim, ctl) = start(cfg);
    let mut ws = connect(&sim);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[A]);
    finished(&ctl);
    let got = frames_until_quiet(&mut ws, Duration::from_millis(300));
    assert_eq!(got, vec![ticker(A, 2.0, 0), ticker(A, 3.0, 0)]);
    assert_eq!(ctl.stats().replay_frames, 2);
}

#[test]
fn a_loop_with_nothing_in_the_window_finishes_instead_of_spinning() {
    let mut cfg = replay(vec![frame(0, &[&ticker(A, 1.0, 0)])], Speed::Max); // 09:15
    cfg.looped = true;
    cfg.from = Some((16, 0));
    let (sim, ctl) = start(cfg);
    let mut ws = connect(&sim);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[A]);
    finished(&ctl);
    let s = ctl.stats();
    assert_eq!((s.replay_passes, s.replay_frames), (1, 0), "{s:?}");
    drop(sim); // and it stops
}

#[test]
fn loop_plays_the_recording_again() {
    let frames = vec![
        frame(0, &[&ticker(A, 1.0, 0)]),
        frame(20, &[&ticker(A, 2.0, 0)]),
    ];
    let mut cfg = replay(frames, Speed::Times(1.0));
    cfg.looped = true;
    let (sim, ctl) = start(cfg);
    let mut ws = connect(&sim);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[A]);
    for _ in 0..3 {
        assert_eq!(next_frame(&mut ws), Some(ticker(A, 1.0, 0)));
        assert_eq!(next_frame(&mut ws), Some(ticker(A, 2.0, 0)));
    }
    let s = ctl.stats();
    assert!(s.replay_passes >= 2, "{s:?}");
    assert!(!s.replay_finished);
}

#[test]
fn max_speed_waits_for_a_slow_reader_and_loses_nothing() {
    // More frames than a connection's queue holds, and more bytes (34 MB)
    // than the socket buffers and the WebSocket's write buffer hold.
    let n = dhan_relay::sim::QUEUE_CAPACITY as u32 * 2 + 10_000;
    let frame_of = |i: u32| frame(u64::from(i), &[&ticker(A, 1.0, i).repeat(50)]);
    let frames = (0..n).map(frame_of).collect();
    let (sim, ctl) = start(replay(frames, Speed::Max));
    let mut ws = connect(&sim);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[A]);
    // Read nothing for a while: the queue fills and the replay must wait.
    std::thread::sleep(Duration::from_millis(500));
    let s = ctl.stats();
    assert!(s.replay_frames < u64::from(n), "the replay waits: {s:?}");
    for i in 0..n {
        let f = next_frame(&mut ws).unwrap_or_else(|| panic!("frame {i} missing"));
        assert!(f == frame_of(i).payload, "frame {i}");
        if i % 5_000 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    finished(&ctl);
    assert_eq!(ctl.stats().queue_drops, 0);
}

#[test]
fn a_subscribe_gets_the_latest_recorded_previous_close() {
    let frames = vec![
        frame(0, &[&prev_close(A, 100.0), &ticker(B, 1.0, 0)]),
        frame(1, &[&ticker(A, 101.0, 1)]),
        frame(2, &[&prev_close(A, 200.0)]),
    ];
    let (sim, ctl) = start(replay(frames, Speed::Max));
    let mut first = connect(&sim);
    subscribe(&mut first, RequestCode::SubscribeTicker, &[B]);
    finished(&ctl);
    assert_eq!(next_frame(&mut first), Some(ticker(B, 1.0, 0)));
    let mut late = connect(&sim);
    subscribe(&mut late, RequestCode::SubscribeFull, &[A, C]);
    // A's latest recorded one; nothing for C (none recorded, none made up).
    let got = frames_until_quiet(&mut late, Duration::from_millis(300));
    assert_eq!(got, vec![prev_close(A, 200.0)]);
}

#[test]
fn recorded_disconnect_packets_are_counted_not_replayed() {
    let bye = encode(&FeedMessage::Disconnect(
        DisconnectReason::TooManyConnections,
    ));
    let frames = vec![
        frame(0, &[&bye]),
        frame(1, &[&ticker(A, 1.0, 0), &bye]),
        frame(2, &[&ticker(A, 2.0, 0)]),
    ];
    let (sim, ctl) = start(replay(frames, Speed::Max));
    let mut ws = connect(&sim);
    subscribe(&mut ws, RequestCode::SubscribeTicker, &[A]);
    finished(&ctl);
    let got = frames_until_quiet(&mut ws, Duration::from_millis(300));
    assert_eq!(got, vec![ticker(A, 1.0, 0), ticker(A, 2.0, 0)]);
    let s = ctl.stats();
    assert_eq!((s.replay_disconnects, s.open), (2, 1));
}

#[test]
fn a_relay_connected_to_the_replay_serves_the_recorded_prices() {
    // The engine's default watchlist holds NIFTY.
    let frames = vec![
        frame(0, &[&ticker(NIFTY, 25_760.85, 1_796_269_500)]),
        frame(50, &[&ticker(NIFTY, 25_761.5, 1_796_269_501)]),
    ];
    let (sim, ctl) = start(replay(frames, Speed::Times(1.0)));
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        feed_url: Some(sim.feed_url()),
        ..Flags::default()
    };
    let mut c = RunConfig::build(
        &flags,
        None,
        &CredentialSources::given(&Credentials::new("1000000001", "tok")),
    )
    .unwrap();
    c.chains.clear();
    let engine = Engine::start(c).expect("engine starts");
    finished(&ctl);
    wait_for("the last recorded NIFTY in /prices", || {
        let (_, body) = http_get(engine.addr(), "/prices");
        serde_json::from_str::<Value>(&body).unwrap()["NIFTY"] == serde_json::json!(25_761.5)
    });
    engine.shutdown();
}

#[test]
fn the_replay_command_line_parses() {
    use clap::Parser;
    use dhan_relay::cli::{Cli, Command};
    let cli = Cli::try_parse_from([
        "dhan-relay",
        "replay",
        "a.rec",
        "b.rec",
        "--speed",
        "max",
        "--from",
        "09:15",
        "--to",
        "10:00",
        "--loop",
    ])
    .unwrap();
    let Some(Command::Replay(r)) = cli.command else {
        panic!("replay expected");
    };
    assert_eq!(r.files.len(), 2);
    assert_eq!(r.speed, Speed::Max);
    assert_eq!(
        (r.from, r.to, r.looped),
        (Some((9, 15)), Some((10, 0)), true)
    );
    assert!(Cli::try_parse_from(["dhan-relay", "replay"]).is_err());
    assert!(Cli::try_parse_from(["dhan-relay", "replay", "a", "--from", "9"]).is_err());
}
