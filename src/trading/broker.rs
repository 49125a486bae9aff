//! The broker threads: every trading call to DhanHQ, off the front door
//! and the fanout.
//!
//! The front door hands a call over with a [`Ticket`] (which connection
//! waits) and keeps serving; the answer comes back over a channel with a
//! wake-up. Two threads, so a DhanHQ call that hangs until its time limit
//! holds only its own kind: `dhan-orders` places, modifies and cancels (in
//! the order asked, at most [`ORDERS_PER_SEC`](super::ORDERS_PER_SEC) a
//! second, auditing each), `dhan-reads` fetches funds, the order book and
//! positions. The queues are bounded: a full one is answered 503 at once.
//!
//! A placement that gets no answer (time limit, cut connection) is never
//! sent again: the broker asks DhanHQ for the order by its
//! `correlationId` and answers with what it finds — placed after all, not
//! there, or unknown (504, with the correlation id to check).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use mio::Waker;
use serde_json::{json, Value};

use super::audit::{Audit, AuditLog, Record};
use super::client::{self, CallError, DhanRest, Method};
use super::guard::{self, Facts};
use super::order::{self, OrderRequest};
use super::stats::{TradingMonitor, TradingStats};
use super::stream::{OrderStream, OrderStreamConfig, OrderStreamStats};
use super::{TradingConfig, ORDERS_PER_SEC};
use crate::book::SharedSnapshot;
use crate::domain::InstrumentKey;
use crate::fanout::protocol::InstrumentRef;
use crate::instrument::{SharedMaster, WallClock};
use crate::token::SharedCredentials;

/// Jobs waiting per thread before new ones are refused (503).
const QUEUE: usize = 64;

/// How long to wait before asking DhanHQ for a placement that got no
/// clear answer.
const LOOKUP_AFTER: Duration = Duration::from_millis(1_000);

/// An order call that waited this long in the queue (DhanHQ slow, calls
/// before it timing out) is not sent: the caller has long given up, and
/// the market has moved. Well inside the front door's wait, so the caller
/// hears "not sent" rather than a bare 504.
pub const STALE_AFTER: Duration = Duration::from_secs(20);

/// Which waiting connection an answer is for: its slot and its unique
/// number (slots are reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The front door's connection slot.
    pub slot: usize,
    /// The connection's number.
    pub conn: u64,
}

/// A trading call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `GET /api/funds`.
    Funds,
    /// `GET /api/orders`.
    Orders,
    /// `GET /api/positions`.
    Positions,
    /// `POST /api/orders` with this body.
    Place(Vec<u8>),
    /// `PUT /api/orders/{id}` with this body.
    Modify(String, Vec<u8>),
    /// `DELETE /api/orders/{id}`.
    Cancel(String),
    /// `POST /api/admin/cancel-all`.
    CancelAll,
}

impl Call {
    /// Whether it places, changes or cancels an order (the orders thread,
    /// the rate limit, the audit log).
    pub fn is_order(&self) -> bool {
        matches!(self, Call::Place(_) | Call::Modify(..) | Call::Cancel(_))
    }

    fn action(&self) -> &'static str {
        match self {
            Call::Funds => "funds",
            Call::Orders => "orders",
            Call::Positions => "positions",
            Call::Place(_) => "place",
            Call::Modify(..) => "modify",
            Call::Cancel(_) => "cancel",
            Call::CancelAll => "cancel-all",
        }
    }

    /// The request as the audit log shows it.
    fn request(&self) -> Value {
        let body = |b: &[u8]| {
            serde_json::from_slice::<Value>(b).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&b[..b.len().min(200)]).into())
            })
        };
        match self {
            Call::Place(b) => body(b),
            Call::Modify(id, b) => json!({"orderId": id, "terms": body(b)}),
            Call::Cancel(id) => json!({ "orderId": id }),
            _ => Value::Null,
        }
    }
}

/// Who asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The relay key's name (none without access control).
    pub key: Option<String>,
    /// The peer's address.
    pub peer: IpAddr,
}

/// One call on its way to a broker thread.
#[derive(Debug)]
pub struct Job {
    /// When the front door handed it over.
    pub queued: Instant,
    /// Where the answer goes.
    pub ticket: Ticket,
    /// What to do.
    pub call: Call,
    /// Who asked.
    pub caller: Caller,
}

/// A finished call: the HTTP status and JSON body to send.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// Where it goes.
    pub ticket: Ticket,
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

/// What the broker threads read.
#[derive(Clone)]
pub struct BrokerLinks {
    /// The instrument master (names, lot sizes).
    pub master: SharedMaster,
    /// Last traded prices, for the guards.
    pub snapshot: SharedSnapshot,
    /// Today's date, for resolving names.
    pub clock: WallClock,
    /// The DhanHQ credentials in use.
    pub credentials: SharedCredentials,
    /// Wakes the front door when an answer is ready.
    pub front_waker: Arc<Waker>,
    /// Wakes the fanout when an order update is ready.
    pub fanout_waker: Arc<Waker>,
    /// Extra trust roots for the order stream's TLS (`feed_ca`).
    pub extra_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for BrokerLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerLinks")
    }
}

