//! The first moments of a connection: TLS, the WebSocket upgrade, and what
//! the upgrade URL asks for (endpoint, token, client id).
//!
//! Non-blocking like the rest of the connection: every step that would block
//! hands back to [`Waiter::wait`] and resumes, bounded by
//! [`HANDSHAKE_TIMEOUT`]. A path other than `/` or `/twentydepth` is refused
//! with HTTP 404, a main-feed `version` other than `2` with HTTP 400 — the
//! refusal says why and never echoes the query (it holds the token). The
//! login itself is checked afterwards, by [`super::shared::Shared::log_in`],
//! because DhanHQ refuses logins with a disconnect packet over an upgraded
//! WebSocket, not with an HTTP status.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll};
use rustls::{ServerConnection, StreamOwned};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{StatusCode, Uri};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{HandshakeError, WebSocket};

use super::shared::{Endpoint, Shared};
use crate::percent::query_param;

/// A client must finish TLS and the WebSocket upgrade within this.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest sleep, so the stop and stall flags are seen promptly.
pub(super) const MAX_POLL: Duration = Duration::from_millis(50);

/// The client's socket, plain or TLS.
#[derive(Debug)]
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Sleeps until the socket or the waker has news, or a timeout.
#[derive(Debug)]
pub(super) struct Waiter {
    poll: Poll,
    events: Events,
}

impl Waiter {
    pub(super) fn new(poll: Poll) -> Self {
        Waiter {
            poll,
            events: Events::with_capacity(8),
        }
    }

    pub(super) fn wait(&mut self, timeout: Duration) {
        // An error (EINTR) only means we look around a little early.
        let _ = self
            .poll
            .poll(&mut self.events, Some(timeout.min(MAX_POLL)));
    }
}

/// What the upgrade request asked for.
pub(super) struct Login {
    pub(super) endpoint: Endpoint,
    pub(super) token: Option<String>,
    pub(super) client_id: Option<String>,
}

/// Limits for every simulator WebSocket: requests are small.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
        .max_write_buffer_size(4 << 20)
}

/// TLS and the WebSocket upgrade, bounded by [`HANDSHAKE_TIMEOUT`] (not
/// counting time stalled).
pub(super) fn handshake(
    shared: &Shared,
    waiter: &mut Waiter,
    stream: Stream,
) -> Option<(WebSocket<Stream>, Login)> {
    let mut login = None;
    // The error type is tungstenite's, sized as it is.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| match route(req.uri()) {
        Ok(l) => {
            login = Some(l);
            Ok(resp)
        }
        Err((status, why)) => {
            let mut err = ErrorResponse::new(Some(why.to_owned()));
            *err.status_mut() = status;
            Err(err)
        }
    };
    let mut deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut attempt = tungstenite::accept_hdr_with_config(stream, callback, Some(ws_config()));
    let ws = loop {
        match attempt {
            Ok(ws) => break ws,
            Err(HandshakeError::Failure(_)) => return None,
            Err(HandshakeError::Interrupted(mid)) => {
                loop {
                    if shared.stopping() {
                        return None;
                    }
                    let now = Instant::now();
                    if shared.stalled() {
                        deadline = now + HANDSHAKE_TIMEOUT;
                        waiter.wait(MAX_POLL);
                        continue;
                    }
                    if now >= deadline {
                        return None;
                    }
                    waiter.wait(deadline - now);
                    break;
                }
                attempt = mid.handshake();
            }
        }
    };
    login.map(|l| (ws, l))
}

/// Reads the upgrade request's path and query.
///
/// Parameters are decoded by query-string rules ([`crate::percent`]): `+`
/// is a space, so a literal `+` must arrive as `%2B`. That costs nothing
/// real: DhanHQ access tokens are JWTs — base64url segments joined by dots,
/// an alphabet without `+`, `/` or `=` — and client ids are digits; the
/// relay's own client escapes every other byte anyway. The simulator thus
/// decodes the way an ordinary web server would, instead of special-casing
/// `+` for tokens that do not contain it.
fn route(uri: &Uri) -> Result<Login, (StatusCode, &'static str)> {
    let endpoint = match uri.path() {
        "" | "/" => Endpoint::Feed,
        "/twentydepth" => Endpoint::Depth,
        _ => return Err((StatusCode::NOT_FOUND, "no such endpoint")),
    };
    let query = uri.query().unwrap_or("");
    let version = query_param(query, "version");
    if endpoint == Endpoint::Feed && version.as_deref() != Some("2") {
        return Err((StatusCode::BAD_REQUEST, "this server speaks version=2 only"));
    }
    Ok(Login {
        endpoint,
        token: query_param(query, "token"),
        client_id: query_param(query, "clientId"),
    })
}

impl Stream {
    /// The socket, wrapped in a TLS server session when `tls` is set.
    pub(super) fn new(
        tcp: TcpStream,
        tls: Option<&std::sync::Arc<rustls::ServerConfig>>,
    ) -> Option<Stream> {
        Some(match tls {
            Some(config) => {
                let session = ServerConnection::new(config.clone()).ok()?;
                Stream::Tls(Box::new(StreamOwned::new(session, tcp)))
            }
            None => Stream::Plain(tcp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn routes_and_query_parameters() {
        let l = route(&uri("/?version=2&token=a%2Eb%2Bc&clientId=110&authType=2")).unwrap();
        assert_eq!(l.endpoint, Endpoint::Feed);
        assert_eq!(l.token.as_deref(), Some("a.b+c"));
        assert_eq!(l.client_id.as_deref(), Some("110"));
        // A JWT arrives as is; an unescaped `+` is a space (query rules).
        let jwt = "eyJhbGciOiJIUzUxMiJ9.eyJpc3MiOiJkaGFuIn0.s-ig_N";
        let l = route(&uri(&format!("/?version=2&token={jwt}&clientId=1"))).unwrap();
        assert_eq!(l.token.as_deref(), Some(jwt));
        let l = route(&uri("/?version=2&token=a+b&clientId=1")).unwrap();
        assert_eq!(l.token.as_deref(), Some("a b"));
        let l = route(&uri("/?version=%32&token&clientId=")).unwrap();
        assert_eq!(
            (l.token.as_deref(), l.client_id.as_deref()),
            (Some(""), Some(""))
        );
        let l = route(&uri("/?version=2")).unwrap();
        assert!(l.token.is_none() && l.client_id.is_none());
        let l = route(&uri("/twentydepth?token=t&clientId=c&authType=2")).unwrap();
        assert_eq!(l.endpoint, Endpoint::Depth);
        assert_eq!(
            route(&uri("/?token=t&clientId=c")).err().map(|e| e.0),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            route(&uri("/?version=1&token=t")).err().map(|e| e.0),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            route(&uri("/feed?version=2")).err().map(|e| e.0),
            Some(StatusCode::NOT_FOUND)
        );
    }
}
