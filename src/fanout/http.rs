//! The HTTP side of the public listener: request heads (bounded, parsed with
//! `httparse`), routing, the WebSocket upgrade answer, origin checks and
//! plain responses.

use tungstenite::handshake::derive_accept_key;

/// Most bytes a request head may take (slowloris and garbage protection).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// A parsed request head, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string (without `?`), possibly empty.
    pub query: String,
    /// `Host` header.
    pub host: Option<String>,
    /// `Origin` header.
    pub origin: Option<String>,
    /// A WebSocket upgrade request: `Sec-WebSocket-Key`, when the
    /// `Upgrade: websocket` and `Connection: upgrade` headers are present.
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<String>,
    /// Bytes of the head, so anything after it stays buffered.
    pub len: usize,
}

/// What reading a head produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A complete head.
    Done(Head),
    /// Not HTTP, or too big: answer with this status and close.
    Bad(u16, &'static str),
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
                header(name)
                    .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            };
            let target = req.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let upgrade = has_token("upgrade", "websocket") && has_token("connection", "upgrade");
            Parsed::Done(Head {
                method: req.method.unwrap_or("").to_string(),
                path: path.to_string(),
                query: query.to_string(),
                host: header("host"),
                origin: header("origin"),
                ws_key: upgrade.then(|| header("sec-websocket-key")).flatten(),
                ws_version: header("sec-websocket-version"),
                len,
            })
        }
    }
}

/// Whether a browser page at `origin` may open a WebSocket here. No
/// `Origin` (a bot, a script) is allowed; so are the same origin as the
/// `Host` header, any localhost origin, and the configured allowlist.
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
    let hostname = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    matches!(hostname, "localhost" | "127.0.0.1" | "::1")
}

/// The `101 Switching Protocols` answer to an upgrade with `key`.
pub fn upgrade_response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

/// A complete response that closes the connection.
pub fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    cors_origin: Option<&str>,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if let Some(origin) = cors_origin {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error body: `{"error": message}`.
pub fn error_response(status: u16, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    response(status, "application/json", body.as_bytes(), None)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_websocket_upgrade() {
        let req = b"GET /ws?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:8000\r\n\r\nextra";
        let Parsed::Done(head) = parse_head(req) else {
            panic!("not parsed")
        };
        assert_eq!(head.method, "GET");
        assert_eq!((head.path.as_str(), head.query.as_str()), ("/ws", "x=1"));
        assert_eq!(head.ws_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(head.ws_version.as_deref(), Some("13"));
        assert_eq!(head.len, req.len() - 5);
        // RFC 6455's own example key and accept value.
        let answer = String::from_utf8(upgrade_response("dGhlIHNhbXBsZSBub25jZQ==")).unwrap();
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
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
        let Parsed::Done(plain) = parse_head(b"GET /prices HTTP/1.1\r\n\r\n") else {
            panic!()
        };
        assert_eq!(plain.ws_key, None, "no upgrade headers, no key");
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
    fn responses_carry_length_and_close() {
        let r = String::from_utf8(response(
            200,
            "text/plain",
            b"hi",
            Some("http://localhost:3000"),
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 2\r\n") && r.contains("Connection: close\r\n"));
        assert!(r.contains("Access-Control-Allow-Origin: http://localhost:3000\r\n"));
        assert!(r.ends_with("\r\n\r\nhi"));
        let e = String::from_utf8(error_response(404, "no such endpoint")).unwrap();
        assert!(
            e.starts_with("HTTP/1.1 404 Not Found")
                && e.ends_with(r#"{"error":"no such endpoint"}"#)
        );
    }
}
