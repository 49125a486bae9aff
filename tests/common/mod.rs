//! Helpers shared by the end-to-end tests: waiting for a condition, one HTTP
//! GET against the relay, and one WebSocket client of the relay's `/ws`
//! protocol. Every test binary compiles this module and uses part of it.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dhan_relay::domain::InstrumentKey;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long one socket read may block before it fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `cond` every 10 ms until it holds; fails the test after [`WAIT`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// `GET path` on a fresh connection, read until the relay closes it: the
/// status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {text:?}"));
    let (_, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no end of head: {text:?}"));
    (status, body.to_string())
}

/// [`http_get`] with the body as JSON (`Value::Null` when it is not JSON).
pub fn http_get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(addr, path);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A blocking WebSocket client of the relay; reads time out after
/// [`READ_TIMEOUT`]. The socket is public for tests that send odd frames.
pub struct WsClient(pub WebSocket<TcpStream>);

impl WsClient {
    /// Connects to `ws://addr{path}`; panics if the upgrade fails.
    pub fn connect(addr: SocketAddr, path: &str) -> WsClient {
        Self::connect_with(addr, path, None).unwrap()
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
        self.send(json!({"type": "subscribe", "mode": mode,
            "instruments": [{"exchangeSegment": key.segment.name(), "securityId": key.security_id.to_string()}]}));
    }

    /// The next JSON message (pings are answered by tungstenite); panics on
    /// a close or a timeout.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.0.read().expect("message before timeout") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
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
