//! Command-line parsing and dispatch for the `dhan-relay` binary.
//!
//! Raw flags become a validated command here; `main.rs` only maps the result
//! to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::cmd::KeysCommand;
use crate::auth::Scopes;
use crate::config::{Feed, Flags, RunConfig};
use crate::engine::{raise_fd_limit, Engine, StartError};
use crate::sdnotify;
use crate::sim::{SimConfig, SimTls, SimTotpAccount, Simulator};
use crate::token::sources::CredentialSources;
use crate::upstream::Credentials;

/// dhan-relay: a low-latency relay for DhanHQ's Live Market Feed v2.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s flags, accepted without the word `run`.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (the default). Credentials come from DHAN_CLIENT_ID and
    /// DHAN_ACCESS_TOKEN; without them, and without --feed-url, it runs
    /// against the built-in simulator (demo mode) and says so.
    Run(RunArgs),
    /// Check the configuration and the credential sources without starting:
    /// exit 0 when the relay would start, 2 (with the reason) when not.
    CheckConfig(CheckArgs),
    /// Run a simulated DhanHQ Live Market Feed v2 server (demo mode, tests,
    /// benchmarks) until interrupted. Prints its URL on one line.
    Sim(SimArgs),
    /// Serve recordings as a DhanHQ Live Market Feed v2 server: clients
    /// connect as to DhanHQ and get the recorded packets of the instruments
    /// they subscribe, with the recorded spacing. Prints its URL on one line.
    Replay(ReplayArgs),
    /// Manage the API keys clients use: add (prints the new key once),
    /// list, revoke.
    Keys(KeysArgs),
    /// Sum up a recording (`.dhr` or `.dhr.zst`): day, time span, frames and
    /// packets by kind, instruments, largest gap, damage. Exit 0 (also when
    /// it reports damage), 1 when the file is not a readable recording.
    RecordInfo {
        /// The recording.
        file: PathBuf,
    },
}

/// Flags of `dhan-relay keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The API keys file [default: $XDG_CONFIG_HOME/dhan-relay/keys.toml,
    /// else ~/.config/dhan-relay/keys.toml].
    #[arg(long, value_name = "FILE", global = true)]
    pub keys_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// `dhan-relay keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key: prints it once on standard output; the file keeps only
    /// its SHA-256.
    Add {
        /// The key's name (1-64 of A-Z a-z 0-9 _ . -), shown in logs.
        name: String,
        /// What it may do: read, trade, admin, comma-separated.
        #[arg(long, value_name = "SCOPE,...", value_parser = Scopes::parse_list)]
        scopes: Scopes,
    },
    /// List the keys: name, scopes, created, last used (never a key).
    List,
    /// Remove a key.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// Flags of `dhan-relay run`. Each overrides the config file.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// TOML config file (see dhan-relay.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for clients, REST and metrics; repeat for several listeners
    /// sharing one engine [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// PEM certificate chain: the --listen listeners serve HTTPS and WSS
    /// (re-read on change and on SIGHUP).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (RSA or ECDSA) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// DhanHQ feed URL, without query [default: wss://api-feed.dhan.co].
    #[arg(long, value_name = "URL")]
    pub feed_url: Option<String>,
    /// Extra CA certificate (PEM) to trust for the feed's TLS.
    #[arg(long, value_name = "FILE")]
    pub feed_ca: Option<PathBuf>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Ticks per second of the built-in simulator in demo mode [default: 200].
    #[arg(long, value_name = "N")]
    pub demo_rate: Option<u32>,
    /// Pin threads to cores, e.g. net=2,book=3,fanout=4 [default: unpinned].
    #[arg(long, value_name = "ROLE=CORE,...")]
    pub pin: Option<String>,
    /// Instrument master: a DhanHQ scrip-master CSV file, an http(s) URL
    /// (downloaded, cached for the day), or `sample` (embedded) [default:
    /// DhanHQ's published CSV when relaying DhanHQ; the sample in demo mode].
    #[arg(long, value_name = "FILE")]
    pub instruments: Option<String>,
    /// Credentials file (dotenv: DHAN_CLIENT_ID, DHAN_ACCESS_TOKEN, and for
    /// renewal DHAN_PIN, DHAN_TOTP_SECRET). Re-read when it changes and on
    /// SIGHUP; renewed tokens are written back to it [default: ./.env if
    /// present, else the environment].
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// DhanHQ REST base for token renewal [default: https://api.dhan.co].
    #[arg(long, value_name = "URL")]
    pub rest_url: Option<String>,
    /// DhanHQ auth base for token generation [default: https://auth.dhan.co].
    #[arg(long, value_name = "URL")]
    pub auth_url: Option<String>,
    /// API keys file (see `dhan-relay keys`) [default:
    /// $XDG_CONFIG_HOME/dhan-relay/keys.toml, else
    /// ~/.config/dhan-relay/keys.toml].
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// Serve without access control even on a non-loopback address.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Record every frame DhanHQ sends into DIR, one file per trading day
    /// (see docs/recording.md; `[record]` in the config file).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Busy-poll the DhanHQ sockets: the network thread never sleeps and
    /// uses a whole core (for a dedicated box with an isolated core; see
    /// README "CPU pinning"). Off by default.
    #[arg(long)]
    pub busy_poll: bool,
    /// Thread layout: `compact` runs the network and fanout loops on one
    /// thread, `spread` gives each its own; `auto` (default) is compact on
    /// 2 cores or fewer, spread above.
    #[arg(long, value_name = "LAYOUT")]
    pub threads: Option<crate::evloop::Threads>,
    /// Fanout shards in the spread layout: threads that each serve their
    /// share of the clients [default: one per core the network thread
    /// leaves, at most 8; always 1 in the compact layout].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub fanout_threads: Option<u16>,
}

