//! The client socket as the front door and the fanout see it: plain TCP or
//! TLS, behind one enum so the plain path is a match arm, not a vtable or
//! a box per write.
//!
//! [`TlsStream`] runs the handshake with rustls' unbuffered server API over
//! a non-blocking mio socket, then takes the traffic keys out of rustls
//! ([`UnbufferedServerConnection::dangerous_into_kernel_connection`]) and
//! does the record layer itself with `ring::aead`, in place, in buffers
//! allocated when the connection is accepted — so a TLS subscriber costs no
//! allocation per message or per flush (`tests/tls_alloc.rs`):
//! - `inc`: ciphertext received; records are decrypted in place;
//! - `plain`: decrypted bytes not yet read (tungstenite and the HTTP head
//!   parser read through [`Read`]);
//! - `out`: ciphertext not yet on the wire. A write first sends what is
//!   left of it; only when it is empty does new plaintext get encrypted,
//!   so at most one record (≤ 16 KiB of plaintext) waits here and a socket
//!   that does not drain reports `WouldBlock` on the next write, which is
//!   what the session's slow-client and conflation policy keys on.
//!
//! A vectored write (the fanout's frames: headers and shared payloads) is
//! gathered straight into `out` and sealed there as one record, so a TLS
//! client costs one encryption and one `send` per flush, as a plain one
//! costs one `writev`.
//!
//! The record layer covers every suite rustls' ring provider negotiates:
//! TLS 1.3 AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305; TLS 1.2 ECDHE
//! with AES-GCM (8-byte explicit nonce after a 4-byte salt) and
//! ChaCha20-Poly1305. After the handshake:
//! - a `close_notify` from the peer is the end of the stream; a fatal alert
//!   or a record that does not authenticate is an error (the caller drops
//!   the connection);
//! - a TLS 1.3 `KeyUpdate` is honoured (RFC 8446 §4.6.3): rustls' kernel
//!   connection derives the next receive secret and, when the peer asks,
//!   we answer with a `KeyUpdate` of our own and move to the next send
//!   secret. Any other post-handshake handshake message (a TLS 1.2
//!   renegotiation, for one) is an error;
//! - we update our own send key before the suite's confidentiality limit
//!   (TLS 1.3), or end the connection with an error there (TLS 1.2,
//!   AES-GCM: 2^24 records).
//!
//! The server sends no TLS 1.3 session tickets (`send_tls13_tickets = 0`
//! in [`super::TlsListener`]), so nothing is pending when the keys are
//! taken; TLS 1.2 session-ID resumption still works.
//!
//! A peer that speaks plain HTTP to a TLS port is recognised by its first
//! byte (a TLS record starts with 0x16) and can be told so in plain text
//! ([`ServerStream::refuse_plain_http`]).

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, ServerConfig, SupportedCipherSuite};

/// Largest plaintext encrypted per write: one full TLS record.
pub const MAX_PLAIN: usize = 16 * 1024;
/// Room for one record's header, padding and tag on top of its plaintext.
const RECORD_OVERHEAD: usize = 256;
/// TLS record header: type, version, length.
const HEADER: usize = 5;
/// Largest record payload accepted (TLS 1.2's limit, 2^14 + 2048).
const MAX_CIPHER: usize = MAX_PLAIN + 2048;
/// Ciphertext received: one record of the largest size.
const INCOMING: usize = HEADER + MAX_CIPHER;
/// AEAD tag length of every supported suite.
const TAG: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce, sent before the ciphertext.
const EXPLICIT_NONCE: usize = 8;

/// Record content types.
const APPLICATION_DATA: u8 = 0x17;
const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
/// Handshake message type of a TLS 1.3 `KeyUpdate`.
const KEY_UPDATE: u8 = 24;

/// What a non-TLS peer is told on a TLS port.
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 45\r\nConnection: close\r\n\r\nthis port speaks TLS; use https:// or wss://\n";

/// A client connection: plain TCP or TLS.
#[derive(Debug)]
pub enum ServerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed once: it is much larger than a socket).
    Tls(Box<TlsStream>),
}

