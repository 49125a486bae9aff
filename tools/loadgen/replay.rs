//! `loadgen --replay FILE… --speed N|max`: the relay's latency on recorded
//! traffic instead of the synthetic schedule.
//!
//! 1. The recording is read once ([`dhan_relay::sim::replay::open_recordings`],
//!    the same source `dhan-relay replay` uses) to collect its instruments
//!    and, per instrument, the (LTP, LTT) of every recorded ticker / quote /
//!    full packet in order, with the index of the frame carrying it.
//! 2. The exchange is the simulator in replay mode, in process; its replay
//!    thread stamps each frame just before queueing it
//!    ([`dhan_relay::sim::replay::SendHook`]) in a table indexed by frame.
//! 3. The engine is started as in the other modes, with the replay server
//!    as its feed; one client subscribes every instrument of the recording
//!    (full mode) on `/ws` and reads until the replay has finished and 1 s
//!    passed without a message (or `--drain` s).
//!
//! # How latency is measured
//!
//! Recorded packets carry no sequence number the tool could stamp, so each
//! price message the client reads is matched to the first not yet matched
//! recorded packet of its instrument with the same LTP (to the paisa) and
//! LTT, searching forward from the last match (at most
//! [`MATCH_WINDOW`] packets ahead). Latency = the client's read − the
//! replay thread's stamp of that packet's frame, both on this process's
//! monotonic clock. It therefore includes the simulator's queue and
//! connection thread, loopback, the whole engine, loopback again and the
//! client's read. The relay renders OI and previous-close updates as price
//! messages too, with the instrument's latest LTP and LTT, so those packets
//! are expected back with the values before them. Messages that match
//! nothing (the relay conflated two updates into one) are counted as unmatched, not
//! measured; recorded packets never matched are the relay's conflations or
//! losses. The open's first minute (frames received within 60 s of the
//! recording's first frame) is reported apart from the rest.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::record::FeedKind;
use dhan_relay::sim::replay::{open_recordings, SendHook};
use dhan_relay::sim::{ReplayConfig, SimConfig, Simulator, Speed};
use dhan_relay::wire::feed::{self, FeedData, FeedMessage};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tungstenite::Message;

use crate::engine::{Engine, Launch};
use crate::relay_json;

/// How far ahead of the last match a message's packet is looked for.
pub const MATCH_WINDOW: usize = 10_000;
/// The open: the first this much of recorded time.
const OPEN: Duration = Duration::from_secs(60);
/// Instruments per subscribe message.
const PER_MESSAGE: usize = 1_000;

/// What `--replay` needs.
#[derive(Debug)]
pub struct ReplayPlan {
    /// The recordings, played in order.
    pub files: Vec<PathBuf>,
    /// Pace.
    pub speed: Speed,
    /// The `dhan-relay` binary.
    pub engine_bin: PathBuf,
    /// The engine's log level.
    pub log_level: String,
    /// Longest wait for the last messages after the replay ends, s.
    pub drain: f64,
}

/// One recorded price packet.
#[derive(Clone, Copy, Debug)]
struct Expected {
    frame: u32,
    paise: i64,
    ltt: u64,
}

/// The recording, as far as matching needs it.
struct Index {
    instruments: BTreeSet<InstrumentKey>,
    expected: HashMap<InstrumentKey, Vec<Expected>>,
    /// Per frame: within the open's first minute.
    in_open: Vec<bool>,
    packets: u64,
}

fn paise(ltp: f64) -> i64 {
    (ltp * 100.0).round() as i64
}