/// Flags of `dhan-relay check-config`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// TOML config file to check.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Credentials file to check (as for `run`).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// API keys file to check (as for `run`).
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
}

impl RunArgs {
    fn flags(&self) -> Flags {
        Flags {
            config: self.config.clone(),
            listen: self.listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            feed_url: self.feed_url.clone(),
            feed_ca: self.feed_ca.clone(),
            log_level: self.log_level.clone(),
            demo_rate: self.demo_rate,
            pin: self.pin.clone(),
            instruments: self.instruments.clone(),
            env_file: self.env_file.clone(),
            rest_url: self.rest_url.clone(),
            auth_url: self.auth_url.clone(),
            keys_file: self.keys_file.clone(),
            insecure_no_auth: self.insecure_no_auth,
            record: self.record.clone(),
            busy_poll: self.busy_poll,
            threads: self.threads,
            fanout_threads: self.fanout_threads.map(usize::from),
        }
    }
}

/// Flags of `dhan-relay sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Serve wss:// with a self-signed certificate for localhost and
    /// 127.0.0.1 (or with --cert/--key).
    #[arg(long)]
    pub tls: bool,
    /// PEM certificate chain for wss:// (implies --tls).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for wss:// (implies --tls).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where to write the self-signed certificate (PEM) for clients to
    /// trust; default: a file in the temporary directory, named on stderr.
    #[arg(long, value_name = "FILE", requires = "tls", conflicts_with = "cert")]
    pub ca_out: Option<PathBuf>,
    /// Generated packets per second over all subscribed instruments.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Seed of the simulated prices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A token to refuse with disconnect 807 (repeatable).
    #[arg(long = "expired-token", value_name = "TOKEN")]
    pub expired_tokens: Vec<String>,
    /// Lifetime of tokens issued over REST (RenewToken, generateAccessToken),
    /// in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub token_lifetime: u64,
    /// An account that can generate tokens with PIN + TOTP over REST; the
    /// secret is base32 (repeatable).
    #[arg(long = "totp-account", value_name = "CLIENT_ID:PIN:SECRET",
          value_parser = |s: &str| Ok::<_, std::convert::Infallible>(SecretArg(s.to_owned())))]
    pub totp_accounts: Vec<SecretArg>,
    /// Accept only tokens the simulator issued (others get disconnect 807).
    #[arg(long)]
    pub strict_tokens: bool,
}

