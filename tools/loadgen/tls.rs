//! WSS for the measuring clients: a rustls client session over the same
//! non-blocking mio socket, behind an enum so plain clients pay nothing.
//! rustls' buffered `ClientConnection` is fine here: the tool measures the
//! relay, and its own allocations are not on the relay's path.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

/// A client socket, plain or TLS.
#[derive(Debug)]
pub enum Conn {
    /// ws://
    Plain(TcpStream),
    /// wss://
    Tls(Box<(TcpStream, ClientConnection)>),
}

/// A client configuration trusting the certificates in the PEM file `ca`
/// (a CA, or the server's self-signed certificate).
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes a self-signed certificate for localhost/127.0.0.1 and its key to
/// `dir` (cert.pem, key.pem): for an engine the tool starts with TLS.
pub fn self_signed(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| format!("generating a certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, made.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok((cert, key))
}

impl Conn {
    /// Starts a connection; TLS when `tls` is given.
    pub fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        Ok(match tls {
            None => Conn::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from("localhost").expect("valid name");
                let conn = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                Conn::Tls(Box::new((tcp, conn)))
            }
        })
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(t) => t,
            Conn::Tls(b) => &b.0,
        }
    }
}

/// Sends what rustls has queued, until the socket would block.
fn send_tls(tcp: &mut TcpStream, conn: &mut ClientConnection) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, conn) = match self {
            Conn::Plain(t) => return t.read(buf),
            Conn::Tls(b) => (&mut b.0, &mut b.1),
        };
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            send_tls(tcp, conn)?;
            match conn.read_tls(tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    conn.process_new_packets()
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                    send_tls(tcp, conn)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (tcp, conn) = match self {
            Conn::Plain(t) => return t.write(buf),
            Conn::Tls(b) => (&mut b.0, &mut b.1),
        };
        let n = conn.writer().write(buf)?;
        send_tls(tcp, conn)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(t) => t.flush(),
            Conn::Tls(b) => send_tls(&mut b.0, &mut b.1),
        }
    }
}

impl Source for Conn {
    fn register(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Conn::Plain(t) => t.register(r, token, interests),
            Conn::Tls(b) => b.0.register(r, token, interests),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Conn::Plain(t) => t.reregister(r, token, interests),
            Conn::Tls(b) => b.0.reregister(r, token, interests),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Conn::Plain(t) => t.deregister(r),
            Conn::Tls(b) => b.0.deregister(r),
        }
    }
}
