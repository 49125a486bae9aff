//! Recording (`--record`) end to end: the real engine against the built-in
//! simulator over 127.0.0.1, the day file read back, replayed into a second
//! engine, a failing disk, and a recorder killed mid-write.

mod common;
use common::bars::{bars_of, reference_bars, seen, Seen};
use common::{get_json, http_get, http_get_json, wait_for, wait_or, TempDir, WsClient};

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dhan_relay::clock;
use dhan_relay::config::{Flags, RecordSettings, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::record::{self, FeedKind, Reader, RecordConfig, Recorder};
use dhan_relay::sim::replay::open_recordings;
use dhan_relay::sim::{ReplayConfig, SimConfig, SimControl, Simulator, Speed};
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::upstream::Credentials;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Quote};
use serde_json::Value;
use tungstenite::Message;

const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);
const RELIANCE: InstrumentKey = InstrumentKey::new(Segment::NseEq, 2885);
const HDFCBANK: InstrumentKey = InstrumentKey::new(Segment::NseEq, 1333);
const KEYS: [InstrumentKey; 3] = [NIFTY, RELIANCE, HDFCBANK];

fn settings(dir: &Path) -> RecordSettings {
    RecordSettings {
        dir: dir.to_path_buf(),
        keep_days: 0,
        fail_after_bytes: None,
    }
}

/// Demo mode (the built-in simulator) at `rate` ticks/s, nothing subscribed
/// until a client asks: the recording holds exactly what clients asked for.
fn demo(rate: u32, record: Option<RecordSettings>) -> Engine {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(rate),
        ..Flags::default()
    };
    let mut c = RunConfig::build(&flags, None, &CredentialSources::none()).unwrap();
    c.watch.clear();
    c.chains.clear();
    c.trading.enabled = false;
    c.record = record;
    Engine::start(c).expect("engine starts")
}

/// The engine in live mode against `feed`, nothing subscribed at start.
fn live(feed: &str) -> Engine {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        feed_url: Some(feed.to_string()),
        instruments: Some("sample".into()),
        ..Flags::default()
    };
    let mut c = RunConfig::build(
        &flags,
        None,
        &CredentialSources::given(&Credentials::new("1000000001", "replay-token")),
    )
    .unwrap();
    c.watch.clear();
    c.chains.clear();
    c.trading.enabled = false;
    Engine::start(c).expect("engine starts")
}

/// Price messages per instrument, in arrival order, as the client got
/// them (`seq` aside: it counts packets the engine applied, previous-close
/// ones included, which depend on when each engine subscribed).
type Received = BTreeMap<String, Vec<Value>>;