/// Flags of `dhan-relay replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Recordings, played one after another in this order.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Pace: the recorded spacing divided by N, or `max` (as fast as the
    /// slowest client reads; nothing dropped).
    #[arg(long, value_name = "N|max", default_value = "1")]
    pub speed: crate::sim::Speed,
    /// Replay only frames received at or after this India time of day.
    #[arg(long, value_name = "HH:MM", value_parser = crate::sim::replay::parse_hhmm)]
    pub from: Option<(u8, u8)>,
    /// Replay only frames received before this India time of day.
    #[arg(long, value_name = "HH:MM", value_parser = crate::sim::replay::parse_hhmm)]
    pub to: Option<(u8, u8)>,
    /// Start again from the first file after the last one ends.
    #[arg(long = "loop")]
    pub looped: bool,
}

/// A flag value that holds a credential: `Debug` does not show it, and a
/// malformed one is reported without it.
#[derive(Clone)]
pub struct SecretArg(pub String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl SimArgs {
    /// The simulator configuration these flags ask for, or why they do not
    /// make one (without repeating a PIN or secret).
    pub fn config(&self) -> Result<SimConfig, String> {
        let tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => SimTls::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ if self.tls => SimTls::SelfSigned,
            _ => SimTls::None,
        };
        let mut totp_accounts = Vec::with_capacity(self.totp_accounts.len());
        for (i, SecretArg(raw)) in self.totp_accounts.iter().enumerate() {
            let mut parts = raw.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(client_id), Some(pin), Some(secret))
                    if !client_id.is_empty() && !pin.is_empty() && !secret.is_empty() =>
                {
                    totp_accounts.push(SimTotpAccount {
                        client_id: client_id.to_owned(),
                        pin: pin.to_owned(),
                        secret_base32: secret.to_owned(),
                    });
                }
                _ => {
                    return Err(format!(
                        "--totp-account #{} is not CLIENT_ID:PIN:SECRET (the value is not shown: it holds a PIN and a secret)",
                        i + 1
                    ))
                }
            }
        }
        Ok(SimConfig {
            listen: self.listen,
            tls,
            ticks_per_sec: self.rate,
            seed: self.seed,
            expired_tokens: self.expired_tokens.clone(),
            accept_any_token: !self.strict_tokens,
            token_lifetime: Duration::from_secs(self.token_lifetime),
            totp_accounts,
            ..SimConfig::default()
        })
    }
}

/// Parses the process arguments and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sim(args)) => sim(&args),
        Some(Command::Replay(args)) => replay(&args),
        Some(Command::Run(args)) => run(&args),
        Some(Command::CheckConfig(args)) => check_config(&args),
        Some(Command::Keys(args)) => keys(&args),
        Some(Command::RecordInfo { file }) => record_info(&file),
        None => run(&cli.run),
    }
}