/// The front door's side: hands calls over, collects answers, keeps the
/// kill switch and the order rate limit.
#[derive(Debug)]
pub struct TradingDoor {
    config: Arc<TradingConfig>,
    live: Arc<AtomicBool>,
    orders: Option<Sender<Job>>,
    reads: Option<Sender<Job>>,
    answers: Receiver<Answer>,
    sent: VecDeque<Instant>,
    audit: Option<AuditLog>,
    stats: Arc<TradingStats>,
    stream: Option<Arc<OrderStreamStats>>,
}

/// An answer given at once, without a broker thread.
pub type Now = (u16, String);

fn error_body(message: &str) -> String {
    json!({ "error": message }).to_string()
}

impl TradingDoor {
    /// A door with trading off: every call is 403 with how to turn it on.
    pub fn off() -> TradingDoor {
        TradingDoor {
            config: Arc::new(TradingConfig::default()),
            live: Arc::new(AtomicBool::new(false)),
            orders: None,
            reads: None,
            answers: crossbeam_channel::never(),
            sent: VecDeque::new(),
            audit: None,
            stats: Arc::default(),
            stream: None,
        }
    }

    /// A view for `/health`, `/stats` and `/metrics`.
    pub fn monitor(&self) -> TradingMonitor {
        TradingMonitor {
            config: Arc::clone(&self.config),
            live: Arc::clone(&self.live),
            stats: Arc::clone(&self.stats),
            audit: self.audit.clone(),
            stream: self.stream.clone(),
        }
    }

    /// Finished calls.
    pub fn answers(&self) -> &Receiver<Answer> {
        &self.answers
    }

    /// `GET /api/trading`: on or off and why, paper or live, the guards;
    /// `allowed` says whether this caller may trade.
    pub fn status(&self, allowed: bool) -> String {
        let c = &self.config;
        let live = self.live.load(Ordering::Relaxed);
        let message = if !c.enabled {
            Some("trading is off: set [trading] enabled = true in the config and restart")
        } else if !live {
            Some("trading is stopped by the kill switch (POST /api/admin/trading {\"enabled\": true} to resume)")
        } else if !allowed {
            Some("this caller may not trade: use a key with the 'trade' scope (or, without access control, connect from this machine)")
        } else {
            None
        };
        let g = &c.guards;
        json!({
            "enabled": c.enabled && live,
            "configured": c.enabled,
            "killSwitch": c.enabled && !live,
            "paper": c.paper,
            "allowed": allowed,
            "message": message,
            "ordersPerSecond": ORDERS_PER_SEC,
            "guards": {
                "maxOrderValue": g.max_order_value,
                "maxQuantity": g.max_quantity,
                "segments": g.segments,
                "products": g.products,
                "priceBandPct": g.price_band_pct,
            },
        })
        .to_string()
    }

