//! The measuring clients: thousands of WebSocket connections on one or two
//! threads, each a `mio` loop over non-blocking sockets.
//!
//! A client connects (at most `max_connecting` handshakes in flight per
//! thread, so a listener's backlog never overflows), upgrades, subscribes
//! its instruments and then only reads. Two dialects:
//!
//! * [`Protocol::Relay`]: the relay's JSON protocol on `/ws`. One
//!   `subscribe` message, then `{"type":"ping"}`; the relay handles a
//!   connection's messages in order, so its `pong` proves the subscription
//!   is in place and the client counts as ready.
//! * [`Protocol::Dhan`]: DhanHQ's protocol straight to the exchange (the
//!   `floor` run): RequestCode 15 messages of at most 100 instruments, then
//!   binary ticker packets decoded by [`dhan_relay::wire::feed::packets`].
//!
//! Each read is stamped once with [`clock::now_ns`] right after `read`
//! returns; every message in those bytes gets that receive time. For a
//! price message the client computes the tick number from (instrument,
//! sequence) and looks its send time up in the [`SendTable`]; latency =
//! receive − send, recorded (in ns) into the thread's `hdrhistogram` for the
//! first delivery of every tick in the window. See the crate docs for what
//! each count means.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhan_relay::clock;
use dhan_relay::wire::feed::{self, FeedData, FeedMessage};
use dhan_relay::wire::request::{encode_subscription, RequestCode};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use crate::relay_json::{self, Message};
use crate::schedule::{Rng, Schedule, SendTable, SEGMENT};
use crate::sys;
use crate::tls::Conn;
use crate::wsframe::{self, opcode};

/// Which protocol the clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The relay's JSON protocol (`/ws`).
    Relay,
    /// DhanHQ's binary protocol, straight to the exchange.
    Dhan,
}

/// Where and how the clients connect.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server.
    pub addr: SocketAddr,
    /// Request path (with query for DhanHQ).
    pub path: String,
    /// The dialect.
    pub protocol: Protocol,
    /// The tick plan.
    pub schedule: Arc<Schedule>,
    /// Send times.
    pub table: Arc<SendTable>,
    /// A message at least this late marks its client as behind.
    pub behind_ns: u64,
    /// Handshakes in flight per thread.
    pub max_connecting: usize,
    /// Connect + upgrade limit per client.
    pub connect_timeout: Duration,
    /// How slow clients read.
    pub slow: SlowReader,
    /// wss://: the client TLS configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Relay clients' `flushIntervalUs` (0: not sent).
    pub flush_us: u32,
}

/// A deliberately slow reader: at most `bytes` per `every`, so the server
/// has to queue for it, conflate, and perhaps close it.
#[derive(Clone, Copy, Debug)]
pub struct SlowReader {
    /// Bytes read per turn.
    pub bytes: usize,
    /// Time between turns.
    pub every: Duration,
    /// The socket's receive buffer (`SO_RCVBUF`), so the kernel cannot
    /// hide the backlog in megabytes of autotuned buffers.
    pub rcvbuf: usize,
}

/// One client to run: its number and instruments (sorted).
#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// Client number (for the seed and for reports).
    pub id: u32,
    /// Instrument numbers, sorted.
    pub instruments: Vec<u32>,
    /// Reads slowly ([`SlowReader`]).
    pub slow: bool,
}

/// Live progress of one client thread, read by the orchestrator.
#[derive(Debug, Default)]
pub struct Progress {
    /// Upgrades completed.
    pub connected: AtomicU64,
    /// Clients whose subscription is in place.
    pub ready: AtomicU64,
    /// Clients that never connected.
    pub failed: AtomicU64,
    /// Clients the server closed.
    pub closed: AtomicU64,
    /// Messages received (all kinds).
    pub messages: AtomicU64,
    /// First deliveries of window ticks so far.
    pub window_delivered: AtomicU64,
    /// The thread's CPU time, ns.
    pub cpu_ns: AtomicU64,
}