/// Reads price messages until none came for `quiet` (or `limit` passed).
fn collect(ws: &mut WsClient, seen: &mut Received, quiet: Duration, limit: Duration) {
    ws.0.get_mut()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let end = Instant::now() + limit;
    let mut last = Instant::now();
    while Instant::now() < end && last.elapsed() < quiet {
        match ws.0.read() {
            Ok(Message::Text(t)) => {
                let mut v: Value = serde_json::from_str(t.as_str()).unwrap();
                if !matches!(v["type"].as_str(), Some("ticker" | "quote" | "full")) {
                    continue;
                }
                last = Instant::now();
                v.as_object_mut().unwrap().remove("seq");
                let id = format!("{}:{}", v["exchangeSegment"], v["securityId"]);
                seen.entry(id).or_default().push(v);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("client read failed: {e}"),
        }
    }
}

fn only_file(dir: &Path) -> PathBuf {
    let files = record::day_files(dir).unwrap();
    assert_eq!(files.len(), 1, "one day file: {files:?}");
    files[0].1.clone()
}

#[test]
fn a_recorded_session_replays_into_a_second_engine_identically() {
    let dir = TempDir::new("record-round-trip");
    // The first engine records while its client watches three instruments.
    let first = demo(300, Some(settings(&dir.0)));
    let sim = first.demo_simulator().unwrap().control();
    let mut client = WsClient::connect(first.addr(), "/ws");
    client.subscribe_many(&KEYS, "quote");
    let mut original = Received::new();
    collect(
        &mut client,
        &mut original,
        Duration::from_secs(3),
        Duration::from_secs(3),
    );
    // Stop the source, take the last messages, then stop (the recorder
    // writes everything the network thread offered before it ends).
    sim.set_stalled(true);
    collect(
        &mut client,
        &mut original,
        Duration::from_millis(500),
        Duration::from_secs(5),
    );
    let health = get_json(first.addr(), "/health");
    assert_eq!(health["record"]["state"], "recording", "{health}");
    assert_eq!(health["record"]["lostFrames"], 0, "{health}");
    first.shutdown();
    assert_eq!(
        original.len(),
        3,
        "every instrument ticked: {:?}",
        original.keys()
    );
    let total: usize = original.values().map(Vec::len).sum();
    assert!(total > 300, "about 3 s at 300/s: {total}");

    let file = only_file(&dir.0);
    let info = record::info(&file).unwrap();
    assert!(info.damage.is_none(), "{info}");
    assert_eq!(info.instruments, 3, "{info}");
    let mut reader = Reader::open(&file).unwrap();
    let frames = reader.by_ref().count() as u64;
    assert!(reader.damage().is_none());
    assert_eq!(info.frames(), frames);

    // The same file, replayed at 4x to a second engine and its client.
    let replay = Simulator::start(SimConfig {
        replay: Some(ReplayConfig {
            source: open_recordings(&[file]),
            speed: Speed::Times(4.0),
            from: None,
            to: None,
            looped: false,
            on_send: None,
        }),
        ..SimConfig::default()
    })
    .unwrap();
    let second = live(&replay.feed_url());
    let mut client = WsClient::connect(second.addr(), "/ws");
    client.subscribe_many(&KEYS, "quote");
    let control = replay.control();
    let mut replayed = Received::new();
    let end = Instant::now() + Duration::from_secs(20);
    while !control.stats().replay_finished {
        assert!(Instant::now() < end, "replay did not finish");
        collect(
            &mut client,
            &mut replayed,
            Duration::from_millis(200),
            Duration::from_millis(200),
        );
    }
    collect(
        &mut client,
        &mut replayed,
        Duration::from_millis(500),
        Duration::from_secs(5),
    );
    assert_eq!(control.stats().replay_frames, frames);
    for (id, want) in &original {
        let got = replayed.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), want.len(), "{id}: message count");
        if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "{id}: message {i} differs:\n  first  {}\n  replay {}",
                want[i], got[i]
            );
        }
    }
    assert_eq!(replayed.len(), original.len());
    // The replayed session's 1-minute bars are the bars of the ticks its
    // client received, built here independently.
    for key in KEYS {
        let id = format!("\"{}\":\"{}\"", key.segment.name(), key.security_id);
        let ticks: Vec<Seen> = replayed[&id].iter().map(seen).collect();
        let want = reference_bars(&ticks);
        assert!(!want.is_empty());
        let path = format!(
            "/api/history?exchangeSegment={}&securityId={}",
            key.segment.name(),
            key.security_id
        );
        wait_or(
            "the replayed session's bars",
            || bars_of(&get_json(second.addr(), &path)) == want,
            || format!("want {want:?}\ngot {}", get_json(second.addr(), &path)),
        );
    }
    second.shutdown();
}

