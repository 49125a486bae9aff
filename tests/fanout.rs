//! Regression tests for the reshaped fanout (front door + fanout threads),
//! end to end: the real engine against the built-in simulator over
//! 127.0.0.1, real WebSocket and HTTP clients (some speaking raw bytes, to
//! do what a well-behaved library would not).
//!
//! Each test names the old behaviour it guards against.

mod common;
use common::{
    counter, exchange, find, get, get_json, held, stats, wait_for, wait_or, Resp, WsClient,
};

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use dhan_relay::wire::request::RequestCode;
use serde_json::{json, Value};
use tungstenite::Message;

// ---------------------------------------------------------------------------
// Engine

/// Starts the engine in demo mode on an ephemeral loopback port, the
/// simulator generating `demo_rate` ticks a second (0: only injected ones),
/// configured by `toml` through the config layer (so its clamps and derived
/// values, e.g. the upstream capacity, apply). Waits for the upstream.
fn start(demo_rate: u32, toml: &str) -> (Engine, SimControl) {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(demo_rate),
        ..Flags::default()
    };
    let config = RunConfig::build(
        &flags,
        Some((Path::new("fanout-test.toml"), toml)),
        &CredentialSources::none(),
    )
    .expect("test config is valid");
    let engine = Engine::start(config).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    (engine, sim)
}

// ---------------------------------------------------------------------------
// Raw WebSocket

/// RFC 6455's example key.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const PING: &[u8] = br#"{"type":"ping"}"#;

fn upgrade_request(path: &str, version: &str, host: &str, key: &str) -> String {
    format!(
        "GET {path} {version}\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A masked client frame (FIN set) with `opcode` and `payload`.
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A socket read through a buffer, so a response head and the frames after
/// it can be taken apart.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// A completed WebSocket handshake on `path`.
    fn websocket(addr: SocketAddr, path: &str) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(upgrade_request(path, "HTTP/1.1", &addr.to_string(), KEY).as_bytes());
        let head = raw.head().unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.s.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn take(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// A response head, through the blank line.
    fn head(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..p + 4).collect();
                return Ok(String::from_utf8(head).unwrap());
            }
            self.fill()?;
        }
    }

    /// The head and exactly `Content-Length` bytes of body.
    fn response(&mut self) -> std::io::Result<Resp> {
        let head = self.head()?;
        let mut r = Resp::parse(head.as_bytes());
        let len: usize = r
            .header("Content-Length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        r.body = self.take(len)?;
        Ok(r)
    }

    /// The next server frame: (opcode, payload). Server frames are unmasked.
    fn frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let h = self.take(2)?;
        assert_eq!(h[1] & 0x80, 0, "a server frame must not be masked");
        let len = match h[1] & 0x7f {
            126 => usize::from(u16::from_be_bytes(self.take(2)?.try_into().unwrap())),
            127 => u64::from_be_bytes(self.take(8)?.try_into().unwrap()) as usize,
            n => usize::from(n),
        };
        Ok((h[0] & 0x0f, self.take(len)?))
    }
}

/// Text and close frames a raw client received.
#[derive(Debug, Default)]
struct Received {
    texts: Vec<Value>,
    close: Option<(u16, String)>,
}

/// Reads frames until a close frame, the end of the stream or `quiet` with
/// nothing new.
fn read_all(raw: &mut Raw, quiet: Duration) -> Received {
    raw.s.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Received::default();
    loop {
        match raw.frame() {
            Ok((1, p)) => got.texts.push(serde_json::from_slice(&p).unwrap()),
            Ok((8, p)) => {
                let code = if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    0
                };
                let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).into_owned();
                got.close = Some((code, reason));
                return got;
            }
            Ok(_) => {}
            Err(_) => return got,
        }
    }
}

// ---------------------------------------------------------------------------
// tungstenite client