/// Counts over a set of clients; see the crate docs for their meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Window ticks of subscribed instruments, summed over clients.
    pub expected: u64,
    /// Distinct window ticks received.
    pub delivered: u64,
    /// Window ticks never received, not explained by conflation.
    pub missing: u64,
    /// Of `missing`, on clients that kept up.
    pub missing_keeping_up: u64,
    /// Window ticks skipped while the client was behind.
    pub conflated: u64,
    /// Window ticks not yet read by clients still behind when the run
    /// stopped (after the last sequence they had read).
    pub undrained: u64,
    /// Window ticks received again.
    pub duplicated: u64,
    /// Window ticks received after a later tick of the same instrument.
    pub out_of_order: u64,
    /// Price messages for ticks of the warmup.
    pub warmup_messages: u64,
    /// Price messages with another run's nonce or not our instruments.
    pub foreign: u64,
    /// Price messages for instruments the client did not subscribe.
    pub unsolicited: u64,
    /// Price messages for ticks never scheduled.
    pub unexpected: u64,
    /// Window ticks whose send time was not recorded (never expected).
    pub unstamped: u64,
    /// Messages that did not parse.
    pub malformed: u64,
    /// Error messages from the server.
    pub errors: u64,
    /// Other messages (status, pong, market status …).
    pub other: u64,
    /// Every message received.
    pub messages: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Clients planned.
    pub clients: u64,
    /// Clients that were ready before the start.
    pub ready: u64,
    /// Clients that never connected or subscribed.
    pub failed: u64,
    /// Clients closed by the server.
    pub closed: u64,
    /// Clients that saw a window message at least `behind` late.
    pub behind: u64,
}

impl Counts {
    /// Adds another thread's counts.
    pub fn add(&mut self, o: &Counts) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            expected,
            delivered,
            missing,
            missing_keeping_up,
            conflated,
            undrained,
            duplicated,
            out_of_order,
            warmup_messages,
            foreign,
            unsolicited,
            unexpected,
            unstamped,
            malformed,
            errors,
            other,
            messages,
            bytes,
            clients,
            ready,
            failed,
            closed,
            behind
        );
    }
}

/// What a client thread hands back.
#[derive(Debug)]
pub struct ThreadReport {
    /// Latencies of first deliveries in the window, ns.
    pub latency: Histogram<u64>,
    /// Counts.
    pub counts: Counts,
    /// Why clients ended, with how many ended so.
    pub endings: BTreeMap<String, u64>,
    /// The first error message a server sent.
    pub first_error: Option<String>,
}

/// A new latency histogram: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

/// Starts one client thread.
pub fn spawn(
    name: String,
    config: Arc<ClientConfig>,
    specs: Vec<ClientSpec>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<ThreadReport>> {
    let poll = Poll::new()?;
    std::thread::Builder::new().name(name).spawn(move || {
        let mut t = Thread::new(poll, config, specs, progress, stop);
        t.run();
        t.finish()
    })
}

#[derive(Debug)]
struct Sub {
    inst: u32,
    start: u32,
    end: u32,
    last: u32,
    bits: Vec<u64>,
    delivered: u32,
    conflated: u32,
}

#[derive(Debug)]
enum Phase {
    Waiting,
    Connecting {
        since: Instant,
    },
    Upgrading {
        since: Instant,
        key: String,
        head: Vec<u8>,
    },
    Open,
    Done,
}

#[derive(Debug)]
struct Client {
    stream: Option<Conn>,
    phase: Phase,
    subs: Vec<Sub>,
    partial: Vec<u8>,
    frag: Vec<u8>,
    frag_op: u8,
    out: Vec<u8>,
    ready: bool,
    ended: Option<String>,
    last_slow_ns: u64,
    max_latency_ns: u64,
    /// Latency of the last price message received (any instrument).
    last_latency_ns: u64,
    /// A slow reader, and when it may read next ([`clock::now_ns`]).
    slow: bool,
    next_read_ns: u64,
}

/// Everything a message handler needs besides the client.
struct Ctx<'a> {
    config: &'a ClientConfig,
    latency: &'a mut Histogram<u64>,
    counts: &'a mut Counts,
    first_error: &'a mut Option<String>,
    window_delivered: &'a mut u64,
    progress: &'a Progress,
    mask: &'a mut Rng,
}

struct Thread {
    poll: Poll,
    config: Arc<ClientConfig>,
    clients: Vec<Client>,
    waiting: VecDeque<usize>,
    connecting: usize,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    scratch: Vec<u8>,
    latency: Histogram<u64>,
    counts: Counts,
    endings: BTreeMap<String, u64>,
    first_error: Option<String>,
    window_delivered: u64,
    mask: Rng,
    /// Clients whose reads were cut short: read again without an event.
    again: Vec<usize>,
    /// The slow readers, visited on their own clock.
    slow: Vec<usize>,
}

