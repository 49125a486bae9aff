//! A simulated DhanHQ Live Market Feed v2 server, speaking the real protocol
//! over real sockets: for end-to-end tests, benchmarks and demo mode.
//!
//! Every byte it sends is built by [`crate::wire`]'s encoders and every
//! request it reads goes through [`crate::wire::request::parse`], so the
//! simulator and the relay cannot disagree about the format without a test
//! noticing.
//!
//! # Behaviour (`docs/dhanhq-protocol.md`, "Live Market Feed v2")
//!
//! * WebSocket upgrades at `/?version=2&token=T&clientId=C&authType=2`
//!   (`ws://` or `wss://`). After the handshake a missing or empty token gets
//!   the disconnect packet (code 50) with reason 809 then a close frame; a
//!   missing or empty client id 808; a token the simulator will not take
//!   (below) 807; a token it issued to another client id 808; a connection
//!   beyond [`SimConfig::max_connections_per_client`] open ones of the same
//!   client id 805. Any other path is refused with HTTP 404, a `version`
//!   other than `2` with HTTP 400.
//! * Tokens (`tokens.rs` has the rule): the simulator issues DhanHQ-shaped
//!   JWTs ([`crate::token::jwt::unsigned`]) through
//!   [`SimControl::issue_token`] and its REST endpoints, remembers each with
//!   its client id and `exp`, and keeps one valid issued token per client:
//!   issuing a new one revokes the client's previous one. With
//!   [`SimConfig::accept_any_token`] (the default) any other non-empty token
//!   is accepted too, unless it is in [`SimConfig::expired_tokens`] (or was
//!   given to [`SimControl::expire_token`] or [`SimControl::revoke_token`]) or
//!   is a JWT whose own `exp` has passed; without it only issued tokens and
//!   [`SimConfig::valid_tokens`] are, and any other token gets 807 — the
//!   code for every token the server will not take, as DhanHQ's REST side
//!   reports unknown and expired tokens alike (DH-901) and a client's remedy
//!   is the same. A revoked token (a newer one issued, a renewal,
//!   [`SimControl::revoke_token`]) gets 807 on connect, and every open
//!   connection that logged in with it gets the 807 packet and a close at
//!   once; [`SimControl::expire_token`] refuses new connections only. Four
//!   times a second (on the generator thread) open connections whose
//!   token's `exp` has passed get 807 and a close. Connections remember their token
//!   for this; it is never printed or logged, and `Debug` output shows
//!   tokens, PINs and TOTP secrets as counts or not at all.
//! * REST ([`Simulator::rest_url`], plain HTTP, `rest.rs`): DhanHQ's
//!   `GET /v2/RenewToken` (headers `access-token`, `dhanClientId`) and
//!   `POST /app/generateAccessToken?dhanClientId=..&pin=..&totp=..`
//!   ([`SimConfig::totp_accounts`]; codes of the current 30-second step and
//!   either neighbour accepted). Both answer 200 with DhanHQ's token object
//!   (`dhanClientId`, `dhanClientName`, `dhanClientUcc`,
//!   `givenPowerOfAttorney`, `accessToken`, `expiryTime` in India time;
//!   RenewToken adds `token`, the same value) for a token valid
//!   [`SimConfig::token_lifetime`]. A renewal revokes the old token at once,
//!   807 to its open connections included: DhanHQ documents that the old
//!   token stops working when it is renewed, and a relay must cope with the
//!   harshest reading of that. Refusals are DhanHQ's error object: 400
//!   `DH-905` for a missing header or parameter, 401 `DH-901` for a token or
//!   PIN/TOTP that does not check out; 404 for other paths.
//! * A good connection gets a market-status packet (code 7) at once, then
//!   serves RequestCodes 15/16, 17/18, 21/22 (the latest subscribe of an
//!   instrument sets its mode; any unsubscribe code removes it) and 12 (close
//!   cleanly). The first subscribe of an instrument on a connection sends its
//!   previous-close packet (code 6). A message with more than
//!   [`SimConfig::max_per_message`] instruments is rejected whole;
//!   instruments beyond [`SimConfig::max_per_connection`] are not applied;
//!   both are counted in [`SimStats`]. A text frame that does not parse is
//!   counted in `rejected_requests` and not logged.
//! * `/twentydepth?token=..&clientId=..` is the 20-level depth feed: RequestCode
//!   23 only, NSE_EQ / NSE_FNO only, at most 50 per message; it streams bid
//!   (41) and ask (51) packets, the pair in one frame. Its instruments show
//!   in [`SimControl::subscriptions`] as [`Mode::Full`].
//! * Ticks: [`SimConfig::ticks_per_sec`] packets per second in all, spread
//!   round-robin over every instrument some connection subscribed, each
//!   connection getting each tick in its own mode (ticker 2, quote 4, full 8;
//!   NSE_FNO/BSE_FNO/MCX_COMM quote and full subscribers also get an OI
//!   packet (5) every tenth trade). Prices come from [`market`]: seeded by
//!   (seed, instrument), so deterministic per instrument, starting near the
//!   instrument's [`SimConfig::reference_prices`] level when it has one (by
//!   default the embedded sample master's approximate late-2025 levels: the
//!   demo shows NIFTY near 25,800, not at a random level). Indices (IDX_I)
//!   carry no LTQ, volume, buy/sell quantities, book or OI. Options listed
//!   in [`SimConfig::options`] (by default every option of the sample
//!   master, [`options_of`]) are priced, not walked: each trade is
//!   [`crate::chain::greeks::price`] at the underlying's current simulated
//!   price — the one its own subscribers get; an underlying nobody
//!   subscribed to is stepped alongside its options, at most once a
//!   second — with Black–Scholes on
//!   an index or stock, Black-76 on an MCX (or currency) future, the time
//!   to the close on expiry day, [`SIM_RATE`] and a smiled volatility
//!   ([`SimOption::vol`]: 14 % indices, 25 % stocks, 30 % commodities, plus
//!   [`SIM_SMILE`]·|ln(K/S)|), ±0.5 % noise, rounded to the option's tick
//!   and never below one tick (expired: the intrinsic value). They carry
//!   volume and open interest (largest near the money, growing) in quote,
//!   full and OI packets like other derivatives. At 1,000 ticks/s
//!   and above, packets queued together for one connection share a frame (up
//!   to 32); below that every packet has its own frame.
//! * Paper trading ([`Simulator::rest_url`], `trade_rest.rs`, `paper.rs`):
//!   DhanHQ's trading REST API under `/v2` — `GET /v2/fundlimit`,
//!   `POST /v2/orders`, `PUT` / `DELETE` / `GET /v2/orders/{id}`,
//!   `GET /v2/orders`, `GET /v2/orders/external/{correlationId}`,
//!   `GET /v2/positions` — authenticated by headers `access-token` and
//!   `client-id` with the feed's token rule (else 401 `DH-901`), bad input
//!   400 `DH-905` naming the field (a derivative's quantity must be a
//!   multiple of [`SimConfig::lot_sizes`]). Orders fill whole against the
//!   instrument's last traded price: the one the generator last sent, or a
//!   ticker / quote / full packet given to [`SimControl::inject`], or,
//!   before either, the price model's opening level (instruments with a
//!   reference price only; others cannot be traded). MARKET at once, LIMIT
//!   when the LTP reaches the price, STOP_LOSS(_MARKET) once the LTP crosses
//!   the trigger, IOC cancelled if it cannot fill at once, DAY orders open
//!   until filled or cancelled. Each client has an account of
//!   [`SimConfig::paper_balance`]; fills move funds and positions
//!   (`paper.rs` documents the model), and a BUY the funds cannot cover is
//!   accepted, then REJECTED. Trading answers come from worker threads and
//!   can be held back ([`SimControl::set_rest_delay`]) without slowing the
//!   token endpoints; [`SimControl::fail_next_order`] makes the next
//!   placement fail; [`SimControl::trading_requests`] counts them.
//! * The order-update WebSocket ([`Simulator::order_update_url`],
//!   `order_stream.rs`): DhanHQ's `LoginReq` (MsgCode 42) first, then every
//!   status change of that client's paper orders as an `order_alert`, in
//!   order; a bad login is closed with 1008.
//! * Replay ([`SimConfig::replay`], `replay.rs` has the contract): a
//!   replay thread plays recorded frames to the subscribers instead of the
//!   generator — the recorded packets byte for byte, with the recorded
//!   batching and spacing (scaled), recorded previous closes on subscribe,
//!   recorded disconnect packets never. [`SimStats::replay_finished`] says
//!   when it is done.
//! * Pings every [`SimConfig::ping_interval`]; a connection from which no
//!   frame at all has arrived for [`SimConfig::pong_timeout`] is dropped.
//!   [`Duration::ZERO`] disables either.
//!
//! # Threads and back-pressure
//!
//! One acceptor thread, one generator thread, one REST thread (with
//! tiny_http's own accept and connection threads behind it) and
//! `trade_rest::WORKERS` trading workers behind a bounded queue, one
//! order-stream acceptor with a thread per stream (at most 64), one thread
//! per feed connection
//! (non-blocking socket under its own `mio::Poll`, woken by the generator or
//! the control handle through a `mio::Waker`). The generator never blocks:
//! each connection has a bounded queue of [`QUEUE_CAPACITY`] items, and a
//! full queue drops the item and counts it in [`SimStats::queue_drops`]. A
//! connection whose socket is not writable stops draining its queue, so a
//! slow client loses ticks instead of slowing the others. The generator
//! hands each round's prices to the paper book under one lock, after
//! queueing the round's packets; order alerts go to bounded per-stream
//! queues (full: dropped and counted). Dropping the [`Simulator`] stops and
//! joins every thread within about 100 ms (an order-stream client that
//! connected but has not logged in can hold that up to its 5-second login
//! timeout).
//!
//! # Files
//!
//! `mod.rs` the public API; `shared.rs` state shared by the threads;
//! `tokens.rs` the token registry and its acceptance rule; `server.rs` the
//! acceptor; `handshake.rs` TLS, upgrade and URL; `conn.rs` one connection
//! after that (login, requests, writes, heartbeats); `generator.rs` the
//! tick generator (and the once-a-second token expiry check); `rest.rs`
//! the REST thread and the token endpoints; `trade_rest.rs` the trading
//! routes; `paper.rs` the paper book (pure); `order_stream.rs` the
//! order-update WebSocket; `market.rs` the price model; `tls.rs`
//! certificates.