impl ServerStream {
    /// A TLS server connection over an accepted socket. `config` must have
    /// `enable_secret_extraction` set (as [`super::TlsListener`]'s has).
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

/// Where processing the received ciphertext stopped.
#[derive(Debug, PartialEq, Eq)]
enum Driven {
    /// The handshake (or a record) needs more bytes from the peer.
    NeedInput,
    /// Established: the record layer is ours.
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

/// One direction's traffic key.
struct DirectionKey {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    /// Sequence number of the next record.
    seq: u64,
}

impl DirectionKey {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> io::Result<DirectionKey> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(invalid("TLS: cipher suite without a record layer here")),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| invalid("TLS: bad key"))?;
        let iv: [u8; NONCE_LEN] = iv.as_ref().try_into().map_err(|_| invalid("TLS: bad IV"))?;
        Ok(DirectionKey {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The per-record nonce: the IV XOR the sequence number (TLS 1.3, and
    /// TLS 1.2 ChaCha20-Poly1305; for TLS 1.2 AES-GCM the IV's last 8 bytes
    /// are the explicit nonce's starting point, as rustls does it).
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = self.iv;
        for (a, b) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *a ^= b;
        }
        n
    }
}

/// TLS 1.2's additional data: sequence number, type, version, length.
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9] = 3;
    aad[10] = 3;
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

/// The record layer after the handshake: our keys, rustls for key updates.
struct Records {
    kernel: KernelConnection<ServerConnectionData>,
    tls13: bool,
    /// TLS 1.2 AES-GCM: an explicit nonce precedes each record's ciphertext.
    explicit_nonce: bool,
    tx: DirectionKey,
    rx: DirectionKey,
    /// Records sent under one key before it is replaced (TLS 1.3) or the
    /// connection ends (TLS 1.2).
    tx_limit: u64,
    /// Send-key updates so far.
    tx_updates: u32,
}

impl Records {
    fn new(conn: UnbufferedServerConnection) -> io::Result<Records> {
        let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let (explicit_nonce, limit) = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(s) => (false, s.common.confidentiality_limit),
            SupportedCipherSuite::Tls12(s) => (
                !matches!(
                    secrets.tx.1,
                    ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
                ),
                s.common.confidentiality_limit,
            ),
        };
        Ok(Records {
            kernel,
            tls13,
            explicit_nonce,
            tx: DirectionKey::new(secrets.tx.0, secrets.tx.1)?,
            rx: DirectionKey::new(secrets.rx.0, secrets.rx.1)?,
            // Key updates a little before the limit, as rustls does.
            tx_limit: if tls13 { limit / 16 * 15 } else { limit },
            tx_updates: 0,
        })
    }

    /// Where a record's plaintext goes in its buffer.
    fn prefix(&self) -> usize {
        HEADER
            + if self.explicit_nonce {
                EXPLICIT_NONCE
            } else {
                0
            }
    }

