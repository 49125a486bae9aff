//! The HTTP side of the public listener: request heads (bounded, parsed with
//! `httparse`), Host and Origin checks, WebSocket upgrade validation and
//! plain responses (keep-alive aware). No I/O here: the front door thread
//! feeds bytes in and writes what comes out; the fuzz target calls the same
//! [`parse_head`].

use tungstenite::handshake::derive_accept_key;

use crate::token::sources::Secret;

/// Most bytes a request head may take (slowloris and garbage protection).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most bytes of a request body (the few endpoints that take one take
/// small JSON objects).
pub const MAX_BODY_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// A parsed request head, reduced to what routing needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string (without `?`), possibly empty.
    pub query: String,
    /// HTTP/1.`minor` (0 or 1).
    pub minor: u8,
    /// `Host` header.
    pub host: Option<String>,
    /// `Origin` header.
    pub origin: Option<String>,
    /// `Upgrade: websocket` and `Connection: upgrade` are both present.
    pub upgrade: bool,
    /// `Sec-WebSocket-Key`, as sent.
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<String>,
    /// `Access-Control-Request-Headers` (a CORS preflight).
    pub cors_request_headers: Option<String>,
    /// `Authorization` (an API key): `Debug` shows `***`.
    pub authorization: Option<Secret>,
    /// `Cookie` (a session id): `Debug` shows `***`.
    pub cookie: Option<Secret>,
    /// The client wants the connection kept open after the response
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The request announces a body (`Content-Length` > 0 or any
    /// `Transfer-Encoding`).
    pub has_body: bool,
    /// `Content-Length`, when given and a number; with
    /// `Transfer-Encoding` it is ignored (and such a body refused).
    pub content_length: Option<usize>,
    /// Bytes of the head, so anything after it stays buffered.
    pub len: usize,
}

/// What reading a head produced.
#[derive(Debug, PartialEq, Eq)]
// Made once per request and consumed at once: boxing the head buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A complete head.
    Done(Head),
    /// Not HTTP, or too big: answer with this status and close.
    Bad(u16, &'static str),
}

impl std::fmt::Debug for Head {
    /// Method and path only: the query may carry an API key (`?key=`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Head({} {})", self.method, self.path)
    }
}

impl Head {
    /// The headers access control reads, as `auth::extract` takes them.
    pub fn credential_headers(&self) -> Vec<(&'static str, &[u8])> {
        let mut v = Vec::with_capacity(2);
        if let Some(a) = &self.authorization {
            v.push(("authorization", a.expose().as_bytes()));
        }
        if let Some(c) = &self.cookie {
            v.push(("cookie", c.expose().as_bytes()));
        }
        v
    }
}

/// Parses the head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            Parsed::Bad(431, "request head too large")
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            Parsed::Bad(431, "request head too large")
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Bad(431, "too many headers"),
        Err(_) => Parsed::Bad(400, "malformed HTTP request"),
        Ok(httparse::Status::Complete(len)) => {
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(|v| v.trim().to_string())
            };
            let has_token = |name: &str, token: &str| {
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .filter_map(|h| std::str::from_utf8(h.value).ok())
                    .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            };
            let minor = req.version.unwrap_or(1);
            let target = req.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let chunked = header("transfer-encoding").is_some();
            let content_length = match header("content-length") {
                None => None,
                Some(v) => match v.parse::<usize>() {
                    Ok(n) => Some(n),
                    Err(_) => return Parsed::Bad(400, "Content-Length is not a number"),
                },
            };
            let has_body = chunked || content_length.is_some_and(|n| n > 0);
            let keep_alive = if minor >= 1 {
                !has_token("connection", "close")
            } else {
                has_token("connection", "keep-alive")
            };
            Parsed::Done(Head {
                method: req.method.unwrap_or("").to_string(),
                path: path.to_string(),
                query: query.to_string(),
                minor,
                host: header("host"),
                origin: header("origin"),
                upgrade: has_token("upgrade", "websocket") && has_token("connection", "upgrade"),
                ws_key: header("sec-websocket-key"),
                ws_version: header("sec-websocket-version"),
                cors_request_headers: header("access-control-request-headers"),
                authorization: header("authorization").map(Secret::new),
                cookie: header("cookie").map(Secret::new),
                keep_alive,
                has_body,
                content_length: content_length.filter(|_| !chunked),
                len,
            })
        }
    }
}