#[test]
fn a_failing_disk_stops_the_recorder_and_the_relay_keeps_relaying() {
    let dir = TempDir::new("record-enospc");
    let engine = demo(
        200,
        Some(RecordSettings {
            fail_after_bytes: Some(4_000),
            ..settings(&dir.0)
        }),
    );
    let mut client = WsClient::connect(engine.addr(), "/ws");
    client.subscribe_many(&KEYS, "quote");
    wait_for("the recorder stopped on the write error", || {
        get_json(engine.addr(), "/health")["record"]["state"] == "stopped"
    });
    let health = get_json(engine.addr(), "/health");
    assert_eq!(health["status"], "degraded", "{health}");
    let error = health["record"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("No space left on device"), "{error}");
    assert!(
        error.contains(&dir.0.display().to_string()),
        "names the file: {error}"
    );
    // Prices keep flowing to the client, and frames are counted lost.
    let mut seen = Received::new();
    collect(
        &mut client,
        &mut seen,
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let after: usize = seen.values().map(Vec::len).sum();
    assert!(after > 50, "ticks after the failure: {after}");
    let (_, metrics) = http_get(engine.addr(), "/metrics");
    assert!(metrics.contains("dhan_relay_record_errors 1"), "{metrics}");
    let lost = get_json(engine.addr(), "/stats")["record"]["lostFrames"]
        .as_u64()
        .unwrap();
    assert!(lost > 0, "frames after the failure are counted lost");
    engine.shutdown();
}

#[test]
fn a_recorder_killed_mid_write_leaves_a_file_that_opens_and_a_restart_repairs_it() {
    let dir = TempDir::new("record-kill9");
    let rec = dir.0.join("rec");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
        .current_dir(&dir.0)
        .args(["run", "--listen", &listen, "--demo-rate", "2000"])
        .args(["--record", rec.to_str().unwrap()])
        .env_remove("DHAN_CLIENT_ID")
        .env_remove("DHAN_ACCESS_TOKEN")
        .env_remove("DHAN_AUTH_TOKEN")
        .env_remove("NOTIFY_SOCKET")
        .env("XDG_STATE_HOME", &dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let addr: SocketAddr = listen.parse().unwrap();
    wait_for("the relay listening", || TcpStream::connect(addr).is_ok());
    wait_for("100 KB recorded", || {
        record::day_files(&rec)
            .ok()
            .and_then(|f| f.first().map(|(_, p)| p.clone()))
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() > 100_000)
    });
    child.kill().unwrap(); // SIGKILL: no flush, no goodbye
    child.wait().unwrap();
    let file = only_file(&rec);
    // Whatever the kill left, a torn record at the end is certain with
    // the first 30 bytes of one more.
    let whole = {
        let mut r = Reader::open(&file).unwrap();
        let n = r.by_ref().count() as u64;
        (n, r.offset())
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(whole.1)
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&[0x40, 0, 0, 0, 1, 2, 3, 4]).unwrap();
    f.write_all(&[0xAB; 22]).unwrap();
    drop(f);

    let out = Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
        .args(["record-info", file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("damage:"), "{text}");
    assert!(
        text.contains(&whole.1.to_string()),
        "names the offset: {text}"
    );
    let mut r = Reader::open(&file).unwrap();
    assert_eq!(r.by_ref().count() as u64, whole.0, "every whole record");
    let damage = r.damage().expect("the tear is reported");
    assert_eq!(damage.offset, whole.1);
    assert_eq!(damage.frames_before, whole.0);

    // The same day again: the tail is cut and recording goes on after it.
    let engine = demo(500, Some(settings(&rec)));
    let mut client = WsClient::connect(engine.addr(), "/ws");
    client.subscribe_many(&KEYS, "ticker");
    wait_for("more frames recorded", || {
        get_json(engine.addr(), "/health")["record"]["frames"]
            .as_u64()
            .unwrap()
            > 20
    });
    engine.shutdown();
    let info = record::info(&file).unwrap();
    assert!(info.damage.is_none(), "repaired: {info}");
    assert!(info.frames() > whole.0 + 20, "{info}");
}

/// A `/ws` client of `engine` watching RELIANCE in quote mode, once the
/// engine's built-in simulator holds it upstream.
fn watching_reliance(engine: &Engine) -> (SimControl, WsClient) {
    let sim = engine.demo_simulator().unwrap().control();
    let mut client = WsClient::connect(engine.addr(), "/ws");
    client.subscribe(RELIANCE, "quote");
    wait_for("RELIANCE held upstream", || {
        sim.subscriptions()
            .iter()
            .any(|c| c.instruments.contains_key(&RELIANCE))
    });
    (sim, client)
}

#[test]
fn a_restarted_engine_backfills_the_days_bars_from_its_recording() {
    let dir = TempDir::new("record-backfill");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    // Three minutes ago, but today in India (bars are the day's).
    let ist_midnight = now - (now + 19_800) % 86_400;
    let m0 = (now - now % 60 - 180).max(ist_midnight);
    let quote = |ltt: u32, ltp: f32, volume: u32| {
        FeedMessage::Data(
            RELIANCE,
            FeedData::Quote(Quote {
                ltp,
                ltt,
                volume,
                ..Quote::default()
            }),
        )
    };
    // Morning: the first engine records three minutes of RELIANCE.
    let first = demo(0, Some(settings(&dir.0)));
    let (sim, mut client) = watching_reliance(&first);
    let mut ticks = Vec::new();
    for (i, (dt, ltp)) in [
        (2, 1400.0),
        (30, 1403.5),
        (65, 1399.0),
        (100, 1401.25),
        (150, 1402.0),
    ]
    .into_iter()
    .enumerate()
    {
        sim.inject(&quote(m0 + dt, ltp, 10_000 + 250 * i as u32));
        ticks.push(seen(
            &client.recv_where(|v| v["type"] == "quote" && v["ltt"] == m0 + dt),
        ));
    }
    let morning = reference_bars(&ticks);
    assert_eq!(morning.len(), 3);
    first.shutdown();

    // Noon: a restart. The instrument is subscribed again and ticks once;
    // its history holds the morning's bars, from the recording, then the
    // live one.
    let second = demo(0, Some(settings(&dir.0)));
    let (sim, mut client) = watching_reliance(&second);
    sim.inject(&quote(m0 + 250, 1404.0, 12_000));
    client.recv_where(|v| v["type"] == "quote" && v["ltt"] == m0 + 250);
    let path = "/api/history?symbol=RELIANCE&interval=1m";
    wait_or(
        "the morning's bars backfilled before the live one",
        || {
            let (code, v) = http_get_json(second.addr(), path);
            assert_ne!(code, 400, "{v}");
            let bars = if code == 200 { bars_of(&v) } else { Vec::new() };
            bars.len() == 4 && bars[..3] == morning[..] && bars[3].0 == m0 + 240
        },
        || {
            format!(
                "morning {morning:?}\ngot {:?}",
                http_get_json(second.addr(), path)
            )
        },
    );
    assert!(common::counter(second.addr(), "history_bars_backfilled_total") >= 3);
    second.shutdown();
}

#[test]
fn record_info_reports_damage_and_refuses_what_is_not_a_recording() {
    let dir = TempDir::new("record-info-cli");
    let (rec, mut tap) = Recorder::spawn(RecordConfig::new(&dir.0)).unwrap();
    let mut frame = vec![2u8, 16, 0, 1, 0x35, 0x05, 0, 0]; // ticker, NSE_EQ 1333
    frame.extend_from_slice(&100.5f32.to_le_bytes());
    frame.extend_from_slice(&1_741_578_300u32.to_le_bytes());
    tap.offer(0, FeedKind::Main, clock::now_ns(), &frame);
    let path = rec.stats().file().unwrap();
    rec.shutdown();
    let bin = env!("CARGO_BIN_EXE_dhan-relay");

    let out = Command::new(bin)
        .arg("record-info")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("frames:      1 (main 1, depth 0)"), "{text}");
    assert!(
        text.contains("ticker 1") && text.contains("damage:      none"),
        "{text}"
    );

    // A torn tail is reported, still exit 0.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[5, 0, 0]);
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new(bin)
        .arg("record-info")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("damage:      at offset"), "{text}");

    // Not a recording, or missing: exit 1 with the file named.
    let junk = dir.0.join("junk.dhr");
    std::fs::write(&junk, b"definitely not a recording file").unwrap();
    for p in [junk, dir.0.join("missing.dhr")] {
        let out = Command::new(bin)
            .arg("record-info")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
}