/// A client read on its own thread, so it keeps up while the test does
/// other things; counts the messages of one type.
struct Reader {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    fn spawn(mut c: WsClient, kind: &'static str) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        c.0.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let thread = {
            let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    match c.0.read() {
                        Ok(Message::Text(t)) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            if v["type"] == kind {
                                count.fetch_add(1, Relaxed);
                            }
                        }
                        Ok(Message::Close(f)) => panic!("healthy client closed: {f:?}"),
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => panic!("healthy client failed: {e}"),
                    }
                }
            })
        };
        Reader {
            stop,
            count,
            thread: Some(thread),
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Waits (bounded) for the count to grow past what it is now.
    fn wait_for_more(&self, what: &str) {
        let before = self.count();
        wait_for(what, || self.count() > before);
    }

    fn finish(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the reader thread did not panic");
        }
    }
}

// ---------------------------------------------------------------------------
// 1. /ws/prices larger than the client queue

/// Old: a `/prices` body larger than `client_queue_bytes` spun the fanout's
/// flush loop forever: `/ws/prices` got nothing and every client froze.
#[test]
fn ws_prices_larger_than_the_client_queue_is_delivered_and_nothing_wedges() {
    let (engine, _sim) = start(2000, "[limits]\nclient_queue_bytes = 4096\n");
    let addr = engine.addr();
    let mut feed = WsClient::connect(addr, "/ws");
    feed.recv_type("status");
    let keys: Vec<InstrumentKey> = (6_000_000..6_000_300)
        .map(|i| InstrumentKey::new(Segment::NseFno, i))
        .collect();
    for batch in keys.chunks(100) {
        feed.subscribe_many(batch, "ticker");
    }
    let feed = Reader::spawn(feed, "ticker");
    // Ticks for the new instruments make /prices' instruments list big.
    wait_for("/prices to list well over 4 KiB of instruments", || {
        let p = get_json(addr, "/prices");
        p["instruments"].to_string().len() > 3 * 4096
    });
    let mut prices = WsClient::connect(addr, "/ws/prices");
    let started = Instant::now();
    let first = prices.recv_text();
    assert!(first.len() > 4096, "{} bytes", first.len());
    let first: Value = serde_json::from_str(&first).unwrap();
    let listed = first["instruments"].as_array().unwrap().len();
    assert!(listed >= 50, "{listed} instruments");
    // The greeting may be this second's object again; a newer one follows
    // about a second later.
    let mut pushes = 0;
    loop {
        let next = prices.recv_text();
        assert!(next.len() > 4096, "{} bytes", next.len());
        let next: Value = serde_json::from_str(&next).unwrap();
        assert!(next["instruments"].is_array());
        pushes += 1;
        if next["timestamp"] != first["timestamp"] {
            break;
        }
        assert!(pushes < 3, "the same object {pushes} times");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a fresh prices object took {:?}",
        started.elapsed()
    );
    // Everything else is still served.
    let health = get(addr, "/health");
    assert_eq!(health.status, 200, "{}", health.text());
    feed.wait_for_more("tickers on /ws after the big /ws/prices push");
    feed.finish();
    engine.shutdown();
}

// ---------------------------------------------------------------------------
// 2. Floods

