//! Flags, presets and the validated plan of a run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::sys;

/// Load and latency generator for dhan-relay: a simulated DhanHQ exchange,
/// the engine under test, and N measuring WebSocket clients, all on
/// loopback. Prints a table (and `--json FILE`), exits by itself.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Named scenario; the flags below override its values.
    #[arg(long, value_enum, default_value_t = Preset::Fanout)]
    pub preset: Preset,
    /// WebSocket clients.
    #[arg(long)]
    pub clients: Option<u32>,
    /// Instruments each client subscribes.
    #[arg(long)]
    pub subs: Option<u32>,
    /// Instruments the exchange ticks over.
    #[arg(long)]
    pub instruments: Option<u32>,
    /// Aggregate ticks per second in the measured window.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Aggregate ticks per second during the warmup [default: --rate].
    #[arg(long)]
    pub warmup_rate: Option<u32>,
    /// Measured window, seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warmup before the window, seconds.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Seed of the subscriptions and the tick order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also measure the floor (clients straight to the exchange) in the same
    /// run [default: on for `fanout`].
    #[arg(long, overrides_with = "no_floor")]
    pub floor: bool,
    /// Do not measure the floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Run the floor and the engine alternately N times each (1–20; floor,
    /// engine, floor, engine, …) and print per round and overall the
    /// engine/floor latency ratios.
    #[arg(long, value_name = "N")]
    pub compare: Option<u32>,
    /// The `dhan-relay` binary [default: next to this executable].
    #[arg(long, value_name = "PATH")]
    pub engine_bin: Option<PathBuf>,
    /// Use an engine that is already running (ws://127.0.0.1:PORT) instead
    /// of starting one. Its feed must be this tool's exchange: start it with
    /// `--feed-url ws://127.0.0.1:P` (and dummy DHAN_CLIENT_ID /
    /// DHAN_ACCESS_TOKEN) and pass `--exchange-listen 127.0.0.1:P` here; the
    /// tool waits up to 30 s for it to (re)connect.
    #[arg(long, value_name = "URL", conflicts_with = "engine_bin")]
    pub engine_url: Option<String>,
    /// The exchange's listen address [default: a free 127.0.0.1 port].
    #[arg(long, value_name = "ADDR")]
    pub exchange_listen: Option<String>,
    /// Process id of the --engine-url engine, for its CPU and RSS.
    #[arg(long, requires = "engine_url")]
    pub engine_pid: Option<u32>,
    /// The started engine's listen address [default: a free 127.0.0.1 port].
    #[arg(long, value_name = "ADDR")]
    pub engine_listen: Option<String>,
    /// The started engine's `limits.client_queue_bytes` [default: the
    /// engine's own].
    #[arg(long, value_name = "BYTES")]
    pub client_queue_bytes: Option<usize>,
    /// The started engine's log level.
    #[arg(long, default_value = "warn")]
    pub engine_log_level: String,
    /// Extra argument for `dhan-relay run` (repeatable), e.g.
    /// --engine-arg=--pin --engine-arg=net=0,book=0,fanout=0.
    #[arg(long = "engine-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub engine_args: Vec<String>,
    /// Confine the started engine to these CPUs (taskset -c syntax).
    #[arg(long, value_name = "CPUS")]
    pub pin_engine: Option<String>,
    /// Confine this tool (exchange and clients) to these CPUs.
    #[arg(long, value_name = "CPUS")]
    pub pin_tool: Option<String>,
    /// Client threads [default: 1, or 2 above 100,000 expected messages/s].
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// The exchange sends one frame per connection at most this often, µs.
    #[arg(long, default_value_t = 1000)]
    pub frame_us: u64,
    /// A message at least this late (ms) marks its client as behind:
    /// sequence gaps seen around then count as conflated, not missing.
    #[arg(long, default_value_t = 50)]
    pub behind_ms: u64,
    /// Longest wait after the last tick for messages still in flight, s.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Make the first N clients slow readers (to see conflation and
    /// slow-client closes); they count like the others.
    #[arg(long, default_value_t = 0)]
    pub slow_clients: u32,
    /// A slow client reads at most this many KiB per turn.
    #[arg(long, default_value_t = 16)]
    pub slow_read_kib: usize,
    /// A slow client reads once per this many ms.
    #[arg(long, default_value_t = 100)]
    pub slow_every_ms: u64,
    /// A slow client's socket receive buffer, KiB (keep it above two
    /// loopback MSS, ~128 KiB, or TCP stalls on its persist timer).
    #[arg(long, default_value_t = 256)]
    pub slow_rcvbuf_kib: usize,
    /// Before each phase, wait until other processes use less than this
    /// much CPU (percent of one core, over 1 s) — for shared machines.
    #[arg(long, value_name = "PCT")]
    pub quiet_below: Option<f64>,
    /// The longest such wait, s.
    #[arg(long, default_value_t = 300.0)]
    pub quiet_wait: f64,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also measure the engine over WSS in the same run (a started engine
    /// gets a self-signed certificate the clients trust). With a wss://
    /// --engine-url, only WSS is measured.
    #[arg(long)]
    pub tls: bool,
    /// PEM certificate(s) to trust for a wss:// --engine-url (its CA, or
    /// its self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// What the clients speak to the engine: the relay's JSON on `/ws`, or
    /// DhanHQ's Live Market Feed v2 on `/dhan` (ticker mode, binary
    /// packets). The floor always speaks DhanHQ's protocol.
    #[arg(long, value_enum, default_value_t = ClientProtocol::Json)]
    pub protocol: ClientProtocol,
    /// JSON clients ask the engine to write to them at most once per this
    /// many µs (`{"type":"options","flushIntervalUs":N}`; 0: the engine's
    /// default, a write as soon as anything is queued).
    #[arg(long, default_value_t = 0, value_name = "US")]
    pub flush_us: u32,
    /// Drive the exchange side with recorded traffic instead of the
    /// synthetic schedule: the simulator replays these recordings (in
    /// order) to the engine, one client subscribes every instrument in
    /// them. Most other flags do not apply (see `replay.rs`).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub replay: Vec<PathBuf>,
    /// With --replay: the recorded spacing divided by N, or `max`.
    #[arg(long, value_name = "N|max", default_value = "1", requires = "replay")]
    pub speed: dhan_relay::sim::Speed,
}