/// Reads the config file named by `flags` and builds the configuration
/// from it, the flags and the credential sources.
fn load_config(flags: &Flags) -> Result<RunConfig, String> {
    let file = match &flags.config {
        Some(path) => Some((
            path.clone(),
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let file = file.as_ref().map(|(p, t)| (p.as_path(), t.as_str()));
    RunConfig::build(flags, file, &CredentialSources::process())
}

/// `dhan-relay check-config`: 0 when `run` would accept the configuration
/// and credentials, 2 with the reason when not. Says what it found, never a
/// secret.
/// `record-info FILE`: the summary on stdout; a file that cannot be read
/// as a recording is exit 1 with a sentence naming it.
fn record_info(file: &std::path::Path) -> ExitCode {
    match crate::record::info(file) {
        Ok(info) => {
            print!("{info}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dhan-relay: record-info: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_config(args: &CheckArgs) -> ExitCode {
    let flags = Flags {
        config: args.config.clone(),
        env_file: args.env_file.clone(),
        keys_file: args.keys_file.clone(),
        ..Flags::default()
    };
    let config = match load_config(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dhan-relay: {e}");
            return ExitCode::from(2);
        }
    };
    for note in &config.credential_notes {
        println!("{note}");
    }
    if let Some(path) = &config.feed_ca {
        if let Err(e) = crate::upstream::load_ca_file(path) {
            eprintln!("dhan-relay: {e}");
            return ExitCode::from(2);
        }
    }
    match &config.feed {
        Feed::Demo { .. } => println!(
            "no DhanHQ credentials in any source: `run` would start in DEMO MODE (built-in simulator)"
        ),
        Feed::Live { url, account, origin } => {
            let token = account.credentials.access_token();
            let expiry = match crate::token::jwt::expiry(token) {
                Some(exp) => format!(
                    "expires {} ({})",
                    crate::instrument::date::ist_iso(exp),
                    if exp > crate::token::unix_now() { "valid" } else { "EXPIRED" }
                ),
                None if token.is_empty() => "none yet: generated from PIN + TOTP at start".into(),
                None => "expiry not readable (not a JWT)".into(),
            };
            println!(
                "credentials from the {origin}: client id set, access token {expiry}; renewal: {}",
                config.token.renew.as_str()
            );
            println!("feed: {}", Credentials::redacted_url(url));
        }
    }
    for l in &config.listen {
        if let Some(files) = &l.tls {
            if let Err(e) = crate::serve_tls::load_certified_key(files) {
                eprintln!("dhan-relay: listen {}: {e}", l.addr);
                return ExitCode::from(2);
            }
        }
    }
    let specs: Vec<_> = config.listen.iter().map(|l| (l.addr, l.auth)).collect();
    let access = match crate::auth::setup(
        config.auth,
        config.insecure_no_auth,
        &specs,
        &config.keys_file,
        config.key_limits.clone(),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dhan-relay: {e}");
            return ExitCode::from(2);
        }
    };
    if access.listeners.iter().any(|&on| on) {
        println!(
            "access control on: {} keys in {} ({})",
            access.watch.store().len(),
            config.keys_file.display(),
            access.watch.store().names().join(", ")
        );
    }
    let t = &config.trading;
    if t.enabled {
        println!(
            "trading ON{}: orders via {}, audit log {}, guards: max_order_value {:?}, max_quantity {:?}, price_band_pct {:?}, segments {}, products {}",
            if t.paper { " (paper, built-in simulator)" } else { "" },
            t.rest_url,
            t.audit_log.display(),
            t.guards.max_order_value,
            t.guards.max_quantity,
            t.guards.price_band_pct,
            t.guards.segments.join(","),
            t.guards.products.join(",")
        );
    } else {
        println!("trading off ([trading] enabled = false)");
    }
    let listen: Vec<String> = config
        .listen
        .iter()
        .zip(&access.listeners)
        .map(|(l, &keys)| {
            format!(
                "{}{}{}",
                l.addr,
                if l.tls.is_some() { " (TLS)" } else { "" },
                if keys { " (API keys)" } else { "" }
            )
        })
        .collect();
    println!("config OK: listen {}", listen.join(", "));
    ExitCode::SUCCESS
}

/// Exit codes: 0 clean stop, 1 the OS refused something, 2 bad flags or
/// configuration (clap uses 2 for bad flags too), 3 listen address in use.
fn run(args: &RunArgs) -> ExitCode {
    let config = match load_config(&args.flags()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dhan-relay: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(config.log_level);
    for note in &config.credential_notes {
        log::info!("{note}");
    }
    raise_fd_limit(config.fanout.max_clients);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C while shutting down exits at once.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop));
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let engine = match Engine::start(config.clone()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("dhan-relay: {e}");
            return ExitCode::from(match e {
                StartError::Bind(..) => 3,
                StartError::Config(_) => 2,
                StartError::Io(_) => 1,
            });
        }
    };
    announce(&engine, &config);
    if let Some(reload) = engine.reload_flag() {
        // `systemctl reload` (ExecReload) sends SIGHUP: re-read credentials.
        let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload);
    }
    // …and the TLS listeners' certificate files.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, engine.reload_tls());
    let notifier = sdnotify::Notifier::from_env();
    let watchdog = notifier.as_ref().and_then(|n| {
        ready_when_dialling(&engine, n);
        sdnotify::spawn_watchdog(n.clone(), sdnotify::all_beating(engine.heartbeats()))
    });
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    log::info!("shutting down: closing clients, disconnecting upstream");
    if let Some(n) = &notifier {
        n.stopping();
    }
    drop(watchdog);
    engine.shutdown();
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// Tells systemd the service is ready (`Type=notify`) once the listener is
/// up — it is, when the engine has started — and the first upstream
/// connection attempt was made (waited for up to two seconds).
fn ready_when_dialling(engine: &Engine, notifier: &sdnotify::Notifier) {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2)
        && engine
            .upstream_stats()
            .is_some_and(|s| s.connect_attempts.get() == 0)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    notifier.ready(Some(&format!("listening on {}", engine.addr())));
}

/// One line a person reads first, then the start-up summary in the log.
fn announce(engine: &Engine, config: &RunConfig) {
    let addr = engine.addr();
    let schemes = |tls: bool| {
        if tls {
            ("https", "wss")
        } else {
            ("http", "ws")
        }
    };
    let (http, ws) = schemes(engine.listeners()[0].1);
    match (&config.feed, engine.demo_feed_url()) {
        (Feed::Demo { rate }, Some(sim_url)) => println!(
            "dhan-relay: DEMO MODE (DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN not set): simulated prices from the built-in \
             simulator at {sim_url} ({rate} ticks/s){paper}. Open {http}://{addr}/  ·  GET {http}://{addr}/prices  ·  WebSocket {ws}://{addr}/ws",
            paper = if config.trading.enabled {
                ", PAPER trading against it (orders are simulated)"
            } else {
                ""
            }
        ),
        (Feed::Live { url, .. }, _) => println!(
            "dhan-relay: relaying {} on {http}://{addr}/  ·  GET /prices  ·  WebSocket {ws}://{addr}/ws",
            Credentials::redacted_url(url)
        ),
        _ => {}
    }
    for &(other, tls) in &engine.listeners()[1..] {
        let (http, ws) = schemes(tls);
        println!("dhan-relay: also on {http}://{other}/  ·  WebSocket {ws}://{other}/ws");
    }
    let addr: Vec<String> = engine
        .listeners()
        .iter()
        .map(|(a, tls)| format!("{a}{}", if *tls { " (TLS)" } else { "" }))
        .collect();
    let addr = addr.join(", ");
    let watch: Vec<String> = engine
        .watchlist()
        .iter()
        .map(|w| format!("{}={}", w.symbol, w.key))
        .collect();
    log::info!(
        "dhan-relay {} listening on {addr}; watchlist {}; limits: {} clients, {} subscriptions/client, {} B frames; upstream {} × {} instruments",
        env!("CARGO_PKG_VERSION"),
        watch.join(" "),
        config.fanout.max_clients,
        config.fanout.max_subscriptions_per_client,
        config.fanout.max_frame_bytes,
        config.upstream_connections,
        config.instruments_per_connection
    );
}

/// `dhan-relay keys …`: 0 when done; 2 for a bad name, scope or keys file,
/// a duplicate or an unknown name; 1 when the file cannot be written.
fn keys(args: &KeysArgs) -> ExitCode {
    let command = match &args.action {
        KeysAction::Add { name, scopes } => KeysCommand::Add {
            name: name.clone(),
            scopes: *scopes,
        },
        KeysAction::List => KeysCommand::List,
        KeysAction::Revoke { name } => KeysCommand::Revoke { name: name.clone() },
    };
    let result = crate::auth::cmd::keys_file(args.keys_file.as_deref()).and_then(|path| {
        crate::auth::cmd::run(
            &command,
            &path,
            std::time::SystemTime::now(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dhan-relay keys: {}", e.message());
            ExitCode::from(e.exit_code())
        }
    }
}

/// `dhan-relay sim`: start, say where, run until killed.
fn sim(args: &SimArgs) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dhan-relay sim: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = match Simulator::start(config) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("dhan-relay sim: cannot start on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    if let Some(pem) = sim.ca_pem() {
        let path = args.ca_out.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("dhan-relay-sim-{}.pem", sim.addr().port()))
        });
        if let Err(e) = std::fs::write(&path, pem) {
            eprintln!("dhan-relay sim: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        eprintln!(
            "dhan-relay sim: self-signed certificate for clients to trust: {}",
            path.display()
        );
    }
    eprintln!(
        "dhan-relay sim: REST (token renewal and generation; paper trading: funds, orders, positions) at {}",
        sim.rest_url()
    );
    eprintln!(
        "dhan-relay sim: order updates (paper trading) at {}",
        sim.order_update_url()
    );
    println!("{}", sim.feed_url());
    // Ctrl-C ends the process; the simulator needs no orderly stop.
    loop {
        std::thread::park();
    }
}