mod conn;
mod generator;
mod handshake;
mod market;
mod order_stream;
pub mod paper;
pub mod replay;
mod rest;
mod server;
mod shared;
mod tls;
mod tokens;
mod trade_rest;

pub use paper::{OrderStatus, PaperFunds, PaperOrder, PaperPosition};
pub use replay::{FrameSource, ReplayConfig, Speed};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tungstenite::Bytes;

use crate::chain::greeks::{price, years_to_expiry, Model, Right};
use crate::domain::{InstrumentKey, Mode, Segment};
use crate::instrument::{Date, Exchange, Kind, Master, OptionType};
use crate::token::totp;
use crate::wire::feed::{FeedData, FeedMessage};
use crate::wire::request::RequestCode;
use crate::wire::DisconnectReason;
use shared::{lock, Control, Endpoint, Out, Settings, Shared, TotpAccount};

/// Capacity of each connection's outbound queue, in items (one packet, or
/// one injected frame, each).
pub const QUEUE_CAPACITY: usize = 16_384;

/// How the simulator is set up. [`Default`] gives DhanHQ's published limits,
/// plain `ws://` on an ephemeral loopback port, no generated ticks, and the
/// embedded sample master's price levels (so `SimConfig { ticks_per_sec,
/// ..SimConfig::default() }` is a realistic demo feed).
#[derive(Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port (see [`Simulator::addr`]).
    pub listen: SocketAddr,
    /// `ws://` or `wss://`.
    pub tls: SimTls,
    /// Generated packets per second, over all subscribed instruments
    /// together; 0 sends only what [`SimControl`] injects.
    pub ticks_per_sec: u32,
    /// Seed of every instrument's price stream.
    pub seed: u64,
    /// Where instruments start (rupees); others start at a seeded level.
    /// [`Default`]: the embedded sample master's levels
    /// ([`sample_reference_prices`]).
    pub reference_prices: Arc<HashMap<InstrumentKey, f64>>,
    /// Tokens that get disconnect 807 on connect.
    pub expired_tokens: Vec<String>,
    /// `true` (default): any non-empty token is accepted unless expired or
    /// revoked; `false`: only tokens the simulator issued and
    /// [`SimConfig::valid_tokens`] are, others get 807.
    pub accept_any_token: bool,
    /// Tokens accepted even when `accept_any_token` is off (until their JWT
    /// `exp`, if they have one).
    pub valid_tokens: Vec<String>,
    /// How long tokens issued over REST are valid (DhanHQ: 24 h).
    pub token_lifetime: Duration,
    /// Accounts that can generate tokens with PIN + TOTP over REST.
    pub totp_accounts: Vec<SimTotpAccount>,
    /// Most instruments in one subscription message (DhanHQ: 100).
    pub max_per_message: usize,
    /// Most instruments one connection may hold (DhanHQ: 5,000).
    pub max_per_connection: usize,
    /// Most simultaneous connections of one client id (DhanHQ: 5).
    pub max_connections_per_client: usize,
    /// How often the server pings; zero: never.
    pub ping_interval: Duration,
    /// Silence after which a connection is dropped; zero: never.
    pub pong_timeout: Duration,
    /// Each paper-trading account's starting balance (`sodLimit`, rupees).
    pub paper_balance: f64,
    /// Lot sizes for paper order validation (a derivative's quantity must
    /// be a multiple); instruments not listed trade in units of 1.
    /// [`Default`]: the embedded sample master's ([`sample_lot_sizes`]).
    pub lot_sizes: Arc<HashMap<InstrumentKey, u32>>,
    /// How options are priced from their underlying ([`options_of`]);
    /// options not listed walk like any other instrument. [`Default`]: the
    /// embedded sample master's ([`sample_options`]).
    pub options: Arc<HashMap<InstrumentKey, SimOption>>,
    /// Replay a recording instead of generating ticks (`replay.rs`):
    /// `ticks_per_sec` is then ignored, and a first subscribe of an
    /// instrument sends its latest recorded previous-close packet, if any,
    /// instead of a generated one.
    pub replay: Option<ReplayConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: SimTls::None,
            ticks_per_sec: 0,
            seed: 0,
            reference_prices: sample_reference_prices(),
            expired_tokens: Vec::new(),
            accept_any_token: true,
            valid_tokens: Vec::new(),
            token_lifetime: Duration::from_secs(24 * 3600),
            totp_accounts: Vec::new(),
            max_per_message: 100,
            max_per_connection: 5_000,
            max_connections_per_client: 5,
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(40),
            paper_balance: 1_000_000.0,
            lot_sizes: sample_lot_sizes(),
            options: sample_options(),
            replay: None,
        }
    }
}