    /// Hands `call` to its thread, or answers now: trading off or stopped,
    /// over the order rate, a full queue.
    pub fn submit(
        &mut self,
        ticket: Ticket,
        call: Call,
        caller: Caller,
        now: Instant,
    ) -> Result<(), Now> {
        let (Some(orders), Some(reads)) = (&self.orders, &self.reads) else {
            return Err((
                403,
                error_body(
                    "trading is off: set [trading] enabled = true in the config and restart",
                ),
            ));
        };
        if matches!(call, Call::Place(_) | Call::Modify(..)) && !self.live.load(Ordering::Relaxed) {
            let body = error_body(
                "trading is stopped by the kill switch: no new orders or changes (cancels still work)",
            );
            self.audit(
                &call,
                &caller,
                403,
                "refused",
                json!({"reason": "kill switch"}),
            );
            return Err((403, body));
        }
        if call.is_order() {
            while self
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                self.sent.pop_front();
            }
            if self.sent.len() >= ORDERS_PER_SEC {
                self.audit(
                    &call,
                    &caller,
                    429,
                    "refused",
                    json!({"reason": "order rate"}),
                );
                return Err((
                    429,
                    error_body(&format!(
                        "over {ORDERS_PER_SEC} order calls a second (DhanHQ's limit): try again in a moment"
                    )),
                ));
            }
            self.sent.push_back(now);
        }
        let to = if call.is_order() || call == Call::CancelAll {
            orders
        } else {
            reads
        };
        let job = Job {
            queued: now,
            ticket,
            call,
            caller,
        };
        match to.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                self.audit(
                    &job.call,
                    &job.caller,
                    503,
                    "refused",
                    json!({"reason": "queue full"}),
                );
                Err((
                    503,
                    error_body("the broker is busy (its queue is full): try again shortly"),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                Err((503, error_body("the broker has stopped; restart the relay")))
            }
        }
    }

    /// `POST /api/admin/trading {"enabled": bool}`: the kill switch.
    pub fn set_live(&self, body: &[u8], caller: Caller) -> Now {
        if !self.config.enabled {
            return (
                409,
                error_body("trading is off in the config ([trading] enabled = false); the kill switch has nothing to stop"),
            );
        }
        let enabled = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o))
                if o.len() == 1 && o.get("enabled").is_some_and(Value::is_boolean) =>
            {
                o["enabled"].as_bool().unwrap_or(false)
            }
            _ => {
                return (
                    400,
                    error_body("the body must be {\"enabled\": true} or {\"enabled\": false}"),
                )
            }
        };
        let was = self.live.swap(enabled, Ordering::SeqCst);
        let who = caller
            .key
            .clone()
            .unwrap_or_else(|| caller.peer.to_string());
        // Kept across restarts: a watchdog restart must not resume trading.
        let marker = stopped_marker(&self.config.audit_log);
        let kept = if enabled {
            std::fs::remove_file(&marker).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        } else {
            let when = crate::instrument::date::ist_timestamp(std::time::SystemTime::now());
            crate::token::sources::write_private(
                &marker,
                format!("stopped by {who} at {when}+05:30\n").as_bytes(),
            )
        };
        if let Err(e) = kept {
            log::error!(
                "kill switch: cannot record the state in {}: {e}; it holds until a restart only",
                marker.display()
            );
        }
        if was != enabled {
            if enabled {
                log::warn!("trading resumed by {who}");
            } else {
                log::warn!(
                    "KILL SWITCH: trading stopped by {who}; no new orders until it is resumed"
                );
            }
        }
        let answer = json!({"enabled": enabled, "was": was});
        self.audit_action(
            "kill-switch",
            &caller,
            json!({"enabled": enabled}),
            200,
            "sent",
            answer.clone(),
        );
        (200, answer.to_string())
    }

    fn audit(
        &self,
        call: &Call,
        caller: &Caller,
        status: u16,
        outcome: &'static str,
        answer: Value,
    ) {
        if call.is_order() || *call == Call::CancelAll {
            self.stats.order(outcome);
            self.audit_action(
                call.action(),
                caller,
                call.request(),
                status,
                outcome,
                answer,
            );
        }
    }

    fn audit_action(
        &self,
        action: &'static str,
        caller: &Caller,
        request: Value,
        status: u16,
        outcome: &'static str,
        answer: Value,
    ) {
        if let Some(log) = &self.audit {
            log.write(Record {
                key: caller.key.clone(),
                peer: caller.peer.to_string(),
                action,
                request,
                status,
                outcome,
                answer,
            });
        }
    }
}

/// The running broker threads.
#[derive(Debug)]
pub struct Broker {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    audit: Option<Audit>,
    stream: Option<OrderStream>,
}

/// What [`Broker::spawn`] hands out: the threads, the front door's side,
/// and the order updates for the fanout (none with trading off).
pub type Spawned = (Broker, TradingDoor, Option<Receiver<Bytes>>);