/// `dhan-relay replay`: check the recordings open, start the simulator
/// replaying them, say where, run until killed.
fn replay(args: &ReplayArgs) -> ExitCode {
    crate::logging::init(log::LevelFilter::Info);
    let source = crate::sim::replay::open_recordings(&args.files);
    if let Err(e) = source() {
        eprintln!("dhan-relay replay: cannot open the recording: {e}");
        return ExitCode::from(1);
    }
    let config = SimConfig {
        listen: args.listen,
        replay: Some(crate::sim::ReplayConfig {
            source,
            speed: args.speed,
            from: args.from,
            to: args.to,
            looped: args.looped,
            on_send: None,
        }),
        ..SimConfig::default()
    };
    let sim = match Simulator::start(config) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("dhan-relay replay: cannot start on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "dhan-relay replay: {} file(s) at speed {:?}; the clock starts at the first subscription",
        args.files.len(),
        args.speed
    );
    println!("{}", sim.feed_url());
    // Ctrl-C ends the process; the simulator needs no orderly stop.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn sim_args(args: &[&str]) -> Result<SimArgs, clap::Error> {
        let cli = Cli::try_parse_from(["dhan-relay", "sim"].iter().chain(args))?;
        match cli.command {
            Some(Command::Sim(a)) => Ok(a),
            other => panic!("sim expected, got {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["dhan-relay"])
            .unwrap()
            .command
            .is_none());
        let cli = Cli::try_parse_from([
            "dhan-relay",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--demo-rate",
            "5",
        ])
        .unwrap();
        let Some(Command::Run(args)) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.flags().listen, ["127.0.0.1:0"]);
        let cli = Cli::try_parse_from([
            "dhan-relay",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:2",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        let flags = cli.run.flags();
        assert_eq!(flags.listen, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(
            flags.tls_cert.as_deref(),
            Some(std::path::Path::new("c.pem"))
        );
        assert!(Cli::try_parse_from(["dhan-relay", "--tls-cert", "c.pem"]).is_err());
        assert_eq!(args.flags().demo_rate, Some(5));
        assert!(Cli::try_parse_from(["dhan-relay", "run", "--bogus"]).is_err());
        let cli = Cli::try_parse_from(["dhan-relay", "--instruments", "/data/master.csv"]).unwrap();
        assert_eq!(
            cli.run.flags().instruments.as_deref(),
            Some("/data/master.csv")
        );
    }

    #[test]
    fn sim_flags_become_a_config() {
        let cfg = sim_args(&[]).unwrap().config().unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.tls, SimTls::None);
        assert_eq!((cfg.ticks_per_sec, cfg.seed), (100, 1));
        assert!(cfg.accept_any_token && cfg.totp_accounts.is_empty());
        assert_eq!(cfg.token_lifetime, Duration::from_secs(86_400));

        let cfg = sim_args(&[
            "--listen",
            "0.0.0.0:8765",
            "--tls",
            "--rate",
            "5000",
            "--seed",
            "9",
            "--expired-token",
            "a",
            "--expired-token",
            "b",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:8765".parse().unwrap());
        assert_eq!(cfg.tls, SimTls::SelfSigned);
        assert_eq!((cfg.ticks_per_sec, cfg.seed), (5000, 9));
        assert_eq!(cfg.expired_tokens, ["a", "b"]);

        let cfg = sim_args(&["--cert", "c.pem", "--key", "k.pem"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(
            cfg.tls,
            SimTls::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
    }

    #[test]
    fn sim_token_flags_become_a_config() {
        let args = sim_args(&[
            "--token-lifetime",
            "120",
            "--strict-tokens",
            "--totp-account",
            "1100001:246810:JBSW Y3DP",
            "--totp-account",
            "1100002:1234:GEZD:GNBV",
        ])
        .unwrap();
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("246810") && !shown.contains("JBSW"),
            "{shown}"
        );
        let cfg = args.config().unwrap();
        assert!(!cfg.accept_any_token);
        assert_eq!(cfg.token_lifetime, Duration::from_secs(120));
        let accounts: Vec<_> = cfg
            .totp_accounts
            .iter()
            .map(|a| {
                (
                    a.client_id.as_str(),
                    a.pin.as_str(),
                    a.secret_base32.as_str(),
                )
            })
            .collect();
        assert_eq!(
            accounts,
            [
                ("1100001", "246810", "JBSW Y3DP"),
                ("1100002", "1234", "GEZD:GNBV")
            ]
        );

        for bad in ["1100001:246810", "1100001::JBSW", ":1:JBSW", "nothing"] {
            let err = sim_args(&["--totp-account", bad])
                .unwrap()
                .config()
                .unwrap_err();
            assert!(err.contains("#1") && !err.contains(bad), "{err}");
        }
        assert!(sim_args(&["--token-lifetime", "0"]).is_err());
        assert!(sim_args(&["--token-lifetime", "soon"]).is_err());
    }

    #[test]
    fn keys_and_auth_flags() {
        let cli = Cli::try_parse_from([
            "dhan-relay",
            "keys",
            "add",
            "bot",
            "--scopes",
            "read,trade",
            "--keys-file",
            "/tmp/k.toml",
        ])
        .unwrap();
        let Some(Command::Keys(k)) = cli.command else {
            panic!("keys expected")
        };
        assert_eq!(
            k.keys_file.as_deref(),
            Some(std::path::Path::new("/tmp/k.toml"))
        );
        assert!(
            matches!(k.action, KeysAction::Add { ref name, scopes } if name == "bot" && scopes.to_string() == "read,trade")
        );
        let e = Cli::try_parse_from(["dhan-relay", "keys", "add", "x", "--scopes", "write"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("valid scopes: read, trade, admin"), "{e}");
        assert!(Cli::try_parse_from(["dhan-relay", "keys", "add", "x"]).is_err());
        let cli =
            Cli::try_parse_from(["dhan-relay", "--keys-file", "/k.toml", "--insecure-no-auth"])
                .unwrap();
        let flags = cli.run.flags();
        assert_eq!(
            flags.keys_file.as_deref(),
            Some(std::path::Path::new("/k.toml"))
        );
        assert!(flags.insecure_no_auth);
    }

    #[test]
    fn inconsistent_sim_flags_are_refused() {
        assert!(sim_args(&["--cert", "c.pem"]).is_err());
        assert!(sim_args(&["--ca-out", "ca.pem"]).is_err());
        assert!(sim_args(&["--tls", "--cert", "c", "--key", "k", "--ca-out", "x"]).is_err());
        assert!(sim_args(&["--listen", "localhost"]).is_err());
    }
}