impl fmt::Debug for SimConfig {
    /// Tokens, PINs and TOTP secrets are secrets: only their number is
    /// shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("ticks_per_sec", &self.ticks_per_sec)
            .field("seed", &self.seed)
            .field("reference_prices", &self.reference_prices.len())
            .field("expired_tokens", &self.expired_tokens.len())
            .field("accept_any_token", &self.accept_any_token)
            .field("valid_tokens", &self.valid_tokens.len())
            .field("token_lifetime", &self.token_lifetime)
            .field("totp_accounts", &self.totp_accounts.len())
            .field("max_per_message", &self.max_per_message)
            .field("max_per_connection", &self.max_per_connection)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("paper_balance", &self.paper_balance)
            .field("lot_sizes", &self.lot_sizes.len())
            .field("options", &self.options.len())
            .field("replay", &self.replay)
            .finish()
    }
}

/// An account that can generate access tokens over REST with its PIN and a
/// TOTP code (DhanHQ's `generateAccessToken`).
#[derive(Clone)]
pub struct SimTotpAccount {
    /// The DhanHQ client id.
    pub client_id: String,
    /// The account's PIN.
    pub pin: String,
    /// The TOTP secret, RFC 4648 base32 as DhanHQ shows it (case, spaces
    /// and `=` do not matter).
    pub secret_base32: String,
}