impl Broker {
    /// Opens the audit log and starts the threads; the door goes to the
    /// front door. With trading off, no thread starts and the door says so.
    pub fn spawn(config: TradingConfig, links: BrokerLinks) -> Result<Spawned, String> {
        let stop = Arc::new(AtomicBool::new(false));
        if !config.enabled {
            return Ok((
                Broker {
                    stop,
                    threads: Vec::new(),
                    audit: None,
                    stream: None,
                },
                TradingDoor::off(),
                None,
            ));
        }
        let audit = Audit::open(&config.audit_log)?;
        let marker = stopped_marker(&config.audit_log);
        let stopped = std::fs::read_to_string(&marker).ok();
        if let Some(why) = &stopped {
            log::warn!(
                "trading stays stopped by the kill switch ({}; {}): POST /api/admin/trading {{\"enabled\": true}} to resume",
                why.trim(),
                marker.display()
            );
        }
        let config = Arc::new(config);
        let live = Arc::new(AtomicBool::new(stopped.is_none()));
        let (orders_tx, orders_rx) = crossbeam_channel::bounded(QUEUE);
        let (reads_tx, reads_rx) = crossbeam_channel::bounded(QUEUE);
        let (answer_tx, answer_rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(TradingStats::default());
        let mut threads = Vec::new();
        for (name, rx) in [("dhan-orders", orders_rx), ("dhan-reads", reads_rx)] {
            let mut worker = Worker {
                rest: DhanRest::new(
                    &config.rest_url,
                    config.timeout,
                    Arc::clone(&links.credentials),
                ),
                config: Arc::clone(&config),
                links: links.clone(),
                live: Arc::clone(&live),
                audit: audit.log(),
                answers: answer_tx.clone(),
                paced: VecDeque::new(),
                stats: Arc::clone(&stats),
                sent_ids: SentIds::default(),
            };
            let stop = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    crate::affinity::background(name);
                    worker.run(&rx, &stop);
                })
                .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
            threads.push(thread);
        }
        log::info!(
            "trading is ON{} via {}; audit log {}",
            if config.paper {
                " (paper, built-in simulator)"
            } else {
                ""
            },
            config.rest_url,
            audit.path().display()
        );
        let (updates_tx, updates_rx) = crossbeam_channel::unbounded();
        let stream = OrderStream::spawn(
            OrderStreamConfig {
                url: config.order_stream_url.clone(),
                extra_ca: links.extra_ca.clone(),
                credentials: Arc::clone(&links.credentials),
                master: Arc::clone(&links.master),
            },
            updates_tx,
            Arc::clone(&links.fanout_waker),
        )
        .map_err(|e| format!("cannot start the order stream thread: {e}"))?;
        let door = TradingDoor {
            config,
            live,
            orders: Some(orders_tx),
            reads: Some(reads_tx),
            answers: answer_rx,
            sent: VecDeque::new(),
            audit: Some(audit.log()),
            stats,
            stream: Some(stream.stats()),
        };
        Ok((
            Broker {
                stop,
                threads,
                audit: Some(audit),
                stream: Some(stream),
            },
            door,
            Some(updates_rx),
        ))
    }

    /// Stops the threads (a call in flight ends at its time limit) and
    /// writes the audit log out.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.stream.take() {
            s.shutdown();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(a) = self.audit.take() {
            a.shutdown();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// One broker thread.
struct Worker {
    rest: DhanRest,
    config: Arc<TradingConfig>,
    links: BrokerLinks,
    live: Arc<AtomicBool>,
    audit: AuditLog,
    answers: Sender<Answer>,
    /// When the last order calls left (this thread's own pacing).
    paced: VecDeque<Instant>,
    stats: Arc<TradingStats>,
    /// Correlation ids of placements sent (one id, one order).
    sent_ids: SentIds,
}

/// The correlation ids of the last [`SentIds::KEEP`] placements sent, with
/// when: a client that repeats one after a 504 gets 409, not a second
/// order.
#[derive(Debug, Default)]
struct SentIds {
    order: VecDeque<String>,
    at: std::collections::HashMap<String, String>,
}

impl SentIds {
    const KEEP: usize = 20_000;

    fn get(&self, id: &str) -> Option<&str> {
        self.at.get(id).map(String::as_str)
    }

    fn insert(&mut self, id: &str) {
        if self.order.len() >= Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
        let when = crate::instrument::date::ist_timestamp(std::time::SystemTime::now());
        self.at.insert(id.to_string(), when);
        self.order.push_back(id.to_string());
    }
}

/// A call's outcome: status, body, and for the audit log the outcome word
/// and what to record.
struct Outcome {
    status: u16,
    body: Value,
    outcome: &'static str,
}

impl Outcome {
    fn ok(body: Value) -> Outcome {
        Outcome {
            status: 200,
            body,
            outcome: "sent",
        }
    }

    fn refused(status: u16, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            body: json!({ "error": message.into() }),
            outcome: "refused",
        }
    }

    /// DhanHQ's error, passed on: its code, type and message, and a status
    /// for the client (DhanHQ's own for a 4xx about the request; 502 when
    /// DhanHQ refused the relay's credentials or failed itself).
    fn dhan(e: &CallError) -> Outcome {
        match e {
            CallError::Refused {
                status,
                code,
                kind,
                message,
            } => {
                let relay_status = match status {
                    401 | 403 => 502,
                    400..=499 => *status,
                    _ => 502,
                };
                Outcome {
                    status: relay_status,
                    body: json!({
                        "error": message,
                        "errorCode": code,
                        "errorType": kind,
                        "dhanStatus": status,
                    }),
                    outcome: "rejected",
                }
            }
            CallError::NoAnswer(why) => Outcome {
                status: 504,
                body: json!({ "error": format!("DhanHQ did not answer: {why}") }),
                outcome: "unknown",
            },
            CallError::BadAnswer(why) => Outcome {
                status: 502,
                body: json!({ "error": format!("DhanHQ's answer could not be read: {why}") }),
                outcome: "unknown",
            },
        }
    }
}

