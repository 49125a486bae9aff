//! Helpers shared by the end-to-end tests: waiting for a condition, HTTP
//! requests against the relay (raw, GET, JSON, `/stats` counters), and one
//! WebSocket client of the relay's `/ws` protocol. Every test binary
//! compiles this module and uses part of it.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dhan_relay::domain::{InstrumentKey, Mode};
use dhan_relay::sim::SimControl;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

pub mod alloc;
pub mod bars;
pub mod tls;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long one socket read may block before it fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh directory of its own under the system temp dir (named for the
/// test and the process), removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// `$TMPDIR/dhan-relay-{name}-{pid}`, emptied.
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("dhan-relay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` every 10 ms until it holds; fails the test after [`WAIT`].
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    if !poll(cond) {
        panic!("timed out waiting for {what}");
    }
}

/// [`wait_for`], explaining the failure with `explain()`.
pub fn wait_or(what: &str, cond: impl FnMut() -> bool, explain: impl FnOnce() -> String) {
    if !poll(cond) {
        panic!("timed out waiting for {what}: {}", explain());
    }
}

/// Whether `cond` held within [`WAIT`], polled every 10 ms.
fn poll(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

// ---------------------------------------------------------------------------
// HTTP

/// Where `needle` first starts in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An HTTP response, as received.
pub struct Resp {
    pub status: u16,
    /// The status line and headers, through the blank line.
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    /// A response head (through the blank line) and, after it, the body.
    pub fn parse(raw: &[u8]) -> Resp {
        let end = find(raw, b"\r\n\r\n").unwrap_or_else(|| {
            panic!(
                "not a complete response head: {:?}",
                String::from_utf8_lossy(raw)
            )
        }) + 4;
        let head = String::from_utf8(raw[..end].to_vec()).unwrap();
        let status = head
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
        Resp {
            status,
            head,
            body: raw[end..].to_vec(),
        }
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `request` as is on a new connection and reads until the server
/// closes (use `Connection: close`, or a request it refuses). The body is
/// everything after the head: a `HEAD` answer's is empty whatever its
/// `Content-Length` says.
pub fn exchange(addr: SocketAddr, request: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to {request:?}: {e}"));
    Resp::parse(&raw)
}

/// `GET path` on a fresh connection (`Connection: close`), as received.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// [`get`]: the status code and the body as text.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = get(addr, path);
    let body = String::from_utf8(r.body)
        .unwrap_or_else(|e| panic!("GET {path}: the body is not UTF-8: {e}"));
    (r.status, body)
}

/// [`http_get`] with the body as JSON (`Value::Null` when it is not JSON).
pub fn http_get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(addr, path);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The JSON body of `GET path`, which must answer 200 or 503 with JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path);
    assert!(r.status == 200 || r.status == 503, "{path}: {}", r.status);
    r.json()
}

/// `/stats`, as JSON.
pub fn stats(addr: SocketAddr) -> Value {
    get_json(addr, "/stats")
}

/// One counter of `/stats`; panics if it is missing.
pub fn counter(addr: SocketAddr, name: &str) -> u64 {
    let stats = stats(addr);
    stats["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

// ---------------------------------------------------------------------------
// WebSocket

/// `key` as an entry of a subscribe or unsubscribe message's `instruments`.
pub fn instrument(key: InstrumentKey) -> Value {
    json!({"exchangeSegment": key.segment.name(), "securityId": key.security_id.to_string()})
}

/// A blocking WebSocket client of the relay; reads time out after
/// [`READ_TIMEOUT`]. The socket is public for tests that send odd frames.
pub struct WsClient(pub WebSocket<TcpStream>);

impl WsClient {
    /// Connects to `ws://addr{path}`; panics if the upgrade fails.
    pub fn connect(addr: SocketAddr, path: &str) -> WsClient {
        Self::connect_with(addr, path, None).unwrap_or_else(|e| panic!("handshake on {path}: {e}"))
    }

    /// Connects with an `Origin` header, if given; the handshake's error
    /// (an HTTP refusal, say) is returned.
    pub fn connect_with(
        addr: SocketAddr,
        path: &str,
        origin: Option<&str>,
    ) -> Result<WsClient, tungstenite::Error> {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}{path}"
        ))
        .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            _ => panic!("blocking handshake interrupted"),
        })?;
        Ok(WsClient(ws))
    }

    /// Sends `v` as a text message.
    pub fn send(&mut self, v: Value) {
        self.0.send(Message::text(v.to_string())).unwrap();
    }

    /// Subscribes `key` in `mode` (`ticker`, `quote` or `full`).
    pub fn subscribe(&mut self, key: InstrumentKey, mode: &str) {
        self.subscribe_many(&[key], mode);
    }

    /// Subscribes `keys` in `mode`, in one message.
    pub fn subscribe_many(&mut self, keys: &[InstrumentKey], mode: &str) {
        let list: Vec<Value> = keys.iter().copied().map(instrument).collect();
        self.send(json!({"type": "subscribe", "mode": mode, "instruments": list}));
    }

    /// Unsubscribes `keys`, in one message.
    pub fn unsubscribe(&mut self, keys: &[InstrumentKey]) {
        let list: Vec<Value> = keys.iter().copied().map(instrument).collect();
        self.send(json!({"type": "unsubscribe", "instruments": list}));
    }

    /// The next text message, as sent (pings are answered by tungstenite);
    /// panics on a close or a timeout.
    pub fn recv_text(&mut self) -> String {
        loop {
            match self.0.read().expect("message before timeout") {
                Message::Text(t) => return t.as_str().to_string(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The next message, as JSON; panics on a close or a timeout.
    pub fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text()).unwrap()
    }

    /// The next message matching `pred`, skipping others.
    pub fn recv_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv();
            if pred(&v) {
                return v;
            }
        }
    }

    /// The next message of `kind` (its `"type"`), skipping others.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        self.recv_where(|v| v["type"] == kind)
    }

    /// Reads until the server closes; the close frame's code, `None` for a
    /// close without a frame (or a read error).
    pub fn close_code(&mut self) -> Option<CloseCode> {
        loop {
            match self.0.read() {
                Ok(Message::Close(f)) => return f.map(|f| f.code),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The socket after the handshake, read timeout as set, for tests that
    /// read the raw frame bytes themselves.
    pub fn into_stream(self) -> TcpStream {
        self.0.into_inner()
    }
}

/// What the simulator's connections hold now, with each instrument's mode.
pub fn held(sim: &SimControl) -> Vec<(InstrumentKey, Mode)> {
    sim.subscriptions()
        .into_iter()
        .flat_map(|c| c.instruments)
        .collect()
}
