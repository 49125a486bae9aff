//! DhanHQ's live order-update stream, relayed to `/ws` clients.
//!
//! One thread ("dhan-orders") owns a blocking WebSocket to the order-update
//! endpoint (`wss://api-order-update.dhan.co`, or `ws://` for tests and the
//! simulator). It logs in, reads `order_alert` messages, renders each into
//! one relay message ([`render`]) and hands the bytes to the fanout over a
//! channel, waking it. The thread is not on the hot path: blocking I/O with
//! a 1 s read timeout, so it notices `stop` and a credentials rotation
//! (the token keeper swaps [`crate::token::SharedCredentials`]; compared
//! with `Arc::ptr_eq`) within a second and reconnects with the new token.
//!
//! Contract:
//! - every `order_alert` with an order number becomes exactly one message,
//!   in the order received; the channel is unbounded (order updates are
//!   few and must never be dropped); the fanout drains it each turn;
//! - anything else is counted, never relayed: a message that is not an
//!   `order_alert` (`ignored`, logged at debug without its content), bad
//!   JSON or an alert without an order number (`malformed`), a frame over
//!   [`MAX_FRAME_BYTES`] (refused by tungstenite; the connection is
//!   dropped and reopened, counted in `oversized`);
//! - any failure reconnects with capped exponential backoff and jitter
//!   ([`crate::upstream::backoff`]);
//! - the client id and token appear only in the login message: never in
//!   logs, errors or stats (error texts pass through
//!   [`Credentials::redact`]).
//!
//! # DhanHQ facts and where they come from
//! - Endpoint and login message: DhanHQ's official Python SDK 2.3.0,
//!   `dhanhq/orderupdate.py` (`OrderUpdate.connect_order_update`), and the
//!   docs page "Live Order Update" (<https://dhanhq.co/docs/v2/order-update/>),
//!   which agree: `{"LoginReq":{"MsgCode":42,"ClientId":…,"Token":…},
//!   "UserType":"SELF"}`. We send it byte for byte as the SDK's
//!   `json.dumps` does (`", "` and `": "` separators). No login
//!   acknowledgement is documented; none is awaited.
//! - Messages: the SDK checks `Type == "order_alert"` and reads `Data`
//!   (its own fallback printout reads `orderNo`/`status` in lower case,
//!   while the docs' sample uses PascalCase `OrderNo`/`Status`), so every
//!   field name is matched case-insensitively.
//! - Field names and value sets (`Exchange` NSE/BSE/MCX; `Segment`
//!   E/D/C/M; `Product` C/I/M/F/V/B = CNC/INTRADAY/MARGIN/MTF/CO/BO;
//!   `TxnType` B/S; `OrderType` LMT/MKT/SL/SLM; `Status` TRANSIT, PENDING,
//!   REJECTED, CANCELLED, TRADED, EXPIRED; `ReasonDescription` the
//!   rejection reason or `CONFIRMED`; `LastUpdatedTime` an IST
//!   `YYYY-MM-DD HH:MM:SS` string): a transcription of the docs page above
//!   (GitHub code search: "Dhan V2 Live Order Update WebSocket — Complete
//!   Reference", sourced from that page) and the DhanHQ Ruby client
//!   (`shubhamtaywade82/dhanhq-client`, `lib/DhanHQ/models/order_update.rb`
//!   and `docs/LIVE_ORDER_UPDATES.md`), which agree with each other.
//! - Inferred, not verified: the docs' sample carries `"Status":
//!   "Cancelled"` in mixed case while the table lists upper case, so
//!   statuses are matched case-insensitively with spaces and hyphens read
//!   as `_`; `PART_TRADED` (the REST vocabulary) is accepted as "Part
//!   Traded"/"Partially Traded" too. The `Exchange`+`Segment` letters are
//!   those of the scrip master ([`crate::instrument::feed_segment`]).
//!   Unknown values are passed on upper-cased, never dropped.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Number, Value};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::domain::{InstrumentKey, SecurityId, Segment};
use crate::instrument::{feed_segment, Exchange, Master, SharedMaster};
use crate::token::SharedCredentials;
use crate::upstream::backoff::{Backoff, BackoffConfig};
use crate::upstream::Credentials;

