//! One measured phase (floor or engine), from an idle exchange to the final
//! counts, and the watchdog that bounds the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhan_relay::clock;
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::cli::{ClientProtocol, EngineSource, Plan};
use crate::clients::{self, ClientConfig, ClientSpec, Counts, Progress, Protocol, SlowReader};
use crate::engine::{self, Engine, Launch};
use crate::exchange::Exchange;
use crate::schedule::{Schedule, SendTable};
use crate::sys;

/// Which path a phase measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Clients straight on the exchange.
    Floor,
    /// Clients on the engine, the engine on the exchange.
    Engine,
    /// The same over WSS (`--tls`).
    EngineTls,
}

impl Mode {
    /// `floor`, `engine` or `engine-wss`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Floor => "floor",
            Mode::Engine => "engine",
            Mode::EngineTls => "engine-wss",
        }
    }

    /// Whether the clients talk to the engine.
    pub fn is_engine(self) -> bool {
        matches!(self, Mode::Engine | Mode::EngineTls)
    }
}

/// The engine's figures over a phase.
#[derive(Debug, Default)]
pub struct EngineFigures {
    /// Its process id.
    pub pid: Option<u32>,
    /// utime + stime over the measured span, s (None without a pid).
    pub cpu_s: Option<f64>,
    /// Of which user time (the engine's own code), s.
    pub cpu_user_s: Option<f64>,
    /// CPU over the span by thread name, s.
    pub threads_cpu_s: Vec<(String, f64)>,
    /// The same from the threads' schedstat (ns resolution), s.
    pub cpu_sched_s: Option<f64>,
    /// RSS before any client, bytes.
    pub rss_idle: Option<u64>,
    /// RSS with every client connected and subscribed, bytes.
    pub rss_ready: Option<u64>,
    /// Highest RSS sampled (every 100 ms), bytes.
    pub rss_peak: Option<u64>,
    /// `/stats` before the window.
    pub stats_before: Option<Value>,
    /// `/stats` after the drain.
    pub stats_after: Option<Value>,
    /// Its log, when started here.
    pub log: Option<String>,
}

/// The exchange's figures over a phase.
#[derive(Debug, Default)]
pub struct ExchangeFigures {
    /// Ticks sent.
    pub ticks: u64,
    /// Packets written.
    pub packets: u64,
    /// Frames written.
    pub frames: u64,
    /// Flushes that found the socket full.
    pub would_block: u64,
    /// Worst lag behind the schedule, ns.
    pub max_lag_ns: u64,
    /// Thread CPU over the measured span, s.
    pub cpu_s: f64,
    /// Connections it accepted.
    pub conns: u64,
    /// Requests that did not parse.
    pub bad_requests: u64,
    /// Upgrades it refused.
    pub refused: u64,
}

/// Everything one phase measured.
#[derive(Debug)]
pub struct PhaseResult {
    /// Floor or engine.
    pub mode: Mode,
    /// First-delivery latencies in the window, ns.
    pub latency: Histogram<u64>,
    /// Counts.
    pub counts: Counts,
    /// How clients ended.
    pub endings: BTreeMap<String, u64>,
    /// First error a server sent.
    pub first_error: Option<String>,
    /// Connect + subscribe time, s.
    pub setup_s: f64,
    /// From window start to the end of the drain, s.
    pub span_s: f64,
    /// From the last tick to the end of the drain, s.
    pub drain_s: f64,
    /// Client threads' CPU over the span, s.
    pub clients_cpu_s: f64,
    /// This process's CPU over the span, s.
    pub tool_cpu_s: f64,
    /// Every process's CPU over the span (all cores), s.
    pub machine_cpu_s: Option<f64>,
    /// Exchange figures.
    pub exchange: ExchangeFigures,
    /// Engine figures (engine phase).
    pub engine: Option<EngineFigures>,
    /// Setup problems worth a line in the report.
    pub warnings: Vec<String>,
}

/// Kills the engine and exits when the run passes its hard time limit.
#[derive(Debug, Default)]
pub struct Watchdog {
    deadline_ns: AtomicU64,
    engine_pid: AtomicU32,
    done: AtomicBool,
}