impl fmt::Debug for SimTotpAccount {
    /// PIN and secret are credentials: only the client id is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTotpAccount")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The embedded sample master's reference levels
/// ([`Master::reference_prices`]), parsed once per process and shared.
pub fn sample_reference_prices() -> Arc<HashMap<InstrumentKey, f64>> {
    static LEVELS: OnceLock<Arc<HashMap<InstrumentKey, f64>>> = OnceLock::new();
    LEVELS
        .get_or_init(|| Arc::new(Master::sample().reference_prices()))
        .clone()
}

/// The annual rate the simulator prices options with (continuous).
pub const SIM_RATE: f64 = 0.065;
/// Volatility added per unit of |ln(strike / underlying)| (the smile).
pub const SIM_SMILE: f64 = 0.6;

/// How the simulator prices one option: the model's inputs besides the
/// underlying's price and the time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimOption {
    /// The instrument whose simulated price drives it: the index or stock
    /// (Black–Scholes) or the future (Black-76).
    pub underlying: InstrumentKey,
    /// Black–Scholes on spot or Black-76 on a future.
    pub model: Model,
    /// Call or put.
    pub right: Right,
    /// Strike, rupees.
    pub strike: f64,
    /// Expiry day.
    pub expiry: Date,
    /// The close on expiry day, minutes after midnight India time.
    pub close_minutes_ist: u16,
    /// The option's tick, rupees (the master's `SEM_TICK_SIZE` / 100).
    pub tick: f64,
    /// Volatility at the money (14 % indices, 25 % stocks, 30 %
    /// commodities, 7 % currencies).
    pub base_vol: f64,
}

impl SimOption {
    /// The smiled volatility at underlying price `underlying`:
    /// `base_vol + SIM_SMILE·|ln(K/underlying)|`.
    pub fn vol(&self, underlying: f64) -> f64 {
        let m = (self.strike / underlying).ln().abs();
        self.base_vol + if m.is_finite() { SIM_SMILE * m } else { 0.0 }
    }

    /// The model price (no noise, not rounded) at underlying price
    /// `underlying` and time `now`, with [`SIM_RATE`]; at or after the
    /// close on expiry day, the intrinsic value.
    pub fn model_price(&self, underlying: f64, now: std::time::SystemTime) -> f64 {
        let years = years_to_expiry(now, self.expiry, self.close_minutes_ist);
        price(
            self.model,
            self.right,
            underlying,
            self.strike,
            years,
            SIM_RATE,
            self.vol(underlying),
        )
    }
}

/// How `master`'s options are priced: index and stock options
/// (NSE_FNO/BSE_FNO) by Black–Scholes on the index (IDX_I, same symbol) or
/// the stock on the option's exchange; MCX and currency options by Black-76
/// on the same underlying's first future expiring on or after the option.
/// Options whose underlying is not in `master` are left out.
pub fn options_of(master: &Master) -> HashMap<InstrumentKey, SimOption> {
    let mut spot: HashMap<(Segment, &str), InstrumentKey> = HashMap::new();
    let mut futures: HashMap<(Segment, &str), Vec<(Date, InstrumentKey)>> = HashMap::new();
    for i in master.iter() {
        let key = i.key();
        match i.kind() {
            Kind::Index | Kind::Equity => {
                spot.entry((key.segment, i.symbol())).or_insert(key);
            }
            Kind::Future => {
                if let Some(expiry) = i.expiry() {
                    futures
                        .entry((key.segment, i.underlying()))
                        .or_default()
                        .push((expiry, key));
                }
            }
            Kind::Option | Kind::Other => {}
        }
    }
    for list in futures.values_mut() {
        list.sort();
    }
    let mut out = HashMap::new();
    for i in master.iter().filter(|i| i.kind() == Kind::Option) {
        let key = i.key();
        let (Some(strike), Some(kind), Some(expiry)) = (i.strike(), i.option_type(), i.expiry())
        else {
            continue;
        };
        if !(strike.is_finite() && strike > 0.0) {
            continue;
        }
        let name = i.underlying();
        let stock = match i.exchange() {
            Exchange::Bse => Segment::BseEq,
            _ => Segment::NseEq,
        };
        let (underlying, model, base_vol, close) = match key.segment {
            Segment::NseFno | Segment::BseFno => {
                let (u, vol) = match spot.get(&(Segment::IdxI, name)) {
                    Some(&u) => (u, 0.14),
                    None => match spot.get(&(stock, name)) {
                        Some(&u) => (u, 0.25),
                        None => continue,
                    },
                };
                (u, Model::BlackScholes, vol, 15 * 60 + 30)
            }
            Segment::McxComm | Segment::NseCurrency | Segment::BseCurrency => {
                let first = futures
                    .get(&(key.segment, name))
                    .and_then(|l| l.iter().find(|(e, _)| *e >= expiry));
                let Some(&(_, u)) = first else { continue };
                if key.segment == Segment::McxComm {
                    (u, Model::Black76, 0.30, 23 * 60 + 30)
                } else {
                    (u, Model::Black76, 0.07, 17 * 60)
                }
            }
            _ => continue,
        };
        let tick = i.tick_rupees();
        out.insert(
            key,
            SimOption {
                underlying,
                model,
                right: match kind {
                    OptionType::Call => Right::Call,
                    OptionType::Put => Right::Put,
                },
                strike,
                expiry,
                close_minutes_ist: close,
                tick: if tick.is_finite() && tick > 0.0 {
                    tick
                } else {
                    0.05
                },
                base_vol,
            },
        );
    }
    out
}