impl Worker {
    fn run(&mut self, rx: &Receiver<Job>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let job = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let out = self.serve(&job.call, job.queued);
            if job.call.is_order() || job.call == Call::CancelAll {
                self.stats.order(out.outcome);
                self.audit.write(Record {
                    key: job.caller.key.clone(),
                    peer: job.caller.peer.to_string(),
                    action: job.call.action(),
                    request: job.call.request(),
                    status: out.status,
                    outcome: out.outcome,
                    answer: out.body.clone(),
                });
            }
            if !(job.call.is_order() || job.call == Call::CancelAll) {
                self.stats.reads.inc();
                if out.status != 200 {
                    self.stats.read_errors.inc();
                }
            }
            let _ = self.answers.send(Answer {
                ticket: job.ticket,
                status: out.status,
                body: out.body.to_string(),
            });
            let _ = self.links.front_waker.wake();
        }
    }

    fn serve(&mut self, call: &Call, queued: Instant) -> Outcome {
        match call {
            Call::Funds => match self.rest.get("/fundlimit") {
                Ok(v) => Outcome::ok(client::funds(&v)),
                Err(e) => Outcome::dhan(&e),
            },
            Call::Orders => match self.rest.get("/orders") {
                Ok(v) => Outcome::ok(json!({ "orders": self.named(client::list(v)) })),
                Err(e) => Outcome::dhan(&e),
            },
            Call::Positions => match self.rest.get("/positions") {
                Ok(v) => Outcome::ok(json!({ "positions": self.named(client::list(v)) })),
                Err(e) => Outcome::dhan(&e),
            },
            Call::Place(body) => self.place(body, queued),
            Call::Modify(id, body) => self.modify(id, body, queued),
            Call::Cancel(id) => self.cancel(id, queued),
            Call::CancelAll => self.cancel_all(),
        }
    }

    /// Entries with the relay's `symbol` for their instrument.
    fn named(&self, items: Vec<Value>) -> Vec<Value> {
        let master = self.links.master.load();
        items
            .into_iter()
            .map(|mut item| {
                let symbol = key_of(&item)
                    .and_then(|k| master.get(k).map(|i| i.symbol().to_string()))
                    .or_else(|| {
                        item.get("tradingSymbol")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                if let Value::Object(o) = &mut item {
                    o.insert("symbol".into(), symbol.map_or(Value::Null, Value::String));
                }
                item
            })
            .collect()
    }

    /// Waits (at most a second) so this thread never sends more than the
    /// order rate, whatever reached it.
    fn pace(&mut self) {
        let now = Instant::now();
        while self
            .paced
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.paced.pop_front();
        }
        if self.paced.len() >= ORDERS_PER_SEC {
            if let Some(first) = self.paced.pop_front() {
                std::thread::sleep(
                    Duration::from_secs(1).saturating_sub(now.duration_since(first)),
                );
            }
        }
        self.paced.push_back(Instant::now());
    }

    /// Paces, then refuses when the order must not go now: it waited too
    /// long in the queue, the kill switch was thrown (also while pacing),
    /// or the audit log cannot be written. The last check before a send.
    fn pace_and_check(&mut self, new_exposure: bool, queued: Instant) -> Result<(), Outcome> {
        self.pace();
        let waited = queued.elapsed();
        if waited > STALE_AFTER {
            return Err(Outcome::refused(
                503,
                format!(
                    "not sent: it waited {:.0} s behind slower DhanHQ calls (limit {} s); nothing was placed or changed",
                    waited.as_secs_f64(),
                    STALE_AFTER.as_secs()
                ),
            ));
        }
        if new_exposure && !self.live.load(Ordering::SeqCst) {
            return Err(Outcome::refused(
                403,
                "trading is stopped by the kill switch: no new orders or changes (cancels still work)",
            ));
        }
        if !self.audit.healthy() {
            return Err(Outcome::refused(
                503,
                "the audit log cannot be written, so no order is sent; see the relay's log",
            ));
        }
        Ok(())
    }

    fn place(&mut self, body: &[u8], queued: Instant) -> Outcome {
        let order = match order::parse_order(body) {
            Ok(o) => o,
            Err(why) => return Outcome::refused(400, why),
        };
        let key = match self.resolve(&order) {
            Ok(k) => k,
            Err(why) => return Outcome::refused(400, why),
        };
        if let Err(out) = self.check(key, Some(&order.product), &order.terms) {
            return out;
        }
        let corr = order.correlation_id.clone();
        if let Some(earlier) = self.sent_ids.get(&corr) {
            return Outcome::refused(
                409,
                format!("correlationId {corr} was already used for an order sent at {earlier}: one id, one order (use a new one; GET /api/orders shows the first)"),
            );
        }
        if let Err(out) = self.pace_and_check(true, queued) {
            return out;
        }
        let dhan_body = order::place_body(
            &order,
            key.segment.name(),
            key.security_id.0,
            &self.rest.client_id(),
        );
        self.sent_ids.insert(&corr);
        match self.rest.call(Method::Post, "/orders", Some(&dhan_body)) {
            Ok(v) if v.get("orderId").is_some_and(|id| !id.is_null()) => {
                Outcome::ok(placed(&v, &corr, false))
            }
            // Only DhanHQ's own refusal of the request says it was not
            // placed; a gateway error, an answer without an order id or
            // no answer at all may hide a placed order: look it up.
            Ok(_) => self.find_by_correlation(&corr, "an answer without an order id"),
            Err(
                e @ CallError::Refused {
                    status: 400..=499, ..
                },
            ) => Outcome::dhan(&e),
            Err(e) => self.find_by_correlation(&corr, &e.to_string()),
        }
    }

    /// The placement got no answer: was it placed? Asked once, never
    /// placed again.
    fn find_by_correlation(&mut self, correlation_id: &str, why: &str) -> Outcome {
        let path = format!("/orders/external/{correlation_id}");
        // DhanHQ is often still working on it the moment a call times out.
        std::thread::sleep(LOOKUP_AFTER);
        match self.rest.get(&path) {
            Ok(v) => match client::list(v).as_slice() {
                [found] if found.get("orderId").is_some() => {
                    log::warn!("order {correlation_id}: no answer to the placement ({why}); DhanHQ has it, so it was placed");
                    Outcome::ok(placed(found, correlation_id, true))
                }
                [] => not_found(correlation_id, why),
                _ => Outcome {
                    status: 504,
                    body: json!({
                        "error": format!("the placement got no clear answer ({why}) and DhanHQ lists several orders with correlationId {correlation_id}; check GET /api/orders before placing it again"),
                        "correlationId": correlation_id,
                    }),
                    outcome: "unknown",
                },
            },
            Err(CallError::Refused {
                status: 404 | 400, ..
            }) => not_found(correlation_id, why),
            Err(e) => Outcome {
                status: 504,
                body: json!({
                    "error": format!(
                        "DhanHQ did not answer the placement ({why}) and the check failed too ({e}): it may or may not be placed; look for correlationId {correlation_id} in GET /api/orders before placing it again"
                    ),
                    "correlationId": correlation_id,
                }),
                outcome: "unknown",
            },
        }
    }

    fn resolve(&self, order: &OrderRequest) -> Result<InstrumentKey, String> {
        match &order.instrument {
            InstrumentRef::Key(k) => {
                if self.links.master.load().get(*k).is_none() {
                    return Err(format!(
                        "{} {} is not in the instrument master",
                        k.segment.name(),
                        k.security_id.0
                    ));
                }
                Ok(*k)
            }
            InstrumentRef::Symbol(s) => {
                let master = self.links.master.load();
                master
                    .resolve_exact(s, self.links.clock.today())
                    .map(|i| i.key())
                    .map_err(|e| {
                        format!("symbol '{}': {e}", s.chars().take(40).collect::<String>())
                    })
            }
        }
    }

    /// The guards, with the instrument's lot size and last price.
    fn check(
        &self,
        key: InstrumentKey,
        product: Option<&str>,
        terms: &order::Terms,
    ) -> Result<(), Outcome> {
        let master = self.links.master.load();
        let (lot, tick, name) = match master.get(key) {
            Some(i) => (
                i.lot_size().round().max(1.0) as u32,
                i.tick_rupees(),
                i.symbol().to_string(),
            ),
            None => (
                1,
                0.0,
                format!("{} {}", key.segment.name(), key.security_id.0),
            ),
        };
        let ltp = self
            .links
            .snapshot
            .load()
            .get(key)
            .and_then(|s| s.ltp)
            .map(f64::from);
        let facts = Facts {
            segment: key.segment.name(),
            lot_size: lot,
            tick_size: tick,
            ltp,
            name: &name,
        };
        guard::check(&self.config.guards, &facts, product, terms).map_err(|r| Outcome {
            status: 422,
            body: json!({ "error": r.message, "guard": r.guard }),
            outcome: "refused",
        })
    }

    fn modify(&mut self, id: &str, body: &[u8], queued: Instant) -> Outcome {
        let id = match order::checked_order_id(id) {
            Ok(id) => id.to_string(),
            Err(why) => return Outcome::refused(400, why),
        };
        let terms = match order::parse_modify(body) {
            Ok(t) => t,
            Err(why) => return Outcome::refused(400, why),
        };
        // The order's instrument, for the guards.
        let current = match self.rest.get(&format!("/orders/{id}")) {
            Ok(v) => client::list(v).into_iter().next().unwrap_or(Value::Null),
            Err(e) => return Outcome::dhan(&e),
        };
        let Some(key) = key_of(&current) else {
            return Outcome::refused(404, format!("DhanHQ has no order {id}"));
        };
        if let Err(out) = self.check(key, None, &terms) {
            return out;
        }
        if let Err(out) = self.pace_and_check(true, queued) {
            return out;
        }
        let body = order::modify_body(&id, &terms, &self.rest.client_id());
        match self
            .rest
            .call(Method::Put, &format!("/orders/{id}"), Some(&body))
        {
            Ok(v) => Outcome::ok(status_of(&v, &id)),
            Err(e) => Outcome::dhan(&e),
        }
    }

    fn cancel(&mut self, id: &str, queued: Instant) -> Outcome {
        let id = match order::checked_order_id(id) {
            Ok(id) => id.to_string(),
            Err(why) => return Outcome::refused(400, why),
        };
        if let Err(out) = self.pace_and_check(false, queued) {
            return out;
        }
        match self
            .rest
            .call(Method::Delete, &format!("/orders/{id}"), None)
        {
            Ok(v) => Outcome::ok(status_of(&v, &id)),
            Err(e) => Outcome::dhan(&e),
        }
    }

    /// Cancels every order that is still open, one call each (paced).
    fn cancel_all(&mut self) -> Outcome {
        let orders = match self.rest.get("/orders") {
            Ok(v) => client::list(v),
            Err(e) => return Outcome::dhan(&e),
        };
        let open: Vec<String> = orders
            .iter()
            .filter(|o| {
                let status = o.get("orderStatus").and_then(Value::as_str).unwrap_or("");
                !matches!(
                    status,
                    "TRADED" | "CANCELLED" | "REJECTED" | "EXPIRED" | "CLOSED"
                )
            })
            .filter_map(|o| o.get("orderId").and_then(Value::as_str).map(str::to_string))
            .collect();
        let mut cancelled = Vec::new();
        let mut failed = Vec::new();
        for id in &open {
            // Each cancel is fresh work: cancel-all may take a while and
            // must not stop half way.
            let out = self.cancel(id, Instant::now());
            if out.status == 200 {
                cancelled.push(id.clone());
            } else {
                failed.push(json!({"orderId": id, "error": out.body.get("error")}));
            }
        }
        log::warn!(
            "cancel-all: {} open orders, {} cancelled, {} failed",
            open.len(),
            cancelled.len(),
            failed.len()
        );
        let status = if failed.is_empty() { 200 } else { 502 };
        Outcome {
            status,
            body: json!({"open": open.len(), "cancelled": cancelled, "failed": failed}),
            outcome: if failed.is_empty() {
                "sent"
            } else {
                "rejected"
            },
        }
    }
}

