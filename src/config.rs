//! Configuration: defaults, then the TOML file (`--config`), then flags, then
//! the credentials from the environment — validated into one [`RunConfig`]
//! with errors that name the key (and, for the file, the line).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde::Deserialize;
use toml::Spanned;

use crate::auth::{AuthMode, KeyLimits, KeyLimitsMap};
use crate::domain::{InstrumentKey, SecurityId, Segment};
use crate::fanout::FanoutConfig;
use crate::instrument::source::{Source, SourceConfig, DHAN_MASTER_URL};
use crate::instrument::watch::WatchSpec;
use crate::instrument::{Calendar, Holidays, TimeOfDay, WallClock};
pub use crate::serve_tls::TlsFiles;
use crate::token::sources::CredentialSources;
use crate::token::{Account, Origin, Renew, TokenConfig};
use crate::upstream::DHAN_FEED_URL;

/// Default listen address: loopback only; expose it on purpose.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Default aggregate tick rate of the built-in simulator in demo mode.
pub const DEFAULT_DEMO_RATE: u32 = 200;

/// Default time of the daily maintenance (India time): after DhanHQ
/// publishes the day's scrip master, before NSE's pre-open and MCX's open
/// at 09:00.
pub const DEFAULT_MAINTENANCE_AT: &str = "08:30";

/// The watchlist the replaced backend shipped, resolved through the
/// instrument master at start: NIFTY → IDX_I 13, SENSEX → IDX_I 51,
/// RELIANCE → NSE_EQ 2885, CRUDEOIL → the nearest unexpired MCX future
/// (rolled to the next one after expiry).
pub fn default_watchlist() -> Vec<WatchSpec> {
    ["NIFTY", "SENSEX", "RELIANCE", "CRUDEOIL"]
        .into_iter()
        .map(WatchSpec::by_symbol)
        .collect()
}

/// One client-facing listener: plain, or TLS with a certificate and key
/// (PEM files, reloaded on change).
#[derive(Clone, Debug, PartialEq)]
pub struct ListenSpec {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Certificate chain and key: serve HTTPS and WSS.
    pub tls: Option<TlsFiles>,
    /// The listener's auth setting, when given.
    pub auth: Option<AuthMode>,
}

impl ListenSpec {
    /// A plain listener on `addr`.
    pub fn plain(addr: SocketAddr) -> ListenSpec {
        ListenSpec {
            addr,
            tls: None,
            auth: None,
        }
    }
}

/// Where prices come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Feed {
    /// No credentials and no feed URL: the built-in simulator.
    Demo {
        /// Its aggregate tick rate.
        rate: u32,
    },
    /// A real (or separately run simulated) DhanHQ feed.
    Live {
        /// `wss://…` or `ws://…`.
        url: String,
        /// The account as loaded at start.
        account: Account,
        /// Where it came from.
        origin: Origin,
    },
}

/// Flags of `dhan-relay run` (all optional; the file and defaults fill in).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--listen ADDR` (repeatable; replaces the file's listeners).
    pub listen: Vec<String>,
    /// `--tls-cert FILE`: for the `--listen` listeners.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key FILE`: for the `--listen` listeners.
    pub tls_key: Option<PathBuf>,
    /// `--feed-url URL`.
    pub feed_url: Option<String>,
    /// `--feed-ca FILE`.
    pub feed_ca: Option<PathBuf>,
    /// `--log-level LEVEL`.
    pub log_level: Option<String>,
    /// `--demo-rate N`.
    pub demo_rate: Option<u32>,
    /// `--pin net=N,book=N,fanout=N`.
    pub pin: Option<String>,
    /// `--instruments FILE|URL|sample`.
    pub instruments: Option<String>,
    /// `--env-file FILE`: the credentials file.
    pub env_file: Option<PathBuf>,
    /// `--rest-url URL`: DhanHQ's REST base (token renewal).
    pub rest_url: Option<String>,
    /// `--auth-url URL`: DhanHQ's auth base (token generation).
    pub auth_url: Option<String>,
    /// `--keys-file FILE`: the API keys file.
    pub keys_file: Option<PathBuf>,
    /// `--insecure-no-auth`: no access control, whatever the addresses.
    pub insecure_no_auth: bool,
    /// `--record DIR`: record every upstream frame into DIR.
    pub record: Option<PathBuf>,
    /// `--busy-poll`.
    pub busy_poll: bool,
    /// `--threads auto|compact|spread`.
    pub threads: Option<crate::evloop::Threads>,
    /// `--fanout-threads N`.
    pub fanout_threads: Option<usize>,
}

/// Cores for each thread role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pinning {
    /// Network thread.
    pub net: Option<usize>,
    /// Book thread.
    pub book: Option<usize>,
    /// Fanout thread.
    pub fanout: Option<usize>,
}

