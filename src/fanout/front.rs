//! The front door thread: owns the public listeners (plain and TLS, all
//! polled here), completes TLS handshakes, reads request heads,
//! answers plain HTTP (REST, the dashboard) with keep-alive, and completes
//! WebSocket handshakes, handing each upgraded socket to the least loaded
//! fanout shard.
//!
//! Everything slow or client-controlled about HTTP lives here, off the
//! fanout's loop: slowloris heads, big REST bodies (`/prices` with every
//! instrument, a page of 10,000 subscriptions), instrument search, and the
//! once-a-second rendering of the `/ws/prices` object. The fanout thread
//! sees only WebSocket sessions.
//!
//! Limits: a head must arrive within `head_timeout` and fit
//! [`MAX_HEAD_BYTES`](super::http::MAX_HEAD_BYTES); a kept-alive
//! connection serves at most `keep_alive_requests` requests and closes
//! after `keep_alive_idle` without one; at most `max_clients` +
//! [`SPARE_CONNECTIONS`] plain connections are open at once (a connect storm
//! of WebSocket clients passes through here first). Request bodies are
//! refused except on the few endpoints that take one ([`super::admin`]),
//! which must give `Content-Length` up to
//! [`MAX_BODY_BYTES`](super::http::MAX_BODY_BYTES); so a connection never
//! has to skip unread bytes.
//!
//! TLS listeners: the handshake runs here, under the same `head_timeout`
//! as a request head (a client that stalls in the handshake is a
//! slowloris too); a peer that sends plain HTTP to a TLS port is answered
//! 400 in plain text and closed. Certificate files are re-checked every
//! [`TLS_CHECK_EVERY`] and when the reload flag (SIGHUP) is set.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shard::{Door as ShardDoor, Load};
use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::admin;
use super::http::{self, Head, Parsed, Response};
use super::rest::{ListenerStatus, RestState};
use super::session::Kind;
use super::trade::{self, Route};
use super::FanoutConfig;
use crate::auth::{
    Auth, Denial, KeyLimits, KeyWatch, Principal, Reloaded, RequestView, Scope, Setup,
};
use crate::serve_tls::{ServerStream, TlsListener};
use crate::trading::broker::{Answer, Caller, Ticket, TradingDoor};

const WAKER: Token = Token(usize::MAX);
/// The DhanHQ-compatible feed (`super::dhan`).
pub const DHAN_PATH: &str = "/dhan";

/// Where the relay speaks DhanHQ's 20-level depth feed.
pub const DHAN_DEPTH_PATH: &str = "/dhan/twentydepth";

/// `key=<token>` from a `/dhan` query string, still percent-encoded as
/// sent: DhanHQ clients put the access token in `token`, and on the relay
/// that is an API key. Never logged.
fn dhan_key_query(query: &str) -> String {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(|token| format!("key={token}"))
        .unwrap_or_default()
}
/// Listener `i` polls as `Token(FIRST_LISTENER - i)`; connections count up
/// from 0.
const FIRST_LISTENER: usize = usize::MAX - 1;
/// How often certificate files are checked for a change.
pub const TLS_CHECK_EVERY: Duration = Duration::from_secs(3);

/// A bound listener, plain or TLS.
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    pub listener: std::net::TcpListener,
    /// Its address (port 0 resolved).
    pub addr: SocketAddr,
    /// Its certificate, for a TLS listener.
    pub tls: Option<TlsListener>,
    /// Whether it asks for API keys.
    pub auth: bool,
}

/// A listener as the loop holds it.
#[derive(Debug)]
struct Door {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsListener>,
    auth: bool,
}

/// Plain HTTP connections allowed beyond `max_clients` (REST pollers next
/// to a full house of WebSocket clients); more are answered 503 and closed.
pub const SPARE_CONNECTIONS: usize = 256;
/// Pipelined requests served from one connection per loop turn.
const PIPELINE_PER_TURN: usize = 8;