/// Largest frame or message accepted from the order stream.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How long one read waits: the thread checks `stop` and the credentials
/// this often.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// TCP connect, and the whole WebSocket (and TLS) handshake, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest error text kept in the stats.
const ERROR_MAX: usize = 200;

/// What the order-stream thread needs.
#[derive(Debug)]
pub struct OrderStreamConfig {
    /// `wss://api-order-update.dhan.co` (or `ws://…` for tests).
    pub url: String,
    /// Extra trusted CA certificates (`--feed-ca`), for `wss://`.
    pub extra_ca: Vec<CertificateDer<'static>>,
    /// The credentials in use, swapped by the token keeper.
    pub credentials: SharedCredentials,
    /// The instrument master, for symbols.
    pub master: SharedMaster,
}

/// Counters for `/health` and `/stats`.
#[derive(Debug, Default)]
pub struct OrderStreamStats {
    connected: AtomicBool,
    connects: AtomicU64,
    messages: AtomicU64,
    orders: AtomicU64,
    ignored: AtomicU64,
    malformed: AtomicU64,
    oversized: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl OrderStreamStats {
    /// Logged in and reading.
    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// Connections opened (logins sent).
    pub fn connects(&self) -> u64 {
        self.connects.load(Relaxed)
    }

    /// Messages received (any kind).
    pub fn messages(&self) -> u64 {
        self.messages.load(Relaxed)
    }

    /// Order updates relayed.
    pub fn orders(&self) -> u64 {
        self.orders.load(Relaxed)
    }

    /// Messages that were not order alerts.
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Relaxed)
    }

    /// Messages that were not JSON, or alerts without an order number.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Relaxed)
    }

    /// Frames refused for their size.
    pub fn oversized(&self) -> u64 {
        self.oversized.load(Relaxed)
    }

    /// Why the last connection failed (no secrets), if one did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    fn set_error(&self, e: String) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e);
        }
    }

    /// The counters as JSON (camelCase).
    pub fn json(&self) -> Value {
        serde_json::json!({
            "connected": self.connected(),
            "connects": self.connects(),
            "messages": self.messages(),
            "orders": self.orders(),
            "ignored": self.ignored(),
            "malformed": self.malformed(),
            "oversized": self.oversized(),
            "lastError": self.last_error(),
        })
    }
}

/// The running order-stream thread. Stops (and joins) on
/// [`OrderStream::shutdown`] or drop, within about a second.
#[derive(Debug)]
pub struct OrderStream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<OrderStreamStats>,
}