/// The host name of a `Host` header or an origin's authority, without the
/// port (IPv6 literals keep no brackets).
fn hostname(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    }
}

/// Whether a request naming `host` may be served (DNS-rebinding
/// protection): an IP literal or `localhost` always (a rebinding attack
/// needs a domain name that resolves to us), any other name only when
/// listed in `allowed` (`*` for any). HTTP/1.0 may omit `Host`.
pub fn host_allowed(host: Option<&str>, minor: u8, allowed: &[String]) -> bool {
    let Some(host) = host else { return minor == 0 };
    let name = hostname(host);
    if name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(host))
}

/// Whether a browser page at `origin` may use the relay. No `Origin` (a
/// bot, a script) is allowed; so are the same origin as the `Host`
/// header, any localhost origin, and the configured allowlist.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowlist: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    if allowlist
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    matches!(hostname(authority), "localhost" | "127.0.0.1" | "::1")
}

/// A `Sec-WebSocket-Key` must be the base64 of 16 bytes (RFC 6455 §4.1):
/// 22 significant characters, the last one carrying 2 bits, then `==`.
pub fn ws_key_valid(key: &str) -> bool {
    let b = key.as_bytes();
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22].iter().all(|&c| b64(c))
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
}

/// Why an upgrade request is refused, as a status and a sentence; `None`
/// when it is a valid RFC 6455 opening handshake.
pub fn upgrade_error(head: &Head) -> Option<(u16, &'static str)> {
    if head.method != "GET" {
        return Some((405, "a WebSocket upgrade must be a GET"));
    }
    if head.minor < 1 {
        return Some((400, "WebSocket needs HTTP/1.1"));
    }
    let Some(key) = head.ws_key.as_deref() else {
        return Some((400, "missing Sec-WebSocket-Key"));
    };
    if !ws_key_valid(key) {
        return Some((
            400,
            "malformed Sec-WebSocket-Key (base64 of 16 bytes expected)",
        ));
    }
    if head.ws_version.as_deref() != Some("13") {
        return Some((426, "unsupported Sec-WebSocket-Version (13 required)"));
    }
    None
}

/// The `101 Switching Protocols` answer to an upgrade with `key`.
pub fn upgrade_response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