/// Most rounds `--compare` runs.
pub const MAX_COMPARE_ROUNDS: u32 = 20;

/// The engine-side client protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientProtocol {
    /// The relay's JSON protocol on `/ws`.
    Json,
    /// DhanHQ's protocol on `/dhan`.
    Dhan,
}

impl ClientProtocol {
    /// Its name as typed.
    pub fn name(self) -> &'static str {
        match self {
            ClientProtocol::Json => "json",
            ClientProtocol::Dhan => "dhan",
        }
    }
}

/// Named scenarios (issue 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 100 clients × 20 subs over 500 instruments at 5,000 ticks/s, with the
    /// floor measured in the same run.
    Fanout,
    /// 1,000 clients × 50 subs over 2,000 instruments at 20,000 ticks/s.
    Wide,
    /// 10,000 clients × 1 sub over 1,000 instruments at 1,000 ticks/s.
    Idle10k,
    /// 50,000 ticks in one second after a 1,000 ticks/s warmup
    /// (100 × 20 over 500).
    Burst,
    /// The `fanout` shape with clients straight on the exchange only.
    Floor,
}

impl Preset {
    /// The preset's name as typed.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Fanout => "fanout",
            Preset::Wide => "wide",
            Preset::Idle10k => "idle10k",
            Preset::Burst => "burst",
            Preset::Floor => "floor",
        }
    }
}

/// Where the engine comes from.
#[derive(Clone, Debug)]
pub enum EngineSource {
    /// Start this binary.
    Start(PathBuf),
    /// Use the engine at this address.
    Attach(SocketAddr, Option<u32>),
}