    /// Seals the `n` plaintext bytes at `buf[self.prefix()..]` as one record
    /// of type `typ`, in place; returns the record's length.
    fn seal(&mut self, typ: u8, buf: &mut [u8], n: usize) -> io::Result<usize> {
        let start = self.prefix();
        let tx = &mut self.tx;
        let nonce = tx.nonce();
        let (outer, body, aad_seal) = if self.tls13 {
            buf[start + n] = typ;
            (APPLICATION_DATA, start..start + n + 1, None)
        } else {
            if self.explicit_nonce {
                buf[HEADER..start].copy_from_slice(&nonce[4..]);
            }
            (typ, start..start + n, Some(tls12_aad(tx.seq, typ, n)))
        };
        let len = body.end + TAG - HEADER;
        buf[0] = outer;
        buf[1] = 3;
        buf[2] = 3;
        buf[3..HEADER].copy_from_slice(&(len as u16).to_be_bytes());
        let nonce = Nonce::assume_unique_for_key(nonce);
        let tag = match aad_seal {
            None => {
                let header: [u8; HEADER] = buf[..HEADER].try_into().expect("5 bytes");
                tx.key
                    .seal_in_place_separate_tag(nonce, Aad::from(header), &mut buf[body.clone()])
            }
            Some(aad) => {
                tx.key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buf[body.clone()])
            }
        }
        .map_err(|_| invalid("TLS: encryption failed"))?;
        buf[body.end..body.end + TAG].copy_from_slice(tag.as_ref());
        tx.seq += 1;
        Ok(HEADER + len)
    }

    /// Opens the record `rec` (header and payload) in place: its content
    /// type and where its plaintext is in `rec`.
    fn open(&mut self, rec: &mut [u8]) -> io::Result<(u8, std::ops::Range<usize>)> {
        let rx = &mut self.rx;
        let bad_mac = || invalid("TLS: a record failed authentication");
        let payload = rec.len() - HEADER;
        if self.tls13 {
            if rec[0] != APPLICATION_DATA || payload < TAG + 1 {
                return Err(invalid("TLS: unexpected record after the handshake"));
            }
            let header: [u8; HEADER] = rec[..HEADER].try_into().expect("5 bytes");
            let nonce = Nonce::assume_unique_for_key(rx.nonce());
            let plain = rx
                .key
                .open_in_place(nonce, Aad::from(header), &mut rec[HEADER..])
                .map_err(|_| bad_mac())?;
            rx.seq += 1;
            // Inner plaintext: content, type, zero padding.
            let Some(at) = plain.iter().rposition(|&b| b != 0) else {
                return Err(invalid("TLS: record without a content type"));
            };
            if at > MAX_PLAIN {
                return Err(invalid("TLS: record overflow"));
            }
            Ok((plain[at], HEADER..HEADER + at))
        } else {
            let typ = rec[0];
            let (start, nonce) = if self.explicit_nonce {
                if payload < EXPLICIT_NONCE + TAG {
                    return Err(bad_mac());
                }
                let mut n = [0u8; NONCE_LEN];
                n[..4].copy_from_slice(&rx.iv[..4]);
                n[4..].copy_from_slice(&rec[HEADER..HEADER + EXPLICIT_NONCE]);
                (HEADER + EXPLICIT_NONCE, n)
            } else {
                if payload < TAG {
                    return Err(bad_mac());
                }
                (HEADER, rx.nonce())
            };
            let n = rec.len() - start - TAG;
            let aad = tls12_aad(rx.seq, typ, n);
            rx.key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut rec[start..],
                )
                .map_err(|_| bad_mac())?;
            rx.seq += 1;
            if n > MAX_PLAIN {
                return Err(invalid("TLS: record overflow"));
            }
            Ok((typ, start..start + n))
        }
    }

    /// Takes the next receive key (the peer sent `KeyUpdate`).
    fn update_rx(&mut self) -> io::Result<()> {
        let (seq, secrets) = self.kernel.update_rx_secret().map_err(tls_error)?;
        self.rx = DirectionKey::new(seq, secrets)?;
        Ok(())
    }

    /// Appends a `KeyUpdate` (not requesting one back) sealed with the
    /// current key to `out`, then takes the next send key.
    fn update_tx(&mut self, out: &mut OutBuf) -> io::Result<()> {
        let start = self.prefix();
        let buf = out.spare(start + 5 + 1 + TAG);
        buf[start..start + 5].copy_from_slice(&[KEY_UPDATE, 0, 0, 1, 0]);
        let n = self.seal(HANDSHAKE, buf, 5)?;
        out.end += n;
        let (seq, secrets) = self.kernel.update_tx_secret().map_err(tls_error)?;
        self.tx = DirectionKey::new(seq, secrets)?;
        self.tx_updates += 1;
        Ok(())
    }
}

/// Who runs the connection.
// Inline on purpose: `TlsStream` is boxed already, each connection holds
// one `Conn`, and the record layer stays one pointer away on the hot path.
#[allow(clippy::large_enum_variant)]
enum Conn {
    /// rustls, during the handshake.
    Handshake(UnbufferedServerConnection),
    /// Our record layer, after it.
    Records(Records),
    /// Neither: the switch failed (the connection is unusable).
    Gone,
}