fn index(files: &[PathBuf]) -> Result<Index, String> {
    let frames = open_recordings(files)().map_err(|e| format!("cannot read the recording: {e}"))?;
    let mut ix = Index {
        instruments: BTreeSet::new(),
        expected: HashMap::new(),
        in_open: Vec::new(),
        packets: 0,
    };
    let mut first = None;
    let mut last: HashMap<InstrumentKey, (f32, u32)> = HashMap::new();
    for (i, frame) in frames.enumerate() {
        let i = u32::try_from(i).map_err(|_| "more than 4 billion frames".to_string())?;
        let first = *first.get_or_insert(frame.recv_unix_ns);
        ix.in_open
            .push(frame.recv_unix_ns.saturating_sub(first) < OPEN.as_nanos() as u64);
        if frame.feed != FeedKind::Main {
            continue;
        }
        for packet in feed::packets(&frame.payload).flatten() {
            let FeedMessage::Data(key, data) = packet.message else {
                continue;
            };
            // The relay renders every update, an OI or previous-close one
            // too, as a price message carrying the instrument's latest LTP
            // and LTT: such a packet is expected back with those.
            let (ltp, ltt) = match data {
                FeedData::Ticker(t) => (t.ltp, t.ltt),
                FeedData::Quote(q) => (q.ltp, q.ltt),
                FeedData::Full(f) => (f.quote.ltp, f.quote.ltt),
                FeedData::MarketStatus => continue,
                FeedData::Oi(_) | FeedData::PrevClose(_) => {
                    ix.instruments.insert(key);
                    match last.get(&key) {
                        Some(&seen) => seen,
                        None => continue,
                    }
                }
            };
            last.insert(key, (ltp, ltt));
            ix.packets += 1;
            ix.instruments.insert(key);
            ix.expected.entry(key).or_default().push(Expected {
                frame: i,
                paise: paise(f64::from(ltp)),
                ltt: u64::from(ltt),
            });
        }
    }
    Ok(ix)
}

fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn line(name: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("{name:<22} no messages\n");
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    format!(
        "{name:<22} {:>9} msgs  p50 {:>9.1}  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>9.1} µs\n",
        h.len(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1e3
    )
}

/// Runs the replay measurement and prints its report.
pub fn run(plan: &ReplayPlan) -> Result<(), String> {
    let ix = index(&plan.files)?;
    if ix.instruments.is_empty() {
        return Err("the recording holds no instrument packets".into());
    }
    eprintln!(
        "loadgen --replay: {} frames, {} price packets, {} instruments; speed {:?}",
        ix.in_open.len(),
        ix.packets,
        ix.instruments.len(),
        plan.speed
    );
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> =
        Arc::new((0..ix.in_open.len()).map(|_| AtomicU64::new(0)).collect());
    let stamps = sent.clone();
    let hook: SendHook = Arc::new(move |i, at| {
        if let Some(slot) = stamps.get(i as usize) {
            let ns = at.saturating_duration_since(base).as_nanos() as u64;
            slot.store(ns.max(1), Ordering::Relaxed);
        }
    });
    let sim = Simulator::start(SimConfig {
        replay: Some(ReplayConfig {
            source: open_recordings(&plan.files),
            speed: plan.speed,
            from: None,
            to: None,
            looped: false,
            on_send: Some(hook),
        }),
        max_per_connection: ix.instruments.len().max(5_000),
        ..SimConfig::default()
    })
    .map_err(|e| format!("cannot start the replay server: {e}"))?;
    let ctl = sim.control();
    let listen = free_port()?;
    let dir = std::env::temp_dir().join(format!("loadgen-replay-{}", std::process::id()));
    let mut engine = Engine::start(&Launch {
        binary: plan.engine_bin.clone(),
        listen,
        feed: sim.addr(),
        max_clients: 1,
        subs_per_client: ix.instruments.len(),
        client_queue_bytes: None,
        log_level: plan.log_level.clone(),
        cpus: None,
        extra_args: Vec::new(),
        dir,
    })?;
    let result = measure(plan, &ix, &engine, &ctl, &sent, base);
    let stats = engine.stats();
    engine.stop();
    let m = result?;
    let s = ctl.stats();
    let mut out = String::new();
    out.push_str(&format!(
        "replay: {} frames, {} packets replayed in {:.2} s ({:.0} packets/s); {} recorded disconnects skipped; simulator queue drops {}\n",
        s.replay_frames,
        s.replay_packets,
        m.replay_secs,
        s.replay_packets as f64 / m.replay_secs.max(1e-9),
        s.replay_disconnects,
        s.queue_drops
    ));
    out.push_str(&format!(
        "client: {} price messages, {} matched, {} unmatched, {} errors; {} of {} recorded price packets never matched (conflated or lost)\n",
        m.messages,
        m.open.len() + m.rest.len(),
        m.unmatched,
        m.errors,
        ix.packets.saturating_sub(m.open.len() + m.rest.len()),
        ix.packets
    ));
    out.push_str("latency, replay server's queueing of the frame → client's read:\n");
    out.push_str(&line("open (first 60 s)", &m.open));
    out.push_str(&line("rest", &m.rest));
    if let Some(q) = stats.as_ref().and_then(|v| v.get("tickToWire").cloned()) {
        out.push_str(&format!(
            "engine /stats tickToWire (its recv → its send): {q}\n"
        ));
    }
    print!("{out}");
    Ok(())
}

struct Measured {
    open: Histogram<u64>,
    rest: Histogram<u64>,
    messages: u64,
    unmatched: u64,
    /// Error messages from the relay (an instrument it does not know).
    errors: u64,
    replay_secs: f64,
}

fn measure(
    plan: &ReplayPlan,
    ix: &Index,
    engine: &Engine,
    ctl: &dhan_relay::sim::SimControl,
    sent: &[AtomicU64],
    base: Instant,
) -> Result<Measured, String> {
    let tcp =
        TcpStream::connect(engine.addr).map_err(|e| format!("cannot reach the engine: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tungstenite::client(format!("ws://{}/ws", engine.addr), tcp)
        .map_err(|e| format!("cannot open /ws on the engine: {e}"))?;
    let keys: Vec<InstrumentKey> = ix.instruments.iter().copied().collect();
    for chunk in keys.chunks(PER_MESSAGE) {
        let list: Vec<Value> = chunk
            .iter()
            .map(|k| json!({"exchangeSegment": k.segment.name(), "securityId": k.security_id.to_string()}))
            .collect();
        let msg = json!({"type": "subscribe", "mode": "full", "instruments": list});
        ws.send(Message::text(msg.to_string()))
            .map_err(|e| format!("cannot subscribe: {e}"))?;
    }
    let mut cursor: HashMap<InstrumentKey, usize> = HashMap::new();
    let mut m = Measured {
        open: hist(),
        rest: hist(),
        messages: 0,
        unmatched: 0,
        errors: 0,
        replay_secs: 0.0,
    };
    let started = Instant::now();
    let mut finished_at: Option<Instant> = None;
    let mut last_msg = Instant::now();
    // The whole recording at its pace, bounded: a day at speed 1 is a day.
    loop {
        let now = Instant::now();
        if finished_at.is_none() && ctl.stats().replay_finished {
            finished_at = Some(now);
            m.replay_secs = now.duration_since(started).as_secs_f64();
        }
        if let Some(f) = finished_at {
            let quiet = now.duration_since(last_msg) >= Duration::from_secs(1);
            if quiet || now.duration_since(f).as_secs_f64() >= plan.drain {
                break;
            }
        }
        let msg = match ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("engine connection: {e}")),
        };
        let at = Instant::now();
        last_msg = at;
        let (segment, security_id, ltp, ltt) = match relay_json::scan(msg.as_bytes()) {
            relay_json::Message::Price {
                segment,
                security_id,
                ltp,
                ltt,
            } => (segment, security_id, ltp, ltt),
            relay_json::Message::Error(text) => {
                if m.errors == 0 {
                    eprintln!(
                        "loadgen --replay: the relay said: {}",
                        String::from_utf8_lossy(text)
                    );
                }
                m.errors += 1;
                continue;
            }
            _ => continue,
        };
        m.messages += 1;
        let Some(segment) = std::str::from_utf8(segment)
            .ok()
            .and_then(|s| s.parse::<Segment>().ok())
        else {
            m.unmatched += 1;
            continue;
        };
        let key = InstrumentKey::new(segment, security_id);
        let (Some(list), c) = (ix.expected.get(&key), cursor.entry(key).or_insert(0)) else {
            m.unmatched += 1;
            continue;
        };
        let want = paise(ltp);
        let end = list.len().min(*c + MATCH_WINDOW);
        let found = list
            .get(*c..end)
            .and_then(|rest| rest.iter().position(|e| e.paise == want && e.ltt == ltt));
        let Some(off) = found else {
            m.unmatched += 1;
            continue;
        };
        let e = list[*c + off];
        *c += off + 1;
        let sent_ns = sent[e.frame as usize].load(Ordering::Relaxed);
        if sent_ns == 0 {
            m.unmatched += 1;
            continue;
        }
        let read_ns = at.saturating_duration_since(base).as_nanos() as u64;
        let lat = read_ns.saturating_sub(sent_ns).max(1);
        let h = if ix.in_open[e.frame as usize] {
            &mut m.open
        } else {
            &mut m.rest
        };
        h.saturating_record(lat);
    }
    let _ = ws.close(None);
    Ok(m)
}