/// Everything `run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Client-facing listeners (at least one; addresses distinct).
    pub listen: Vec<ListenSpec>,
    /// Demo or live.
    pub feed: Feed,
    /// Extra CA for the feed's TLS.
    pub feed_ca: Option<PathBuf>,
    /// The 20-level depth feed's URL (`depth_url`); `None`: derived from
    /// the feed URL ([`crate::upstream::derive_depth_url`]).
    pub depth_url: Option<String>,
    /// Log level.
    pub log_level: LevelFilter,
    /// Fanout and listener limits.
    pub fanout: FanoutConfig,
    /// Upstream connections to open at most.
    pub upstream_connections: usize,
    /// Instruments per upstream connection at most.
    pub instruments_per_connection: usize,
    /// Dead-socket detection.
    pub silence_timeout: Duration,
    /// CPU pinning.
    pub pin: Pinning,
    /// `busy_poll` / `--busy-poll`: the network thread polls its sockets
    /// without sleeping (a core of its own).
    pub busy_poll: bool,
    /// `threads` / `--threads`: the network and fanout loops on one thread
    /// or on two ([`crate::evloop::Threads`]).
    pub threads: crate::evloop::Threads,
    /// `fanout_threads` / `--fanout-threads`: fanout shards in the spread
    /// layout (`None`: auto, see [`crate::evloop::Threads::fanout_shards`]).
    pub fanout_threads: Option<usize>,
    /// The watchlist as configured; the engine resolves it against the
    /// instrument master at start.
    pub watch: Vec<WatchSpec>,
    /// Where the instrument master comes from.
    pub instruments: SourceConfig,
    /// When the daily maintenance runs (India time): fresh master, expiry
    /// roll, expired contracts dropped, day summary.
    pub maintenance_at: TimeOfDay,
    /// Market hours and the holiday list.
    pub calendar: Calendar,
    /// The wall clock for calendar decisions (today's date, expiry rolls).
    pub clock: WallClock,
    /// The token's life: credentials file, renewal.
    pub token: TokenConfig,
    /// What loading the credentials found worth a log line (never a value).
    pub credential_notes: Vec<String>,
    /// The API keys file (`--keys-file`, `keys_file`, else
    /// [`crate::auth::keys::default_keys_file`], else `./dhan-relay-keys.toml`).
    pub keys_file: PathBuf,
    /// `auth = "auto" | "on" | "off"` (see [`crate::auth::resolve`]).
    pub auth: AuthMode,
    /// `--insecure-no-auth`.
    pub insecure_no_auth: bool,
    /// `[limits.keys.NAME]`: per-key limits.
    pub key_limits: KeyLimitsMap,
    /// `[trading]`: off unless enabled (on, on paper, in demo mode).
    pub trading: crate::trading::TradingConfig,
    /// `[[chains]]`: option chains kept subscribed around the money, as
    /// configured; the engine builds their ladders against the master at
    /// start ([`crate::chain::config::resolve_all`]).
    pub chains: Vec<crate::chain::config::ChainSpec>,
    /// `chain_interval_ms`: chain messages at most this often (50..=5000
    /// ms, default 250).
    pub chain_interval: Duration,
    /// `chain_rate`: the risk-free rate for implied volatility and greeks
    /// (a yearly fraction, default 0.065).
    pub chain_rate: f64,
    /// `[record]` / `--record DIR`: where to record every frame DhanHQ
    /// sends (`None`: not recording).
    pub record: Option<RecordSettings>,
}

/// Recording settings (`[record]`, `--record DIR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSettings {
    /// One file per trading day goes here.
    pub dir: PathBuf,
    /// Day files older than this many days are deleted (0: keep all).
    pub keep_days: u32,
    /// Test injection: the recorder's writes fail (`ENOSPC`) past this
    /// many bytes ([`crate::record::RecordConfig::fail_after_bytes`]).
    #[doc(hidden)]
    pub fail_after_bytes: Option<u64>,
}

/// Days of recordings kept unless `[record] keep_days` says otherwise.
pub const DEFAULT_KEEP_DAYS: u32 = 7;

/// `[record]` as written in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordTable {
    dir: Option<PathBuf>,
    keep_days: Option<u32>,
}

impl RecordTable {
    /// The settings, with `--record DIR` taking the directory's place; no
    /// directory anywhere means no recording (a `keep_days` alone is an
    /// error: it would silently record nothing).
    fn settings(self, flag: Option<&PathBuf>) -> Result<Option<RecordSettings>, String> {
        let keep_days = self.keep_days.unwrap_or(DEFAULT_KEEP_DAYS);
        if keep_days > crate::record::files::MAX_KEEP_DAYS {
            return Err(format!(
                "record.keep_days must be at most {} (0 keeps every day), not {keep_days}",
                crate::record::files::MAX_KEEP_DAYS
            ));
        }
        match flag.cloned().or(self.dir) {
            Some(dir) if dir.as_os_str().is_empty() => {
                Err("record.dir (or --record) must name a directory".into())
            }
            Some(dir) => Ok(Some(RecordSettings {
                dir,
                keep_days,
                fail_after_bytes: None,
            })),
            None if self.keep_days.is_some() => Err(
                "record.keep_days is set but record.dir is not: say where to record (record.dir or --record DIR)"
                    .into(),
            ),
            None => Ok(None),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// `listen = "ADDR"` or `[[listen]]` tables.
    listen: Option<Spanned<toml::Value>>,
    feed_url: Option<String>,
    depth_url: Option<String>,
    feed_ca: Option<PathBuf>,
    log_level: Option<Spanned<String>>,
    demo_rate: Option<u32>,
    allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    watchlist: Option<Vec<WatchEntry>>,
    limits: Option<Limits>,
    pin: Option<Pinning>,
    busy_poll: Option<bool>,
    threads: Option<crate::evloop::Threads>,
    fanout_threads: Option<toml::Value>,
    instruments: Option<String>,
    instruments_cache: Option<PathBuf>,
    maintenance_at: Option<Spanned<String>>,
    /// The old name of `maintenance_at`.
    roll_at: Option<Spanned<String>>,
    holidays: Option<PathBuf>,
    rest_url: Option<String>,
    auth_url: Option<String>,
    credentials: Option<CredentialsTable>,
    keys_file: Option<PathBuf>,
    auth: Option<Spanned<String>>,
    trading: Option<crate::trading::TradingTable>,
    chains: Option<Vec<crate::chain::config::ChainTable>>,
    chain_interval_ms: Option<Spanned<u64>>,
    chain_rate: Option<Spanned<f64>>,
    record: Option<RecordTable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsTable {
    file: Option<PathBuf>,
    renew: Option<Spanned<String>>,
    renew_before_secs: Option<u64>,
}

/// One `[[listen]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenTable {
    addr: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    auth: Option<AuthMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchEntry {
    symbol: Spanned<String>,
    exchange_segment: Option<Spanned<String>>,
    security_id: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_clients: Option<usize>,
    max_subscriptions_per_client: Option<usize>,
    max_instruments_per_message: Option<usize>,
    max_frame_bytes: Option<usize>,
    client_queue_bytes: Option<usize>,
    slow_client_timeout_ms: Option<u64>,
    client_send_buffer: Option<usize>,
    keep_alive_idle_ms: Option<u64>,
    keep_alive_requests: Option<u32>,
    max_messages_per_sec: Option<u32>,
    unsubscribe_grace_ms: Option<u64>,
    upstream_connections: Option<usize>,
    instruments_per_connection: Option<usize>,
    silence_timeout_ms: Option<u64>,
    keys: Option<BTreeMap<String, KeyLimits>>,
}

/// Line number (1-based) of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn parse_log_level(s: &str) -> Result<LevelFilter, String> {
    s.parse::<LevelFilter>()
        .map_err(|_| format!("log level '{s}' is not one of error, warn, info, debug, trace, off"))
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("listen address '{s}' is not IP:PORT (e.g. 127.0.0.1:8000)"))
}

/// Certificate and key given together, or neither.
fn tls_pair(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err("tls_cert is given without tls_key".into()),
        (None, Some(_)) => Err("tls_key is given without tls_cert".into()),
    }
}