/// A validated run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The preset the values started from.
    pub preset: Preset,
    /// Clients.
    pub clients: u32,
    /// Subscriptions per client.
    pub subs: u32,
    /// Instruments.
    pub instruments: u32,
    /// Window rate, ticks/s.
    pub rate: u32,
    /// Warmup rate, ticks/s.
    pub warmup_rate: u32,
    /// Window.
    pub duration: Duration,
    /// Warmup.
    pub warmup: Duration,
    /// Seed.
    pub seed: u64,
    /// Measure the floor.
    pub floor: bool,
    /// Measure the engine.
    pub engine: Option<EngineSource>,
    /// Started engine's listen address (None: pick a free port).
    pub engine_listen: Option<SocketAddr>,
    /// The exchange's listen address.
    pub exchange_listen: SocketAddr,
    /// Engine queue limit.
    pub client_queue_bytes: Option<usize>,
    /// Engine log level.
    pub engine_log_level: String,
    /// Extra engine arguments.
    pub engine_args: Vec<String>,
    /// Engine CPUs.
    pub pin_engine: Option<Vec<usize>>,
    /// Tool CPUs.
    pub pin_tool: Option<Vec<usize>>,
    /// Client threads.
    pub client_threads: usize,
    /// Exchange frame period.
    pub frame_period: Duration,
    /// Behind threshold.
    pub behind: Duration,
    /// Drain limit.
    pub drain: Duration,
    /// Slow-reading clients (the first ones).
    pub slow_clients: u32,
    /// Their read budget per turn.
    pub slow_read_bytes: usize,
    /// Their turn period.
    pub slow_every: Duration,
    /// Their receive buffer.
    pub slow_rcvbuf: usize,
    /// Wait for other processes' CPU to fall below this (% of one core).
    pub quiet_below: Option<f64>,
    /// The longest such wait.
    pub quiet_wait: Duration,
    /// JSON output.
    pub json: Option<PathBuf>,
    /// Measure plain WS on the engine.
    pub ws: bool,
    /// Measure WSS on the engine.
    pub wss: bool,
    /// Trust for a wss:// engine.
    pub ca: Option<PathBuf>,
    /// The engine-side client protocol.
    pub protocol: ClientProtocol,
    /// Flush interval the JSON clients ask for, µs (0: none).
    pub flush_us: u32,
    /// `--compare N`: rounds of floor + engine.
    pub compare: Option<u32>,
}

impl Plan {
    /// Expected client messages per second in the window.
    pub fn expected_rate(&self) -> f64 {
        f64::from(self.clients) * f64::from(self.subs.min(self.instruments)) * f64::from(self.rate)
            / f64::from(self.instruments)
    }

    /// Longest wait for clients to connect and subscribe.
    pub fn setup_cap(&self) -> Duration {
        Duration::from_secs(20) + Duration::from_millis(2 * u64::from(self.clients))
    }