/// Floods repeated `frame`s on a raw WebSocket that never reads, for
/// `dur` (or until the relay cuts it off), while a healthy client pings
/// every 100 ms. Returns the flooder, frames written, the healthy client's
/// worst ping→pong and its pong count.
fn flood_while_pinging(
    addr: SocketAddr,
    frame: Vec<u8>,
    dur: Duration,
) -> (Raw, u64, Duration, u32) {
    let mut healthy = WsClient::connect(addr, "/ws");
    healthy.recv_type("status");
    let flooder = Raw::websocket(addr, "/ws");
    let mut w = flooder.s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let frame_len = frame.len() as u64;
    let batch = frame.repeat(1024);
    let writer = std::thread::spawn(move || {
        let end = Instant::now() + dur;
        let (mut pos, mut bytes) = (0usize, 0u64);
        // Partial writes keep their place, so frames stay whole.
        while Instant::now() < end {
            match w.write(&batch[pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    pos = (pos + n) % batch.len();
                    bytes += n as u64;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => break, // cut off by the relay
            }
        }
        bytes / frame_len
    });
    let (mut worst, mut pongs) = (Duration::ZERO, 0u32);
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let t0 = Instant::now();
        healthy.send(json!({"type": "ping"}));
        healthy.recv_type("pong");
        worst = worst.max(t0.elapsed());
        pongs += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let frames = writer.join().unwrap();
    (flooder, frames, worst, pongs)
}

/// Old: the fanout read one client's frames until its socket ran dry, so a
/// client flooding pings held the thread (and everyone's replies) for as
/// long as the flood lasted.
#[test]
fn a_ping_flood_does_not_hold_the_fanout() {
    let (engine, _sim) = start(0, "");
    let addr = engine.addr();
    let (_flooder, frames, worst, pongs) =
        flood_while_pinging(addr, masked(0x9, b"x"), Duration::from_secs(3));
    eprintln!("ping flood: {frames} frames, worst ping→pong {worst:?}, {pongs} pongs");
    assert!(frames > 1_000, "only {frames} pings flooded");
    assert!(pongs >= 10, "only {pongs} pings answered");
    assert!(
        worst < Duration::from_millis(500),
        "healthy client waited {worst:?} for a pong during the flood"
    );
    assert!(counter(addr, "fanout_rate_limited_total") > 0);
    engine.shutdown();
}

/// Old: every rate-limited message got its own error reply (thousands for
/// a flood), and the flood held the fanout.
#[test]
fn a_text_flood_gets_at_most_one_rate_limit_notice_a_second() {
    let (engine, _sim) = start(0, "");
    let addr = engine.addr();
    let flood = Duration::from_secs(3);
    let (mut flooder, frames, worst, _) = flood_while_pinging(addr, masked(0x1, PING), flood);
    assert!(frames > 1_000, "only {frames} messages flooded");
    assert!(
        worst < Duration::from_millis(500),
        "healthy client waited {worst:?} for a pong during the flood"
    );
    assert!(counter(addr, "fanout_rate_limited_total") > 0);
    let got = read_all(&mut flooder, Duration::from_secs(2));
    let notices = got
        .texts
        .iter()
        .filter(|v| {
            v["type"] == "error"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("rate limit"))
        })
        .count();
    eprintln!(
        "text flood: {frames} frames, worst ping→pong {worst:?}, {notices} notices, close {:?}",
        got.close
    );
    assert!(notices >= 1, "no rate-limit notice: {:?}", got.close);
    assert!(
        notices as u64 <= flood.as_secs() + 2,
        "{notices} rate-limit notices for {frames} messages in {flood:?}"
    );
    engine.shutdown();
}

// ---------------------------------------------------------------------------
// 3. Upstream capacity