/// The listeners: `--listen` flags (with `--tls-cert`/`--tls-key`) replace
/// the file's `listen` (a string, or `[[listen]]` tables); the default is
/// one plain listener on [`DEFAULT_LISTEN`].
fn listeners(
    flags: &Flags,
    file: Option<&Spanned<toml::Value>>,
    at: &dyn Fn(usize) -> String,
) -> Result<Vec<ListenSpec>, String> {
    let flag_tls = tls_pair(flags.tls_cert.clone(), flags.tls_key.clone())
        .map_err(|e| format!("--{}", e.replace('_', "-").replacen(" tls-", " --tls-", 1)))?;
    let mut out = Vec::new();
    if !flags.listen.is_empty() {
        for l in &flags.listen {
            out.push(ListenSpec {
                addr: parse_listen(l).map_err(|e| format!("--listen: {e}"))?,
                tls: flag_tls.clone(),
                auth: None,
            });
        }
    } else if let Some(v) = file {
        let where_ = at(v.span().start);
        match v.get_ref() {
            toml::Value::String(s) => out.push(ListenSpec::plain(
                parse_listen(s).map_err(|e| format!("{where_}: listen: {e}"))?,
            )),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let t: ListenTable = item.clone().try_into().map_err(|e| {
                        format!("{where_}: listen #{}: {}", i + 1, e.to_string().trim_end())
                    })?;
                    let addr = parse_listen(&t.addr)
                        .map_err(|e| format!("{where_}: listen #{}: {e}", i + 1))?;
                    let tls = tls_pair(t.tls_cert, t.tls_key)
                        .map_err(|e| format!("{where_}: listen #{} ({addr}): {e}", i + 1))?;
                    out.push(ListenSpec {
                        addr,
                        tls,
                        auth: t.auth,
                    });
                }
                if out.is_empty() {
                    return Err(format!("{where_}: listen: no listener given"));
                }
            }
            _ => {
                return Err(format!(
                    "{where_}: listen: expected \"IP:PORT\" or [[listen]] tables with addr"
                ))
            }
        }
        if flag_tls.is_some() {
            return Err(
                "--tls-cert/--tls-key apply to listeners given with --listen; the config file's \
                 listeners take tls_cert/tls_key"
                    .into(),
            );
        }
    } else {
        out.push(ListenSpec {
            addr: DEFAULT_LISTEN.parse().expect("valid default"),
            tls: flag_tls,
            auth: None,
        });
    }
    for (i, l) in out.iter().enumerate() {
        if l.addr.port() != 0 && out[..i].iter().any(|o| o.addr == l.addr) {
            return Err(format!("listen: {} is given twice", l.addr));
        }
    }
    Ok(out)
}

/// `net=2,book=3,fanout=4`.
pub fn parse_pin(s: &str) -> Result<Pinning, String> {
    let mut pin = Pinning::default();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (role, core) = part
            .split_once('=')
            .ok_or_else(|| format!("--pin: '{part}' is not ROLE=CORE"))?;
        let core: usize = core
            .trim()
            .parse()
            .map_err(|_| format!("--pin: core '{core}' is not a number"))?;
        match role.trim() {
            "net" => pin.net = Some(core),
            "book" => pin.book = Some(core),
            "fanout" => pin.fanout = Some(core),
            other => {
                return Err(format!(
                    "--pin: unknown role '{other}' (net, book or fanout)"
                ))
            }
        }
    }
    Ok(pin)
}