    /// The longest this plan may run, all phases together: per phase the
    /// quiet wait, the setup limit, warmup, window and drain, plus 30 s.
    pub fn hard_cap(&self) -> Duration {
        let quiet = if self.quiet_below.is_some() {
            self.quiet_wait
        } else {
            Duration::ZERO
        };
        let phase = quiet
            + self.setup_cap()
            + self.warmup
            + self.duration
            + self.drain
            + Duration::from_secs(30);
        let phases = u32::from(self.floor) + u32::from(self.engine.is_some());
        phase * phases.max(1) * self.compare.unwrap_or(1)
    }
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if !(0.0..=3600.0).contains(&v) || v.is_nan() {
        return Err(format!("--{name} must be between 0 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A `ws://HOST:PORT[/…]` or `HOST:PORT` address, which must be loopback.
pub fn parse_loopback_url(s: &str) -> Result<SocketAddr, String> {
    let rest = ["ws://", "http://", "wss://", "https://"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    let authority = rest.split('/').next().unwrap_or("");
    parse_loopback_addr(authority)
}

/// `IP:PORT` or `localhost:PORT`, which must be loopback.
pub fn parse_loopback_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = match s.strip_prefix("localhost:") {
        Some(port) => SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port.parse().map_err(|_| format!("'{s}': bad port"))?,
        ),
        None => s
            .parse()
            .map_err(|_| format!("'{s}' is not IP:PORT (e.g. 127.0.0.1:8000)"))?,
    };
    if !sys::is_loopback(addr.ip()) {
        return Err(format!(
            "'{s}' is not a loopback address: this tool only talks to 127.0.0.0/8 and ::1"
        ));
    }
    Ok(addr)
}

impl Args {
    /// The `--replay` run these flags ask for, if they ask for one.
    pub fn replay_plan(&self) -> Result<Option<crate::replay::ReplayPlan>, String> {
        if self.replay.is_empty() {
            return Ok(None);
        }
        let engine_bin = match &self.engine_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this executable: {e}"))?
                .with_file_name("dhan-relay"),
        };
        if !engine_bin.is_file() {
            return Err(format!(
                "engine binary {} not found: build it (cargo build --release --bins) or pass --engine-bin",
                engine_bin.display()
            ));
        }
        Ok(Some(crate::replay::ReplayPlan {
            files: self.replay.clone(),
            speed: self.speed,
            engine_bin,
            log_level: self.engine_log_level.clone(),
            drain: self.drain,
        }))
    }

    /// Applies the preset, then the flags; checks everything.
    pub fn plan(&self) -> Result<Plan, String> {
        // (clients, subs, instruments, rate, warmup rate, warmup s, duration s)
        let (c, k, m, r, wr, w, d) = match self.preset {
            Preset::Fanout | Preset::Floor => (100, 20, 500, 5_000, None, 3.0, 10.0),
            Preset::Wide => (1_000, 50, 2_000, 20_000, None, 3.0, 10.0),
            Preset::Idle10k => (10_000, 1, 1_000, 1_000, None, 3.0, 10.0),
            Preset::Burst => (100, 20, 500, 50_000, Some(1_000), 3.0, 1.0),
        };
        let clients = self.clients.unwrap_or(c);
        let subs = self.subs.unwrap_or(k);
        let instruments = self.instruments.unwrap_or(m);
        let rate = self.rate.unwrap_or(r);
        let warmup_rate = self.warmup_rate.or(wr).unwrap_or(rate);
        let duration = secs("duration", self.duration.unwrap_or(d))?;
        let warmup = secs("warmup", self.warmup.unwrap_or(w))?;
        if clients == 0 || subs == 0 || instruments == 0 || rate == 0 || warmup_rate == 0 {
            return Err("--clients, --subs, --instruments and the rates must be at least 1".into());
        }
        if clients > 60_000 {
            return Err("--clients: at most 60,000 (loopback ports)".into());
        }
        if subs > instruments {
            return Err(format!(
                "--subs {subs} is more than --instruments {instruments}"
            ));
        }
        if duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if let Some(n) = self.compare {
            if !(1..=MAX_COMPARE_ROUNDS).contains(&n) {
                return Err(format!(
                    "--compare: between 1 and {MAX_COMPARE_ROUNDS} rounds"
                ));
            }
            if self.preset == Preset::Floor {
                return Err("--compare needs an engine: use the fanout preset, not floor".into());
            }
            if self.no_floor {
                return Err("--compare measures the floor; drop --no-floor".into());
            }
            if self.tls {
                return Err("--compare measures plain WS only; drop --tls".into());
            }
        }
        let floor = match self.preset {
            _ if self.compare.is_some() => true,
            Preset::Floor => true,
            Preset::Fanout => !self.no_floor,
            _ => self.floor && !self.no_floor,
        };
        let attach_tls = self
            .engine_url
            .as_deref()
            .is_some_and(|u| u.starts_with("wss://") || u.starts_with("https://"));
        if attach_tls && self.ca.is_none() {
            return Err("a wss:// --engine-url needs --ca FILE (the certificate to trust)".into());
        }
        let engine = match (self.preset, &self.engine_url) {
            (Preset::Floor, _) => None,
            (_, Some(url)) => Some(EngineSource::Attach(
                parse_loopback_url(url)?,
                self.engine_pid,
            )),
            (_, None) => Some(EngineSource::Start(match &self.engine_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .map_err(|e| format!("cannot find this executable: {e}"))?
                    .with_file_name("dhan-relay"),
            })),
        };
        if let Some(EngineSource::Start(bin)) = &engine {
            if !bin.is_file() {
                return Err(format!(
                    "engine binary {} not found: build it (cargo build --release --bins) or pass --engine-bin",
                    bin.display()
                ));
            }
        }
        let engine_listen = self
            .engine_listen
            .as_deref()
            .map(parse_loopback_addr)
            .transpose()?;
        let exchange_listen = match self.exchange_listen.as_deref() {
            Some(a) => parse_loopback_addr(a)?,
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let pin_engine = self
            .pin_engine
            .as_deref()
            .map(sys::parse_cpu_list)
            .transpose()?;
        let pin_tool = self
            .pin_tool
            .as_deref()
            .map(sys::parse_cpu_list)
            .transpose()?;
        if self.frame_us == 0 || self.frame_us > 1_000_000 {
            return Err("--frame-us must be between 1 and 1,000,000".into());
        }
        let mut plan = Plan {
            preset: self.preset,
            clients,
            subs,
            instruments,
            rate,
            warmup_rate,
            duration,
            warmup,
            seed: self.seed.unwrap_or(1),
            floor,
            engine,
            engine_listen,
            exchange_listen,
            client_queue_bytes: self.client_queue_bytes,
            engine_log_level: self.engine_log_level.clone(),
            engine_args: self.engine_args.clone(),
            pin_engine,
            pin_tool,
            client_threads: 1,
            frame_period: Duration::from_micros(self.frame_us),
            behind: Duration::from_millis(self.behind_ms.max(1)),
            drain: secs("drain", self.drain)?,
            slow_clients: self.slow_clients.min(clients),
            slow_read_bytes: self.slow_read_kib.clamp(1, 64 * 1024) * 1024,
            slow_every: Duration::from_millis(self.slow_every_ms.clamp(1, 10_000)),
            slow_rcvbuf: self.slow_rcvbuf_kib.clamp(1, 64 * 1024) * 1024,
            quiet_below: self.quiet_below,
            quiet_wait: secs("quiet-wait", self.quiet_wait)?,
            json: self.json.clone(),
            ws: !attach_tls,
            wss: self.tls || attach_tls,
            ca: self.ca.clone(),
            protocol: self.protocol,
            flush_us: self.flush_us.min(100_000),
            compare: self.compare,
        };
        plan.client_threads = match self.client_threads {
            Some(0) => return Err("--client-threads must be at least 1".into()),
            Some(n) => n.min(64),
            None if plan.expected_rate() > 100_000.0 => 2,
            None => 1,
        };
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut v = vec!["loadgen", "--engine-url", "ws://127.0.0.1:9"];
        v.extend_from_slice(args);
        Args::try_parse_from(v).map_err(|e| e.to_string())?.plan()
    }

    #[test]
    fn presets_and_overrides() {
        let p = plan(&["--preset", "wide"]).unwrap();
        assert_eq!(
            (p.clients, p.subs, p.instruments, p.rate),
            (1000, 50, 2000, 20_000)
        );
        assert_eq!(p.client_threads, 2);
        assert!(!p.floor);
        let p = plan(&["--preset", "fanout", "--rate", "20000", "--seed", "9"]).unwrap();
        assert_eq!((p.rate, p.warmup_rate, p.seed), (20_000, 20_000, 9));
        assert!(p.floor);
        let p = plan(&["--preset", "burst"]).unwrap();
        assert_eq!((p.rate, p.warmup_rate), (50_000, 1_000));
        assert_eq!(p.duration, Duration::from_secs(1));
        let p = plan(&["--preset", "floor"]).unwrap();
        assert!(p.floor && p.engine.is_none());
        assert!(plan(&["--subs", "600"]).is_err());
    }

    #[test]
    fn compare_rounds_and_conflicts() {
        let p = plan(&["--preset", "wide", "--compare", "3"]).unwrap();
        assert_eq!(p.compare, Some(3));
        assert!(p.floor && p.engine.is_some(), "compare measures both paths");
        let one = plan(&["--preset", "wide"]).unwrap().hard_cap();
        // Two phases a round instead of one, three rounds.
        assert_eq!(p.hard_cap(), one * 2 * 3);
        assert_eq!(plan(&["--compare", "1"]).unwrap().compare, Some(1));
        assert_eq!(plan(&["--compare", "20"]).unwrap().compare, Some(20));
        for bad in ["0", "21"] {
            let e = plan(&["--compare", bad]).unwrap_err();
            assert!(e.contains("between 1 and 20"), "{e}");
        }
        assert!(plan(&["--compare", "-1"]).is_err());
        assert!(plan(&["--compare", "x"]).is_err());
        assert!(plan(&["--compare", "2", "--no-floor"])
            .unwrap_err()
            .contains("--no-floor"));
        assert!(plan(&["--compare", "2", "--tls"])
            .unwrap_err()
            .contains("--tls"));
        assert!(plan(&["--compare", "2", "--preset", "floor"])
            .unwrap_err()
            .contains("engine"));
        assert_eq!(plan(&["--preset", "fanout"]).unwrap().compare, None);
    }

    #[test]
    fn only_loopback() {
        assert!(parse_loopback_url("ws://127.0.0.1:8000/ws").is_ok());
        assert!(parse_loopback_url("ws://[::1]:8000").is_ok());
        assert!(parse_loopback_url("localhost:8000").is_ok());
        assert!(parse_loopback_url("ws://10.1.2.3:8000")
            .unwrap_err()
            .contains("not a loopback"));
        assert!(parse_loopback_url("ws://example.com:80").is_err());
        assert!(parse_loopback_url("wss://127.0.0.1:1").is_ok());
        let e = Args::try_parse_from(["loadgen", "--engine-url", "wss://127.0.0.1:1"])
            .unwrap()
            .plan()
            .unwrap_err();
        assert!(e.contains("--ca"), "{e}");
        assert!(plan(&["--engine-listen", "0.0.0.0:1"]).is_err());
        assert!(plan(&["--exchange-listen", "10.0.0.1:1"]).is_err());
        assert!(
            Args::try_parse_from(["loadgen", "--engine-url", "ws://192.168.0.1:1"])
                .unwrap()
                .plan()
                .is_err()
        );
    }
}