/// The embedded sample master's options ([`options_of`]), built once per
/// process and shared.
pub fn sample_options() -> Arc<HashMap<InstrumentKey, SimOption>> {
    static OPTIONS: OnceLock<Arc<HashMap<InstrumentKey, SimOption>>> = OnceLock::new();
    OPTIONS
        .get_or_init(|| Arc::new(options_of(&Master::sample())))
        .clone()
}

/// The embedded sample master's lot sizes of derivatives (segments that
/// trade in lots, lot above 1), parsed once per process and shared.
pub fn sample_lot_sizes() -> Arc<HashMap<InstrumentKey, u32>> {
    static LOTS: OnceLock<Arc<HashMap<InstrumentKey, u32>>> = OnceLock::new();
    LOTS.get_or_init(|| {
        let master = Master::sample();
        let lots = master
            .iter()
            .filter(|i| paper::trades_in_lots(i.key().segment))
            .filter_map(|i| {
                let lot = i.lot_size();
                (lot.fract() == 0.0 && lot > 1.0 && lot <= f64::from(u32::MAX))
                    .then(|| (i.key(), lot as u32))
            })
            .collect();
        Arc::new(lots)
    })
    .clone()
}

/// Transport security of the simulator's listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SimTls {
    /// Plain `ws://`.
    #[default]
    None,
    /// `wss://` with a certificate for `localhost` and `127.0.0.1` generated
    /// at start; see [`Simulator::ca_pem`].
    SelfSigned,
    /// `wss://` with a PEM certificate chain and a PEM private key.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Completed WebSocket handshakes, including ones then refused with a
    /// disconnect packet (those are also in `auth_rejects`).
    pub connects: u64,
    /// Logged-in connections open now.
    pub open: usize,
    /// Connections refused after the handshake (805, 807, 808, 809).
    pub auth_rejects: u64,
    /// Requests not applied: unparseable, over the per-message limit, or a
    /// code the endpoint does not serve.
    pub rejected_requests: u64,
    /// Instruments not applied because the connection held
    /// `max_per_connection` already.
    pub rejected_instruments: u64,
    /// Binary packets written to sockets (an injected or raw frame counts
    /// one).
    pub packets_sent: u64,
    /// Pong frames received.
    pub pongs_received: u64,
    /// Connections dropped after `pong_timeout` of silence.
    pub dropped_for_silence: u64,
    /// Items dropped because a connection's queue was full or its WebSocket
    /// write buffer was.
    pub queue_drops: u64,
    /// Tokens issued: [`SimControl::issue_token`], renewals and
    /// generations.
    pub tokens_issued: u64,
    /// Successful `RenewToken` calls.
    pub renewals: u64,
    /// Successful `generateAccessToken` calls.
    pub generations: u64,
    /// Refused `RenewToken` / `generateAccessToken` calls (400 or 401).
    pub auth_refusals_rest: u64,
    /// Open connections sent 807 because their token was revoked or
    /// expired.
    pub token_disconnects: u64,
    /// Trading REST requests received (any path under `/v2` but
    /// `RenewToken`), answered or not.
    pub trading_requests: u64,
    /// Order alerts dropped because a stream's queue was full.
    pub order_stream_drops: u64,
    /// Logged-in order-update streams open now.
    pub order_streams: usize,
    /// Replay: recorded frames replayed (inside the `from`..`to` window).
    pub replay_frames: u64,
    /// Replay: packets in those frames (disconnect packets not counted).
    pub replay_packets: u64,
    /// Replay: recorded disconnect packets (code 50) not replayed.
    pub replay_disconnects: u64,
    /// Replay: recorded packets that did not decode, skipped.
    pub replay_bad_packets: u64,
    /// Replay: passes over the recording completed (more than one with
    /// `looped`).
    pub replay_passes: u64,
    /// Replay: the recording has been played to its end (never with
    /// `looped`) or could not be opened.
    pub replay_finished: bool,
}

/// One open connection's subscriptions.
#[derive(Clone, Debug)]
pub struct ConnSubscriptions {
    /// The connection's id (also in [`LoggedRequest::conn`]).
    pub conn: u64,
    /// The `clientId` it logged in with.
    pub client_id: String,
    /// A `/twentydepth` connection (not the main feed).
    pub depth: bool,
    /// Instruments and their modes; a `/twentydepth` connection's are all
    /// [`Mode::Full`].
    pub instruments: BTreeMap<InstrumentKey, Mode>,
}