impl RunConfig {
    /// Builds the configuration from flags, the config file's text (with its
    /// path, for messages) and the credential sources (a configured
    /// credentials file wins over them).
    pub fn build(
        flags: &Flags,
        file: Option<(&Path, &str)>,
        sources: &CredentialSources,
    ) -> Result<RunConfig, String> {
        let (fc, text, path) = match file {
            Some((path, text)) => {
                let fc: FileConfig = toml::from_str(text).map_err(|e| {
                    format!("config {}: {}", path.display(), e.to_string().trim_end())
                })?;
                (fc, text, path.display().to_string())
            }
            None => (FileConfig::default(), "", String::new()),
        };
        let at = |offset: usize| format!("config {path}, line {}", line_of(text, offset));

        let listen = listeners(flags, fc.listen.as_ref(), &at)?;
        let log_level = match (&flags.log_level, &fc.log_level) {
            (Some(l), _) => parse_log_level(l).map_err(|e| format!("--log-level: {e}"))?,
            (None, Some(l)) => parse_log_level(l.get_ref())
                .map_err(|e| format!("{}: log_level: {e}", at(l.span().start)))?,
            (None, None) => LevelFilter::Info,
        };
        let pin = match (&flags.pin, fc.pin) {
            (Some(p), _) => parse_pin(p)?,
            (None, Some(p)) => p,
            (None, None) => Pinning::default(),
        };
        let feed_url = flags.feed_url.clone().or(fc.feed_url);
        let table = fc.credentials.unwrap_or_default();
        let renew = match &table.renew {
            Some(r) => r
                .get_ref()
                .parse::<Renew>()
                .map_err(|e| format!("{}: credentials.renew: {e}", at(r.span().start)))?,
            None => Renew::None,
        };
        let token = TokenConfig {
            file: flags.env_file.clone().or(table.file),
            renew,
            renew_before: table
                .renew_before_secs
                .map_or(crate::token::DEFAULT_RENEW_BEFORE, Duration::from_secs),
            rest_url: flags
                .rest_url
                .clone()
                .or(fc.rest_url)
                .unwrap_or_else(|| crate::token::DHAN_REST_URL.to_string()),
            auth_url: flags
                .auth_url
                .clone()
                .or(fc.auth_url)
                .unwrap_or_else(|| crate::token::DHAN_AUTH_URL.to_string()),
        };
        let mut credential_notes = Vec::new();
        let feed = match (
            feed_url,
            sources.load(token.file.as_deref(), &mut credential_notes)?,
        ) {
            (url, Some((account, origin))) => {
                check_renewal(&token, &account, &origin)?;
                Feed::Live {
                    url: url.unwrap_or_else(|| DHAN_FEED_URL.to_string()),
                    account,
                    origin,
                }
            }
            (Some(url), None) => {
                return Err(format!(
                    "a feed URL ({url}) is set but no credentials are: set DHAN_CLIENT_ID and \
                     DHAN_ACCESS_TOKEN (environment, .env or --env-file), or drop the feed URL to \
                     run the built-in simulator"
                ))
            }
            (None, None) => Feed::Demo {
                rate: flags
                    .demo_rate
                    .or(fc.demo_rate)
                    .unwrap_or(DEFAULT_DEMO_RATE),
            },
        };
        let watch = match fc.watchlist {
            None => default_watchlist(),
            Some(entries) => entries
                .into_iter()
                .map(|e| watch_spec(e, &at, &|o| line_of(text, o)))
                .collect::<Result<Vec<_>, String>>()?,
        };
        let chains_given = fc.chains.is_some();
        let mut chains = fc
            .chains
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.validate(i + 1, &at, &|o| line_of(text, o)))
            .collect::<Result<Vec<_>, String>>()?;
        let chain_interval = match &fc.chain_interval_ms {
            Some(v) if !crate::chain::config::CHAIN_INTERVAL_MS.contains(v.get_ref()) => {
                return Err(format!(
                    "{}: chain_interval_ms must be 50..=5000, not {}",
                    at(v.span().start),
                    v.get_ref()
                ))
            }
            Some(v) => Duration::from_millis(*v.get_ref()),
            None => Duration::from_millis(crate::chain::config::DEFAULT_CHAIN_INTERVAL_MS),
        };
        let chain_rate = match &fc.chain_rate {
            Some(v) if !(-0.1..=0.5).contains(v.get_ref()) => {
                return Err(format!(
                    "{}: chain_rate is a yearly rate as a fraction (0.065 for 6.5 %), -0.1..=0.5, not {}",
                    at(v.span().start),
                    v.get_ref()
                ))
            }
            Some(v) => *v.get_ref(),
            None => crate::chain::config::DEFAULT_CHAIN_RATE,
        };
        let demo = matches!(feed, Feed::Demo { .. });
        if demo && !chains_given {
            // A newcomer sees a live chain: NIFTY around the money (skipped
            // at start if the upstream budget has no room for it).
            chains.push(crate::chain::config::ChainSpec::new("NIFTY"));
        }
        let trading = fc
            .trading
            .unwrap_or_default()
            .into_config(&token.rest_url, demo)
            .map_err(|e| format!("config {path}: {e}"))?;
        let record = fc
            .record
            .unwrap_or_default()
            .settings(flags.record.as_ref())
            .map_err(|e| format!("config {path}: {e}"))?;
        let source = match (&flags.instruments, &fc.instruments) {
            (Some(s), _) | (None, Some(s)) => Source::parse(s),
            // Demo mode never touches the network.
            (None, None) if demo => Source::Sample,
            (None, None) => match &feed {
                // DhanHQ's feed: DhanHQ's master. Another feed (a simulator,
                // a test) gets the sample unless told otherwise.
                Feed::Live { url, .. } if url.starts_with(DHAN_FEED_URL) => {
                    Source::Url(DHAN_MASTER_URL.to_string())
                }
                _ => Source::Sample,
            },
        };
        let instruments = SourceConfig {
            cache_dir: fc.instruments_cache.clone(),
            ..SourceConfig::new(source)
        };
        let maintenance_at = match (&fc.maintenance_at, &fc.roll_at) {
            (Some(_), Some(r)) => {
                return Err(format!(
                    "{}: roll_at is the old name of maintenance_at; give only maintenance_at",
                    at(r.span().start)
                ))
            }
            (Some(r), None) | (None, Some(r)) => {
                let name = if fc.maintenance_at.is_some() {
                    "maintenance_at"
                } else {
                    "roll_at"
                };
                r.get_ref()
                    .parse::<TimeOfDay>()
                    .map_err(|e| format!("{}: {name}: {e}", at(r.span().start)))?
            }
            (None, None) => DEFAULT_MAINTENANCE_AT.parse().expect("valid default"),
        };
        let calendar = match &fc.holidays {
            Some(path) => Calendar::new(Holidays::load(path)?),
            None => Calendar::default(),
        };
        let auth = match &fc.auth {
            Some(a) => a
                .get_ref()
                .parse::<AuthMode>()
                .map_err(|e| format!("{}: {e}", at(a.span().start)))?,
            None => AuthMode::Auto,
        };
        let keys_file = flags
            .keys_file
            .clone()
            .or(fc.keys_file)
            .or_else(crate::auth::keys::default_keys_file)
            .unwrap_or_else(|| PathBuf::from("dhan-relay-keys.toml"));
        let mut limits = fc.limits.unwrap_or_default();
        let key_limits = KeyLimitsMap::new(limits.keys.take().unwrap_or_default())?;
        let d = FanoutConfig::default();
        let positive = |name: &str, v: Option<usize>, default: usize| -> Result<usize, String> {
            match v {
                Some(0) => Err(format!("limits.{name} must be at least 1")),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        let upstream_connections =
            positive("upstream_connections", limits.upstream_connections, 5)?;
        if upstream_connections > crate::upstream::MAX_SLOTS {
            return Err(format!(
                "limits.upstream_connections is {upstream_connections}; DhanHQ allows at most {}",
                crate::upstream::MAX_SLOTS
            ));
        }
        let instruments_per_connection = positive(
            "instruments_per_connection",
            limits.instruments_per_connection,
            5000,
        )?;
        let fanout = FanoutConfig {
            max_clients: positive("max_clients", limits.max_clients, d.max_clients)?,
            max_subscriptions_per_client: positive(
                "max_subscriptions_per_client",
                limits.max_subscriptions_per_client,
                d.max_subscriptions_per_client,
            )?,
            max_instruments_per_message: positive(
                "max_instruments_per_message",
                limits.max_instruments_per_message,
                d.max_instruments_per_message,
            )?,
            max_frame_bytes: positive(
                "max_frame_bytes",
                limits.max_frame_bytes,
                d.max_frame_bytes,
            )?,
            client_queue_bytes: positive(
                "client_queue_bytes",
                limits.client_queue_bytes,
                d.client_queue_bytes,
            )?
            .max(4096),
            slow_client_timeout: limits
                .slow_client_timeout_ms
                .map_or(d.slow_client_timeout, Duration::from_millis),
            client_send_buffer: limits.client_send_buffer.unwrap_or(d.client_send_buffer),
            keep_alive_idle: limits
                .keep_alive_idle_ms
                .map_or(d.keep_alive_idle, Duration::from_millis),
            keep_alive_requests: limits
                .keep_alive_requests
                .unwrap_or(d.keep_alive_requests)
                .max(1),
            upstream_capacity: upstream_connections * instruments_per_connection,
            max_messages_per_sec: limits
                .max_messages_per_sec
                .unwrap_or(d.max_messages_per_sec)
                .max(1),
            unsubscribe_grace: limits
                .unsubscribe_grace_ms
                .map_or(d.unsubscribe_grace, Duration::from_millis),
            allowed_origins: fc.allowed_origins.unwrap_or_default(),
            allowed_hosts: fc.allowed_hosts.unwrap_or_default(),
            demo,
            core: pin.fanout,
            ..d
        };
        Ok(RunConfig {
            listen,
            feed,
            feed_ca: flags.feed_ca.clone().or(fc.feed_ca),
            depth_url: fc.depth_url,
            log_level,
            fanout,
            upstream_connections,
            instruments_per_connection,
            silence_timeout: limits
                .silence_timeout_ms
                .map_or(Duration::from_secs(30), Duration::from_millis),
            pin,
            busy_poll: flags.busy_poll || fc.busy_poll.unwrap_or(false),
            threads: flags.threads.or(fc.threads).unwrap_or_default(),
            fanout_threads: match flags.fanout_threads {
                Some(n) => fanout_threads(&toml::Value::Integer(n as i64))?,
                None => match &fc.fanout_threads {
                    Some(v) => fanout_threads(v)?,
                    None => None,
                },
            },
            watch,
            instruments,
            maintenance_at,
            calendar,
            clock: WallClock::system(),
            token,
            credential_notes,
            keys_file,
            auth,
            insecure_no_auth: flags.insecure_no_auth,
            key_limits,
            trading,
            chains,
            chain_interval,
            chain_rate,
            record,
        })
    }
}

/// `fanout_threads`: `"auto"` (`None`) or 1 to 64 shards.
fn fanout_threads(v: &toml::Value) -> Result<Option<usize>, String> {
    match v {
        toml::Value::String(s) if s == "auto" => Ok(None),
        toml::Value::Integer(n) if (1..=64).contains(n) => Ok(Some(*n as usize)),
        other => {
            let shown = match other {
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::String(s) => format!("\"{s}\""),
                v => format!("a {}", v.type_str()),
            };
            Err(format!(
                "fanout_threads: {shown} is not \"auto\" or a count from 1 to 64"
            ))
        }
    }
}

/// The renewal method can work with what the account holds.
fn check_renewal(token: &TokenConfig, account: &Account, origin: &Origin) -> Result<(), String> {
    let has_token = !account.credentials.access_token().is_empty();
    match token.renew {
        Renew::Totp if account.totp().is_none() => Err(format!(
            "credentials.renew = \"totp\" needs DHAN_PIN and DHAN_TOTP_SECRET (from the {origin})"
        )),
        Renew::Dhan | Renew::None if !has_token => Err(format!(
            "no access token (from the {origin}): set DHAN_ACCESS_TOKEN, or set credentials.renew = \"totp\" to generate one from DHAN_PIN and DHAN_TOTP_SECRET"
        )),
        _ => Ok(()),
    }
}

/// One `[[watchlist]]` entry: `symbol` alone (resolved through the master)
/// or with both `exchange_segment` and `security_id`.
fn watch_spec(
    e: WatchEntry,
    at: &dyn Fn(usize) -> String,
    line_of: &dyn Fn(usize) -> usize,
) -> Result<WatchSpec, String> {
    let symbol = e.symbol.get_ref().trim().to_string();
    if symbol.is_empty() {
        return Err(format!(
            "{}: watchlist: symbol is empty",
            at(e.symbol.span().start)
        ));
    }
    let line = Some(line_of(e.symbol.span().start));
    let (segment, id) = match (e.exchange_segment, e.security_id) {
        (None, None) => {
            return Ok(WatchSpec {
                line,
                ..WatchSpec::by_symbol(&symbol)
            })
        }
        (Some(seg), Some(id)) => (seg, id),
        (Some(seg), None) => {
            return Err(format!(
                "{}: watchlist '{symbol}': exchange_segment without security_id (give both, or neither to resolve the symbol)",
                at(seg.span().start)
            ))
        }
        (None, Some(id)) => {
            return Err(format!(
                "{}: watchlist '{symbol}': security_id without exchange_segment (give both, or neither to resolve the symbol)",
                at(id.span().start)
            ))
        }
    };
    let parsed: Segment = segment.get_ref().parse().map_err(|_| {
        format!(
            "{}: watchlist '{symbol}': unknown exchange_segment '{}'",
            at(segment.span().start),
            segment.get_ref()
        )
    })?;
    let id_text = match id.get_ref() {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    };
    let sid: SecurityId = id_text.parse().map_err(|err| {
        format!(
            "{}: watchlist '{symbol}': security_id '{id_text}': {err}",
            at(id.span().start)
        )
    })?;
    Ok(WatchSpec {
        line,
        ..WatchSpec::by_key(
            &symbol,
            InstrumentKey {
                segment: parsed,
                security_id: sid,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(flags: &Flags, file: Option<&str>) -> Result<RunConfig, String> {
        RunConfig::build(
            flags,
            file.map(|t| (Path::new("relay.toml"), t)),
            &CredentialSources::none(),
        )
    }

    #[test]
    fn defaults_are_demo_on_loopback() {
        let c = build(&Flags::default(), None).unwrap();
        assert_eq!(
            c.listen,
            [ListenSpec::plain("127.0.0.1:8000".parse().unwrap())]
        );
        assert_eq!(
            c.feed,
            Feed::Demo {
                rate: DEFAULT_DEMO_RATE
            }
        );
        assert_eq!(c.watch, default_watchlist());
        assert_eq!(
            c.watch
                .iter()
                .map(|w| w.symbol.as_str())
                .collect::<Vec<_>>(),
            ["NIFTY", "SENSEX", "RELIANCE", "CRUDEOIL"]
        );
        assert_eq!(c.fanout.upstream_capacity, 25_000, "5 connections x 5,000");
        assert_eq!(c.instruments.source, Source::Sample, "demo: no network");
        assert_eq!(c.maintenance_at.to_string(), DEFAULT_MAINTENANCE_AT);
        assert!(c.fanout.demo);
        assert_eq!(c.log_level, LevelFilter::Info);
    }

    #[test]
    fn credentials_make_it_live_and_a_url_alone_is_an_error() {
        let live = CredentialSources::none()
            .var("DHAN_CLIENT_ID", "a")
            .var("DHAN_ACCESS_TOKEN", "b");
        let c = RunConfig::build(&Flags::default(), None, &live).unwrap();
        assert!(matches!(&c.feed, Feed::Live { url, .. } if url == DHAN_FEED_URL));
        assert_eq!(
            c.instruments.source,
            Source::Url(DHAN_MASTER_URL.into()),
            "live on DhanHQ: DhanHQ's master"
        );
        let flags = Flags {
            feed_url: Some("ws://127.0.0.1:9".into()),
            ..Flags::default()
        };
        let e = build(&flags, None).unwrap_err();
        assert!(e.contains("DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN"), "{e}");
        let totp = "[credentials]\nrenew = \"totp\"\n";
        let e = RunConfig::build(&Flags::default(), Some((Path::new("r.toml"), totp)), &live)
            .unwrap_err();
        assert!(
            e.contains("needs DHAN_PIN and DHAN_TOTP_SECRET (from the environment)"),
            "{e}"
        );
        let bad = "[credentials]\nrenew = \"weekly\"\n";
        let e = build(&Flags::default(), Some(bad)).unwrap_err();
        assert!(e.contains("line 2: credentials.renew: 'weekly'"), "{e}");
        let generated = live
            .clone()
            .var("DHAN_PIN", "1")
            .var("DHAN_TOTP_SECRET", "JBSWY3DP");
        let c = RunConfig::build(
            &Flags::default(),
            Some((Path::new("r.toml"), totp)),
            &generated,
        )
        .unwrap();
        assert_eq!(c.token.renew, Renew::Totp);
        assert_eq!(c.token.rest_url, "https://api.dhan.co");
    }

    #[test]
    fn the_example_file_parses_and_flags_win() {
        let text = include_str!("../dhan-relay.example.toml");
        let flags = Flags {
            listen: vec!["127.0.0.1:9999".into()],
            ..Flags::default()
        };
        let c = build(&flags, Some(text)).unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].addr.port(), 9999, "flag beats file");
        assert_eq!(c.listen[0].tls, None);
        let c = build(&Flags::default(), Some(text)).unwrap();
        assert_eq!(c.listen[0].addr.to_string(), "127.0.0.1:8000");
        assert!(c.watch.iter().any(|w| w.symbol == "NIFTY"));
        let crude = c.watch.iter().find(|w| w.symbol == "CRUDEOIL").unwrap();
        assert_eq!(crude.key, None, "resolved through the master");
        let sensex = c.watch.iter().find(|w| w.symbol == "SENSEX").unwrap();
        assert_eq!(sensex.key, Some(InstrumentKey::new(Segment::IdxI, 51)));
        assert_eq!(c.fanout.max_clients, 10_000);
    }

    #[test]
    fn chains_tables_validate_with_the_line() {
        use crate::chain::config::ChainSpec;
        // Demo mode shows a NIFTY chain unless `[[chains]]` (or
        // `chains = []`) says otherwise.
        let c = build(&Flags::default(), None).unwrap();
        assert_eq!(c.chains, vec![ChainSpec::new("NIFTY")]);
        let c = build(&Flags::default(), Some("chains = []\n")).unwrap();
        assert!(c.chains.is_empty());
        assert_eq!(c.chain_interval, Duration::from_millis(250));
        assert_eq!(c.chain_rate, 0.065);
        // The example's chain block, uncommented.
        let example = include_str!("../dhan-relay.example.toml");
        let from = example.find("# chain_interval_ms").unwrap();
        let to = example.find("# Subscribed at start").unwrap();
        let block: String = example[from..to]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("{}{block}\n{}", &example[..from], &example[to..]);
        let c = build(&Flags::default(), Some(&text)).unwrap();
        assert_eq!(c.chains.len(), 2, "{:?}", c.chains);
        assert_eq!(c.chains[0].underlying, "NIFTY");
        assert_eq!(c.chains[0].strikes, 10);
        assert_eq!(c.chains[1].strikes, 5);
        assert_eq!(
            c.chains[1].expiry,
            crate::chain::ladder::ExpiryPick::Monthly
        );
        assert!(c.chains[1].line > c.chains[0].line);
        let c = build(
            &Flags::default(),
            Some("chain_interval_ms = 1000\nchain_rate = 0.07\n[[chains]]\nunderlying = \"banknifty\"\n"),
        )
        .unwrap();
        assert_eq!(c.chain_interval, Duration::from_secs(1));
        assert_eq!(c.chain_rate, 0.07);
        assert_eq!(
            c.chains,
            vec![ChainSpec {
                line: Some(4),
                ..ChainSpec::new("BANKNIFTY")
            }]
        );
        for (text, want) in [
            (
                "[[chains]]\nunderlying = \"NIFTY\"\n\n[[chains]]\nunderlying = \"SENSEX\"\nstrikes = 60\n",
                "line 6: chains #2 (SENSEX): strikes must be 1..=50",
            ),
            ("chain_interval_ms = 10\n", "line 1: chain_interval_ms must be 50..=5000"),
            ("chain_rate = 6.5\n", "line 1: chain_rate is a yearly rate"),
            ("[[chains]]\nunderlying = \"NIFTY\"\nexpirey = \"next\"\n", "unknown field `expirey`"),
        ] {
            let e = build(&Flags::default(), Some(text)).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn busy_poll_is_off_unless_the_file_or_the_flag_says_so() {
        assert!(!build(&Flags::default(), None).unwrap().busy_poll);
        assert!(
            build(&Flags::default(), Some("busy_poll = true\n"))
                .unwrap()
                .busy_poll
        );
        let flags = Flags {
            busy_poll: true,
            ..Flags::default()
        };
        assert!(
            build(&flags, Some("busy_poll = false\n"))
                .unwrap()
                .busy_poll
        );
        assert!(build(&Flags::default(), Some("busy_poll = 1\n")).is_err());
    }

    #[test]
    fn threads_come_from_the_flag_then_the_file_then_auto() {
        use crate::evloop::Threads;
        assert_eq!(
            build(&Flags::default(), None).unwrap().threads,
            Threads::Auto
        );
        let c = build(&Flags::default(), Some("threads = \"spread\"\n")).unwrap();
        assert_eq!(c.threads, Threads::Spread);
        let flags = Flags {
            threads: Some(Threads::Compact),
            ..Flags::default()
        };
        let c = build(&flags, Some("threads = \"spread\"\n")).unwrap();
        assert_eq!(c.threads, Threads::Compact);
        let e = build(&Flags::default(), Some("threads = \"fast\"\n")).unwrap_err();
        assert!(e.contains("fast") && e.contains("compact"), "{e}");
    }

    #[test]
    fn fanout_threads_come_from_the_flag_then_the_file_then_auto() {
        assert_eq!(build(&Flags::default(), None).unwrap().fanout_threads, None);
        let c = build(&Flags::default(), Some("fanout_threads = 3\n")).unwrap();
        assert_eq!(c.fanout_threads, Some(3));
        let c = build(&Flags::default(), Some("fanout_threads = \"auto\"\n")).unwrap();
        assert_eq!(c.fanout_threads, None);
        let flags = Flags {
            fanout_threads: Some(2),
            ..Flags::default()
        };
        assert_eq!(
            build(&flags, Some("fanout_threads = 3\n"))
                .unwrap()
                .fanout_threads,
            Some(2)
        );
        for bad in ["fanout_threads = 0\n", "fanout_threads = 65\n"] {
            let e = build(&Flags::default(), Some(bad)).unwrap_err();
            assert!(e.contains("fanout_threads") && e.contains("1 to 64"), "{e}");
        }
        let e = build(&Flags::default(), Some("fanout_threads = \"many\"\n")).unwrap_err();
        assert!(e.contains("fanout_threads"), "{e}");
    }

    #[test]
    fn record_comes_from_the_table_or_the_flag() {
        assert_eq!(build(&Flags::default(), None).unwrap().record, None);
        let c = build(&Flags::default(), Some("[record]\ndir = \"/var/rec\"\n")).unwrap();
        assert_eq!(
            c.record,
            Some(RecordSettings {
                dir: "/var/rec".into(),
                keep_days: DEFAULT_KEEP_DAYS,
                fail_after_bytes: None,
            })
        );
        let flags = Flags {
            record: Some("/tmp/r".into()),
            ..Flags::default()
        };
        let c = build(
            &flags,
            Some("[record]\ndir = \"/var/rec\"\nkeep_days = 0\n"),
        )
        .unwrap();
        assert_eq!(
            c.record,
            Some(RecordSettings {
                dir: "/tmp/r".into(),
                keep_days: 0,
                fail_after_bytes: None,
            }),
            "the flag's directory, the file's keep_days"
        );
        for (text, want) in [
            (
                "[record]\nkeep_days = 3\n",
                "record.keep_days is set but record.dir is not",
            ),
            (
                "[record]\ndir = \"\"\n",
                "record.dir (or --record) must name a directory",
            ),
            ("[record]\nkeepdays = 3\n", "unknown field `keepdays`"),
            (
                "[record]\ndir = \"/r\"\nkeep_days = 4294967295\n",
                "record.keep_days must be at most 36500",
            ),
        ] {
            let e = build(&Flags::default(), Some(text)).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = build(
            &Flags::default(),
            Some("listen = \"127.0.0.1:1\"\nlisten_port = 5\n"),
        )
        .unwrap_err();
        assert!(e.contains("listen_port") && e.contains("line 2"), "{e}");
        let e = build(&Flags::default(), Some("\n\nlisten = \"nowhere\"\n")).unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("listen address 'nowhere'"),
            "{e}"
        );
        let e = build(
            &Flags::default(),
            Some("[[watchlist]]\nsymbol = \"X\"\nexchange_segment = \"NSE\"\nsecurity_id = 1\n"),
        )
        .unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("unknown exchange_segment 'NSE'"),
            "{e}"
        );
        let e = build(
            &Flags::default(),
            Some("[[watchlist]]\nsymbol = \"X\"\nexchange_segment = \"NSE_EQ\"\nsecurity_id = \"12a\"\n"),
        )
        .unwrap_err();
        assert!(
            e.contains("line 4") && e.contains("security_id '12a'"),
            "{e}"
        );
        let e = build(&Flags::default(), Some("[limits]\nmax_clients = 0\n")).unwrap_err();
        assert!(e.contains("limits.max_clients"), "{e}");
        let e = build(
            &Flags::default(),
            Some("[limits]\nupstream_connections = 9\n"),
        )
        .unwrap_err();
        assert!(e.contains("at most 5"), "{e}");
        let e = build(&Flags::default(), Some("log_level = \"loud\"\n")).unwrap_err();
        assert!(e.contains("log_level") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn instrument_sources_and_symbol_only_watchlists() {
        let live = |flags: &Flags, file: Option<&str>| {
            RunConfig::build(
                flags,
                file.map(|t| (Path::new("relay.toml"), t)),
                &CredentialSources::given(&crate::upstream::Credentials::new("a", "b")),
            )
        };
        // Another feed (a simulator): the sample, never the network.
        let sim = Flags {
            feed_url: Some("ws://127.0.0.1:9".into()),
            ..Flags::default()
        };
        assert_eq!(live(&sim, None).unwrap().instruments.source, Source::Sample);
        let c = live(
            &Flags {
                instruments: Some("/tmp/master.csv".into()),
                ..Flags::default()
            },
            Some(
                "instruments = \"https://example.invalid/m.csv\"\ninstruments_cache = \"/tmp/c\"\n",
            ),
        )
        .unwrap();
        assert_eq!(
            c.instruments.source,
            Source::File("/tmp/master.csv".into()),
            "flag wins"
        );
        assert_eq!(c.instruments.cache_dir, Some(PathBuf::from("/tmp/c")));
        let c = build(
            &Flags::default(),
            Some("instruments = \"https://example.invalid/m.csv\"\n"),
        )
        .unwrap();
        assert_eq!(
            c.instruments.source,
            Source::Url("https://example.invalid/m.csv".into())
        );

        let c = build(
            &Flags::default(),
            Some("roll_at = \"09:05\"\n[[watchlist]]\nsymbol = \"CRUDEOIL\"\n\n[[watchlist]]\nsymbol = \"MYREL\"\nexchange_segment = \"BSE_EQ\"\nsecurity_id = 500325\n"),
        )
        .unwrap();
        assert_eq!(c.maintenance_at.to_string(), "09:05");
        assert_eq!(c.watch[0].symbol, "CRUDEOIL");
        assert_eq!((c.watch[0].key, c.watch[0].line), (None, Some(3)));
        assert_eq!(
            c.watch[1].key,
            Some(InstrumentKey::new(Segment::BseEq, 500325))
        );

        let e = build(
            &Flags::default(),
            Some("[[watchlist]]\nsymbol = \"X\"\nsecurity_id = 5\n"),
        )
        .unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("security_id without exchange_segment"),
            "{e}"
        );
        let e = build(&Flags::default(), Some("[[watchlist]]\nsymbol = \"  \"\n")).unwrap_err();
        assert!(e.contains("line 2") && e.contains("symbol is empty"), "{e}");
        let e = build(&Flags::default(), Some("\nroll_at = \"25:00\"\n")).unwrap_err();
        assert!(e.contains("line 2") && e.contains("roll_at"), "{e}");
        let e = build(
            &Flags::default(),
            Some("maintenance_at = \"08:00\"\nroll_at = \"09:00\"\n"),
        )
        .unwrap_err();
        assert!(e.contains("line 2") && e.contains("old name"), "{e}");
        let c = build(&Flags::default(), Some("maintenance_at = \"07:15\"\n")).unwrap();
        assert_eq!(c.maintenance_at.to_string(), "07:15");
        let dir = std::env::temp_dir().join(format!("dhan-relay-holidays-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("holidays.txt");
        std::fs::write(&file, "2026-01-26 ALL\n2026-13-01\n").unwrap();
        let e = build(
            &Flags::default(),
            Some(&format!("holidays = \"{}\"\n", file.display())),
        )
        .unwrap_err();
        assert!(e.contains("holidays.txt") && e.contains("line 2"), "{e}");
        std::fs::write(&file, "2026-01-26 ALL\n").unwrap();
        let c = build(
            &Flags::default(),
            Some(&format!("holidays = \"{}\"\n", file.display())),
        )
        .unwrap();
        let republic_day = crate::instrument::date::ist_instant(
            crate::instrument::Date::from_ymd(2026, 1, 26).unwrap(),
            11,
            0,
        );
        assert_eq!(
            c.calendar.market(Segment::NseEq, republic_day),
            crate::instrument::Market::Closed
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = build(
            &Flags::default(),
            Some("[[watchlist]]\nsymbol = \"A\"\nexpiry = 1\n"),
        )
        .unwrap_err();
        assert!(e.contains("expiry") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn access_control_settings() {
        let c = build(&Flags::default(), None).unwrap();
        assert_eq!(c.auth, AuthMode::Auto);
        assert!(!c.insecure_no_auth && c.key_limits.is_empty());
        if let Some(default) = crate::auth::keys::default_keys_file() {
            assert_eq!(c.keys_file, default);
        }
        let text = "auth = \"on\"\nkeys_file = \"/etc/k.toml\"\n[limits.keys.bot]\nconnections = 2\nmessages_per_sec = 9\n";
        let c = build(&Flags::default(), Some(text)).unwrap();
        assert_eq!(c.auth, AuthMode::On);
        assert_eq!(c.keys_file, PathBuf::from("/etc/k.toml"));
        let bot = c.key_limits.get("bot").unwrap();
        assert_eq!(
            (bot.connections, bot.subscriptions, bot.messages_per_sec),
            (Some(2), None, Some(9))
        );
        let flags = Flags {
            keys_file: Some("/x/keys.toml".into()),
            insecure_no_auth: true,
            ..Flags::default()
        };
        let c = build(&flags, Some(text)).unwrap();
        assert_eq!(c.keys_file, PathBuf::from("/x/keys.toml"), "flag wins");
        assert!(c.insecure_no_auth);
        let e = build(&Flags::default(), Some("\nauth = \"maybe\"\n")).unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("not one of auto, on, off"),
            "{e}"
        );
        let e = build(
            &Flags::default(),
            Some("[limits.keys.bot]\nconections = 2\n"),
        )
        .unwrap_err();
        assert!(e.contains("conections"), "{e}");
        let e = build(
            &Flags::default(),
            Some("[limits.keys.bot]\nconnections = 0\n"),
        )
        .unwrap_err();
        assert!(
            e.contains("limits.keys.bot.connections must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn several_listeners_from_tables_and_flags() {
        let text = "[[listen]]\naddr = \"127.0.0.1:8000\"\n\n[[listen]]\naddr = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nauth = \"on\"\n";
        let c = build(&Flags::default(), Some(text)).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(
            c.listen[0],
            ListenSpec::plain("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(c.listen[1].addr.to_string(), "0.0.0.0:8443");
        assert_eq!(
            c.listen[1].tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert_eq!(c.listen[1].auth, Some(AuthMode::On));

        let flags = Flags {
            listen: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            tls_cert: Some("a.pem".into()),
            tls_key: Some("b.pem".into()),
            ..Flags::default()
        };
        let c = build(&flags, Some(text)).unwrap();
        assert_eq!(c.listen.len(), 2, "flags replace the file's listeners");
        assert!(c.listen.iter().all(|l| l.tls.is_some()));

        let e = build(
            &Flags {
                tls_cert: Some("a.pem".into()),
                ..Flags::default()
            },
            None,
        )
        .unwrap_err();
        assert!(e.contains("--tls-cert is given without --tls-key"), "{e}");
        let e = build(
            &Flags::default(),
            Some("\n[[listen]]\naddr = \"127.0.0.1:1\"\ntls_cert = \"c\"\n"),
        )
        .unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("tls_cert is given without tls_key"),
            "{e}"
        );
        let e = build(
            &Flags::default(),
            Some("[[listen]]\naddr = \"127.0.0.1:1\"\nport = 5\n"),
        )
        .unwrap_err();
        assert!(e.contains("port"), "{e}");
        let e = build(
            &Flags::default(),
            Some("[[listen]]\naddr = \"127.0.0.1:1\"\nauth = \"maybe\"\n"),
        )
        .unwrap_err();
        assert!(e.contains("maybe"), "{e}");
        let e = build(
            &Flags {
                listen: vec!["127.0.0.1:5".into(), "127.0.0.1:5".into()],
                ..Flags::default()
            },
            None,
        )
        .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let c = build(
            &Flags {
                tls_cert: Some("a.pem".into()),
                tls_key: Some("b.pem".into()),
                ..Flags::default()
            },
            None,
        )
        .unwrap();
        assert!(c.listen[0].tls.is_some(), "the default listener takes them");
    }

    #[test]
    fn pin_flag() {
        assert_eq!(
            parse_pin("net=2,book=3,fanout=4").unwrap(),
            Pinning {
                net: Some(2),
                book: Some(3),
                fanout: Some(4)
            }
        );
        assert!(parse_pin("disk=1").unwrap_err().contains("unknown role"));
        assert!(parse_pin("net=x").unwrap_err().contains("not a number"));
    }
}
