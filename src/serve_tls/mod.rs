//! TLS on the client-facing listeners: HTTPS and WSS with rustls.
//!
//! A TLS listener owns a [`TlsListener`]: its PEM files, the
//! [`rustls::ServerConfig`] every new connection starts from, and the
//! certificate in use behind an `ArcSwap`. The config's certificate
//! resolver reads that `ArcSwap` on every handshake, so swapping it (a
//! renewed certificate, noticed by [`TlsListener::check`] on the front
//! door's idle tick or on SIGHUP) changes what new handshakes present and
//! leaves open connections alone. A replacement that does not load (bad
//! PEM, a key that does not match) is logged and the old certificate stays.
//!
//! The stream itself — non-blocking, fixed buffers, rustls for the
//! handshake and its own `ring::aead` record layer after it, one record per
//! vectored write, no allocation per write — is in [`stream`]; the few certificate fields `/health`
//! shows are read by [`cert`].

pub mod cert;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use cert::CertInfo;
pub use stream::{ServerStream, TlsStream};

/// Days before `notAfter` from which the relay warns (at start, on reload,
/// and daily).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// A listener's certificate chain and private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain: the server's certificate first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// What a listener reports about its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertStatus {
    /// The certificate file.
    pub file: PathBuf,
    /// The certificate in use (the first of the chain), if readable.
    pub info: Option<CertInfo>,
    /// The last reload failure, if the newest files are not the ones in use.
    pub reload_error: Option<String>,
}

/// Reads the chain and key and checks that they belong together.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("TLS key file {}: {e}", files.key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "TLS key file {}: not a usable RSA or ECDSA key: {e}",
            files.key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "TLS key file {} does not match the certificate in {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(certified)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad =
        |e: rustls_pki_types::pem::Error| format!("TLS certificate file {}: {e}", path.display());
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate file {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\")",
            path.display()
        ));
    }
    Ok(chain)
}

/// Hands every handshake the certificate currently in the `ArcSwap`.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Modification time and length of both files: a change means reload.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()))
    };
    [one(&files.cert), one(&files.key)]
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One TLS listener's certificate, reloadable.
#[derive(Debug)]
pub struct TlsListener {
    files: TlsFiles,
    current: Arc<ArcSwap<CertifiedKey>>,
    config: Arc<ServerConfig>,
    stamp: Stamp,
    status: CertStatus,
    last_warning: Option<Instant>,
}