/// A request as received (after parsing, before limits are applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The connection it came on.
    pub conn: u64,
    /// Its RequestCode.
    pub code: RequestCode,
    /// Its instruments, in message order.
    pub instruments: Vec<InstrumentKey>,
}

impl SimControl {
    /// Waits up to `timeout` for the replay to finish
    /// ([`SimStats::replay_finished`]); whether it has.
    pub fn wait_replay_finished(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if self.shared.replay_finished.load(Ordering::SeqCst) {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A running simulator. Dropping it stops every thread and closes every
/// socket.
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: String,
    rest_url: String,
    order_update_url: String,
    ca_pem: Option<String>,
    acceptor_waker: Arc<mio::Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("url", &self.url)
            .field("rest_url", &self.rest_url)
            .field("order_update_url", &self.order_update_url)
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds the listeners (feed and REST), prepares TLS and starts the
    /// threads. A TOTP account whose secret is not base32 is an
    /// [`io::ErrorKind::InvalidInput`] error naming its client id only.
    pub fn start(cfg: SimConfig) -> io::Result<Simulator> {
        let mut totp_accounts = Vec::with_capacity(cfg.totp_accounts.len());
        for a in &cfg.totp_accounts {
            let secret = totp::decode_secret(&a.secret_base32).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("TOTP account {}: {e}", a.client_id),
                )
            })?;
            totp_accounts.push(TotpAccount {
                client_id: a.client_id.clone(),
                pin: a.pin.clone(),
                secret,
            });
        }
        let tls = tls::setup(&cfg.tls)?;
        let settings = Settings {
            ticks_per_sec: cfg.ticks_per_sec,
            seed: cfg.seed,
            reference_prices: cfg.reference_prices.clone(),
            max_per_message: cfg.max_per_message,
            max_per_connection: cfg.max_per_connection,
            max_connections_per_client: cfg.max_connections_per_client,
            ping_interval: cfg.ping_interval,
            pong_timeout: cfg.pong_timeout,
            token_lifetime: cfg.token_lifetime,
            totp_accounts,
            lot_sizes: cfg.lot_sizes.clone(),
            options: cfg.options.clone(),
            started: std::time::SystemTime::now(),
        };
        let registry =
            tokens::Registry::new(cfg.accept_any_token, &cfg.valid_tokens, &cfg.expired_tokens);
        let (poke, poked) = crossbeam_channel::bounded::<()>(1);
        let mut shared = Shared::new(
            settings,
            tls.as_ref().map(|t| t.config.clone()),
            registry,
            poke,
            paper::Paper::new(cfg.paper_balance),
        );
        shared.replaying = cfg.replay.is_some();
        let shared = Arc::new(shared);

        let acceptor = server::Acceptor::bind(cfg.listen, shared.clone())?;
        let addr = acceptor.local_addr();
        let acceptor_waker = acceptor.waker();
        let (rest_server, rest_addr) = rest::bind(addr.ip())?;
        let (orders_listener, orders_addr) = order_stream::bind(addr.ip())?;

        let threads = vec![std::thread::Builder::new()
            .name("dhan-sim-accept".into())
            .spawn(move || acceptor.run())?];
        let mut sim = Simulator {
            shared: shared.clone(),
            addr,
            url: String::new(),
            rest_url: format!("http://{}:{}", loopback_host(addr), rest_addr.port()),
            order_update_url: format!("ws://{}:{}", loopback_host(addr), orders_addr.port()),
            ca_pem: tls.and_then(|t| t.ca_pem),
            acceptor_waker,
            threads,
        };
        // On error `sim` is dropped, which stops the threads started so far.
        let gen_shared = shared.clone();
        let spawned = match cfg.replay {
            Some(replay) => std::thread::Builder::new()
                .name("dhan-sim-replay".into())
                .spawn(move || replay::run(&gen_shared, &poked, replay))?,
            None => std::thread::Builder::new()
                .name("dhan-sim-generator".into())
                .spawn(move || generator::run(&gen_shared, &poked))?,
        };
        sim.threads.push(spawned);
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(trade_rest::QUEUE);
        for _ in 0..trade_rest::WORKERS {
            let (worker_shared, jobs) = (shared.clone(), jobs_rx.clone());
            sim.threads.push(
                std::thread::Builder::new()
                    .name("dhan-sim-trade".into())
                    .spawn(move || trade_rest::worker(&worker_shared, &jobs))?,
            );
        }
        let rest_shared = shared.clone();
        sim.threads.push(
            std::thread::Builder::new()
                .name("dhan-sim-rest".into())
                .spawn(move || rest::run(&rest_shared, rest_server, &jobs_tx))?,
        );
        let orders_shared = shared;
        sim.threads.push(
            std::thread::Builder::new()
                .name("dhan-sim-order-stream".into())
                .spawn(move || order_stream::run(&orders_shared, orders_listener))?,
        );
        sim.url = if cfg.tls != SimTls::None {
            format!("wss://localhost:{}", addr.port())
        } else {
            format!("ws://{}:{}", loopback_host(addr), addr.port())
        };
        Ok(sim)
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT` or `wss://localhost:PORT`, with no path or
    /// query; clients append `/?version=2&token=..&clientId=..&authType=2`.
    pub fn feed_url(&self) -> String {
        self.url.clone()
    }