/// A socket that finished the WebSocket handshake, for the fanout.
#[derive(Debug)]
pub struct NewClient {
    /// The connection (deregistered from the front door's poll).
    pub stream: ServerStream,
    /// Bytes read past the request head (a first frame sent early).
    pub early: Vec<u8>,
    /// `/ws` or `/ws/prices`.
    pub kind: Kind,
    /// For `/ws/prices`: the prices object to greet it with.
    pub prices: Option<Bytes>,
    /// Who it is (its key, when access control is on).
    pub principal: Principal,
    /// Its key's limits.
    pub limits: KeyLimits,
    /// `/dhan` with access control on and a `token` that is not a relay
    /// API key with `read`: the fanout sends DhanHQ's disconnect packet
    /// (809, authentication failed) and closes.
    pub refused: bool,
}

/// What the front door hands a fanout shard.
#[derive(Debug)]
pub enum Handoff {
    /// A new WebSocket client.
    Client(NewClient),
    /// This second's `/ws/prices` object.
    Prices(Bytes),
}

/// One plain HTTP connection.
#[derive(Debug)]
struct Conn {
    stream: ServerStream,
    /// Its slot and unique number (a broker answer finds it by both).
    ticket: Ticket,
    /// Waiting for a broker answer: how to send it.
    waiting: Option<Waiting>,
    /// The peer's address (admin calls are loopback-only without keys).
    peer: IpAddr,
    /// Its listener asks for API keys.
    auth: bool,
    /// Its listener speaks TLS (session cookies are `Secure`).
    tls: bool,
    /// Set once the upgrade is accepted (its key's connection counted).
    upgrading: Option<Upgrading>,
    /// Received, not yet consumed.
    buf: Vec<u8>,
    /// Response bytes to write, and how far.
    out: Vec<u8>,
    pos: usize,
    /// Reading: when the head (or the next request) is overdue.
    deadline: Instant,
    served: u32,
    /// After `out`: close, or hand the socket to the fanout.
    then: Then,
    /// The peer shut its side: answer what was sent, then close.
    eof: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Read,
    Close,
    Upgrade(Kind),
    /// A trading call is with the broker: nothing more is read until its
    /// answer is sent (so pipelined requests keep their order).
    Await,
}

/// How to send a broker's answer.
#[derive(Debug)]
struct Waiting {
    keep_alive: bool,
    /// The allowed Origin to echo in CORS headers.
    origin: Option<String>,
}

/// How long a connection waits for a broker answer before it gets 504
/// (longer than any single DhanHQ call: cancel-all makes several).
const BROKER_WAIT: Duration = Duration::from_secs(90);

/// A WebSocket client on its way to the fanout: who, and its limits.
#[derive(Debug)]
struct Upgrading {
    principal: Principal,
    limits: KeyLimits,
    /// `/dhan` whose key was refused (see [`NewClient::refused`]).
    refused: bool,
}

/// The front door, running.
#[derive(Debug)]
pub struct FrontDoor {
    poll: Poll,
    doors: Vec<Door>,
    waker: Arc<Waker>,
    reload: Arc<AtomicBool>,
    access: Setup,
}

impl FrontDoor {
    /// Takes over bound listeners; `reload` set (SIGHUP) means re-read
    /// the certificate files and the keys file now.
    pub fn new(
        listeners: Vec<Listener>,
        reload: Arc<AtomicBool>,
        access: Setup,
    ) -> std::io::Result<FrontDoor> {
        let poll = Poll::new()?;
        let mut doors = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            l.listener.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(l.listener);
            poll.registry().register(
                &mut listener,
                Token(FIRST_LISTENER - i),
                Interest::READABLE,
            )?;
            doors.push(Door {
                listener,
                addr: l.addr,
                tls: l.tls,
                auth: l.auth,
            });
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(FrontDoor {
            poll,
            doors,
            waker,
            reload,
            access,
        })
    }

    /// Each listener's address and certificate, for `/health`.
    pub fn listener_status(&self) -> Vec<ListenerStatus> {
        self.doors
            .iter()
            .map(|d| ListenerStatus {
                addr: d.addr,
                tls: d.tls.as_ref().map(|t| t.status().clone()),
                auth: d.auth,
            })
            .collect()
    }

    /// Started with `--insecure-no-auth`.
    pub fn insecure(&self) -> bool {
        self.access.insecure
    }