/// A response about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body (sent unless the request was `HEAD`).
    pub body: Vec<u8>,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: String::new(),
        }
    }

    /// A JSON error body: `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message }).to_string();
        Response::new(status, "application/json", body)
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push_str(name);
        self.headers.push_str(": ");
        self.headers.push_str(value);
        self.headers.push_str("\r\n");
        self
    }

    /// The bytes on the wire: `keep_alive` says whether the connection
    /// stays open; `head_only` leaves the body out (a `HEAD` request) but
    /// keeps its `Content-Length`.
    pub fn to_bytes(&self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
            self.headers
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(req: &[u8]) -> Head {
        match parse_head(req) {
            Parsed::Done(h) => h,
            other => panic!("not parsed: {other:?}"),
        }
    }

    #[test]
    fn parses_a_websocket_upgrade() {
        let req = b"GET /ws?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:8000\r\n\r\nextra";
        let head = done(req);
        assert_eq!(head.method, "GET");
        assert_eq!((head.path.as_str(), head.query.as_str()), ("/ws", "x=1"));
        assert!(head.upgrade);
        assert_eq!(head.ws_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(head.ws_version.as_deref(), Some("13"));
        assert_eq!(head.len, req.len() - 5);
        assert_eq!(upgrade_error(&head), None);
        // RFC 6455's own example key and accept value.
        let answer = String::from_utf8(upgrade_response("dGhlIHNhbXBsZSBub25jZQ==")).unwrap();
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn bad_upgrades_are_refused_with_a_reason() {
        // Regression: malformed keys and HTTP/1.0 upgrades were accepted.
        let base = |line: &str, key: &str, version: &str| {
            done(format!("{line}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n").as_bytes())
        };
        let good = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(upgrade_error(&base("GET /ws HTTP/1.1", good, "13")), None);
        assert_eq!(
            upgrade_error(&base("GET /ws HTTP/1.0", good, "13")).map(|e| e.0),
            Some(400)
        );
        for key in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j*Q==",
            "dGhlIHNhbXBsZSBub25jZQ==AAAA",
        ] {
            assert_eq!(
                upgrade_error(&base("GET /ws HTTP/1.1", key, "13")),
                Some((
                    400,
                    "malformed Sec-WebSocket-Key (base64 of 16 bytes expected)"
                )),
                "{key:?}"
            );
        }
        assert_eq!(
            upgrade_error(&base("GET /ws HTTP/1.1", good, "8")).map(|e| e.0),
            Some(426)
        );
        assert_eq!(
            upgrade_error(&base("POST /ws HTTP/1.1", good, "13")).map(|e| e.0),
            Some(405)
        );
    }

    #[test]
    fn partial_bad_and_oversized_heads() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        assert_eq!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Parsed::Bad(400, "malformed HTTP request")
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(parse_head(&big), Parsed::Bad(431, "request head too large"));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Parsed::Bad(431, "too many headers"));
        let plain = done(b"GET /prices HTTP/1.1\r\n\r\n");
        assert!(!plain.upgrade, "no upgrade headers");
    }

    #[test]
    fn keep_alive_and_bodies() {
        assert!(done(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
        assert!(!done(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!done(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(done(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(done(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").has_body);
        assert!(done(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
        assert!(!done(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").has_body);
        assert_eq!(
            done(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").content_length,
            Some(5)
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: five\r\n\r\n"),
            Parsed::Bad(400, "Content-Length is not a number")
        );
    }

    #[test]
    fn hosts() {
        // Regression: any Host was served, so a DNS-rebinding page could
        // open WebSockets and read prices.
        let none: Vec<String> = Vec::new();
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "[::1]:8000",
            "10.1.2.3",
            "LOCALHOST",
        ] {
            assert!(host_allowed(Some(ok), 1, &none), "{ok}");
        }
        assert!(!host_allowed(Some("evil.example:8000"), 1, &none));
        assert!(!host_allowed(None, 1, &none), "HTTP/1.1 requires Host");
        assert!(host_allowed(None, 0, &none), "HTTP/1.0 may omit it");
        let named = vec!["relay.lan".to_string()];
        assert!(host_allowed(Some("relay.lan:8000"), 1, &named));
        assert!(host_allowed(Some("anything"), 1, &["*".to_string()]));
    }

    #[test]
    fn origins() {
        let allow = vec!["https://dash.example.com".to_string()];
        let host = Some("10.0.0.5:8000");
        assert!(origin_allowed(None, host, &[]));
        assert!(origin_allowed(Some("http://localhost:3000"), host, &[]));
        assert!(origin_allowed(Some("http://127.0.0.1:5173"), host, &[]));
        assert!(origin_allowed(Some("http://[::1]:80"), host, &[]));
        assert!(
            origin_allowed(Some("http://10.0.0.5:8000"), host, &[]),
            "same origin"
        );
        assert!(origin_allowed(
            Some("https://dash.example.com"),
            host,
            &allow
        ));
        assert!(!origin_allowed(Some("https://evil.example"), host, &allow));
        assert!(!origin_allowed(
            Some("http://localhost.evil.example"),
            host,
            &[]
        ));
        assert!(!origin_allowed(Some("null"), host, &[]));
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let r = Response::new(200, "text/plain", "hi")
            .header("Access-Control-Allow-Origin", "http://localhost:3000");
        let text = String::from_utf8(r.to_bytes(false, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.contains("Access-Control-Allow-Origin: http://localhost:3000\r\n"));
        assert!(text.ends_with("\r\n\r\nhi"));
        let head = String::from_utf8(r.to_bytes(true, true)).unwrap();
        assert!(
            head.contains("Content-Length: 2\r\n") && head.contains("Connection: keep-alive\r\n")
        );
        assert!(head.ends_with("\r\n\r\n"), "HEAD: no body");
        let e = String::from_utf8(Response::error(404, "no such endpoint").to_bytes(false, false))
            .unwrap();
        assert!(
            e.starts_with("HTTP/1.1 404 Not Found")
                && e.ends_with(r#"{"error":"no such endpoint"}"#)
        );
    }
}