/// Old: instruments beyond the account's upstream capacity were refused
/// upstream without a word to the client, and never retried.
#[test]
fn instruments_beyond_upstream_capacity_are_queued_then_subscribed_when_slots_free() {
    let (engine, sim) = start(
        0,
        "[limits]\nupstream_connections = 1\ninstruments_per_connection = 10\nunsubscribe_grace_ms = 200\n",
    );
    let addr = engine.addr();
    let watch = engine.watchlist().len();
    wait_for("the watchlist held upstream", || held(&sim).len() == watch);
    wait_for("the watchlist counted against capacity", || {
        get_json(addr, "/health")["upstream"]["capacity"]["instruments"] == json!(watch)
    });
    let capacity = get_json(addr, "/health")["upstream"]["capacity"].clone();
    assert_eq!(capacity["limit"], 10, "{capacity}");
    let free = 10 - watch;
    assert!((1..15).contains(&free), "{capacity}");

    let mut c = WsClient::connect(addr, "/ws");
    c.recv_type("status");
    let keys: Vec<InstrumentKey> = (7001..=7015)
        .map(|i| InstrumentKey::new(Segment::NseEq, i))
        .collect();
    c.subscribe_many(&keys, "ticker");
    let e = c.recv_type("error");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("upstream capacity full") && message.contains("queued"),
        "{e}"
    );
    // Admitted in order: the first `free` are live, the rest wait.
    let mut live: Vec<InstrumentKey> = keys[..free].to_vec();
    let mut queued: Vec<InstrumentKey> = keys[free..].to_vec();
    wait_for("live instruments subscribed upstream", || {
        let h = held(&sim);
        live.iter().all(|k| h.contains(&(*k, Mode::Ticker)))
    });
    assert!(
        !held(&sim).iter().any(|(k, _)| queued.contains(k)),
        "queued instruments must not be sent upstream"
    );
    wait_for("/health to count the queue", || {
        get_json(addr, "/health")["upstream"]["capacity"]["queued"] == json!(queued.len())
    });
    let listed = |state: &str| -> Vec<Value> {
        let v = get_json(
            addr,
            &format!("/api/v2/subscriptions/active?state={state}&segment=NSE_EQ"),
        );
        v["subscriptions"].as_array().unwrap().clone()
    };
    let ids = |l: &[InstrumentKey]| -> Vec<String> {
        l.iter().map(|k| k.security_id.to_string()).collect()
    };
    wait_for("the queue listed", || {
        listed("queued").len() == queued.len()
    });
    let rows = listed("queued");
    assert!(rows.iter().all(|r| r["state"] == "queued"), "{rows:?}");
    let mut row_ids: Vec<String> = rows
        .iter()
        .map(|r| r["securityId"].as_str().unwrap().to_string())
        .collect();
    row_ids.sort();
    assert_eq!(row_ids, ids(&queued));
    let metrics = get(addr, "/metrics").text();
    assert!(
        metrics.contains(&format!(
            "dhan_relay_upstream_queued_instruments {}\n",
            queued.len()
        )),
        "{metrics}"
    );

    // Free slots by dropping live instruments; the queue moves up, oldest
    // first, until it is empty.
    let mut rounds = 0;
    while !queued.is_empty() {
        rounds += 1;
        assert!(rounds <= 15, "the queue never drained");
        let n = queued.len().min(live.len());
        let dropped: Vec<InstrumentKey> = live.drain(..n).collect();
        let promoted: Vec<InstrumentKey> = queued.drain(..n).collect();
        c.unsubscribe(&dropped);
        let status = c.recv_type("status");
        let text = status["message"].as_str().unwrap();
        assert!(text.contains("capacity freed"), "{status}");
        for k in &promoted {
            assert!(
                text.contains(&k.security_id.to_string()),
                "{k} not named in {status}"
            );
        }
        wait_or(
            "promoted instruments subscribed upstream",
            || {
                let h = held(&sim);
                promoted.iter().all(|k| h.contains(&(*k, Mode::Ticker)))
                    && !dropped.iter().any(|k| h.iter().any(|(hk, _)| hk == k))
            },
            || {
                format!(
                    "promoted {promoted:?}, dropped {dropped:?}; the simulator holds {:?}; \
                     upstream_rejected_subscriptions_total {}",
                    held(&sim),
                    counter(addr, "upstream_rejected_subscriptions_total")
                )
            },
        );
        let requests = sim.requests();
        for k in &promoted {
            assert!(
                requests
                    .iter()
                    .any(|r| r.code == RequestCode::SubscribeTicker && r.instruments.contains(k)),
                "no upstream subscribe for {k}"
            );
        }
        live.extend(promoted);
    }
    wait_for("the queue empty in /health", || {
        get_json(addr, "/health")["upstream"]["capacity"]["queued"] == 0
    });
    wait_for("nothing listed as queued", || listed("queued").is_empty());
    // The promoted instruments flow.
    let k = *live.last().unwrap();
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker { ltp: 12.5, ltt: 9 }),
    ));
    let t = c.recv_type("ticker");
    assert_eq!(
        (t["securityId"].clone(), t["ltp"].clone()),
        (json!(k.security_id.to_string()), json!(12.5))
    );
    engine.shutdown();
}

// ---------------------------------------------------------------------------
// 4. Never-reading clients