/// A server-side TLS connection over a non-blocking socket.
pub struct TlsStream {
    tcp: TcpStream,
    conn: Conn,
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
            .field("handshaking", &matches!(self.conn, Conn::Handshake(_)))
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
            conn: Conn::Handshake(conn),
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

    /// Makes what progress the received ciphertext allows: the handshake
    /// through rustls (switching to our record layer once it completes),
    /// then records.
    fn process(&mut self) -> io::Result<Driven> {
        if matches!(self.conn, Conn::Handshake(_)) {
            let driven = self.drive()?;
            if driven != Driven::Ready {
                return Ok(driven);
            }
            let Conn::Handshake(conn) = std::mem::replace(&mut self.conn, Conn::Gone) else {
                unreachable!("checked above")
            };
            self.conn = Conn::Records(Records::new(conn)?);
        }
        self.open_records()
    }

    /// Runs rustls over the received ciphertext until it needs more input
    /// or the handshake is complete (`Ready`: nothing left to send, the
    /// keys can be taken).
    fn drive(&mut self) -> io::Result<Driven> {
        let Conn::Handshake(conn) = &mut self.conn else {
            return Err(invalid("TLS: connection unusable"));
        };
        loop {
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(&mut self.inc[..self.inc_len]);
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
                // The handshake is complete and every record rustls made
                // was encoded into `out`.
                ConnectionState::WriteTraffic(_) => Some(Driven::Ready),
                // Early data is off (the default); anything else is new.
                _ => return Err(invalid("unexpected TLS state")),
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

    /// Decrypts the complete records in `inc`: application data into
    /// `plain` (while it has room), alerts and key updates acted on.
    fn open_records(&mut self) -> io::Result<Driven> {
        let Conn::Records(rec) = &mut self.conn else {
            return Err(invalid("TLS: connection unusable"));
        };
        loop {
            if self.peer_done {
                return Ok(Driven::Closed);
            }
            if self.inc_len < HEADER {
                return Ok(Driven::NeedInput);
            }
            let len = u16::from_be_bytes([self.inc[3], self.inc[4]]) as usize;
            if len > MAX_CIPHER {
                return Err(invalid("TLS record too large"));
            }
            if self.inc_len < HEADER + len {
                return Ok(Driven::NeedInput);
            }
            if self.plain_pos == self.plain.len() {
                self.plain.clear();
                self.plain_pos = 0;
            }
            // The plaintext is shorter than the ciphertext; an empty
            // `plain` has room for any record's.
            if !self.plain.is_empty() && self.plain.len() + len > self.plain.capacity() {
                return Ok(Driven::PlainFull);
            }
            let (typ, range) = rec.open(&mut self.inc[..HEADER + len])?;
            match typ {
                APPLICATION_DATA => self.plain.extend_from_slice(&self.inc[range]),
                ALERT => {
                    let alert = &self.inc[range];
                    match alert {
                        // close_notify (any level).
                        [_, 0] => self.peer_done = true,
                        // TLS 1.3: user_canceled is the only other
                        // non-fatal one; TLS 1.2: warning level.
                        [_, 90] => {}
                        [1, _] if !rec.tls13 => {}
                        _ => return Err(invalid("TLS: fatal alert from the peer")),
                    }
                }
                HANDSHAKE if rec.tls13 => {
                    let mut msgs = &self.inc[range];
                    // KeyUpdate, alone at the end of its record (RFC 8446
                    // §5.1: handshake messages must not span key changes).
                    while !msgs.is_empty() {
                        let &[KEY_UPDATE, 0, 0, 1, request, ref rest @ ..] = msgs else {
                            return Err(invalid(
                                "TLS: unexpected handshake message after the handshake",
                            ));
                        };
                        if !rest.is_empty() || request > 1 {
                            return Err(invalid("TLS: malformed KeyUpdate"));
                        }
                        rec.update_rx()?;
                        if request == 1 {
                            rec.update_tx(&mut self.out)?;
                        }
                        msgs = rest;
                    }
                }
                _ => return Err(invalid(
                    "TLS: unexpected record after the handshake (renegotiation is not supported)",
                )),
            }
            let used = HEADER + len;
            self.inc.copy_within(used..self.inc_len, 0);
            self.inc_len -= used;
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
            let driven = self.process()?;
            // Handshake messages (and key updates) go out as soon as they
            // are made.
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
        if !bufs.iter().any(|b| !b.is_empty()) {
            return Ok(0);
        }
        if matches!(self.conn, Conn::Handshake(_)) {
            match self.process()? {
                Driven::Closed => return Err(ErrorKind::BrokenPipe.into()),
                _ if matches!(self.conn, Conn::Handshake(_)) => {
                    self.flush_out()?;
                    return Err(ErrorKind::WouldBlock.into());
                }
                _ => {}
            }
            if !self.flush_out()? {
                return Err(ErrorKind::WouldBlock.into());
            }
        }
        let Conn::Records(rec) = &mut self.conn else {
            return Err(ErrorKind::BrokenPipe.into());
        };
        if rec.tx.seq >= rec.tx_limit {
            if !rec.tls13 {
                return Err(invalid("TLS 1.2: confidentiality limit reached"));
            }
            rec.update_tx(&mut self.out)?;
        }
        // Gather up to one record's plaintext straight into `out`, after
        // room for the header, and seal it there. (`out` is empty here, or
        // holds only a key update: room for both without growing.)
        let start = rec.prefix();
        let buf = self.out.spare(start + MAX_PLAIN + 1 + TAG);
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(MAX_PLAIN - n);
            buf[start + n..start + n + take].copy_from_slice(&b[..take]);
            n += take;
            if n == MAX_PLAIN {
                break;
            }
        }
        let sealed = rec.seal(APPLICATION_DATA, buf, n)?;
        self.out.end += sealed;
        // The plaintext is taken; whatever ciphertext the socket does not
        // take now waits in `out` for the next write.
        self.flush_out()?;
        Ok(n)
    }

    /// Queues `close_notify` and tries to send it with what is pending.
    fn close_notify(&mut self) {
        if self.closed || self.not_tls {
            return;
        }
        self.closed = true;
        match &mut self.conn {
            Conn::Handshake(conn) => {
                let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
                if let Ok(ConnectionState::WriteTraffic(mut w)) = state {
                    if let Ok(n) = w.queue_close_notify(self.out.spare(64)) {
                        self.out.end += n;
                    }
                }
            }
            Conn::Records(rec) => {
                let start = rec.prefix();
                let buf = self.out.spare(start + 2 + 1 + TAG);
                buf[start..start + 2].copy_from_slice(&[1, 0]);
                if let Ok(n) = rec.seal(ALERT, buf, 2) {
                    self.out.end += n;
                }
            }
            Conn::Gone => {}
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
    fn pair() -> (TlsStream, Client) {
        pair_with(None)
    }

    type Client = rustls::StreamOwned<rustls::ClientConnection, StdStream>;

    /// As [`pair`], the client offering only `suite` (and its version).
    fn pair_with(suite: Option<SupportedCipherSuite>) -> (TlsStream, Client) {
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
        // Small socket buffers, so that writes are often partial.
        small_buffers(&server, libc::SO_SNDBUF);
        small_buffers(&client_tcp, libc::SO_RCVBUF);
        let server = TlsStream::new(TcpStream::from_std(server), listener.config()).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        let mut versions = rustls::DEFAULT_VERSIONS.to_vec();
        if let Some(suite) = suite {
            provider.cipher_suites = vec![suite];
            versions = vec![suite.version()];
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)
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

    fn small_buffers(s: &StdStream, which: libc::c_int) {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 32 * 1024;
        // SAFETY: a valid socket and a c_int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                which,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
    }

    /// Drives the server's read side until `want` plaintext bytes arrive.
    fn server_read(s: &mut TlsStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < want {
            assert!(std::time::Instant::now() < end, "timed out: {got:?}");
            let mut buf = [0u8; 1000];
            let room = buf.len().min(want - got.len());
            match s.read(&mut buf[..room]) {
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

    /// Every suite the ring provider negotiates, by name.
    fn suites() -> Vec<(&'static str, SupportedCipherSuite)> {
        use rustls::crypto::ring::cipher_suite::*;
        vec![
            ("TLS 1.3 AES-128-GCM", TLS13_AES_128_GCM_SHA256),
            ("TLS 1.3 AES-256-GCM", TLS13_AES_256_GCM_SHA384),
            ("TLS 1.3 ChaCha20-Poly1305", TLS13_CHACHA20_POLY1305_SHA256),
            (
                "TLS 1.2 ECDHE AES-128-GCM",
                TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                "TLS 1.2 ECDHE AES-256-GCM",
                TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                "TLS 1.2 ECDHE ChaCha20-Poly1305",
                TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ]
    }

    /// Writes `data` through the server in vectored writes of up to three
    /// slices, retrying on `WouldBlock`, then flushes; how often it blocked.
    fn server_write_all(s: &mut TlsStream, data: &[u8]) -> usize {
        let mut pos = 0;
        let mut blocked = 0;
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while pos < data.len() {
            assert!(std::time::Instant::now() < end, "write timed out");
            let rest = &data[pos..];
            let a = rest.len().min(1 + pos % 700);
            let b = (rest.len() - a).min(5000);
            let slices = [
                IoSlice::new(&rest[..a]),
                IoSlice::new(&rest[a..a + b]),
                IoSlice::new(&rest[a + b..]),
            ];
            match s.write_vectored(&slices) {
                Ok(n) => {
                    assert!(n > 0 && n <= MAX_PLAIN);
                    pos += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    blocked += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("{e}"),
            }
        }
        while !s.flush_out().unwrap() {
            std::thread::sleep(Duration::from_micros(200));
        }
        blocked
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
    }

    /// Sizes from 1 byte to 64 KiB, across record boundaries.
    const SIZES: [usize; 10] = [1, 2, 100, 1500, 16383, 16384, 16385, 30000, 40000, 65536];

    fn established(s: &TlsStream) -> bool {
        matches!(s.conn, Conn::Records(_))
    }

    #[test]
    fn every_suite_round_trips_1_byte_to_64_kib_both_ways_and_closes_cleanly() {
        for (name, suite) in suites() {
            let (mut server, mut client) = pair_with(Some(suite));
            let up: Vec<u8> = SIZES
                .iter()
                .enumerate()
                .flat_map(|(i, &size)| pattern(size, i))
                .collect();
            let down: Vec<u8> = (0..60)
                .flat_map(|i| pattern(SIZES[i % SIZES.len()], 100 + i))
                .collect();
            let (up_len, down_len) = (up.len(), down.len());
            let c = std::thread::spawn(move || {
                for (i, &size) in SIZES.iter().enumerate() {
                    client.write_all(&pattern(size, i)).unwrap();
                }
                // Late to read: the server's socket fills and its writes
                // are partial or blocked.
                std::thread::sleep(Duration::from_millis(50));
                let mut got = vec![0u8; down_len];
                client.read_exact(&mut got).unwrap();
                // Our close_notify, then the server's: a clean end.
                client.conn.send_close_notify();
                client.flush().unwrap();
                let mut rest = Vec::new();
                let n = client.read_to_end(&mut rest).unwrap();
                assert_eq!(n, 0, "nothing after the data");
                (got, client.conn.negotiated_cipher_suite().unwrap().suite())
            });
            assert!(
                server_read(&mut server, up_len) == up,
                "{name}: upstream bytes"
            );
            assert!(established(&server), "{name}: own record layer in use");
            let blocked = server_write_all(&mut server, &down);
            // The client's close_notify: end of stream.
            assert_eq!(server_read(&mut server, 1), b"", "{name}");
            assert!(server.peer_done);
            server.close_notify();
            let (got, negotiated) = c.join().unwrap();
            assert_eq!(negotiated, suite.suite(), "{name}");
            assert_eq!(got.len(), down.len(), "{name}");
            assert!(got == down, "{name}: downstream bytes differ");
            assert!(blocked > 0, "{name}: the socket never filled");
            println!(
                "{name}: {} bytes down, {blocked} writes blocked",
                down.len()
            );
        }
    }

    #[test]
    fn every_suite_rejects_a_corrupted_record() {
        for (name, suite) in suites() {
            let (mut server, mut client) = pair_with(Some(suite));
            let c = std::thread::spawn(move || {
                client.write_all(b"hello").unwrap();
                client
            });
            assert_eq!(server_read(&mut server, 5), b"hello", "{name}");
            let mut client = c.join().unwrap();
            client.conn.writer().write_all(b"tampered").unwrap();
            let mut wire = Vec::new();
            client.conn.write_tls(&mut wire).unwrap();
            let last = wire.len() - 1;
            wire[last] ^= 1;
            client.sock.write_all(&wire).unwrap();
            let end = std::time::Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 100];
            let e = loop {
                match server.read(&mut buf) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        assert!(std::time::Instant::now() < end, "{name}: timed out");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => break e,
                    Ok(n) => panic!("{name}: read {n} bytes of a corrupted record"),
                }
            };
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{name}");
            assert!(e.to_string().contains("authentication"), "{name}: {e}");
        }
    }

    #[test]
    fn tls13_key_updates_from_the_client_are_followed_both_ways() {
        for (name, suite) in suites().into_iter().filter(|(_, s)| s.tls13().is_some()) {
            let (mut server, mut client) = pair_with(Some(suite));
            let c = std::thread::spawn(move || {
                client.write_all(b"hi").unwrap();
                let mut got = Vec::new();
                for round in 0..3u8 {
                    // KeyUpdate(update_requested), then data under the new key.
                    client.conn.refresh_traffic_keys().unwrap();
                    client.write_all(&[round; 10]).unwrap();
                    let mut buf = vec![0u8; 20_000];
                    client.read_exact(&mut buf).unwrap();
                    got.extend_from_slice(&buf);
                }
                got
            });
            assert_eq!(server_read(&mut server, 2), b"hi", "{name}");
            let mut expected = Vec::new();
            for round in 0..3u8 {
                assert_eq!(server_read(&mut server, 10), [round; 10], "{name}");
                let data = pattern(20_000, round as usize);
                server_write_all(&mut server, &data);
                expected.extend_from_slice(&data);
            }
            let got = c.join().unwrap();
            assert!(got == expected, "{name}: bytes after key updates differ");
            let Conn::Records(rec) = &server.conn else {
                panic!("{name}: not established")
            };
            assert_eq!(rec.tx_updates, 3, "{name}: one answer per request");
        }
    }

    #[test]
    fn send_key_is_updated_before_the_limit_on_tls13_and_tls12_stops_there() {
        for (name, suite) in suites() {
            let (mut server, mut client) = pair_with(Some(suite));
            let c = std::thread::spawn(move || {
                client.write_all(b"go").unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                got
            });
            assert_eq!(server_read(&mut server, 2), b"go", "{name}");
            let Conn::Records(rec) = &mut server.conn else {
                panic!("{name}: not established")
            };
            rec.tx_limit = rec.tx.seq + 3;
            let mut sent = Vec::new();
            let mut refused = false;
            for i in 0..20u8 {
                match server.write_vectored(&[IoSlice::new(&[i; 100])]) {
                    Ok(n) => {
                        assert_eq!(n, 100);
                        sent.extend_from_slice(&[i; 100]);
                        while !server.flush_out().unwrap() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::InvalidData, "{name}: {e}");
                        refused = true;
                        break;
                    }
                }
            }
            server.close_notify();
            let got = c.join().unwrap();
            assert!(got == sent, "{name}: bytes differ");
            let Conn::Records(rec) = &server.conn else {
                unreachable!()
            };
            if suite.tls13().is_some() {
                assert!(!refused && sent.len() == 2000, "{name}: all sent");
                assert!(rec.tx_updates >= 6, "{name}: {} updates", rec.tx_updates);
            } else {
                assert!(
                    refused && sent.len() == 300,
                    "{name}: 1.2 stops at the limit"
                );
            }
        }
    }
}
