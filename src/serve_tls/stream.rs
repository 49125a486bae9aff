//! The client socket as the front door and the fanout see it: plain TCP or
//! TLS, behind one enum so the plain path is a match arm, not a vtable or
//! a box per write.
//!
//! [`TlsStream`] drives rustls' unbuffered server API over a non-blocking
//! mio socket with buffers allocated when the connection is accepted:
//! - `inc`: ciphertext received, processed a record at a time;
//! - `plain`: decrypted bytes not yet read (tungstenite and the HTTP head
//!   parser read through [`Read`]);
//! - `out`: ciphertext not yet on the wire. A write first sends what is
//!   left of it; only when it is empty does new plaintext get encrypted,
//!   so at most one record (≤ 16 KiB of plaintext) waits here and a socket
//!   that does not drain reports `WouldBlock` on the next write, which is
//!   what the session's slow-client and conflation policy keys on.
//!
//! A vectored write (the fanout's frames: headers and shared payloads)
//! is gathered into a per-thread staging buffer and encrypted as one
//! record, so a TLS client costs one encryption and one `send` per flush,
//! as a plain one costs one `writev`.
//!
//! A peer that speaks plain HTTP to a TLS port is recognised by its first
//! byte (a TLS record starts with 0x16) and can be told so in plain text
//! ([`ServerStream::refuse_plain_http`]).

use std::cell::RefCell;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::ServerConfig;

/// Largest plaintext encrypted per write: one full TLS record.
pub const MAX_PLAIN: usize = 16 * 1024;
/// Room for one record's header, padding and tag on top of its plaintext.
const RECORD_OVERHEAD: usize = 256;
/// Ciphertext received: one full record and a little of the next.
const INCOMING: usize = MAX_PLAIN + 2 * 1024;

/// What a non-TLS peer is told on a TLS port.
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 45\r\nConnection: close\r\n\r\nthis port speaks TLS; use https:// or wss://\n";

thread_local! {
    /// Where a vectored write's slices are gathered before encryption.
    static STAGE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(MAX_PLAIN));
}

/// A client connection: plain TCP or TLS.
#[derive(Debug)]
pub enum ServerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed once: it is much larger than a socket).
    Tls(Box<TlsStream>),
}

impl ServerStream {
    /// A TLS server connection over an accepted socket.
    pub fn tls(tcp: TcpStream, config: &Arc<ServerConfig>) -> io::Result<ServerStream> {
        Ok(ServerStream::Tls(Box::new(TlsStream::new(tcp, config)?)))
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(t) => t,
            ServerStream::Tls(t) => &t.tcp,
        }
    }

    /// Whether this is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Sends ciphertext left over from an earlier write; `Ok(true)` when
    /// nothing is left (always, for plain TCP).
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            ServerStream::Plain(_) => Ok(true),
            ServerStream::Tls(t) => t.flush_out(),
        }
    }

    /// If the peer turned out to speak plain HTTP to a TLS port, answers
    /// it 400 in plain text (best effort, one write) and returns true: the
    /// caller closes the connection.
    pub fn refuse_plain_http(&mut self) -> bool {
        match self {
            ServerStream::Tls(t) if t.not_tls => {
                let _ = t.tcp.write(PLAIN_HTTP_ANSWER);
                true
            }
            _ => false,
        }
    }

    /// Before closing: a TLS `close_notify` (best effort), so a client
    /// reading to the end sees a clean end rather than a truncation.
    pub fn close_notify(&mut self) {
        if let ServerStream::Tls(t) = self {
            t.close_notify();
        }
    }
}