/// Reads per readiness event before other clients get a turn.
const READS_PER_TURN: usize = 16;
const SCRATCH: usize = 256 * 1024;

impl Thread {
    fn new(
        poll: Poll,
        config: Arc<ClientConfig>,
        specs: Vec<ClientSpec>,
        progress: Arc<Progress>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let first_id = specs.first().map_or(0, |s| s.id);
        let clients: Vec<Client> = specs
            .into_iter()
            .map(|spec| Client {
                stream: None,
                phase: Phase::Waiting,
                subs: spec
                    .instruments
                    .iter()
                    .map(|&inst| {
                        let (start, end) = config.schedule.window(inst);
                        Sub {
                            inst,
                            start,
                            end,
                            last: 0,
                            bits: Vec::new(),
                            delivered: 0,
                            conflated: 0,
                        }
                    })
                    .collect(),
                partial: Vec::new(),
                frag: Vec::new(),
                frag_op: 0,
                out: Vec::new(),
                ready: false,
                ended: None,
                last_slow_ns: 0,
                max_latency_ns: 0,
                last_latency_ns: 0,
                slow: spec.slow,
                next_read_ns: 0,
            })
            .collect();
        let slow = (0..clients.len()).filter(|&i| clients[i].slow).collect();
        let counts = Counts {
            clients: clients.len() as u64,
            ..Counts::default()
        };
        Thread {
            poll,
            waiting: (0..clients.len()).collect(),
            clients,
            config,
            connecting: 0,
            progress,
            stop,
            scratch: vec![0; SCRATCH],
            latency: new_histogram(),
            counts,
            endings: BTreeMap::new(),
            first_error: None,
            window_delivered: 0,
            mask: Rng::new(0x5EED, u64::from(first_id)),
            again: Vec::new(),
            slow,
        }
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(4096);
        let mut next_tick = Instant::now();
        while !self.stop.load(Relaxed) {
            while self.connecting < self.config.max_connecting {
                let Some(i) = self.waiting.pop_front() else {
                    break;
                };
                self.start(i);
            }
            let timeout = if self.again.is_empty() {
                Duration::from_millis(5)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    eprintln!("loadgen: client poll failed: {e}");
                    return;
                }
            }
            for event in events.iter() {
                self.ready(event.token().0);
            }
            for i in std::mem::take(&mut self.again) {
                self.ready(i);
            }
            let now_ns = clock::now_ns();
            for k in 0..self.slow.len() {
                let i = self.slow[k];
                let c = &self.clients[i];
                if matches!(c.phase, Phase::Open) && c.next_read_ns <= now_ns {
                    self.ready(i);
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + Duration::from_millis(50);
                self.timeouts(now);
                self.progress
                    .window_delivered
                    .store(self.window_delivered, Relaxed);
                self.progress.messages.store(self.counts.messages, Relaxed);
                self.progress.cpu_ns.store(sys::thread_cpu_ns(), Relaxed);
            }
        }
    }