    /// Wakes the loop (for shutdown).
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Runs until `stop`; `to_fanout` reaches the fanout shards, `load`
    /// says which serves the fewest clients.
    pub fn run(
        self,
        config: FanoutConfig,
        rest: RestState,
        to_fanout: Vec<ShardDoor<Handoff>>,
        load: Load,
        stop: Arc<AtomicBool>,
        trading: TradingDoor,
    ) {
        crate::affinity::background("front door");
        let mut front = Front {
            poll: self.poll,
            doors: self.doors,
            conns: Vec::new(),
            free: Vec::new(),
            again: Vec::new(),
            config,
            rest,
            to_fanout,
            load,
            last_prices: None,
            auth: self.access.auth,
            keys: self.access.watch,
            trading,
            next_conn: 0,
        };
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now();
        let mut next_usage = Instant::now() + Duration::from_secs(60);
        let mut next_tls_check = Instant::now() + TLS_CHECK_EVERY;
        for door in front.doors.iter_mut() {
            if let Some(tls) = &mut door.tls {
                tls.warn_if_expiring(Instant::now());
            }
        }
        while !stop.load(Relaxed) {
            let timeout = if front.again.is_empty() {
                Duration::from_millis(250)
            } else {
                Duration::ZERO
            };
            if let Err(e) = front.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    log::error!("front door poll failed: {e}; stopping");
                    return;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(t) if t > FIRST_LISTENER - front.doors.len() => {
                        front.accept(FIRST_LISTENER - t, now)
                    }
                    Token(i) => front.serve(i, now),
                }
            }
            for i in std::mem::take(&mut front.again) {
                front.serve(i, now);
            }
            front.take_answers(now);
            if now >= next_sweep {
                next_sweep = now + Duration::from_secs(1);
                front.sweep(now);
                front.push_prices();
                front.check_keys(false);
            }
            if now >= next_usage {
                next_usage = now + Duration::from_secs(60);
                front.save_usage();
            }
            let hup = self.reload.swap(false, Relaxed);
            if hup || now >= next_tls_check {
                next_tls_check = now + TLS_CHECK_EVERY;
                front.check_tls(hup, now);
            }
            if hup {
                front.check_keys(true);
            }
        }
        front.save_usage();
    }
}

struct Front {
    poll: Poll,
    doors: Vec<Door>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections with pipelined requests left for the next turn.
    again: Vec<usize>,
    config: FanoutConfig,
    rest: RestState,
    /// Each fanout shard.
    to_fanout: Vec<ShardDoor<Handoff>>,
    /// Clients per shard: a new one goes to the least loaded.
    load: Load,
    /// The last `/ws/prices` body, for greeting new clients.
    last_prices: Option<(Instant, Bytes)>,
    /// Access control.
    auth: Arc<Auth>,
    /// The keys file, re-read when it changes.
    keys: KeyWatch,
    /// Trading calls go through here to the broker threads.
    trading: TradingDoor,
    /// The next connection's number.
    next_conn: u64,
}

impl Front {
    /// Writes when keys were last used beside the keys file (called once a
    /// minute and at the end; nothing is written when nothing changed).
    fn save_usage(&self) {
        let Some(text) = self.auth.take_usage() else {
            return;
        };
        let path = crate::auth::usage::usage_file(self.keys.path());
        if let Err(e) = crate::token::sources::write_private(&path, text.as_bytes()) {
            log::warn!(
                "cannot record when API keys were last used in {}: {e}",
                path.display()
            );
        }
    }

