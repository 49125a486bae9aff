//! TLS helpers for the end-to-end tests: a test CA (rcgen) issuing
//! certificates into files, and rustls clients for HTTPS and WSS that
//! trust it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhan_relay::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

use super::{Resp, READ_TIMEOUT};

/// A blocking TLS client stream.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A certificate authority for tests, and the directory its files go to.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    /// A fresh directory for this test's files.
    pub dir: PathBuf,
}

impl TestCa {
    /// A new CA; `name` names the temporary directory.
    pub fn new(name: &str) -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("dhan-relay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
            dir,
        }
    }

    /// Writes a leaf for localhost/127.0.0.1 with `serial`, valid for
    /// `days`, to `cert.pem`/`key.pem` in the directory.
    pub fn issue(&self, serial: u64, days: u64) -> TlsFiles {
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + days * 86_400;
        let (y, m, d) = dhan_relay::instrument::date::civil_from_days((secs / 86_400) as i64);
        p.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let files = self.files();
        // Key first, then the certificate: a reader between the two sees a
        // mismatch and keeps the old pair.
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        files
    }

    /// Where [`TestCa::issue`] writes.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("cert.pem"),
            key: self.dir.join("key.pem"),
        }
    }

    /// A client configuration trusting this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        client_config(&self.pem)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client configuration trusting the CA in `pem`.
pub fn client_config(pem: &str) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `addr` (as `localhost`), handshake done.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let conn = ClientConnection::new(
        Arc::clone(config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// The serial (hex, as `/health` shows it) of the certificate the server
/// presented.
pub fn peer_serial(tls: &Tls) -> String {
    let der = &tls.conn.peer_certificates().expect("a certificate")[0];
    dhan_relay::serve_tls::cert::cert_info(der).unwrap().serial
}

/// `GET path` over HTTPS (`Connection: close`), read to the end.
pub fn https_get(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> Resp {
    let mut tls = connect(addr, config);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    )
    .unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to GET {path}: {e}"));
    Resp::parse(&raw)
}

/// A WSS client of the relay's `/ws` protocol.
pub struct Wss(pub WebSocket<Tls>);

impl Wss {
    /// Connects to `wss://localhost:port{path}`.
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> Wss {
        let tls = connect(addr, config);
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (ws, _) = tungstenite::client::client(url, tls)
            .unwrap_or_else(|e| panic!("WSS handshake on {path}: {e}"));
        Wss(ws)
    }

    /// Sends `v` as text.
    pub fn send(&mut self, v: Value) {
        self.0.send(Message::text(v.to_string())).unwrap();
    }

    /// The next message of `kind`, skipping others; panics on close or
    /// timeout.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            match self.0.read().expect("message before timeout") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                }
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The certificate serial the server presented.
    pub fn serial(&self) -> String {
        peer_serial(self.0.get_ref())
    }
}

/// How long a swap may take to be noticed: a few file checks.
pub const RELOAD_WAIT: Duration = Duration::from_secs(10);