    /// `http://127.0.0.1:PORT` (the listener's host, its own port): the
    /// token REST endpoints, `{rest_url}/v2/RenewToken` and
    /// `{rest_url}/app/generateAccessToken`.
    pub fn rest_url(&self) -> String {
        self.rest_url.clone()
    }

    /// `ws://127.0.0.1:PORT`: DhanHQ's live order-update WebSocket for the
    /// paper book (its own port, plain `ws://` even when the feed uses
    /// TLS); see `order_stream.rs`.
    pub fn order_update_url(&self) -> String {
        self.order_update_url.clone()
    }

    /// The self-signed certificate in PEM ([`SimTls::SelfSigned`] only), for
    /// clients to add to their trust roots.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// A handle to steer and inspect the running simulator.
    pub fn control(&self) -> SimControl {
        SimControl {
            shared: self.shared.clone(),
        }
    }
}

/// The host part of a URL for `addr`: `127.0.0.1` for an unspecified
/// address, brackets around IPv6.
fn loopback_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.acceptor_waker.wake();
        self.shared.poke_generator();
        for conn in self.shared.all_conns() {
            conn.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Steers and inspects a running [`Simulator`] from any thread. After the
/// simulator is dropped every method is a no-op on an empty server.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

impl fmt::Debug for SimControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimControl").finish_non_exhaustive()
    }
}

impl SimControl {
    /// Sends `msg`, encoded, as its own frame to every open feed connection
    /// subscribed to its instrument (in any mode); a
    /// [`FeedMessage::Disconnect`] goes to every open feed connection (the
    /// packet only; the connection stays open — see
    /// [`SimControl::send_disconnect`]).
    pub fn inject(&self, msg: &FeedMessage) {
        let mut bytes = Vec::with_capacity(msg.wire_len());
        msg.encode(&mut bytes);
        let bytes = Bytes::from(bytes);
        if let FeedMessage::Data(key, data) = msg {
            let ltp = match data {
                FeedData::Ticker(t) => Some(t.ltp),
                FeedData::Quote(q) => Some(q.ltp),
                FeedData::Full(f) => Some(f.quote.ltp),
                _ => None,
            };
            if let Some(ltp) = ltp.filter(|_| key.segment != crate::domain::Segment::IdxI) {
                self.shared.prices(&[(*key, shared::rupees(ltp))]);
            }
        }
        for (conn, login) in self.shared.open_conns() {
            if login.endpoint != Endpoint::Feed {
                continue;
            }
            let wanted = match msg {
                FeedMessage::Data(key, _) => lock(&conn.subs).contains_key(key),
                FeedMessage::Disconnect(_) => true,
            };
            if wanted {
                conn.push(Out::Raw(bytes.clone()), &self.shared.stats);
                conn.notify();
            }
        }
    }

    /// Sends one 20-level depth side packet, encoded, as its own frame to
    /// every open `/twentydepth` connection subscribed to its instrument.
    pub fn inject_depth(&self, book: &crate::wire::depth::DepthBook) {
        let mut bytes = Vec::with_capacity(crate::wire::depth::SIDE_LEN);
        crate::wire::depth::DepthMessage::Book(*book).encode(&mut bytes);
        let bytes = Bytes::from(bytes);
        for (conn, login) in self.shared.open_conns() {
            if login.endpoint == Endpoint::Depth && lock(&conn.subs).contains_key(&book.key) {
                conn.push(Out::Raw(bytes.clone()), &self.shared.stats);
                conn.notify();
            }
        }
    }

    /// Sends `frame` as one binary frame, as is, to every open connection.
    pub fn send_raw(&self, frame: Vec<u8>) {
        let bytes = Bytes::from(frame);
        for (conn, _) in self.shared.open_conns() {
            conn.push(Out::Raw(bytes.clone()), &self.shared.stats);
            conn.notify();
        }
    }

    /// Sends the disconnect packet (in the endpoint's format), then a close
    /// frame, on every open connection.
    pub fn send_disconnect(&self, reason: DisconnectReason) {
        for (conn, _) in self.shared.open_conns() {
            conn.order(Control::Disconnect(reason));
        }
    }

    /// Shuts down every open connection's TCP socket at once: no disconnect
    /// packet, no close frame.
    pub fn drop_connections(&self) {
        for (conn, _) in self.shared.open_conns() {
            conn.order(Control::Drop);
        }
    }