/// The file that says the kill switch is thrown, beside the audit log.
pub fn stopped_marker(audit_log: &std::path::Path) -> std::path::PathBuf {
    let mut name = audit_log.file_name().unwrap_or_default().to_os_string();
    name.push(".kill-switch");
    audit_log.with_file_name(name)
}

/// A placement's answer for the client.
fn placed(v: &Value, correlation_id: &str, recovered: bool) -> Value {
    let mut out = json!({
        "orderId": v.get("orderId").cloned().unwrap_or(Value::Null),
        "orderStatus": v.get("orderStatus").cloned().unwrap_or(Value::Null),
        "correlationId": correlation_id,
    });
    if recovered {
        out["recovered"] = Value::Bool(true);
    }
    out
}

fn not_found(correlation_id: &str, why: &str) -> Outcome {
    Outcome {
        status: 504,
        body: json!({
            "error": format!(
                "DhanHQ did not answer the placement ({why}) and has no order with correlationId {correlation_id} yet; check GET /api/orders before placing it again"
            ),
            "correlationId": correlation_id,
        }),
        outcome: "unknown",
    }
}

/// `{"orderId","orderStatus"}` from a modify or cancel answer.
fn status_of(v: &Value, id: &str) -> Value {
    json!({
        "orderId": v.get("orderId").cloned().unwrap_or_else(|| Value::String(id.to_string())),
        "orderStatus": v.get("orderStatus").cloned().unwrap_or(Value::Null),
    })
}