impl TlsListener {
    /// Loads the files (an error names the file and what is wrong) and
    /// builds the server configuration: TLS 1.2 and 1.3, ALPN `http/1.1`,
    /// secret extraction on (the stream's own record layer) and no TLS 1.3
    /// session tickets.
    pub fn load(files: &TlsFiles) -> Result<TlsListener, String> {
        let stamp = stamp(files);
        let key = load_certified_key(files)?;
        let info = cert::cert_info(&key.cert[0]);
        let current = Arc::new(ArcSwap::from_pointee(key));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(&current))));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // After the handshake the stream takes the traffic keys and runs the
        // record layer itself, allocation-free (see [`stream`]); no TLS 1.3
        // tickets, so nothing is left to send when it does.
        config.enable_secret_extraction = true;
        config.send_tls13_tickets = 0;
        Ok(TlsListener {
            status: CertStatus {
                file: files.cert.clone(),
                info,
                reload_error: None,
            },
            files: files.clone(),
            current,
            config: Arc::new(config),
            stamp,
            last_warning: None,
        })
    }

    /// The configuration new connections start from.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// The certificate in use and the last reload error.
    pub fn status(&self) -> &CertStatus {
        &self.status
    }

    /// Reloads when the files changed since the last look (or always, with
    /// `force`: SIGHUP). `Some(Ok)` when a new certificate is in use,
    /// `Some(Err)` when the new files were refused (logged; the old
    /// certificate stays), `None` when nothing changed.
    pub fn check(&mut self, force: bool) -> Option<Result<(), String>> {
        let now = stamp(&self.files);
        if now == self.stamp && !force {
            return None;
        }
        self.stamp = now;
        match load_certified_key(&self.files) {
            Ok(key) => {
                self.status.info = cert::cert_info(&key.cert[0]);
                self.status.reload_error = None;
                self.current.store(Arc::new(key));
                log::info!(
                    "TLS certificate {} reloaded: serial {}, expires {}",
                    self.files.cert.display(),
                    self.status.info.as_ref().map_or("?", |i| i.serial.as_str()),
                    self.status
                        .info
                        .as_ref()
                        .map_or("?".into(), CertInfo::not_after_iso)
                );
                self.last_warning = None;
                self.warn_if_expiring(Instant::now());
                Some(Ok(()))
            }
            Err(e) => {
                log::error!("{e}; keeping the certificate in use");
                self.status.reload_error = Some(e.clone());
                Some(Err(e))
            }
        }
    }

    /// Logs a warning when the certificate expires within
    /// [`EXPIRY_WARNING_DAYS`] (at most once a day); true when it did.
    pub fn warn_if_expiring(&mut self, now: Instant) -> bool {
        let Some(info) = &self.status.info else {
            return false;
        };
        let left = info.days_left(unix_now());
        let due = self.last_warning.map_or(true, |t| {
            now.duration_since(t) >= Duration::from_secs(86_400)
        });
        if left >= EXPIRY_WARNING_DAYS || !due {
            return false;
        }
        self.last_warning = Some(now);
        if left < 0 {
            log::warn!(
                "TLS certificate {} EXPIRED on {}: clients will refuse it; replace the file",
                self.files.cert.display(),
                info.not_after_iso()
            );
        } else {
            log::warn!(
                "TLS certificate {} expires on {} ({left} days): renew it (the file is reloaded on change)",
                self.files.cert.display(),
                info.not_after_iso()
            );
        }
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A test CA and a leaf for `localhost`/127.0.0.1 signed by it, as PEM.
    pub(crate) struct TestCa {
        pub(crate) issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pub(crate) pem: String,
    }

    impl TestCa {
        pub(crate) fn new() -> TestCa {
            let mut p = rcgen::CertificateParams::new(Vec::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            TestCa {
                pem: cert.pem(),
                issuer: rcgen::Issuer::new(p, key),
            }
        }

        /// (certificate PEM, key PEM) with `serial`, expiring in `days`.
        pub(crate) fn leaf(&self, serial: u64, days: i64) -> (String, String) {
            let mut p = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
            p.serial_number = Some(rcgen::SerialNumber::from(serial));
            let now = rcgen::date_time_ymd(2024, 1, 1);
            p.not_before = now;
            let secs = unix_now() + days * 86_400;
            let (y, m, d) = crate::instrument::date::civil_from_days(secs.div_euclid(86_400));
            p.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn write(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dhan-relay-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_reloads_on_change_and_keeps_the_old_certificate_on_a_bad_file() {
        let dir = tempdir("reload");
        let ca = TestCa::new();
        let (c1, k1) = ca.leaf(101, 90);
        let files = write(&dir, &c1, &k1);
        let mut l = TlsListener::load(&files).unwrap();
        assert_eq!(l.status().info.as_ref().unwrap().serial, "65");
        assert_eq!(l.config().alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(l.check(false).is_none(), "unchanged");

        let (c2, k2) = ca.leaf(102, 90);
        write(&dir, &c2, &k2);
        // Same length, maybe same second: a forced check (SIGHUP) reloads.
        assert_eq!(l.check(true), Some(Ok(())));
        assert_eq!(l.status().info.as_ref().unwrap().serial, "66");
        assert_eq!(
            l.current.load().cert[0].as_ref(),
            read_chain(&files.cert).unwrap()[0].as_ref()
        );

        // A key that does not match: refused, the old one stays.
        let (_, k3) = ca.leaf(103, 90);
        std::fs::write(&files.key, &k3).unwrap();
        let e = l.check(true).unwrap().unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        assert_eq!(l.status().info.as_ref().unwrap().serial, "66");
        assert!(l.status().reload_error.is_some());
        std::fs::write(&files.cert, "not a certificate").unwrap();
        let e = l.check(true).unwrap().unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_at_start_name_the_file() {
        let dir = tempdir("bad");
        let files = write(&dir, "garbage", "garbage");
        let e = TlsListener::load(&files).unwrap_err();
        assert!(
            e.contains("cert.pem") && e.contains("no certificate"),
            "{e}"
        );
        let missing = TlsFiles {
            cert: dir.join("nope.pem"),
            key: dir.join("nope.key"),
        };
        let e = TlsListener::load(&missing).unwrap_err();
        assert!(e.contains("nope.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn warns_before_expiry_once_a_day() {
        let dir = tempdir("expiry");
        let ca = TestCa::new();
        let (c, k) = ca.leaf(1, 5);
        let mut l = TlsListener::load(&write(&dir, &c, &k)).unwrap();
        let t0 = Instant::now();
        assert!(l.warn_if_expiring(t0));
        assert!(!l.warn_if_expiring(t0 + Duration::from_secs(3600)));
        assert!(l.warn_if_expiring(t0 + Duration::from_secs(86_400)));
        let (c, k) = ca.leaf(2, 60);
        let mut far = TlsListener::load(&write(&dir, &c, &k)).unwrap();
        assert!(!far.warn_if_expiring(t0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