    /// While `true` the simulator is frozen: nothing is sent (no ticks, no
    /// pings), nothing is read (so a client's close goes unnoticed and its
    /// connection stays in `open` until the stall ends), handshakes of new
    /// connections wait, sockets stay open and no one is dropped for
    /// silence. Time spent stalled does not count towards `pong_timeout`.
    /// [`SimControl::drop_connections`] still acts at once;
    /// [`SimControl::send_disconnect`] waits for the stall to end.
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.stalled.store(stalled, Ordering::SeqCst);
        if !stalled {
            self.shared.poke_generator();
            for conn in self.shared.all_conns() {
                conn.wake();
            }
        }
    }

    /// From now on `token` gets disconnect 807 when it connects (open
    /// connections are not touched).
    pub fn expire_token(&self, token: &str) {
        self.shared.expire(token);
    }

    /// Issues a DhanHQ-shaped token for `client_id` that expires
    /// `lifetime` from now (rounded up to a whole second). It becomes the
    /// client's one valid issued token: the client's previously issued
    /// tokens are revoked, 807 to their open connections included.
    pub fn issue_token(&self, client_id: &str, lifetime: Duration) -> String {
        self.shared.issue(client_id, lifetime).token
    }

    /// Revokes `token`: new connections with it get 807, and every open
    /// connection that logged in with it gets the 807 packet and a close.
    pub fn revoke_token(&self, token: &str) {
        self.shared.revoke(token);
    }

    /// Whether a connection with `token` (and the client id it belongs to)
    /// would be accepted now.
    pub fn token_valid(&self, token: &str) -> bool {
        self.shared.token_valid(token)
    }

    /// Counters since start.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Every open connection's subscriptions, by connection id.
    pub fn subscriptions(&self) -> Vec<ConnSubscriptions> {
        let open = self.shared.open_conns();
        open.into_iter()
            .map(|(conn, login)| ConnSubscriptions {
                conn: conn.id,
                client_id: login.client_id,
                depth: login.endpoint == Endpoint::Depth,
                instruments: lock(&conn.subs).clone(),
            })
            .collect()
    }

    /// Every parsed request received, in order of arrival (the first
    /// 100,000).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many trading REST requests arrived (any path under `/v2` but
    /// `RenewToken`, answered or not, authenticated or not).
    pub fn trading_requests(&self) -> u64 {
        self.shared.stats().trading_requests
    }

    /// Holds every trading REST answer back by `delay` (`None`: answer at
    /// once), from the next request on. Token endpoints and the feed are
    /// not delayed.
    pub fn set_rest_delay(&self, delay: Option<Duration>) {
        *lock(&self.shared.rest_delay) = delay;
    }

    /// The next `POST /v2/orders` is answered with HTTP `status` and
    /// DhanHQ's error object (`errorCode` = `error_code`, `errorType` the
    /// one DhanHQ pairs with it, `errorMessage` = `message`), before any
    /// other check; no order is placed.
    pub fn fail_next_order(&self, status: u16, error_code: &str, message: &str) {
        trade_rest::fail_next(&self.shared, status, error_code, message);
    }

    /// Every paper order (all clients), in placement order.
    pub fn paper_orders(&self) -> Vec<PaperOrder> {
        lock(&self.shared.paper).orders().to_vec()
    }

    /// `client_id`'s paper funds.
    pub fn paper_funds(&self, client_id: &str) -> PaperFunds {
        lock(&self.shared.paper).funds(client_id)
    }

    /// Every paper position (all clients).
    pub fn paper_positions(&self) -> Vec<PaperPosition> {
        lock(&self.shared.paper).positions().to_vec()
    }

    /// The last traded price the paper book knows for `key` (generated,
    /// injected, or the model's opening level), if any.
    pub fn paper_ltp(&self, key: InstrumentKey) -> Option<f64> {
        let paper = lock(&self.shared.paper);
        self.shared.ltp(&paper, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_masters_options_find_their_underlyings() {
        let master = Master::sample();
        let options = sample_options();
        let listed = master.iter().filter(|i| i.kind() == Kind::Option).count();
        assert!(listed > 0);
        assert_eq!(options.len(), listed, "every sample option is priced");
        for i in master.iter().filter(|i| i.kind() == Kind::Option) {
            let spec = options[&i.key()];
            let under = master.get(spec.underlying).unwrap();
            let name = if under.kind() == Kind::Future {
                under.underlying()
            } else {
                under.symbol()
            };
            assert_eq!(name, i.underlying(), "{}", i.symbol());
            assert_eq!(Some(spec.strike), i.strike());
            assert_eq!(Some(spec.expiry), i.expiry());
            assert_eq!(spec.tick, i.tick_rupees());
            match i.key().segment {
                Segment::McxComm => {
                    assert_eq!(spec.model, Model::Black76);
                    assert_eq!(under.kind(), Kind::Future);
                    // The first future expiring on or after the option.
                    assert!(under.expiry() >= i.expiry());
                    let earlier = master.iter().any(|f| {
                        f.kind() == Kind::Future
                            && f.key().segment == Segment::McxComm
                            && f.underlying() == i.underlying()
                            && f.expiry() >= i.expiry()
                            && f.expiry() < under.expiry()
                    });
                    assert!(!earlier, "{}", i.symbol());
                    assert_eq!((spec.base_vol, spec.close_minutes_ist), (0.30, 1410));
                }
                Segment::NseFno | Segment::BseFno => {
                    assert_eq!(spec.model, Model::BlackScholes);
                    let want = if i.underlying() == "RELIANCE" {
                        (Kind::Equity, 0.25)
                    } else {
                        (Kind::Index, 0.14)
                    };
                    assert_eq!((under.kind(), spec.base_vol), want, "{}", i.symbol());
                }
                _ => assert_eq!(spec.model, Model::Black76),
            }
        }
        let nifty_ce = options[&InstrumentKey::new(Segment::NseFno, 60_000)];
        assert_eq!(nifty_ce.underlying, InstrumentKey::new(Segment::IdxI, 13));
        assert_eq!(nifty_ce.right, Right::Call);
        // The smile: more volatility away from the money, either way.
        assert_eq!(nifty_ce.vol(25_000.0), 0.14);
        assert!(nifty_ce.vol(27_000.0) > 0.16 && nifty_ce.vol(23_000.0) > 0.16);
    }
}