impl OrderStream {
    /// Starts the "dhan-orders" thread. Rendered order messages go to
    /// `out`, each followed by a `waker` wake.
    pub fn spawn(
        config: OrderStreamConfig,
        out: Sender<Bytes>,
        waker: Arc<mio::Waker>,
    ) -> io::Result<OrderStream> {
        let tls = crate::upstream::tls::client_config(&config.extra_ca)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(OrderStreamStats::default());
        let worker = Worker {
            config,
            tls,
            out,
            waker,
            stop: Arc::clone(&stop),
            stats: Arc::clone(&stats),
        };
        let thread = std::thread::Builder::new()
            .name("dhan-orders".into())
            .spawn(move || worker.run())?;
        Ok(OrderStream {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<OrderStreamStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OrderStream {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The login message, as the SDK's `json.dumps` writes it.
pub fn login_message(client_id: &str, token: &str) -> String {
    let q = |s: &str| Value::String(s.to_string()).to_string();
    format!(
        "{{\"LoginReq\": {{\"MsgCode\": 42, \"ClientId\": {}, \"Token\": {}}}, \"UserType\": \"SELF\"}}",
        q(client_id),
        q(token)
    )
}

/// What one inbound text message is.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// An order alert, rendered for clients.
    Order(String),
    /// Valid JSON, not an order alert.
    Ignored,
    /// Not JSON, or an order alert without an order number.
    Malformed,
}

/// Classifies (and renders) one message from the order stream.
pub fn classify(text: &[u8], master: &Master) -> Inbound {
    let Ok(v) = serde_json::from_slice::<Value>(text) else {
        return Inbound::Malformed;
    };
    let Value::Object(obj) = &v else {
        return Inbound::Ignored;
    };
    let is_alert = field(obj, "Type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("order_alert"));
    if !is_alert {
        return Inbound::Ignored;
    }
    match field(obj, "Data").and_then(|d| render(d, master)) {
        Some(s) => Inbound::Order(s),
        None => Inbound::Malformed,
    }
}

/// The relay message for one alert's `Data`; `None` when it is not an
/// object or has no order number.
pub fn render(data: &Value, master: &Master) -> Option<String> {
    let Value::Object(d) = data else {
        return None;
    };
    let order_id = text(d, "OrderNo").filter(|s| !s.is_empty())?;
    let status = text(d, "Status").map(|s| order_status(&s));
    let security_id = text(d, "SecurityId");
    let segment = segment_of(d);
    let from_master = segment
        .zip(
            security_id
                .as_deref()
                .and_then(|s| s.parse::<SecurityId>().ok()),
        )
        .and_then(|(segment, security_id)| {
            master
                .get(InstrumentKey {
                    segment,
                    security_id,
                })
                .map(|i| i.symbol().to_string())
        });
    let symbol = from_master
        .or_else(|| text(d, "Symbol").filter(|s| !s.is_empty()))
        .or_else(|| text(d, "DisplayName").filter(|s| !s.is_empty()));
    let quantity = number(d, "Quantity");
    let filled = number(d, "TradedQty");
    let remaining = number(d, "RemainingQuantity").or_else(|| {
        let (q, f) = (quantity.as_ref()?.as_f64()?, filled.as_ref()?.as_f64()?);
        Number::from_f64(q - f)
    });
    let reason = if status.as_deref() == Some("REJECTED") {
        text(d, "ReasonDescription")
            .filter(|r| !r.is_empty() && !r.eq_ignore_ascii_case("CONFIRMED"))
            .or_else(|| text(d, "Remarks").filter(|r| !r.is_empty()))
    } else {
        None
    };
    let s = |v: Option<String>| v.map_or(Value::Null, Value::String);
    let n = |v: Option<Number>| v.map_or(Value::Null, Value::Number);
    let fields: [(&str, Value); 18] = [
        ("orderId", Value::String(order_id)),
        ("status", s(status)),
        ("side", s(text(d, "TxnType").map(|t| side(&t)))),
        ("exchangeSegment", s(segment.map(|g| g.name().to_string()))),
        ("securityId", s(security_id)),
        ("symbol", s(symbol)),
        ("quantity", n(quantity)),
        ("filledQty", n(filled)),
        ("remainingQuantity", n(remaining)),
        ("price", n(number(d, "Price"))),
        ("triggerPrice", n(number(d, "TriggerPrice"))),
        ("averagePrice", n(number(d, "AvgTradedPrice"))),
        ("orderType", s(text(d, "OrderType").map(|t| order_type(&t)))),
        ("productType", s(text(d, "Product").map(|p| product(&p)))),
        (
            "validity",
            s(text(d, "Validity").map(|v| v.to_ascii_uppercase())),
        ),
        ("reason", s(reason)),
        (
            "correlationId",
            s(text(d, "CorrelationId").filter(|c| !c.is_empty())),
        ),
        ("time", s(text(d, "LastUpdatedTime"))),
    ];
    let mut out = String::with_capacity(512);
    out.push_str("{\"type\":\"order\"");
    for (k, v) in &fields {
        out.push_str(",\"");
        out.push_str(k);
        out.push_str("\":");
        out.push_str(&v.to_string());
    }
    out.push('}');
    Some(out)
}

/// A field by name, ignoring case.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string field (numbers as their text), trimmed; `None` when absent or
/// null.
fn text(obj: &Map<String, Value>, name: &str) -> Option<String> {
    match field(obj, name)? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A numeric field (a number, or a string holding one).
fn number(obj: &Map<String, Value>, name: &str) -> Option<Number> {
    match field(obj, name)? {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(Number::from(i))
            } else {
                s.parse::<f64>().ok().and_then(Number::from_f64)
            }
        }
        _ => None,
    }
}

/// The REST segment name from `Exchange` + `Segment` (or an
/// `ExchangeSegment` already named).
fn segment_of(d: &Map<String, Value>) -> Option<Segment> {
    if let Some(named) = text(d, "ExchangeSegment").and_then(|s| s.parse::<Segment>().ok()) {
        return Some(named);
    }
    let exchange = text(d, "Exchange")?;
    if let Ok(named) = exchange.parse::<Segment>() {
        return Some(named);
    }
    let letter = text(d, "Segment")?.to_ascii_uppercase();
    feed_segment(Exchange::parse(&exchange)?, &letter).ok()
}

/// Upper case, with spaces and hyphens as underscores.
fn normalized(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The stream's `Status` in the REST API's vocabulary.
pub fn order_status(s: &str) -> String {
    let n = normalized(s);
    match n.as_str() {
        "TRANSIT" => "TRANSIT",
        "PENDING" => "PENDING",
        "TRADED" => "TRADED",
        "PART_TRADED" | "PARTTRADED" | "PARTIALLY_TRADED" => "PART_TRADED",
        "CANCELLED" | "CANCELED" => "CANCELLED",
        "REJECTED" => "REJECTED",
        "EXPIRED" => "EXPIRED",
        _ => return n,
    }
    .to_string()
}

/// `TxnType` B/S as BUY/SELL.
fn side(s: &str) -> String {
    match normalized(s).as_str() {
        "B" | "BUY" => "BUY".into(),
        "S" | "SELL" => "SELL".into(),
        other => other.into(),
    }
}

/// `OrderType` LMT/MKT/SL/SLM as the REST names.
fn order_type(s: &str) -> String {
    match normalized(s).as_str() {
        "LMT" | "LIMIT" => "LIMIT".into(),
        "MKT" | "MARKET" => "MARKET".into(),
        "SL" | "STOP_LOSS" => "STOP_LOSS".into(),
        "SLM" | "SL_M" | "STOP_LOSS_MARKET" => "STOP_LOSS_MARKET".into(),
        other => other.into(),
    }
}

/// `Product` letters as the REST names.
fn product(s: &str) -> String {
    match normalized(s).as_str() {
        "C" | "CNC" => "CNC".into(),
        "I" | "INTRADAY" => "INTRADAY".into(),
        "M" | "MARGIN" => "MARGIN".into(),
        "F" | "MTF" => "MTF".into(),
        "V" | "CO" => "CO".into(),
        "B" | "BO" => "BO".into(),
        other => other.into(),
    }
}

/// The byte stream under the WebSocket.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// How one connection ended.
enum End {
    /// `stop` was set, or the fanout is gone.
    Stopped,
    /// The credentials changed: reconnect now.
    Rotated,
    /// It failed; `delivered` when it carried messages first.
    Failed { why: String, delivered: bool },
}

struct Worker {
    config: OrderStreamConfig,
    tls: Arc<rustls::ClientConfig>,
    out: Sender<Bytes>,
    waker: Arc<mio::Waker>,
    stop: Arc<AtomicBool>,
    stats: Arc<OrderStreamStats>,
}

impl Worker {
    fn run(self) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let mut backoff = Backoff::new(BackoffConfig::default(), seed);
        while !self.stop.load(Relaxed) {
            let creds = self.config.credentials.load_full();
            let end = self.session(&creds);
            self.stats.connected.store(false, Relaxed);
            match end {
                End::Stopped => break,
                End::Rotated => {
                    log::info!("order stream: credentials changed; reconnecting");
                    backoff.reset();
                }
                End::Failed { why, delivered } => {
                    let why: String = creds.redact(&why).chars().take(ERROR_MAX).collect();
                    log::warn!("order stream: {why}; reconnecting");
                    self.stats.set_error(why);
                    if delivered {
                        backoff.reset();
                    }
                    self.wait(backoff.next_delay(), &creds);
                }
            }
        }
    }

    /// Sleeps `delay`, cut short by `stop` or a credentials change.
    fn wait(&self, delay: Duration, creds: &Arc<Credentials>) {
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.stop.load(Relaxed) && !self.rotated(creds) {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }

    fn rotated(&self, creds: &Arc<Credentials>) -> bool {
        !Arc::ptr_eq(creds, &self.config.credentials.load())
    }

    /// One connection: connect, log in, relay until it ends.
    fn session(&self, creds: &Arc<Credentials>) -> End {
        let mut ws = match self.connect() {
            Ok(ws) => ws,
            Err(why) => {
                return End::Failed {
                    why,
                    delivered: false,
                }
            }
        };
        let login = login_message(creds.client_id(), creds.access_token());
        if let Err(e) = ws.send(Message::text(login)) {
            return End::Failed {
                why: format!("sending the login failed: {e}"),
                delivered: false,
            };
        }
        self.stats.connects.fetch_add(1, Relaxed);
        self.stats.connected.store(true, Relaxed);
        log::info!("order stream: connected to {}", self.config.url);
        let mut delivered = false;
        let end = loop {
            if self.stop.load(Relaxed) {
                break End::Stopped;
            }
            if self.rotated(creds) {
                break End::Rotated;
            }
            let payload = match ws.read() {
                Ok(Message::Text(t)) => Bytes::from(t),
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) => {
                    break End::Failed {
                        why: "the server closed the connection".into(),
                        delivered,
                    }
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    self.stats.oversized.fetch_add(1, Relaxed);
                    break End::Failed {
                        why: format!("frame refused: {e}"),
                        delivered,
                    };
                }
                Err(e) => {
                    break End::Failed {
                        why: e.to_string(),
                        delivered,
                    }
                }
            };
            self.stats.messages.fetch_add(1, Relaxed);
            let master = self.config.master.load();
            match classify(&payload, &master) {
                Inbound::Order(msg) => {
                    if self.out.send(Bytes::from(msg)).is_err() {
                        break End::Stopped; // the fanout is gone
                    }
                    let _ = self.waker.wake();
                    self.stats.orders.fetch_add(1, Relaxed);
                    delivered = true;
                }
                Inbound::Ignored => {
                    self.stats.ignored.fetch_add(1, Relaxed);
                    log::debug!(
                        "order stream: ignored a message that is not an order alert ({} bytes)",
                        payload.len()
                    );
                }
                Inbound::Malformed => {
                    self.stats.malformed.fetch_add(1, Relaxed);
                    log::debug!("order stream: malformed message ({} bytes)", payload.len());
                }
            }
        };
        let _ = ws.close(None);
        let _ = ws.flush();
        end
    }

    /// TCP (+ TLS) + WebSocket handshake, within [`CONNECT_TIMEOUT`].
    fn connect(&self) -> Result<WebSocket<Conn>, String> {
        let url = &self.config.url;
        let uri: tungstenite::http::Uri = url
            .parse()
            .map_err(|e| format!("bad order stream URL '{url}': {e}"))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(format!("order stream URL '{url}' must be ws:// or wss://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("order stream URL '{url}' has no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addrs = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let mut last = format!("{host} has no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {host}:{port}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| tcp.set_write_timeout(Some(CONNECT_TIMEOUT)))
            .map_err(|e| format!("socket setup failed: {e}"))?;
        let conn = if tls {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| format!("'{host}' is not a valid TLS server name"))?;
            let session = ClientConnection::new(Arc::clone(&self.tls), name)
                .map_err(|e| format!("TLS setup failed: {e}"))?;
            Conn::Tls(Box::new(StreamOwned::new(session, tcp)))
        } else {
            Conn::Plain(tcp)
        };
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut attempt =
            tungstenite::client::client_with_config(url.as_str(), conn, Some(ws_config));
        loop {
            match attempt {
                Ok((ws, _response)) => return Ok(ws),
                Err(HandshakeError::Interrupted(mid)) => {
                    if self.stop.load(Relaxed) {
                        return Err("stopping".into());
                    }
                    if Instant::now() >= deadline {
                        return Err(format!("handshake with {host} timed out"));
                    }
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Failure(e)) => {
                    return Err(format!("handshake with {host} failed: {e}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;
    use std::net::TcpListener;

    fn alert(data: Value) -> String {
        serde_json::json!({"Type": "order_alert", "Data": data}).to_string()
    }

    /// The docs' sample, for RELIANCE on NSE (in the sample master).
    fn pending_reliance() -> Value {
        serde_json::json!({
            "Exchange": "NSE", "Segment": "E", "Source": "P", "SecurityId": "2885",
            "ClientId": "1000000001", "ExchOrderNo": "1400000000404591",
            "OrderNo": "1124091136546", "Product": "C", "TxnType": "B",
            "OrderType": "LMT", "Validity": "DAY", "DiscQuantity": 0,
            "RemainingQuantity": 6, "Quantity": 10, "TradedQty": 4, "Price": 1450.5,
            "TriggerPrice": 0, "TradedPrice": 1450.5, "AvgTradedPrice": 1450.25,
            "OrderDateTime": "2026-12-03 14:39:29", "LastUpdatedTime": "2026-12-03 14:39:31",
            "ReasonDescription": "CONFIRMED", "Instrument": "EQUITY", "Symbol": "RELIANCE-EQ",
            "Status": "Pending", "CorrelationId": "abc-123", "Remarks": ""
        })
    }

    fn parsed(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn renders_the_docs_sample() {
        let m = Master::sample();
        let out = render(&pending_reliance(), &m).unwrap();
        assert!(out.starts_with("{\"type\":\"order\",\"orderId\":\"1124091136546\""));
        assert_eq!(
            parsed(&out),
            serde_json::json!({
                "type": "order", "orderId": "1124091136546", "status": "PENDING",
                "side": "BUY", "exchangeSegment": "NSE_EQ", "securityId": "2885",
                "symbol": "RELIANCE", "quantity": 10, "filledQty": 4,
                "remainingQuantity": 6, "price": 1450.5, "triggerPrice": 0,
                "averagePrice": 1450.25, "orderType": "LIMIT", "productType": "CNC",
                "validity": "DAY", "reason": null, "correlationId": "abc-123",
                "time": "2026-12-03 14:39:31"
            })
        );
    }

    #[test]
    fn rejected_fno_in_lower_case_names_with_its_reason() {
        let m = Master::sample();
        let data = serde_json::json!({
            "exchange": "NSE", "segment": "D", "securityId": 999999, "orderNo": 42,
            "product": "I", "txnType": "S", "orderType": "SLM", "validity": "ioc",
            "quantity": "75", "tradedQty": 0, "price": 0, "triggerPrice": "101.5",
            "avgTradedPrice": 0, "status": "REJECTED",
            "reasonDescription": "RMS:Margin Exceeds", "symbol": "",
            "displayName": "NIFTY 30 DEC 26000 CALL", "correlationId": "",
            "lastUpdatedTime": "2026-12-03 09:15:00"
        });
        let v = parsed(&render(&data, &m).unwrap());
        assert_eq!(v["orderId"], "42");
        assert_eq!(v["status"], "REJECTED");
        assert_eq!(v["side"], "SELL");
        assert_eq!(v["exchangeSegment"], "NSE_FNO");
        assert_eq!(v["securityId"], "999999");
        assert_eq!(v["symbol"], "NIFTY 30 DEC 26000 CALL");
        assert_eq!(v["quantity"], 75);
        assert_eq!(v["remainingQuantity"], 75.0);
        assert_eq!(v["triggerPrice"], 101.5);
        assert_eq!(v["orderType"], "STOP_LOSS_MARKET");
        assert_eq!(v["productType"], "INTRADAY");
        assert_eq!(v["validity"], "IOC");
        assert_eq!(v["reason"], "RMS:Margin Exceeds");
        assert_eq!(v["correlationId"], Value::Null);
        // Remarks stand in when the reason is only "CONFIRMED".
        let mut d = data.clone();
        d["reasonDescription"] = "CONFIRMED".into();
        d["Remarks"] = "Insufficient funds".into();
        assert_eq!(
            parsed(&render(&d, &m).unwrap())["reason"],
            "Insufficient funds"
        );
    }

    #[test]
    fn value_sets_map_to_rest_names() {
        for (s, want) in [
            ("Transit", "TRANSIT"),
            ("PENDING", "PENDING"),
            ("Traded", "TRADED"),
            ("Part Traded", "PART_TRADED"),
            ("PART_TRADED", "PART_TRADED"),
            ("Cancelled", "CANCELLED"),
            ("Rejected", "REJECTED"),
            ("Expired", "EXPIRED"),
            ("Trigger Pending", "TRIGGER_PENDING"),
        ] {
            assert_eq!(order_status(s), want, "{s}");
        }
        for (p, want) in [
            ("C", "CNC"),
            ("I", "INTRADAY"),
            ("M", "MARGIN"),
            ("F", "MTF"),
            ("V", "CO"),
            ("B", "BO"),
            ("x", "X"),
        ] {
            assert_eq!(product(p), want);
        }
        for (t, want) in [
            ("LMT", "LIMIT"),
            ("MKT", "MARKET"),
            ("SL", "STOP_LOSS"),
            ("SLM", "STOP_LOSS_MARKET"),
        ] {
            assert_eq!(order_type(t), want);
        }
        let m = Master::sample();
        for (ex, seg, want) in [
            ("NSE", "E", "NSE_EQ"),
            ("NSE", "D", "NSE_FNO"),
            ("NSE", "C", "NSE_CURRENCY"),
            ("BSE", "E", "BSE_EQ"),
            ("BSE", "D", "BSE_FNO"),
            ("BSE", "C", "BSE_CURRENCY"),
            ("MCX", "M", "MCX_COMM"),
        ] {
            let d = serde_json::json!({"OrderNo": "1", "Exchange": ex, "Segment": seg});
            let v = parsed(&render(&d, &m).unwrap());
            assert_eq!(v["exchangeSegment"], want, "{ex} {seg}");
        }
        let d = serde_json::json!({"OrderNo": "1", "Exchange": "XYZ", "Segment": "Q"});
        assert_eq!(
            parsed(&render(&d, &m).unwrap())["exchangeSegment"],
            Value::Null
        );
    }

    #[test]
    fn classifies_what_is_not_an_order() {
        let m = Master::sample();
        assert!(matches!(
            classify(alert(pending_reliance()).as_bytes(), &m),
            Inbound::Order(_)
        ));
        assert_eq!(classify(b"not json", &m), Inbound::Malformed);
        assert_eq!(classify(br#"{"Type":"heartbeat"}"#, &m), Inbound::Ignored);
        assert_eq!(classify(b"[1,2]", &m), Inbound::Ignored);
        // An alert without an order number.
        assert_eq!(
            classify(br#"{"Type":"order_alert","Data":{"Status":"Pending"}}"#, &m),
            Inbound::Malformed
        );
    }

    #[test]
    fn login_is_the_sdks_json() {
        let v = parsed(&login_message("1000000001", "ey\"J"));
        assert_eq!(
            v,
            serde_json::json!({"LoginReq": {"MsgCode": 42, "ClientId": "1000000001", "Token": "ey\"J"}, "UserType": "SELF"})
        );
        assert!(login_message("a", "b").starts_with("{\"LoginReq\": {\"MsgCode\": 42, "));
    }

    /// One test server connection: the login it received.
    fn accept_login(l: &TcpListener) -> (tungstenite::WebSocket<std::net::TcpStream>, Value) {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut ws = tungstenite::accept(s).unwrap();
        let login = match ws.read().unwrap() {
            Message::Text(t) => parsed(t.as_str()),
            other => panic!("expected the login, got {other:?}"),
        };
        (ws, login)
    }

    /// Reads until the client goes away.
    fn until_closed(mut ws: tungstenite::WebSocket<std::net::TcpStream>) {
        while ws.read().is_ok() {}
    }

    #[test]
    fn relays_reconnects_and_follows_the_token() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}", l.local_addr().unwrap());
        let credentials: SharedCredentials = Arc::new(ArcSwap::from_pointee(Credentials::new(
            "1000000001",
            "tok-1",
        )));
        let (logins_tx, logins) = crossbeam_channel::unbounded::<Value>();
        let server = std::thread::spawn(move || {
            // 1: two alerts around junk, then a drop.
            let (mut ws, login) = accept_login(&l);
            logins_tx.send(login).unwrap();
            let mut second = pending_reliance();
            second["OrderNo"] = "2".into();
            second["Status"] = "Traded".into();
            for m in [
                alert(pending_reliance()),
                "{not json".to_string(),
                r#"{"Type":"login_ack","Data":{}}"#.to_string(),
                alert(second),
            ] {
                ws.send(Message::text(m)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
            drop(ws);
            // 2: the reconnect, then a frame over the cap.
            let (mut ws, login) = accept_login(&l);
            logins_tx.send(login).unwrap();
            let huge = alert(serde_json::json!({"OrderNo": "x".repeat(MAX_FRAME_BYTES)}));
            ws.send(Message::text(huge)).unwrap();
            until_closed(ws);
            // 3: the reconnect, kept until the client leaves (rotation).
            let (ws, login) = accept_login(&l);
            logins_tx.send(login).unwrap();
            until_closed(ws);
            // 4: with the new token.
            let (ws, login) = accept_login(&l);
            logins_tx.send(login).unwrap();
            until_closed(ws);
        });
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (out, orders) = crossbeam_channel::unbounded();
        let stream = OrderStream::spawn(
            OrderStreamConfig {
                url,
                extra_ca: Vec::new(),
                credentials: Arc::clone(&credentials),
                master: Arc::new(ArcSwap::from_pointee(Master::sample())),
            },
            out,
            waker,
        )
        .unwrap();
        let stats = stream.stats();
        let wait = Duration::from_secs(10);

        let login = logins.recv_timeout(wait).unwrap();
        assert_eq!(login["LoginReq"]["MsgCode"], 42);
        assert_eq!(login["LoginReq"]["ClientId"], "1000000001");
        assert_eq!(login["LoginReq"]["Token"], "tok-1");
        assert_eq!(login["UserType"], "SELF");
        let first = parsed(std::str::from_utf8(&orders.recv_timeout(wait).unwrap()).unwrap());
        let second = parsed(std::str::from_utf8(&orders.recv_timeout(wait).unwrap()).unwrap());
        assert_eq!(
            (first["orderId"].as_str(), first["status"].as_str()),
            (Some("1124091136546"), Some("PENDING"))
        );
        assert_eq!(
            (second["orderId"].as_str(), second["status"].as_str()),
            (Some("2"), Some("TRADED"))
        );

        // The drop: a reconnect with the same token.
        let login = logins.recv_timeout(wait).unwrap();
        assert_eq!(login["LoginReq"]["Token"], "tok-1");
        assert_eq!(stats.orders(), 2);
        assert_eq!(stats.malformed(), 1);
        assert_eq!(stats.ignored(), 1);
        assert_eq!(stats.messages(), 4);
        assert!(stats.last_error().is_some());

        // The oversized frame: refused, not relayed, and a reconnect.
        let login = logins.recv_timeout(wait).unwrap();
        assert_eq!(login["LoginReq"]["Token"], "tok-1");
        assert_eq!(stats.oversized(), 1);
        let deadline = Instant::now() + wait;
        while stats.connects() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(stats.connects(), 3);

        // A new token: the stream reconnects with it.
        credentials.store(Arc::new(Credentials::new("1000000001", "tok-2")));
        let login = logins.recv_timeout(wait).unwrap();
        assert_eq!(login["LoginReq"]["Token"], "tok-2");

        // No secret in the stats.
        let text = stats.json().to_string();
        assert!(
            !text.contains("tok-") && !text.contains("1000000001"),
            "{text}"
        );
        assert!(orders.try_recv().is_err());

        let t0 = Instant::now();
        stream.shutdown();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        server.join().unwrap();
    }
}