    fn start(&mut self, i: usize) {
        let c = &mut self.clients[i];
        match Conn::connect(self.config.addr, self.config.tls.as_ref()) {
            Ok(mut stream) => {
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    end(c, &mut self.endings, format!("register: {e}"));
                    c.phase = Phase::Done;
                    self.counts.failed += 1;
                    self.progress.failed.fetch_add(1, Relaxed);
                    return;
                }
                let _ = stream.tcp().set_nodelay(true);
                if c.slow {
                    sys::set_rcvbuf(stream.tcp(), self.config.slow.rcvbuf);
                }
                c.stream = Some(stream);
                c.phase = Phase::Connecting {
                    since: Instant::now(),
                };
                self.connecting += 1;
            }
            Err(e) => {
                end(c, &mut self.endings, format!("connect: {e}"));
                c.phase = Phase::Done;
                self.counts.failed += 1;
                self.progress.failed.fetch_add(1, Relaxed);
            }
        }
    }

    fn fail_connect(&mut self, i: usize, why: String) {
        let c = &mut self.clients[i];
        c.stream = None;
        c.phase = Phase::Done;
        end(c, &mut self.endings, why);
        self.connecting -= 1;
        self.counts.failed += 1;
        self.progress.failed.fetch_add(1, Relaxed);
    }

    fn ready(&mut self, i: usize) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        match &c.phase {
            Phase::Connecting { .. } => {
                let Some(stream) = &c.stream else { return };
                if let Ok(Some(e)) | Err(e) = stream.tcp().take_error() {
                    return self.fail_connect(i, format!("connect: {e}"));
                }
                match stream.tcp().peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::NotConnected => return,
                    Err(e) => return self.fail_connect(i, format!("connect: {e}")),
                }
                let key = tungstenite::handshake::client::generate_key();
                let host = self.config.addr.to_string();
                c.out.extend_from_slice(
                    wsframe::upgrade_request(&host, &self.config.path, &key).as_bytes(),
                );
                c.phase = Phase::Upgrading {
                    since: Instant::now(),
                    key,
                    head: Vec::new(),
                };
                if let Err(e) = flush_out(c) {
                    return self.fail_connect(i, format!("upgrade request: {e}"));
                }
                self.ready(i)
            }
            Phase::Upgrading { .. } => self.upgrade(i),
            Phase::Open => {
                if let Err(e) = flush_out(c) {
                    return self.end_open(i, format!("write: {e}"));
                }
                self.read_open(i);
            }
            Phase::Waiting | Phase::Done => {}
        }
    }

    fn upgrade(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Err(e) = flush_out(c) {
            return self.fail_connect(i, format!("upgrade request: {e}"));
        }
        let (Some(stream), Phase::Upgrading { key, head, .. }) = (&mut c.stream, &mut c.phase)
        else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let end_at = loop {
            match stream.read(&mut chunk) {
                Ok(0) => return self.fail_connect(i, "upgrade: connection closed".into()),
                Ok(n) => {
                    head.extend_from_slice(&chunk[..n]);
                    if let Some(e) = wsframe::head_end(head) {
                        break e;
                    }
                    if head.len() > 16 * 1024 {
                        return self.fail_connect(i, "upgrade: answer too long".into());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.fail_connect(i, format!("upgrade: {e}")),
            }
        };
        if let Err(why) = wsframe::check_upgrade_response(&head[..end_at], key) {
            return self.fail_connect(i, why);
        }
        c.partial = head.split_off(end_at);
        c.phase = Phase::Open;
        self.connecting -= 1;
        self.progress.connected.fetch_add(1, Relaxed);
        self.subscribe(i);
        let c = &mut self.clients[i];
        if let Err(e) = flush_out(c) {
            return self.end_open(i, format!("subscribe: {e}"));
        }
        self.read_open(i);
    }

    fn subscribe(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let keys: Vec<_> = c.subs.iter().map(|s| Schedule::key(s.inst)).collect();
        let mut texts = Vec::new();
        match self.config.protocol {
            Protocol::Relay => {
                if self.config.flush_us > 0 {
                    texts.push(format!(
                        r#"{{"type":"options","flushIntervalUs":{}}}"#,
                        self.config.flush_us
                    ));
                }
                for batch in keys.chunks(1000) {
                    let mut s = String::from(r#"{"type":"subscribe","instruments":["#);
                    for (j, k) in batch.iter().enumerate() {
                        if j > 0 {
                            s.push(',');
                        }
                        s.push_str(&format!(
                            r#"{{"exchangeSegment":"{}","securityId":"{}"}}"#,
                            k.segment.name(),
                            k.security_id
                        ));
                    }
                    s.push_str(r#"],"mode":"ticker"}"#);
                    texts.push(s);
                }
                texts.push(r#"{"type":"ping"}"#.to_string());
            }
            Protocol::Dhan => {
                texts = encode_subscription(RequestCode::SubscribeTicker, &keys)
                    .expect("ticker subscriptions always encode");
                c.ready = true;
                self.counts.ready += 1;
                self.progress.ready.fetch_add(1, Relaxed);
            }
        }
        for t in texts {
            let mask = self.mask.next_u64().to_le_bytes();
            wsframe::encode_client(
                opcode::TEXT,
                t.as_bytes(),
                [mask[0], mask[1], mask[2], mask[3]],
                &mut c.out,
            );
        }
    }

    fn end_open(&mut self, i: usize, why: String) {
        let c = &mut self.clients[i];
        if matches!(c.phase, Phase::Done) {
            return;
        }
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.phase = Phase::Done;
        end(c, &mut self.endings, why);
        self.counts.closed += 1;
        self.progress.closed.fetch_add(1, Relaxed);
    }

    fn read_open(&mut self, i: usize) {
        let Thread {
            clients,
            scratch,
            config,
            latency,
            counts,
            first_error,
            window_delivered,
            progress,
            mask,
            again,
            ..
        } = self;
        let c = &mut clients[i];
        // A slow reader reads `slow.bytes` per turn, on its own clock.
        let mut budget = usize::MAX;
        if c.slow {
            let now = clock::now_ns();
            if now < c.next_read_ns {
                return;
            }
            c.next_read_ns = now + config.slow.every.as_nanos() as u64;
            budget = config.slow.bytes;
        }
        let mut len = c.partial.len();
        if len > scratch.len() {
            scratch.resize(len.next_power_of_two(), 0);
        }
        scratch[..len].copy_from_slice(&c.partial);
        c.partial.clear();
        let mut ctx = Ctx {
            config,
            latency,
            counts,
            first_error,
            window_delivered,
            progress,
            mask,
        };
        let mut ended = None;
        // Bytes left from the upgrade read are processed before reading.
        if len > 0 {
            match process(c, &scratch[..len], clock::now_ns(), &mut ctx) {
                Ok(used) => {
                    scratch.copy_within(used..len, 0);
                    len -= used;
                }
                Err(why) => ended = Some(why),
            }
        }
        let mut reads = 0;
        while ended.is_none() && !matches!(c.phase, Phase::Done) {
            if reads == READS_PER_TURN {
                again.push(i);
                break;
            }
            if len == scratch.len() {
                // A frame larger than the buffer: grow (bounded by MAX_FRAME).
                scratch.resize(scratch.len() * 2, 0);
            }
            let Some(stream) = c.stream.as_mut() else {
                break;
            };
            if budget == 0 {
                break;
            }
            let room = (scratch.len() - len).min(budget);
            match stream.read(&mut scratch[len..len + room]) {
                Ok(0) => {
                    ended = Some("connection closed without a close frame".to_string());
                }
                Ok(n) => {
                    reads += 1;
                    budget -= n.min(budget);
                    let recv_ns = clock::now_ns();
                    fence(Acquire);
                    len += n;
                    match process(c, &scratch[..len], recv_ns, &mut ctx) {
                        Ok(used) => {
                            scratch.copy_within(used..len, 0);
                            len -= used;
                        }
                        Err(why) => ended = Some(why),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => ended = Some(format!("read: {e}")),
            }
        }
        c.partial.extend_from_slice(&scratch[..len]);
        if ended.is_none() {
            if let Err(e) = flush_out(c) {
                ended = Some(format!("write: {e}"));
            }
        }
        if let Some(why) = ended {
            self.end_open(i, why);
        } else if matches!(self.clients[i].phase, Phase::Done) {
            // A close frame was read and answered.
            let c = &mut self.clients[i];
            let _ = flush_out(c);
            let why = c.ended.take().unwrap_or_else(|| "closed by server".into());
            end(c, &mut self.endings, why);
            if let Some(mut s) = c.stream.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
            self.counts.closed += 1;
            self.progress.closed.fetch_add(1, Relaxed);
        }
    }

    fn timeouts(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            let since = match &self.clients[i].phase {
                Phase::Connecting { since } | Phase::Upgrading { since, .. } => *since,
                _ => continue,
            };
            if now.duration_since(since) > self.config.connect_timeout {
                if let Some(mut s) = self.clients[i].stream.take() {
                    let _ = self.poll.registry().deregister(&mut s);
                }
                self.fail_connect(i, "connect/upgrade timed out".into());
            }
        }
    }

    fn finish(mut self) -> ThreadReport {
        let behind = self.config.behind_ns;
        let c = &mut self.counts;
        for client in &self.clients {
            let kept_up = client.ready && client.ended.is_none() && client.max_latency_ns < behind;
            if client.max_latency_ns >= behind {
                c.behind += 1;
            }
            // Still working through a backlog when the run stopped: what
            // it has not read yet is not lost.
            let still_behind = client.ended.is_none() && client.last_latency_ns >= behind;
            for s in &client.subs {
                let expected = u64::from(s.end - s.start);
                let not = expected - u64::from(s.delivered);
                let conflated = u64::from(s.conflated).min(not);
                let tail = if still_behind {
                    u64::from(s.end.saturating_sub((s.last + 1).max(s.start))).min(not - conflated)
                } else {
                    0
                };
                c.expected += expected;
                c.delivered += u64::from(s.delivered);
                c.conflated += conflated;
                c.undrained += tail;
                c.missing += not - conflated - tail;
                if kept_up {
                    c.missing_keeping_up += not - conflated - tail;
                }
            }
        }
        ThreadReport {
            latency: self.latency,
            counts: self.counts,
            endings: self.endings,
            first_error: self.first_error,
        }
    }
}

fn end(c: &mut Client, endings: &mut BTreeMap<String, u64>, why: String) {
    if c.ended.is_none() {
        *endings.entry(why.clone()).or_default() += 1;
        c.ended = Some(why);
    }
}

/// Writes what the client has queued; `WouldBlock` leaves the rest queued.
fn flush_out(c: &mut Client) -> std::io::Result<()> {
    let Some(stream) = c.stream.as_mut() else {
        return Ok(());
    };
    let mut pos = 0;
    while pos < c.out.len() {
        match stream.write(&c.out[pos..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.out.drain(..pos);
    Ok(())
}

/// Handles every complete frame in `buf`; returns the bytes used.
fn process(c: &mut Client, buf: &[u8], recv_ns: u64, ctx: &mut Ctx<'_>) -> Result<usize, String> {
    let mut at = 0;
    while !matches!(c.phase, Phase::Done) {
        let head = match wsframe::parse_head(&buf[at..]) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => return Err(format!("protocol error: {e}")),
        };
        if buf.len() - at < head.frame_len() {
            break;
        }
        let payload = &buf[at + head.head_len..at + head.frame_len()];
        at += head.frame_len();
        ctx.counts.bytes += payload.len() as u64;
        match head.opcode {
            opcode::TEXT | opcode::BINARY if c.frag.is_empty() => {
                if head.fin {
                    message(c, head.opcode, payload, recv_ns, ctx);
                } else {
                    c.frag_op = head.opcode;
                    c.frag.extend_from_slice(payload);
                }
            }
            opcode::CONTINUATION if !c.frag.is_empty() => {
                c.frag.extend_from_slice(payload);
                if c.frag.len() > wsframe::MAX_FRAME {
                    return Err("fragmented message too large".into());
                }
                if head.fin {
                    let whole = std::mem::take(&mut c.frag);
                    message(c, c.frag_op, &whole, recv_ns, ctx);
                }
            }
            opcode::PING => {
                let mask = ctx.mask.next_u64().to_le_bytes();
                wsframe::encode_client(
                    opcode::PONG,
                    payload,
                    [mask[0], mask[1], mask[2], mask[3]],
                    &mut c.out,
                );
            }
            opcode::PONG => {}
            opcode::CLOSE => {
                let why = match payload {
                    [a, b, reason @ ..] => format!(
                        "closed by server: {} {}",
                        u16::from_be_bytes([*a, *b]),
                        String::from_utf8_lossy(reason)
                    ),
                    _ => "closed by server".to_string(),
                };
                let mask = ctx.mask.next_u64().to_le_bytes();
                let code: &[u8] = payload.get(..2).unwrap_or(&[]);
                wsframe::encode_client(
                    opcode::CLOSE,
                    code,
                    [mask[0], mask[1], mask[2], mask[3]],
                    &mut c.out,
                );
                c.ended = Some(why);
                c.phase = Phase::Done;
            }
            _ => return Err("unexpected continuation frame".into()),
        }
    }
    Ok(at)
}

/// One whole message.
fn message(c: &mut Client, op: u8, payload: &[u8], recv_ns: u64, ctx: &mut Ctx<'_>) {
    ctx.counts.messages += 1;
    match (ctx.config.protocol, op) {
        (Protocol::Relay, opcode::TEXT) => match relay_json::scan(payload) {
            Message::Price {
                segment,
                security_id,
                ltp,
                ltt,
            } => {
                let inst = (segment == SEGMENT.name().as_bytes())
                    .then(|| ctx.config.schedule.instrument_of_id(security_id))
                    .flatten();
                match inst {
                    Some(inst) => tick(c, inst, ltp, ltt, recv_ns, ctx),
                    None => ctx.counts.foreign += 1,
                }
            }
            Message::Pong => {
                ctx.counts.other += 1;
                if !c.ready {
                    c.ready = true;
                    ctx.counts.ready += 1;
                    ctx.progress.ready.fetch_add(1, Relaxed);
                }
            }
            Message::Error(text) => {
                ctx.counts.errors += 1;
                if ctx.first_error.is_none() {
                    *ctx.first_error = Some(String::from_utf8_lossy(text).into_owned());
                }
            }
            Message::Other => ctx.counts.other += 1,
            Message::Malformed => ctx.counts.malformed += 1,
        },
        (Protocol::Dhan, opcode::BINARY) => {
            // One message, possibly many packets: count packets as messages.
            ctx.counts.messages -= 1;
            for packet in feed::packets(payload) {
                ctx.counts.messages += 1;
                match packet.map(|p| p.message) {
                    Ok(FeedMessage::Data(key, FeedData::Ticker(t))) => {
                        match ctx.config.schedule.instrument_of(key) {
                            Some(inst) => {
                                tick(c, inst, f64::from(t.ltp), u64::from(t.ltt), recv_ns, ctx)
                            }
                            None => ctx.counts.foreign += 1,
                        }
                    }
                    Ok(FeedMessage::Disconnect(reason)) => {
                        ctx.counts.errors += 1;
                        if ctx.first_error.is_none() {
                            *ctx.first_error = Some(format!("disconnect packet: {reason}"));
                        }
                    }
                    Ok(_) => ctx.counts.other += 1,
                    Err(_) => ctx.counts.malformed += 1,
                }
            }
        }
        _ => ctx.counts.malformed += 1,
    }
}

/// One price message: instrument `inst` at sequence `ltp`.
fn tick(c: &mut Client, inst: u32, ltp: f64, ltt: u64, recv_ns: u64, ctx: &mut Ctx<'_>) {
    let schedule = &ctx.config.schedule;
    if ltt != u64::from(schedule.nonce) {
        ctx.counts.foreign += 1;
        return;
    }
    if !(1.0..16_777_216.0).contains(&ltp) || ltp.fract() != 0.0 {
        ctx.counts.malformed += 1;
        return;
    }
    let seq = ltp as u32;
    let Ok(si) = c.subs.binary_search_by_key(&inst, |s| s.inst) else {
        ctx.counts.unsolicited += 1;
        return;
    };
    let n = schedule.index(inst, seq);
    if n >= schedule.total_ticks {
        ctx.counts.unexpected += 1;
        return;
    }
    let sent = ctx.config.table.get(n);
    let latency = if sent == 0 {
        None
    } else {
        Some(recv_ns.saturating_sub(sent))
    };
    let behind_ns = ctx.config.behind_ns;
    let slow = latency.is_some_and(|l| l >= behind_ns);
    if slow {
        c.last_slow_ns = recv_ns;
    }
    let sub = &mut c.subs[si];
    let in_window = n >= schedule.warmup_ticks;
    if !in_window {
        ctx.counts.warmup_messages += 1;
        sub.last = sub.last.max(seq);
        return;
    }
    if seq > sub.last {
        // Window sequences skipped between the last one seen and this one.
        let lo = (sub.last + 1).max(sub.start);
        let hi = seq.min(sub.end);
        let skipped = hi.saturating_sub(lo);
        if skipped > 0 {
            let behind = slow
                || (c.last_slow_ns != 0 && recv_ns.saturating_sub(c.last_slow_ns) <= behind_ns);
            if behind {
                sub.conflated += skipped;
            }
        }
        sub.last = seq;
    }
    if sub.bits.is_empty() {
        sub.bits = vec![0; ((sub.end - sub.start) as usize).div_ceil(64).max(1)];
    }
    let bit = (seq - sub.start) as usize;
    let (word, mask) = (bit / 64, 1u64 << (bit % 64));
    if sub.bits[word] & mask != 0 {
        ctx.counts.duplicated += 1;
        return;
    }
    if seq < sub.last {
        ctx.counts.out_of_order += 1;
    }
    sub.bits[word] |= mask;
    sub.delivered += 1;
    *ctx.window_delivered += 1;
    match latency {
        Some(l) => {
            c.last_latency_ns = l;
            ctx.latency.saturating_record(l.max(1));
            c.max_latency_ns = c.max_latency_ns.max(l);
        }
        None => ctx.counts.unstamped += 1,
    }
}