    /// Re-reads the keys file when it changed (every second) or now
    /// (SIGHUP); the fanout closes connections of keys that went.
    fn check_keys(&mut self, force: bool) {
        let result = if force {
            self.keys.reload()
        } else {
            self.keys.tick()
        };
        match result {
            Ok(Reloaded::Unchanged) => {}
            Ok(Reloaded::Changed { names, .. }) => {
                log::info!(
                    "keys file {} reloaded: {} keys ({})",
                    self.keys.path().display(),
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => log::error!("{e}; the keys loaded before stay in force"),
        }
    }

    /// Re-reads changed (or, on SIGHUP, all) certificate files, updates
    /// what `/health` shows, and repeats the expiry warning once a day.
    fn check_tls(&mut self, force: bool, now: Instant) {
        for (i, door) in self.doors.iter_mut().enumerate() {
            let Some(tls) = &mut door.tls else {
                continue;
            };
            if tls.check(force).is_some() {
                self.rest.listeners[i].tls = Some(tls.status().clone());
            }
            tls.warn_if_expiring(now);
        }
    }

    fn accept(&mut self, door: usize, now: Instant) {
        loop {
            let Some(d) = self.doors.get(door) else {
                return;
            };
            match d.listener.accept() {
                Ok((mut tcp, peer)) => {
                    let open = self.conns.len() - self.free.len();
                    if open >= self.config.max_clients + SPARE_CONNECTIONS {
                        self.rest.fanout.clients_rejected.inc();
                        // Plain text even on a TLS port: a best effort
                        // the client may not understand, but it is closed.
                        let _ = tcp.write(
                            &Response::error(503, "too many connections").to_bytes(false, false),
                        );
                        continue;
                    }
                    let _ = tcp.set_nodelay(true);
                    let (auth, tls) = (d.auth, d.tls.is_some());
                    let mut stream = match &d.tls {
                        None => ServerStream::Plain(tcp),
                        Some(tls) => match ServerStream::tls(tcp, tls.config()) {
                            Ok(s) => s,
                            Err(e) => {
                                log::warn!("TLS connection refused: {e}");
                                continue;
                            }
                        },
                    };
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    self.rest.fanout.http_connections_total.inc();
                    self.next_conn += 1;
                    self.conns[slot] = Some(Conn {
                        stream,
                        ticket: Ticket {
                            slot,
                            conn: self.next_conn,
                        },
                        waiting: None,
                        peer: peer.ip(),
                        auth,
                        tls,
                        upgrading: None,
                        buf: Vec::with_capacity(1024),
                        out: Vec::new(),
                        pos: 0,
                        deadline: now + self.config.head_timeout,
                        served: 0,
                        then: Then::Read,
                        eof: false,
                    });
                    // Data may already be waiting; edge-triggered readiness
                    // would not report it again.
                    self.serve(slot, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: log, keep serving.
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Readiness (or leftover pipelined input) on connection `i`.
    fn serve(&mut self, i: usize, now: Instant) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        let mut requests = 0;
        let keep = loop {
            // Write what is pending first (for TLS, until it is on the
            // wire: `out` is cleared only then).
            if !conn.out.is_empty() {
                let before = conn.pos;
                let done = write_some(&mut conn.stream, &conn.out, &mut conn.pos);
                if conn.pos > before {
                    // A slow reader that keeps reading is not idle.
                    conn.deadline = now + self.config.keep_alive_idle;
                }
                match done {
                    Ok(true) => {}
                    Ok(false) => break true,
                    Err(_) => break false,
                }
            }
            conn.out.clear();
            conn.pos = 0;
            match conn.then {
                Then::Close => break false,
                Then::Upgrade(kind) => {
                    self.hand_off(conn, kind);
                    self.free.push(i);
                    return;
                }
                Then::Await => break true,
                Then::Read => {}
            }
            if !read_some(&mut conn) {
                if conn.stream.refuse_plain_http() {
                    self.rest.fanout.http_requests.inc();
                }
                break false;
            }
            match http::parse_head(&conn.buf) {
                Parsed::Partial if conn.eof => break false,
                Parsed::Partial => break true,
                Parsed::Bad(status, why) => {
                    self.respond(&mut conn, Response::error(status, why), false, false, now);
                    conn.buf.clear();
                }
                Parsed::Done(head) => match body_len(&head) {
                    Err((status, why)) => {
                        let r = Response::error(status, why);
                        self.respond(&mut conn, r, false, false, now);
                        conn.buf.clear();
                    }
                    Ok(n) if conn.buf.len() < head.len + n => {
                        // The body is still on its way (within the head
                        // deadline).
                        break !conn.eof;
                    }
                    Ok(n) => {
                        let body: Vec<u8> = conn.buf[head.len..head.len + n].to_vec();
                        conn.buf.drain(..head.len + n);
                        conn.served += 1;
                        self.request(&mut conn, head, &body, now);
                    }
                },
            }
            requests += 1;
            if requests >= PIPELINE_PER_TURN {
                // Fair to the other connections: the rest next turn.
                self.again.push(i);
                break true;
            }
        };
        if keep {
            self.conns[i] = Some(conn);
        } else {
            self.release(&mut conn);
            conn.stream.close_notify();
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(i);
        }
    }

    /// A connection dropped before its upgrade finished gives its key's
    /// connection count back.
    fn release(&self, conn: &mut Conn) {
        if let Some(u) = conn.upgrading.take() {
            self.auth.connection_closed(u.principal.key);
        }
    }

    /// Queues a response; `keep_alive` says whether another request may
    /// follow on this connection.
    fn respond(
        &mut self,
        conn: &mut Conn,
        response: Response,
        keep_alive: bool,
        head_only: bool,
        now: Instant,
    ) {
        self.rest.fanout.http_requests.inc();
        let keep = keep_alive && !conn.eof && conn.served < self.config.keep_alive_requests;
        conn.out = response.to_bytes(keep, head_only);
        conn.pos = 0;
        conn.then = if keep { Then::Read } else { Then::Close };
        conn.deadline = now + self.config.keep_alive_idle;
    }

    fn request(&mut self, conn: &mut Conn, head: Head, body: &[u8], now: Instant) {
        let config = &self.config;
        if !http::host_allowed(head.host.as_deref(), head.minor, &config.allowed_hosts) {
            let why = match &head.host {
                None => "missing Host header".to_string(),
                Some(h) => format!(
                    "Host '{}' is not served here: add it to allowed_hosts",
                    h.chars().take(60).collect::<String>()
                ),
            };
            let status = if head.host.is_none() { 400 } else { 403 };
            return self.respond(conn, Response::error(status, &why), false, false, now);
        }
        let origin_ok = http::origin_allowed(
            head.origin.as_deref(),
            head.host.as_deref(),
            &config.allowed_origins,
        );
        let cors = |r: Response| with_cors(r, head.origin.as_deref().filter(|_| origin_ok));
        let headers = head.credential_headers();
        // `/dhan` speaks DhanHQ's protocol: the key is its `token` query
        // parameter (what DhanHQ clients send as the access token).
        let dhan = head.upgrade && (head.path == DHAN_PATH || head.path == DHAN_DEPTH_PATH);
        let dhan_query = if dhan {
            dhan_key_query(&head.query)
        } else {
            String::new()
        };
        let view = RequestView {
            method: &head.method,
            path: &head.path,
            query: if dhan { &dhan_query } else { &head.query },
            upgrade: head.upgrade,
            headers: &headers,
        };
        let principal = if conn.auth {
            match self.auth.check(&view, conn.peer, now) {
                Ok(p) => p,
                Err(_) if dhan => {
                    // A DhanHQ client understands a disconnect packet, not
                    // an HTTP 401: upgrade, then refuse in its protocol.
                    log::info!("/dhan: refused, the token is not a relay API key with 'read'");
                    return self.upgrade(conn, &head, origin_ok, None, now);
                }
                Err(denial) => {
                    if let Denial::Forbidden { need } = denial {
                        log::info!(
                            "{} {}: refused, the key lacks '{need}'",
                            head.method,
                            head.path
                        );
                    }
                    let r = cors(denial.response());
                    return self.respond(conn, r, head.keep_alive && !head.upgrade, false, now);
                }
            }
        } else {
            Principal::off()
        };
        if head.path == "/api/session" {
            let r = match head.method.as_str() {
                "GET" | "HEAD" => {
                    let who = if conn.auth {
                        self.auth.identify(&view, conn.peer, now)
                    } else {
                        principal
                    };
                    Response::new(
                        200,
                        "application/json",
                        serde_json::json!({
                            "auth": conn.auth,
                            "authenticated": !conn.auth || who.key_name.is_some(),
                            "key": who.key_name,
                        })
                        .to_string(),
                    )
                }
                "POST" if !origin_ok => {
                    Response::error(403, "origin not allowed: add it to allowed_origins")
                }
                "POST" if !conn.auth => Response::new(
                    200,
                    "application/json",
                    r#"{"auth":"off","message":"this listener does not ask for keys"}"#,
                ),
                "POST" => match self.auth.login(&view, body, conn.peer, now, conn.tls) {
                    Ok(login) => login.response(),
                    Err(denial) => denial.response(),
                },
                "DELETE" => self.auth.logout(&view, conn.tls),
                "OPTIONS" => Response::new(204, "text/plain", "")
                    .header("Allow", "GET, HEAD, POST, DELETE, OPTIONS")
                    .header(
                        "Access-Control-Allow-Methods",
                        "GET, HEAD, POST, DELETE, OPTIONS",
                    )
                    .header(
                        "Access-Control-Allow-Headers",
                        "Authorization, Content-Type",
                    ),
                _ => Response::error(405, "GET, POST or DELETE /api/session")
                    .header("Allow", "GET, HEAD, POST, DELETE, OPTIONS"),
            };
            return self.respond(conn, cors(r), head.keep_alive, head.method == "HEAD", now);
        }
        if head.upgrade {
            return self.upgrade(conn, &head, origin_ok, Some(principal), now);
        }
        if let Some(route) = trade::route(&head.method, &head.path, body) {
            return self.trade(conn, &head, route, body, &principal, origin_ok, now);
        }
        let (response, head_only) = match head.method.as_str() {
            "GET" | "HEAD" => {
                let r = match head.path.as_str() {
                    "/ws" | "/ws/prices" | DHAN_PATH | DHAN_DEPTH_PATH => Response::error(
                        426,
                        "this endpoint speaks WebSocket; connect with a WebSocket client",
                    )
                    .header("Upgrade", "websocket"),
                    "/health" if !principal.can(Scope::Read) => {
                        // Status only: the details need the read scope.
                        let (code, status) = self.rest.health_status();
                        Response::new(
                            code,
                            "application/json",
                            serde_json::json!({ "status": status }).to_string(),
                        )
                    }
                    path => self
                        .rest
                        .route(path, &head.query)
                        .unwrap_or_else(|| Response::error(404, "no such endpoint; see GET /api")),
                };
                (cors(r), head.method == "HEAD")
            }
            "POST" if admin::takes_body(&head.method, &head.path) => {
                let r = if origin_ok {
                    // With keys on this listener the admin scope was
                    // checked; without, only loopback peers may call.
                    admin::credentials(conn.peer, conn.auth, body, &self.rest.token)
                } else {
                    Response::error(403, "origin not allowed: add it to allowed_origins")
                };
                (cors(r), false)
            }
            "OPTIONS" if head.origin.is_some() && !origin_ok => (
                Response::error(403, "origin not allowed: add it to allowed_origins"),
                false,
            ),
            "OPTIONS" => {
                let methods = trade::allowed_methods(&head.path).unwrap_or("GET, HEAD, OPTIONS");
                let mut r = cors(Response::new(204, "text/plain", ""))
                    .header("Allow", methods)
                    .header("Access-Control-Allow-Methods", methods)
                    .header("Access-Control-Max-Age", "600");
                if let Some(h) = &head.cors_request_headers {
                    r = r.header("Access-Control-Allow-Headers", h);
                }
                (r, false)
            }
            _ => (
                Response::error(405, "only GET, HEAD and OPTIONS are served here")
                    .header("Allow", "GET, HEAD, OPTIONS"),
                false,
            ),
        };
        self.respond(conn, response, head.keep_alive, head_only, now);
    }

    /// A trading request: the status and the kill switch are answered
    /// here; calls go to the broker and the connection waits for the
    /// answer ([`Front::take_answers`]). Without access control, trading
    /// is served to loopback peers only; writes need an allowed Origin.
    #[allow(clippy::too_many_arguments)]
    fn trade(
        &mut self,
        conn: &mut Conn,
        head: &Head,
        route: Route,
        body: &[u8],
        principal: &Principal,
        origin_ok: bool,
        now: Instant,
    ) {
        let origin = head.origin.clone().filter(|_| origin_ok);
        let caller = Caller {
            key: principal.key_name.clone(),
            peer: conn.peer,
        };
        let local_or_keyed = conn.auth || conn.peer.is_loopback();
        let json = |status: u16, body: String| Response::new(status, "application/json", body);
        let r = match route {
            Route::Method(allow) => Response::error(
                405,
                &format!(
                    "{} takes {allow}",
                    head.path.chars().take(60).collect::<String>()
                ),
            )
            .header("Allow", allow),
            Route::Status => {
                let may_trade = if conn.auth {
                    principal.can(Scope::Trade)
                } else {
                    conn.peer.is_loopback()
                };
                json(200, self.trading.status(may_trade))
            }
            _ if !origin_ok && head.method != "GET" => {
                Response::error(403, "origin not allowed: add it to allowed_origins")
            }
            _ if !local_or_keyed => Response::error(
                403,
                "without access control, trading is served to clients on this machine only: \
                 turn access control on and use a key with the 'trade' scope",
            ),
            Route::KillSwitch => {
                let (status, body) = self.trading.set_live(body, caller);
                json(status, body)
            }
            Route::Call(call) => match self.trading.submit(conn.ticket, call, caller, now) {
                Ok(()) => {
                    conn.waiting = Some(Waiting {
                        keep_alive: head.keep_alive,
                        origin,
                    });
                    conn.then = Then::Await;
                    conn.deadline = now + BROKER_WAIT;
                    return;
                }
                Err((status, body)) => json(status, body),
            },
        };
        let r = with_cors(r, origin.as_deref());
        self.respond(conn, r, head.keep_alive, head.method == "HEAD", now);
    }

    /// Sends the broker's answers to the connections waiting for them (a
    /// connection that went meanwhile loses its answer; the call itself
    /// is in the audit log).
    fn take_answers(&mut self, now: Instant) {
        while let Ok(Answer {
            ticket,
            status,
            body,
        }) = self.trading.answers().try_recv()
        {
            let slot = ticket.slot;
            let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            if conn.ticket == ticket && conn.then == Then::Await {
                let w = conn.waiting.take().unwrap_or(Waiting {
                    keep_alive: false,
                    origin: None,
                });
                let r = with_cors(
                    Response::new(status, "application/json", body),
                    w.origin.as_deref(),
                );
                self.respond(&mut conn, r, w.keep_alive, false, now);
                self.conns[slot] = Some(conn);
                self.serve(slot, now);
            } else {
                self.conns[slot] = Some(conn);
            }
        }
    }

    fn upgrade(
        &mut self,
        conn: &mut Conn,
        head: &Head,
        origin_ok: bool,
        principal: Option<Principal>,
        now: Instant,
    ) {
        let kind = match head.path.as_str() {
            "/" | "/ws" => Kind::Feed,
            "/ws/prices" => Kind::Prices,
            DHAN_PATH => Kind::Dhan,
            DHAN_DEPTH_PATH => Kind::DhanDepth,
            _ => {
                return self.respond(
                    conn,
                    Response::error(404, "no WebSocket here: use /ws, /ws/prices or /dhan"),
                    false,
                    false,
                    now,
                )
            }
        };
        if let Some((status, why)) = http::upgrade_error(head) {
            return self.respond(conn, Response::error(status, why), false, false, now);
        }
        if !origin_ok {
            log::debug!("refused WebSocket from origin {:?}", head.origin);
            return self.respond(
                conn,
                Response::error(403, "origin not allowed: add it to allowed_origins"),
                false,
                false,
                now,
            );
        }
        if self.rest.fanout.clients.get() as usize >= self.config.max_clients {
            self.rest.fanout.clients_rejected.inc();
            return self.respond(
                conn,
                Response::error(503, "too many clients"),
                false,
                false,
                now,
            );
        }
        let Some(principal) = principal else {
            // A refused `/dhan` key: upgraded only to be told so.
            conn.upgrading = Some(Upgrading {
                principal: Principal::anonymous(),
                limits: KeyLimits::default(),
                refused: true,
            });
            let key = head.ws_key.as_deref().unwrap_or_default();
            conn.out = http::upgrade_response(key);
            conn.pos = 0;
            conn.then = Then::Upgrade(kind);
            return;
        };
        if !self.auth.connection_opened(&principal) {
            let name = principal.key_name.as_deref().unwrap_or_default();
            log::info!("key '{name}': WebSocket refused, it holds its limit of connections");
            return self.respond(
                conn,
                Response::error(
                    429,
                    &format!("key '{name}' holds its limit of connections (limits.keys.{name}.connections)"),
                ),
                false,
                false,
                now,
            );
        }
        let limits = self.auth.limits_of(&principal);
        if let Some(name) = &principal.key_name {
            log::debug!("WebSocket {} for key '{name}'", head.path);
        }
        conn.upgrading = Some(Upgrading {
            principal,
            limits,
            refused: false,
        });
        // `upgrade_error` checked the key is there.
        let key = head.ws_key.as_deref().unwrap_or_default();
        conn.out = http::upgrade_response(key);
        conn.pos = 0;
        conn.then = Then::Upgrade(kind);
    }

    fn hand_off(&mut self, mut conn: Conn, kind: Kind) {
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let prices = (kind == Kind::Prices).then(|| self.prices_body());
        let who = conn.upgrading.take().unwrap_or(Upgrading {
            principal: Principal::off(),
            limits: KeyLimits::default(),
            refused: false,
        });
        let client = NewClient {
            stream: conn.stream,
            early: conn.buf,
            kind,
            prices,
            principal: who.principal,
            limits: who.limits,
            refused: who.refused,
        };
        let shard = self.load.least_loaded();
        self.load.add(shard);
        match self.to_fanout[shard].send(Handoff::Client(client)) {
            Ok(()) => {}
            Err(crossbeam_channel::SendError(Handoff::Client(c))) => {
                self.load.remove(shard);
                self.auth.connection_closed(c.principal.key);
            }
            Err(_) => {}
        }
    }

    /// The prices object, rendered at most once a second.
    fn prices_body(&mut self) -> Bytes {
        match &self.last_prices {
            Some((at, body)) if at.elapsed() < Duration::from_secs(1) => body.clone(),
            _ => {
                let body = Bytes::from(self.rest.prices());
                self.last_prices = Some((Instant::now(), body.clone()));
                body
            }
        }
    }

    /// Sends this second's prices object while anyone listens for it.
    fn push_prices(&mut self) {
        if self.rest.fanout.prices_clients.get() == 0 {
            return;
        }
        let body = self.prices_body();
        for shard in &self.to_fanout {
            let _ = shard.send(Handoff::Prices(body.clone()));
        }
    }

    /// Closes connections whose head, response or next request is overdue.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let overdue = matches!(&self.conns[i], Some(c) if now > c.deadline);
            if !overdue {
                continue;
            }
            let Some(mut conn) = self.conns[i].take() else {
                continue;
            };
            let waiting_for_head = conn.out.is_empty() && !conn.buf.is_empty();
            if conn.then == Then::Await {
                let _ = conn.stream.write(
                    &Response::error(504, "the broker did not answer in time; the call may still complete (see GET /api/orders)")
                        .to_bytes(false, false),
                );
                self.rest.fanout.http_requests.inc();
            } else if waiting_for_head {
                // Best effort: the socket is idle, a short answer fits.
                let _ = conn.stream.write(
                    &Response::error(408, "request head not received in time")
                        .to_bytes(false, false),
                );
                self.rest.fanout.http_requests.inc();
            }
            self.release(&mut conn);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(i);
        }
    }
}

/// `r` with the CORS headers for an allowed `origin`.
fn with_cors(r: Response, origin: Option<&str>) -> Response {
    match origin {
        Some(o) => r
            .header("Access-Control-Allow-Origin", o)
            .header("Access-Control-Allow-Credentials", "true")
            .header("Vary", "Origin"),
        None => r,
    }
}

/// The body bytes that follow `head`, or why it is refused: only the
/// endpoints that take a body accept one, and only with `Content-Length`.
fn body_len(head: &Head) -> Result<usize, (u16, &'static str)> {
    if !head.has_body {
        return Ok(0);
    }
    if !admin::takes_body(&head.method, &head.path) && !trade::takes_body(&head.method, &head.path)
    {
        return Err((413, "request bodies are not accepted here"));
    }
    match head.content_length {
        None => Err((411, "send the body with Content-Length")),
        Some(n) if n > http::MAX_BODY_BYTES => Err((413, "the body is over 8 KiB")),
        Some(n) => Ok(n),
    }
}

/// Reads what is waiting (up to a head and a body); false when the
/// connection failed. A peer that shut its side is marked `eof`.
fn read_some(conn: &mut Conn) -> bool {
    let mut chunk = [0u8; 2048];
    while !conn.eof && conn.buf.len() < http::MAX_HEAD_BYTES + http::MAX_BODY_BYTES {
        match conn.stream.read(&mut chunk) {
            Ok(0) => conn.eof = true,
            Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes from `pos`; `Ok(true)` once everything is written (and, for
/// TLS, on the wire).
fn write_some(stream: &mut ServerStream, out: &[u8], pos: &mut usize) -> std::io::Result<bool> {
    while *pos < out.len() {
        match stream.write(&out[*pos..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // TLS: the last record may still be partly in the stream's buffer.
    stream.flush_pending()
}