/// The instrument of an order or position object (`exchangeSegment`,
/// `securityId`).
fn key_of(v: &Value) -> Option<InstrumentKey> {
    let segment = v.get("exchangeSegment")?.as_str()?.parse().ok()?;
    let id = match v.get("securityId")? {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.to_string().parse().ok()?,
        _ => return None,
    };
    Some(InstrumentKey {
        segment,
        security_id: id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            key: None,
            peer: "127.0.0.1".parse().unwrap(),
        }
    }

    fn ticket(n: u64) -> Ticket {
        Ticket { slot: 0, conn: n }
    }

    #[test]
    fn off_answers_403_with_how_to_turn_it_on() {
        let mut door = TradingDoor::off();
        let (status, body) = door
            .submit(ticket(1), Call::Funds, caller(), Instant::now())
            .unwrap_err();
        assert_eq!(status, 403);
        assert!(body.contains("[trading] enabled = true"), "{body}");
        let s: Value = serde_json::from_str(&door.status(true)).unwrap();
        assert_eq!(s["enabled"], false);
        assert_eq!(s["guards"]["maxQuantity"], 5000);
        assert_eq!(door.set_live(br#"{"enabled":false}"#, caller()).0, 409);
    }

    /// A config whose audit log (and kill-switch marker) is in a scratch
    /// directory of its own.
    fn config(name: &str) -> TradingConfig {
        let dir =
            std::env::temp_dir().join(format!("dhan-relay-broker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TradingConfig {
            enabled: true,
            audit_log: dir.join("audit.jsonl"),
            ..TradingConfig::default()
        }
    }

    fn door(name: &str) -> (TradingDoor, Receiver<Job>, Receiver<Job>) {
        let (otx, orx) = crossbeam_channel::bounded(QUEUE);
        let (rtx, rrx) = crossbeam_channel::bounded(QUEUE);
        let door = TradingDoor {
            config: Arc::new(config(name)),
            live: Arc::new(AtomicBool::new(true)),
            orders: Some(otx),
            reads: Some(rtx),
            answers: crossbeam_channel::never(),
            sent: VecDeque::new(),
            audit: None,
            stats: Arc::default(),
            stream: None,
        };
        (door, orx, rrx)
    }

    #[test]
    fn order_calls_are_limited_to_ten_a_second_and_reads_are_not() {
        let (mut door, orders, reads) = door("rate");
        let t0 = Instant::now();
        for i in 0..10 {
            door.submit(ticket(i), Call::Cancel("1".into()), caller(), t0)
                .unwrap();
        }
        let (status, body) = door
            .submit(ticket(10), Call::Place(b"{}".to_vec()), caller(), t0)
            .unwrap_err();
        assert_eq!(status, 429, "{body}");
        for i in 0..20 {
            door.submit(ticket(100 + i), Call::Funds, caller(), t0)
                .unwrap();
        }
        assert_eq!(orders.len(), 10);
        assert_eq!(reads.len(), 20);
        // A second later the window has moved.
        door.submit(
            ticket(11),
            Call::Place(b"{}".to_vec()),
            caller(),
            t0 + Duration::from_millis(1001),
        )
        .unwrap();
        assert_eq!(orders.len(), 11);
    }

    #[test]
    fn the_kill_switch_stops_new_orders_not_cancels() {
        let (mut door, orders, _reads) = door("kill");
        let (status, body) = door.set_live(br#"{"enabled": false}"#, caller());
        assert_eq!(status, 200, "{body}");
        let now = Instant::now();
        assert_eq!(
            door.submit(ticket(1), Call::Place(b"{}".to_vec()), caller(), now)
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(
            door.submit(
                ticket(2),
                Call::Modify("1".into(), b"{}".to_vec()),
                caller(),
                now
            )
            .unwrap_err()
            .0,
            403
        );
        door.submit(ticket(3), Call::Cancel("1".into()), caller(), now)
            .unwrap();
        assert_eq!(orders.len(), 1);
        let marker = stopped_marker(&door.config.audit_log);
        assert!(std::fs::read_to_string(&marker)
            .unwrap()
            .contains("stopped by 127.0.0.1"));
        let s: Value = serde_json::from_str(&door.status(true)).unwrap();
        assert_eq!(s["killSwitch"], true);
        assert_eq!(s["enabled"], false);
        assert_eq!(door.set_live(b"{\"enabled\": 1}", caller()).0, 400);
        assert_eq!(door.set_live(br#"{"enabled": true}"#, caller()).0, 200);
        assert!(!marker.exists(), "resuming removes the marker");
        let _ = std::fs::remove_dir_all(marker.parent().unwrap());
        door.submit(ticket(4), Call::Place(b"{}".to_vec()), caller(), now)
            .unwrap();
    }

    /// A worker whose DhanHQ is nowhere (no call is expected to be made).
    fn worker(name: &str) -> (Worker, Arc<AtomicBool>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let credentials: SharedCredentials = Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::upstream::Credentials::new("1", "t"),
        ));
        let config = Arc::new(config(name));
        let audit = Audit::open(&config.audit_log).unwrap();
        let live = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            rest: DhanRest::new(
                "http://127.0.0.1:9",
                Duration::from_secs(1),
                Arc::clone(&credentials),
            ),
            config,
            links: BrokerLinks {
                master: Arc::new(arc_swap::ArcSwap::from_pointee(
                    crate::instrument::Master::sample(),
                )),
                snapshot: Arc::default(),
                clock: WallClock::system(),
                credentials,
                front_waker: Arc::clone(&waker),
                fanout_waker: waker,
                extra_ca: Vec::new(),
            },
            live: Arc::clone(&live),
            audit: audit.log(),
            answers: crossbeam_channel::unbounded().0,
            paced: VecDeque::new(),
            stats: Arc::default(),
            sent_ids: SentIds::default(),
        };
        (worker, live)
    }

    #[test]
    fn the_last_check_before_a_send_refuses_stale_and_stopped_orders() {
        let (mut w, live) = worker("stale");
        let now = Instant::now();
        assert!(w.pace_and_check(true, now).is_ok());
        let stale = now - STALE_AFTER - Duration::from_secs(1);
        let out = w.pace_and_check(false, stale).unwrap_err();
        assert_eq!(out.status, 503);
        assert!(
            out.body["error"].as_str().unwrap().starts_with("not sent"),
            "{}",
            out.body
        );
        live.store(false, Ordering::SeqCst);
        assert_eq!(w.pace_and_check(true, now).unwrap_err().status, 403);
        assert!(w.pace_and_check(false, now).is_ok(), "cancels still go");
        // The eleventh call within a second waits for the window.
        w.paced.clear();
        let t0 = Instant::now();
        for _ in 0..11 {
            w.pace();
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
        let _ = std::fs::remove_dir_all(w.config.audit_log.parent().unwrap());
    }

    #[test]
    fn dhan_errors_keep_their_code_and_a_fitting_status() {
        let e = CallError::Refused {
            status: 400,
            code: Some("DH-905".into()),
            kind: Some("Input_Exception".into()),
            message: "Invalid quantity".into(),
        };
        let out = Outcome::dhan(&e);
        assert_eq!(out.status, 400);
        assert_eq!(out.body["errorCode"], "DH-905");
        assert_eq!(out.body["error"], "Invalid quantity");
        let e = CallError::Refused {
            status: 401,
            code: Some("DH-901".into()),
            kind: None,
            message: "Invalid token".into(),
        };
        assert_eq!(Outcome::dhan(&e).status, 502);
        assert_eq!(
            Outcome::dhan(&CallError::NoAnswer("timed out".into())).status,
            504
        );
    }

    #[test]
    fn instruments_of_orders() {
        let k = key_of(&json!({"exchangeSegment":"NSE_EQ","securityId":"2885"})).unwrap();
        assert_eq!(k.security_id.0, 2885);
        assert!(key_of(&json!({"exchangeSegment":"NSE_EQ"})).is_none());
        assert!(key_of(&Value::Null).is_none());
    }
}