impl Read for ServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(t) => t.read(buf),
            ServerStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(t) => t.write(buf),
            ServerStream::Tls(t) => t.write_vectored(&[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(t) => t.write_vectored(bufs),
            ServerStream::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.flush_pending()? {
            true => Ok(()),
            false => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Source for ServerStream {
    fn register(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ServerStream::Plain(t) => t.register(r, token, interests),
            ServerStream::Tls(t) => t.tcp.register(r, token, interests),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ServerStream::Plain(t) => t.reregister(r, token, interests),
            ServerStream::Tls(t) => t.tcp.reregister(r, token, interests),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            ServerStream::Plain(t) => t.deregister(r),
            ServerStream::Tls(t) => t.tcp.deregister(r),
        }
    }
}

/// Where driving rustls stopped.
#[derive(Debug, PartialEq, Eq)]
enum Driven {
    /// The handshake (or a record) needs more bytes from the peer.
    NeedInput,
    /// Established; the given plaintext (if any) was encrypted into `out`.
    Ready,
    /// Decrypted data waits for room in `plain` (the reader is behind).
    PlainFull,
    /// The connection is closed.
    Closed,
}

/// Ciphertext waiting for the socket: `buf[start..end]`.
#[derive(Debug)]
struct OutBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl OutBuf {
    /// Free space after `end`, at least `need` bytes: compacts first and
    /// grows only when a handshake flight needs it (never in steady state,
    /// where writes encrypt into an empty buffer sized for a full record).
    fn spare(&mut self, need: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < need {
                let mut bigger = vec![0u8; self.end + need].into_boxed_slice();
                bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
                self.buf = bigger;
            }
        }
        &mut self.buf[self.end..]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// A server-side TLS connection over a non-blocking socket.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    inc: Box<[u8]>,
    inc_len: usize,
    plain: Vec<u8>,
    plain_pos: usize,
    out: OutBuf,
    /// The first byte was looked at.
    sniffed: bool,
    /// The peer does not speak TLS.
    not_tls: bool,
    /// The peer sent `close_notify` or closed its side.
    peer_done: bool,
    /// We sent `close_notify`.
    closed: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending_out", &(self.out.end - self.out.start))
            .finish()
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// A connection waiting for its ClientHello.
    pub fn new(tcp: TcpStream, config: &Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(Arc::clone(config)).map_err(tls_error)?;
        Ok(TlsStream {
            tcp,
            conn,
            inc: vec![0u8; INCOMING].into_boxed_slice(),
            inc_len: 0,
            plain: Vec::with_capacity(MAX_PLAIN),
            plain_pos: 0,
            out: OutBuf {
                buf: vec![0u8; MAX_PLAIN + RECORD_OVERHEAD].into_boxed_slice(),
                start: 0,
                end: 0,
            },
            sniffed: false,
            not_tls: false,
            peer_done: false,
            closed: false,
        })
    }

    /// Sends what `out` holds; `Ok(true)` once it is empty, `Ok(false)` if
    /// the socket would block first.
    fn flush_out(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.tcp.write(&self.out.buf[self.out.start..self.out.end]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out.start += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Runs rustls over the received ciphertext until it needs more input
    /// or the connection is established; once established, encrypts `data`
    /// (which must fit one record) into `out`.
    fn drive(&mut self, data: &[u8]) -> io::Result<Driven> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.inc[..self.inc_len]);
            let result = match state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    let mut full = false;
                    while let Some(len) = traffic.peek_len() {
                        if self.plain_pos == self.plain.len() {
                            self.plain.clear();
                            self.plain_pos = 0;
                        }
                        if self.plain.len() + len.get() > MAX_PLAIN.max(self.plain.capacity()) {
                            full = true;
                            break;
                        }
                        match traffic.next_record() {
                            Some(Ok(record)) => {
                                discard += record.discard;
                                self.plain.extend_from_slice(record.payload);
                            }
                            Some(Err(e)) => return Err(tls_error(e)),
                            None => break,
                        }
                    }
                    full.then_some(Driven::PlainFull)
                }
                ConnectionState::EncodeTlsData(mut encode) => loop {
                    match encode.encode(self.out.spare(0)) {
                        Ok(n) => {
                            self.out.end += n;
                            break None;
                        }
                        Err(EncodeError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => {
                            self.out.spare(required_size);
                        }
                        Err(e) => return Err(io::Error::new(ErrorKind::InvalidData, e)),
                    }
                },
                // What was encoded stays in `out` and goes out, in order,
                // with the next socket write.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Driven::NeedInput),
                ConnectionState::PeerClosed => {
                    self.peer_done = true;
                    None
                }
                ConnectionState::Closed => Some(Driven::Closed),
                ConnectionState::WriteTraffic(mut write) => {
                    if !data.is_empty() {
                        loop {
                            let spare = self.out.spare(data.len() + RECORD_OVERHEAD);
                            match write.encrypt(data, spare) {
                                Ok(n) => {
                                    self.out.end += n;
                                    break;
                                }
                                Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                    required_size,
                                })) => {
                                    self.out.spare(required_size);
                                }
                                Err(e) => return Err(io::Error::new(ErrorKind::InvalidData, e)),
                            }
                        }
                    }
                    Some(Driven::Ready)
                }
                // Early data is off (the default); anything else is new.
                _ => {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "unexpected TLS state",
                    ))
                }
            };
            if discard > 0 {
                self.inc.copy_within(discard..self.inc_len, 0);
                self.inc_len -= discard;
            }
            if let Some(r) = result {
                return Ok(r);
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.plain_pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.plain_pos);
                buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                return Ok(n);
            }
            if !self.sniffed && self.inc_len > 0 {
                self.sniffed = true;
                if self.inc[0] != 0x16 {
                    self.not_tls = true;
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "plain text on a TLS port",
                    ));
                }
            }
            let driven = self.drive(&[])?;
            // Handshake messages go out as soon as they are made.
            self.flush_out()?;
            if self.plain_pos < self.plain.len() {
                continue;
            }
            if self.peer_done || driven == Driven::Closed {
                return Ok(0);
            }
            if self.inc_len == self.inc.len() {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "TLS record too large",
                ));
            }
            match self.tcp.read(&mut self.inc[self.inc_len..]) {
                Ok(0) => {
                    self.peer_done = true;
                    return Ok(0);
                }
                Ok(n) => self.inc_len += n,
                Err(e) => return Err(e),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Ciphertext from an earlier write goes first; while any is left,
        // the socket is full.
        if !self.flush_out()? {
            return Err(ErrorKind::WouldBlock.into());
        }
        if self.closed {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let first = bufs.iter().find(|b| !b.is_empty());
        let Some(first) = first else {
            return Ok(0);
        };
        let one = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
        let (driven, n) = if one || first.len() >= MAX_PLAIN {
            let n = first.len().min(MAX_PLAIN);
            (self.drive(&first[..n])?, n)
        } else {
            STAGE.with(|stage| -> io::Result<(Driven, usize)> {
                let mut stage = stage.borrow_mut();
                stage.clear();
                for b in bufs {
                    let take = b.len().min(MAX_PLAIN - stage.len());
                    stage.extend_from_slice(&b[..take]);
                    if stage.len() == MAX_PLAIN {
                        break;
                    }
                }
                Ok((self.drive(&stage)?, stage.len()))
            })?
        };
        match driven {
            Driven::Ready => {
                // The plaintext is taken; whatever ciphertext the socket
                // does not take now waits in `out` for the next write.
                self.flush_out()?;
                Ok(n)
            }
            Driven::NeedInput | Driven::PlainFull => Err(ErrorKind::WouldBlock.into()),
            Driven::Closed => Err(ErrorKind::BrokenPipe.into()),
        }
    }

    /// Queues `close_notify` and tries to send it with what is pending.
    fn close_notify(&mut self) {
        if self.closed || self.not_tls {
            return;
        }
        self.closed = true;
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::WriteTraffic(mut w)) = state {
            if let Ok(n) = w.queue_close_notify(self.out.spare(64)) {
                self.out.end += n;
            }
        }
        let _ = self.flush_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve_tls::tests::TestCa;
    use crate::serve_tls::{TlsFiles, TlsListener};
    use rustls::pki_types::ServerName;
    use std::net::{TcpListener as StdListener, TcpStream as StdStream};
    use std::time::Duration;

    /// A server `TlsStream` (non-blocking) and a blocking rustls client on
    /// a loopback pair, the client trusting a test CA.
    fn pair() -> (
        TlsStream,
        rustls::StreamOwned<rustls::ClientConnection, StdStream>,
    ) {
        let ca = TestCa::new();
        let (cert, key) = ca.leaf(9, 30);
        let dir = std::env::temp_dir().join(format!(
            "dhan-relay-stream-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        let listener = TlsListener::load(&files).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let client_tcp = StdStream::connect(l.local_addr().unwrap()).unwrap();
        client_tcp
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = TlsStream::new(TcpStream::from_std(server), listener.config()).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        (server, rustls::StreamOwned::new(conn, client_tcp))
    }

    /// Drives the server's read side until `want` plaintext bytes arrive.
    fn server_read(s: &mut TlsStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < want {
            assert!(std::time::Instant::now() < end, "timed out: {got:?}");
            let mut buf = [0u8; 1000];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn handshake_read_and_vectored_writes_with_partial_socket_writes() {
        let (mut server, mut client) = pair();
        let c = std::thread::spawn(move || {
            client.write_all(b"hello server").unwrap();
            // Read everything the server sends: 3 MB in many writes.
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            while got.len() < 3_000_000 {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        assert_eq!(server_read(&mut server, 12), b"hello server");
        // Vectored writes of small parts; the socket fills, some writes
        // block, all bytes arrive once, in order.
        let parts: Vec<Vec<u8>> = (0..30)
            .map(|i| vec![b'a' + (i % 26) as u8; 100_000])
            .collect();
        let mut expected = Vec::new();
        for p in &parts {
            expected.extend_from_slice(p);
        }
        let mut pos = 0;
        let mut blocked = 0;
        while pos < expected.len() {
            let rest = &expected[pos..];
            let split = rest.len().min(333);
            let slices = [IoSlice::new(&rest[..split]), IoSlice::new(&rest[split..])];
            match server.write_vectored(&slices) {
                Ok(n) => {
                    assert!(n > 0 && n <= MAX_PLAIN);
                    pos += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    blocked += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        while !server.flush_out().unwrap() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = c.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        println!("{blocked} writes blocked");
    }

    #[test]
    fn plain_http_is_recognised() {
        let (mut server, client) = pair();
        let mut tcp = client.sock;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 100];
        loop {
            match server.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < end);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidData);
                    break;
                }
                Ok(n) => panic!("read {n}"),
            }
        }
        let mut s = ServerStream::Tls(Box::new(server));
        assert!(s.refuse_plain_http());
        drop(s);
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("use https://"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body.len(), 45, "Content-Length matches");
    }
}