/// Old: a client that never read kept megabytes in kernel buffers and was
/// closed only after 20–25 s, not the configured limit. The feed rate is
/// moderate on purpose: ~300 KB/s fills a capped send buffer in about a
/// second but takes over ten to fill an autotuned (4 MB) one (checked:
/// with `client_send_buffer = 0` this test fails).
#[test]
fn a_never_reading_client_is_closed_soon_after_the_slow_client_timeout() {
    let (engine, sim) = start(500, "[limits]\nslow_client_timeout_ms = 2000\n");
    let addr = engine.addr();
    let keys: Vec<InstrumentKey> = (8000..8050)
        .map(|i| InstrumentKey::new(Segment::NseEq, i))
        .collect();
    let mut good = WsClient::connect(addr, "/ws");
    good.recv_type("status");
    good.subscribe_many(&keys, "full");
    let good = Reader::spawn(good, "full");
    wait_for("subscriptions upstream", || {
        let h = held(&sim);
        keys.iter().all(|k| h.contains(&(*k, Mode::Full)))
    });
    good.wait_for_more("full packets");
    // Default socket buffers: it never reads a byte after the handshake.
    let mut slow = WsClient::connect(addr, "/ws");
    slow.subscribe_many(&keys, "full");
    let subscribed = Instant::now();
    let limit = Duration::from_secs(10);
    loop {
        if counter(addr, "fanout_slow_closes_total") >= 1 {
            break;
        }
        assert!(
            subscribed.elapsed() < limit,
            "a never-reading client still open after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_after = subscribed.elapsed();
    wait_for("only the healthy client left", || {
        counter(addr, "fanout_clients") == 1
    });
    good.wait_for_more("full packets after the slow client went");
    good.finish();
    drop(slow);
    eprintln!("never-reading client closed {closed_after:?} after subscribing");
    engine.shutdown();
}

// ---------------------------------------------------------------------------
// 5. Host header, bad upgrades

/// Old: any `Host` was served (DNS rebinding could read prices and open
/// WebSockets), and malformed or HTTP/1.0 upgrades were accepted.
#[test]
fn host_checks_and_bad_upgrades() {
    let (engine, _sim) = start(0, "");
    let addr = engine.addr();
    let port = addr.port();
    let get = |host: &str| {
        exchange(
            addr,
            &format!("GET /prices HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let evil = get("evil.example");
    assert_eq!(evil.status, 403, "{}", evil.text());
    assert!(evil.json()["error"].is_string(), "{}", evil.text());
    for host in [
        format!("127.0.0.1:{port}"),
        "localhost".to_string(),
        format!("localhost:{port}"),
    ] {
        let r = get(&host);
        assert_eq!(r.status, 200, "Host: {host}: {}", r.text());
        assert!(r.json()["instruments"].is_array());
    }
    let up = exchange(
        addr,
        &upgrade_request("/ws", "HTTP/1.1", "evil.example", KEY),
    );
    assert_eq!(up.status, 403, "{}", up.text());
    let host = addr.to_string();
    let bad_key = exchange(addr, &upgrade_request("/ws", "HTTP/1.1", &host, "abc"));
    assert_eq!(bad_key.status, 400, "{}", bad_key.text());
    assert!(bad_key.text().contains("Sec-WebSocket-Key"));
    let old = exchange(addr, &upgrade_request("/ws", "HTTP/1.0", &host, KEY));
    assert_eq!(old.status, 400, "{}", old.text());
    // A good upgrade still works.
    let mut raw = Raw::connect(addr);
    raw.send(upgrade_request("/ws", "HTTP/1.1", &host, KEY).as_bytes());
    assert!(raw.head().unwrap().starts_with("HTTP/1.1 101 "));
    engine.shutdown();

    // A configured host name is served, plain and upgraded.
    let (engine, _sim) = start(0, "allowed_hosts = [\"relay.lan\"]\n");
    let addr = engine.addr();
    let r = exchange(
        addr,
        "GET /prices HTTP/1.1\r\nHost: relay.lan:8000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut raw = Raw::connect(addr);
    raw.send(upgrade_request("/ws", "HTTP/1.1", "relay.lan:8000", KEY).as_bytes());
    let head = raw.head().unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let r = exchange(
        addr,
        "GET /prices HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 403, "only the listed name: {}", r.text());
    engine.shutdown();
}

// ---------------------------------------------------------------------------
// 6. A frame sent with the handshake

/// Old: bytes read past the request head were lost or waited for more
/// input, so a client that sent its first message with the handshake got
/// no answer until it sent something else.
#[test]
fn a_frame_sent_with_the_handshake_is_answered_at_once() {
    let (engine, _sim) = start(0, "");
    let addr = engine.addr();
    let mut raw = Raw::connect(addr);
    let mut bytes = upgrade_request("/ws", "HTTP/1.1", &addr.to_string(), KEY).into_bytes();
    bytes.extend(masked(0x1, PING));
    let t0 = Instant::now();
    raw.send(&bytes);
    raw.s
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let head = raw.head().unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match raw.frame() {
            Ok((1, p)) => texts.push(serde_json::from_slice::<Value>(&p).unwrap()),
            Ok((op, _)) => panic!("unexpected opcode {op}"),
            Err(e) => panic!("after {:?}, got only {texts:?}: {e}", t0.elapsed()),
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(texts[0]["type"], "status", "{texts:?}");
    assert_eq!(texts[1], json!({"type": "pong"}));
    engine.shutdown();
}

// ---------------------------------------------------------------------------
// 7. Replies are never dropped silently

/// Writes `N` pings without reading (on a socket whose receive buffer is
/// capped when `shrink`), waits for the relay to answer them all (or give
/// up), then reads everything: the number of pongs and the close frame, if
/// one came. No ticks flow (demo rate 0), so every message the relay queues
/// is a reply to this client.
fn pings_without_reading(toml: &str, shrink: bool) -> (usize, Option<(u16, String)>) {
    const N: usize = 3_000;
    let (engine, _sim) = start(0, toml);
    let addr = engine.addr();
    let mut raw = if shrink {
        Raw {
            s: connect_with_small_receive_buffer(addr),
            buf: Vec::new(),
        }
    } else {
        Raw::connect(addr)
    };
    raw.s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw.send(upgrade_request("/ws", "HTTP/1.1", &addr.to_string(), KEY).as_bytes());
    let head = raw.head().unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut w = raw.s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let all = masked(0x1, PING).repeat(N);
    let writer = std::thread::spawn(move || w.write_all(&all));
    // Nothing is read until the relay has answered every ping or given up
    // on this client (it stops queueing). Not until the writer is done: a
    // relay that gave up reads no more, so the writer may block for its
    // whole timeout, longer than the relay waits for its close frame to
    // be taken before it drops the socket.
    let (mut last, mut still) = (0, 0);
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let stats = stats(addr);
        let c = &stats["counters"];
        let messages = c["fanout_messages_total"].as_u64().unwrap();
        if messages > N as u64 || c["fanout_slow_closes_total"].as_u64().unwrap() > 0 {
            break;
        }
        // Or nothing more happens: whatever was answered is queued.
        still = if messages == last { still + 1 } else { 0 };
        last = messages;
        if still >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    raw.s
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (mut pongs, mut close) = (0usize, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    while pongs < N && Instant::now() < deadline {
        match raw.frame() {
            Ok((1, p)) => {
                let v: Value = serde_json::from_slice(&p).unwrap();
                if v["type"] == "pong" {
                    pongs += 1;
                }
            }
            Ok((8, p)) => {
                let code = u16::from_be_bytes([p[0], p[1]]);
                close = Some((code, String::from_utf8_lossy(&p[2..]).into_owned()));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("reading pongs ended: {e}");
                break;
            }
        }
    }
    eprintln!("{pongs} pongs of {N}, close {close:?}");
    let _ = writer.join().unwrap();
    engine.shutdown();
    match close.clone() {
        None => assert_eq!(pongs, N, "pongs lost without a close frame"),
        Some((code, reason)) => assert!(
            code == 1008 && reason.contains("replies"),
            "closed with {code} {reason:?} after {pongs} pongs"
        ),
    }
    (pongs, close)
}

/// A connection whose kernel receive buffer is capped before the
/// handshake (a window already advertised is never shrunk), so a client
/// that does not read backs up into the relay after a few KB.
fn connect_with_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("the relay listens on 127.0.0.1")
    };
    let size: libc::c_int = 4096;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket calls on a descriptor we own; the pointers are
    // to locals that outlive each call, with their true sizes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// Old: a reply (pong, error) found the client's queue full and was
/// dropped without a word. Now every reply arrives, or the client is closed
/// with 1008 saying why.
#[test]
fn replies_are_all_delivered_or_the_client_is_told_why_not() {
    pings_without_reading(
        "[limits]\nmax_messages_per_sec = 100000\nclient_queue_bytes = 4096\n",
        false,
    );
}

/// The same with kernel buffers too small to absorb the 3,000 pongs
/// (≈ 51 KB): the relay's queue must overflow, so the client must be told
/// (1008) rather than lose pongs silently.
#[test]
fn replies_overflowing_small_buffers_end_in_a_1008_close_not_silence() {
    let (pongs, close) = pings_without_reading(
        "[limits]\nmax_messages_per_sec = 100000\nclient_queue_bytes = 4096\nclient_send_buffer = 4096\n",
        true,
    );
    assert!(
        close.is_some(),
        "{pongs} pongs: expected the queue to overflow with these buffers"
    );
}

// ---------------------------------------------------------------------------
// 8. Small things

/// The front door's small contracts: `HEAD` keeps `Content-Length` and
/// sends no body, CORS preflights answer 204, HTTP/1.1 connections are kept
/// alive, `/` speaks the `/ws` protocol, a plain GET of `/ws` is 426 and a
/// request body is refused with 413.
#[test]
fn head_options_keep_alive_root_websocket_and_refusals() {
    let (engine, sim) = start(0, "");
    let addr = engine.addr();
    let head = exchange(
        addr,
        &format!("HEAD /prices HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(head.status, 200, "{}", head.head);
    let len: usize = head
        .header("Content-Length")
        .expect("HEAD keeps Content-Length")
        .parse()
        .unwrap();
    assert!(len > 0, "{}", head.head);
    assert!(head.body.is_empty(), "HEAD sent a body: {}", head.text());

    let pre = exchange(
        addr,
        &format!(
            "OPTIONS /prices HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://localhost:3000\r\n\
             Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(pre.status, 204, "{}", pre.head);
    assert_eq!(
        pre.header("Access-Control-Allow-Origin").as_deref(),
        Some("http://localhost:3000"),
        "{}",
        pre.head
    );

    // Two requests on one kept-alive connection.
    let mut conn = Raw::connect(addr);
    conn.send(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let first = conn.response().unwrap();
    assert_eq!(first.status, 200, "{}", first.head);
    assert!(first.json()["upstream"].is_object());
    conn.send(format!("GET /prices HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let second = conn.response().unwrap();
    assert_eq!(second.status, 200, "{}", second.head);
    assert!(second.json()["instruments"].is_array());
    assert_eq!(
        second.header("Connection").as_deref(),
        Some("keep-alive"),
        "{}",
        second.head
    );

    // `/` speaks the /ws protocol.
    let mut root = WsClient::connect(addr, "/");
    assert_eq!(root.recv_type("status")["state"], "connected");
    let k = InstrumentKey::new(Segment::NseEq, 4242);
    root.subscribe(k, "ticker");
    wait_for("subscribed upstream", || {
        held(&sim).contains(&(k, Mode::Ticker))
    });
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker {
            ltp: 321.45,
            ltt: 77,
        }),
    ));
    let t = root.recv_type("ticker");
    assert_eq!(
        (t["securityId"].clone(), t["ltp"].clone()),
        (json!("4242"), json!(321.45))
    );

    let plain = get(addr, "/ws");
    assert_eq!(plain.status, 426, "{}", plain.text());
    let post = exchange(
        addr,
        &format!(
            "POST /prices HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        ),
    );
    assert_eq!(post.status, 413, "{}", post.text());
    assert!(post.json()["error"].is_string());
    engine.shutdown();
}

// ---------------------------------------------------------------------------
// 9. Demo prices

/// Old: demo-mode prices were random levels per instrument (NIFTY around
/// 65,000), which made the dashboard look broken. Needs the simulator's
/// reference prices.
#[test]
fn demo_prices_are_near_real_levels() {
    let (engine, _sim) = start(200, "");
    let addr = engine.addr();
    wait_for("NIFTY and SENSEX priced", || {
        let p = get_json(addr, "/prices");
        p["NIFTY"].is_number() && p["SENSEX"].is_number()
    });
    let p = get_json(addr, "/prices");
    for (symbol, reference) in [("NIFTY", 25_800.0), ("SENSEX", 84_000.0)] {
        let v = p[symbol].as_f64().unwrap();
        assert!(
            (v - reference).abs() <= reference * 0.10,
            "{symbol} at {v}, expected within 10 % of {reference}"
        );
    }
    engine.shutdown();
}
