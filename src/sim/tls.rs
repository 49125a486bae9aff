//! TLS for `wss://`: builds the rustls server configuration once, at start.
//!
//! [`SimTls::SelfSigned`] generates a fresh key and certificate for
//! `localhost` and `127.0.0.1` with rcgen; clients trust it through
//! [`super::Simulator::ca_pem`]. [`SimTls::Files`] reads a PEM certificate
//! chain and a PEM private key. Errors are returned as `io::Error` with a
//! sentence naming the file, never a panic.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::SimTls;

/// What the simulator needs to serve TLS.
#[derive(Debug)]
pub(crate) struct TlsSetup {
    pub(crate) config: Arc<ServerConfig>,
    /// The self-signed certificate in PEM, for clients to trust.
    pub(crate) ca_pem: Option<String>,
}

/// The TLS setup for `tls`, or `None` for plain `ws://`.
pub(crate) fn setup(tls: &SimTls) -> io::Result<Option<TlsSetup>> {
    let (chain, key, ca_pem) = match tls {
        SimTls::None => return Ok(None),
        SimTls::SelfSigned => {
            let generated =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                    .map_err(|e| io::Error::other(format!("generating a certificate: {e}")))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            (
                vec![generated.cert.der().clone()],
                key,
                Some(generated.cert.pem()),
            )
        }
        SimTls::Files { cert, key } => (read_chain(cert)?, read_key(key)?, None),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS setup: {e}")))?;
    Ok(Some(TlsSetup {
        config: Arc::new(config),
        ca_pem,
    }))
}

fn read_chain(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let bad = |e: rustls_pki_types::pem::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("certificate file {}: {e}", path.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if chain.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("certificate file {} holds no certificate", path.display()),
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("private key file {}: {e}", path.display()),
        )
    })
}