impl Watchdog {
    /// Starts the watchdog thread with a deadline `cap` from now.
    pub fn start(cap: Duration) -> Arc<Watchdog> {
        let w = Arc::new(Watchdog::default());
        w.deadline_ns
            .store(clock::now_ns() + cap.as_nanos() as u64, Relaxed);
        let w2 = Arc::clone(&w);
        let _ = std::thread::Builder::new()
            .name("loadgen-watchdog".into())
            .spawn(move || {
                while !w2.done.load(Relaxed) {
                    if clock::now_ns() > w2.deadline_ns.load(Relaxed) {
                        eprintln!(
                            "loadgen: hard time limit reached; stopping the engine and exiting"
                        );
                        let pid = w2.engine_pid.load(Relaxed);
                        if pid != 0 {
                            // SAFETY: kill sends a signal to the engine we
                            // started; no memory is touched.
                            unsafe {
                                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                            }
                        }
                        std::process::exit(3);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        w
    }

    fn engine(&self, pid: Option<u32>) {
        self.engine_pid.store(pid.unwrap_or(0), Relaxed);
    }

    /// The run finished in time.
    pub fn disarm(&self) {
        self.done.store(true, Relaxed);
    }
}

/// A per-run value for packets' LTT, so stale state is recognised.
fn nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mixed = t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
    (mixed as u32 ^ (mixed >> 32) as u32) | 1
}

fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

struct Sampler<'a> {
    pid: Option<u32>,
    rss_peak: u64,
    engine: Option<&'a mut Engine>,
}

impl Sampler<'_> {
    /// Sleeps until `until` (clock ns), sampling the engine's RSS every
    /// 100 ms; false if a started engine died.
    fn wait_until(&mut self, until: u64) -> bool {
        loop {
            if let Some(rss) = self.pid.and_then(sys::proc_rss_bytes) {
                self.rss_peak = self.rss_peak.max(rss);
            }
            if let Some(e) = self.engine.as_mut() {
                if !e.alive() {
                    return false;
                }
            }
            let now = clock::now_ns();
            if now >= until {
                return true;
            }
            std::thread::sleep(Duration::from_nanos((until - now).min(100_000_000)));
        }
    }
}

/// Waits (at most `limit`) until the machine's busy CPU, less this
/// process's, stays below `pct` % of one core over one second. Returns the
/// last measured figure.
fn wait_quiet(pct: f64, limit: Duration) -> Option<f64> {
    let deadline = Instant::now() + limit;
    let me = std::process::id();
    let mut announced = false;
    loop {
        let (m0, _) = sys::machine_cpu_ns()?;
        let s0 = sys::proc_cpu_ns(me)?;
        std::thread::sleep(Duration::from_secs(1));
        let (m1, _) = sys::machine_cpu_ns()?;
        let s1 = sys::proc_cpu_ns(me)?;
        let others = (m1.saturating_sub(m0)).saturating_sub(s1.saturating_sub(s0)) as f64 / 1e7;
        if others < pct || Instant::now() >= deadline {
            return Some(others);
        }
        if !announced {
            eprintln!("loadgen: other processes use {others:.0}% CPU; waiting for < {pct}% …");
            announced = true;
        }
    }
}

/// Runs one phase.
pub fn run_phase(plan: &Plan, mode: Mode, watchdog: &Watchdog) -> Result<PhaseResult, String> {
    let mut warnings = Vec::new();
    if let Some(pct) = plan.quiet_below {
        if let Some(others) = wait_quiet(pct, plan.quiet_wait) {
            if others >= pct {
                warnings.push(format!(
                    "other processes still used {others:.0}% CPU after waiting {:?}",
                    plan.quiet_wait
                ));
            }
        }
    }
    let schedule = Arc::new(Schedule::new(
        plan.instruments,
        plan.warmup_rate,
        plan.warmup,
        plan.rate,
        plan.duration,
        plan.seed,
        nonce(),
    )?);
    let table = Arc::new(SendTable::new(schedule.total_ticks));
    let exchange = Exchange::start(
        plan.exchange_listen,
        Arc::clone(&schedule),
        Arc::clone(&table),
        plan.frame_period,
    )
    .map_err(|e| format!("cannot start the exchange on {}: {e}", plan.exchange_listen))?;

    // The engine, connected to the exchange.
    let mut engine = None;
    let mut figures = None;
    let mut tls = None;
    if mode.is_engine() {
        let e = match plan.engine.as_ref().expect("engine phase has an engine") {
            EngineSource::Start(bin) => {
                let listen = match plan.engine_listen {
                    Some(a) => a,
                    None => free_port()?,
                };
                let dir = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
                let mut extra_args = plan.engine_args.clone();
                if mode == Mode::EngineTls {
                    let (cert, key) = crate::tls::self_signed(&dir)?;
                    tls = Some(crate::tls::client_config(&cert)?);
                    extra_args.extend([
                        "--tls-cert".to_string(),
                        cert.display().to_string(),
                        "--tls-key".to_string(),
                        key.display().to_string(),
                    ]);
                }
                Engine::start(&Launch {
                    binary: bin.clone(),
                    listen,
                    feed: exchange.addr(),
                    max_clients: plan.clients as usize,
                    subs_per_client: plan.subs as usize,
                    client_queue_bytes: plan.client_queue_bytes,
                    log_level: plan.engine_log_level.clone(),
                    cpus: plan.pin_engine.clone(),
                    extra_args,
                    dir,
                })?
            }
            EngineSource::Attach(addr, pid) => {
                if mode == Mode::EngineTls {
                    let ca = plan.ca.as_ref().ok_or("a wss:// engine needs --ca FILE")?;
                    tls = Some(crate::tls::client_config(ca)?);
                }
                Engine::attach(*addr, *pid)?
            }
        };
        watchdog.engine(e.pid);
        eprintln!(
            "loadgen: engine {} on {}{}",
            e.pid.map_or("(pid unknown)".into(), |p| format!("pid {p}")),
            e.addr,
            e.log
                .as_ref()
                .map(|l| format!(", log {}", l.display()))
                .unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while exchange.stats.conns_up.load(Relaxed) == 0 {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the engine did not connect to the exchange at {} within 30 s{}",
                    exchange.addr(),
                    e.log
                        .as_ref()
                        .map(|l| format!("; its log:\n{}", engine::tail(l, 20)))
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        figures = Some(EngineFigures {
            pid: e.pid,
            rss_idle: e.pid.and_then(sys::proc_rss_bytes),
            log: e.log.as_ref().map(|p| p.display().to_string()),
            ..EngineFigures::default()
        });
        engine = Some(e);
    }

    // The clients.
    let mut scratch = Vec::new();
    let mut union = BTreeSet::new();
    let threads = plan.client_threads.min(plan.clients as usize).max(1);
    let mut per_thread: Vec<Vec<ClientSpec>> = (0..threads).map(|_| Vec::new()).collect();
    for c in 0..plan.clients {
        let instruments = schedule.subscriptions(plan.seed, c, plan.subs, &mut scratch);
        union.extend(instruments.iter().copied());
        per_thread[c as usize % threads].push(ClientSpec {
            id: c,
            instruments,
            slow: c < plan.slow_clients,
        });
    }
    let expected_total: u64 = per_thread
        .iter()
        .flatten()
        .flat_map(|s| s.instruments.iter())
        .map(|&i| {
            let (a, b) = schedule.window(i);
            u64::from(b - a)
        })
        .sum();
    let (addr, path, protocol) = match (&engine, mode) {
        (Some(e), Mode::Engine | Mode::EngineTls) if plan.protocol == ClientProtocol::Dhan => (
            e.addr,
            "/dhan?version=2&token=loadgen-dummy-token&clientId=loadgen&authType=2".to_string(),
            Protocol::Dhan,
        ),
        (Some(e), Mode::Engine | Mode::EngineTls) => (e.addr, "/ws".to_string(), Protocol::Relay),
        _ => (
            exchange.addr(),
            "/?version=2&token=loadgen-dummy-token&clientId=loadgen&authType=2".to_string(),
            Protocol::Dhan,
        ),
    };
    let config = Arc::new(ClientConfig {
        addr,
        path,
        protocol,
        schedule: Arc::clone(&schedule),
        table: Arc::clone(&table),
        behind_ns: plan.behind.as_nanos() as u64,
        max_connecting: 64,
        connect_timeout: Duration::from_secs(10),
        slow: SlowReader {
            bytes: plan.slow_read_bytes,
            every: plan.slow_every,
            rcvbuf: plan.slow_rcvbuf,
        },
        tls,
        flush_us: plan.flush_us,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let mut progress = Vec::new();
    for (t, specs) in per_thread.into_iter().enumerate() {
        let p = Arc::new(Progress::default());
        handles.push(
            clients::spawn(
                format!("loadgen-clients-{t}"),
                Arc::clone(&config),
                specs,
                Arc::clone(&p),
                Arc::clone(&stop),
            )
            .map_err(|e| format!("cannot start a client thread: {e}"))?,
        );
        progress.push(p);
    }
    let sum = |f: fn(&Progress) -> &AtomicU64| -> u64 {
        progress.iter().map(|p| f(p).load(Relaxed)).sum()
    };

    // Wait until every client is subscribed (or gave up).
    let setup_start = Instant::now();
    let setup_deadline = setup_start + plan.setup_cap();
    let n = u64::from(plan.clients);
    loop {
        let settled = sum(|p| &p.ready) + sum(|p| &p.failed) + sum(|p| &p.closed) >= n;
        let upstream_ok = match mode {
            Mode::Engine | Mode::EngineTls => {
                exchange.stats.instruments_subscribed.load(Relaxed) >= union.len() as u64
            }
            Mode::Floor => {
                exchange.stats.subscriptions.load(Relaxed)
                    >= sum(|p| &p.ready) * u64::from(plan.subs)
            }
        };
        if settled && upstream_ok {
            break;
        }
        if let Some(e) = engine.as_mut() {
            if !e.alive() {
                return Err("the engine exited during setup".into());
            }
        }
        if Instant::now() >= setup_deadline {
            warnings.push(format!(
                "setup timed out after {:?}: {} of {n} clients ready, {} failed; {} of {} instruments subscribed at the exchange",
                plan.setup_cap(),
                sum(|p| &p.ready),
                sum(|p| &p.failed),
                exchange.stats.instruments_subscribed.load(Relaxed),
                union.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    let failed = sum(|p| &p.failed);
    if failed > 0 {
        warnings.push(format!("{failed} clients failed to connect"));
    }
    if let Some(f) = figures.as_mut() {
        f.rss_ready = f.pid.and_then(sys::proc_rss_bytes);
        f.stats_before = engine.as_ref().and_then(Engine::stats);
    }

    // Go: warmup, window, drain.
    let pid = figures.as_ref().and_then(|f| f.pid);
    let mut sampler = Sampler {
        pid,
        rss_peak: 0,
        engine: engine.as_mut(),
    };
    let go = clock::now_ns() + 50_000_000;
    exchange.go(go);
    let window_start = go + schedule.window_start_ns();
    if !sampler.wait_until(window_start) {
        return Err("the engine exited during the warmup".into());
    }
    let t0 = clock::now_ns();
    let engine_cpu0 = pid.and_then(sys::proc_cpu_split_ns);
    let engine_sched0 = pid.and_then(sys::proc_sched_ns);
    let engine_threads0 = pid.map(sys::proc_threads_cpu_ns).unwrap_or_default();
    let tool_cpu0 = sys::proc_cpu_ns(std::process::id()).unwrap_or(0);
    let machine0 = sys::machine_cpu_ns();
    let exchange_cpu0 = exchange.stats.cpu_ns.load(Relaxed);
    let clients_cpu0 = sum(|p| &p.cpu_ns);
    let last_due = go + schedule.last_due_ns();
    if !sampler.wait_until(last_due) {
        return Err("the engine exited during the window".into());
    }
    let send_deadline = clock::now_ns() + 5_000_000_000;
    while exchange.stats.done_ns.load(Relaxed) == 0 && clock::now_ns() < send_deadline {
        sampler.wait_until(clock::now_ns() + 5_000_000);
    }
    let done = match exchange.stats.done_ns.load(Relaxed) {
        0 => {
            warnings.push("the exchange did not send every tick within 5 s of schedule".into());
            clock::now_ns()
        }
        t => t,
    };
    // Drain: until every expected delivery arrived, nothing arrived for
    // 500 ms, or the drain limit.
    let drain_deadline = done + plan.drain.as_nanos() as u64;
    let mut last_count = sum(|p| &p.messages);
    let mut last_change = clock::now_ns();
    loop {
        let now = clock::now_ns();
        if sum(|p| &p.window_delivered) >= expected_total || now >= drain_deadline {
            break;
        }
        let m = sum(|p| &p.messages);
        if m != last_count {
            last_count = m;
            last_change = now;
        } else if now - last_change > 500_000_000 {
            break;
        }
        sampler.wait_until(now + 10_000_000);
    }
    let rss_peak = sampler.rss_peak;
    let t1 = clock::now_ns();
    let tool_cpu1 = sys::proc_cpu_ns(std::process::id()).unwrap_or(0);
    let machine1 = sys::machine_cpu_ns();
    let engine_cpu1 = pid.and_then(sys::proc_cpu_split_ns);
    let engine_sched1 = pid.and_then(sys::proc_sched_ns);
    let engine_threads1 = pid.map(sys::proc_threads_cpu_ns).unwrap_or_default();
    // Client and exchange threads publish their CPU every 50–100 ms.
    std::thread::sleep(Duration::from_millis(120));
    let span_s = (t1 - t0) as f64 / 1e9;
    if let Some(f) = figures.as_mut() {
        f.cpu_s = engine_cpu0
            .zip(engine_cpu1)
            .map(|(a, b)| (b.0 + b.1).saturating_sub(a.0 + a.1) as f64 / 1e9);
        f.cpu_user_s = engine_cpu0
            .zip(engine_cpu1)
            .map(|(a, b)| b.0.saturating_sub(a.0) as f64 / 1e9);
        f.cpu_sched_s = engine_sched0
            .zip(engine_sched1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
        f.rss_peak = (rss_peak > 0).then_some(rss_peak);
        f.threads_cpu_s = engine_threads1
            .iter()
            .map(|(name, b)| {
                let a = engine_threads0
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, a)| *a);
                (name.clone(), b.saturating_sub(a) as f64 / 1e9)
            })
            .filter(|(_, s)| *s > 0.0)
            .collect();
        f.stats_after = engine.as_ref().and_then(Engine::stats);
    }
    let clients_cpu_s = sum(|p| &p.cpu_ns).saturating_sub(clients_cpu0) as f64 / 1e9;
    let exchange_cpu_s = exchange
        .stats
        .cpu_ns
        .load(Relaxed)
        .saturating_sub(exchange_cpu0) as f64
        / 1e9;

    // Stop and collect.
    stop.store(true, Relaxed);
    let mut latency = clients::new_histogram();
    let mut counts = Counts::default();
    let mut endings = BTreeMap::new();
    let mut first_error = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        latency
            .add(&r.latency)
            .map_err(|e| format!("histogram merge: {e}"))?;
        counts.add(&r.counts);
        for (why, n) in r.endings {
            *endings.entry(why).or_insert(0) += n;
        }
        first_error = first_error.or(r.first_error);
    }
    let s = &exchange.stats;
    let exchange_figures = ExchangeFigures {
        ticks: s.ticks.load(Relaxed),
        packets: s.packets.load(Relaxed),
        frames: s.frames.load(Relaxed),
        would_block: s.would_block.load(Relaxed),
        max_lag_ns: s.max_lag_ns.load(Relaxed),
        cpu_s: exchange_cpu_s,
        conns: s.conns_total.load(Relaxed),
        bad_requests: s.bad_requests.load(Relaxed),
        refused: s.refused.load(Relaxed),
    };
    if let Some(mut e) = engine {
        e.stop();
    }
    watchdog.engine(None);
    exchange.stop();
    Ok(PhaseResult {
        mode,
        latency,
        counts,
        endings,
        first_error,
        setup_s,
        span_s,
        drain_s: t1.saturating_sub(done) as f64 / 1e9,
        clients_cpu_s,
        tool_cpu_s: tool_cpu1.saturating_sub(tool_cpu0) as f64 / 1e9,
        machine_cpu_s: machine0
            .zip(machine1)
            .map(|((a, _), (b, _))| b.saturating_sub(a) as f64 / 1e9),
        exchange: exchange_figures,
        engine: figures,
        warnings,
    })
}
