//! The keeper thread: owns the current credentials and replaces them
//! without a restart.
//!
//! New credentials come from four places: the credentials file changing
//! (its size, time or inode, checked every [`FILE_CHECK`]), SIGHUP (a
//! re-read whatever the file looks like), the admin endpoint, and renewal.
//! Each new token is handed to the network thread as
//! [`Command::Credentials`]; it reconnects every connection with it. A
//! renewed (or admin-given) token is written back to the credentials file
//! when there is one, so a restart picks it up.
//!
//! Failures never stop the relay: an unreadable, empty or incomplete file
//! is logged and shown in `/health` while the relay goes on with the token
//! it has; a failed renewal is retried with backoff ([`RETRY_FIRST`]
//! doubling to [`RETRY_MAX`]).
//!
//! This thread does blocking HTTP (renewal), so nothing waits on it: the
//! other threads send it requests over a channel and read its
//! [`TokenStatus`] through arc-swap.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::sources::{self, Account, Origin};
use super::{jwt, renew, unix_now, Renew, SharedTokenStatus, TokenConfig, TokenStatus};
use crate::upstream::{Command, Credentials, SlotState, UpstreamControl, UpstreamStats};

/// How often the credentials file is looked at.
pub const FILE_CHECK: Duration = Duration::from_secs(1);
/// First wait after a failed renewal.
pub const RETRY_FIRST: Duration = Duration::from_secs(10);
/// Longest wait between renewal attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// The loop's tick: requests and SIGHUP are seen within this.
const TICK: Duration = Duration::from_millis(200);
/// After handing over a token, DhanHQ's refusals of the old one are not
/// taken as a refusal of the new one for this long.
const SETTLE: Duration = Duration::from_secs(5);

/// What other threads ask of the keeper.
#[derive(Debug)]
pub enum Request {
    /// Use these credentials (the admin endpoint).
    Set(Credentials),
    /// Re-read the credentials file.
    Reload,
}

/// A cloneable handle: send requests, read the status.
#[derive(Clone, Debug)]
pub struct KeeperHandle {
    tx: Sender<Request>,
    status: SharedTokenStatus,
    credentials: SharedCredentials,
}

/// The credentials in use now, published by the keeper whenever it hands
/// new ones to the network thread (the broker's REST calls and the order
/// stream read them per call, so a rotated token is used at once).
pub type SharedCredentials = Arc<ArcSwap<Credentials>>;

impl KeeperHandle {
    /// Queues a request; false if the keeper has stopped.
    pub fn send(&self, request: Request) -> bool {
        self.tx.send(request).is_ok()
    }

    /// The latest status.
    pub fn status(&self) -> Arc<TokenStatus> {
        self.status.load_full()
    }

    /// The credentials in use now. Secret: for request headers only.
    pub fn credentials(&self) -> SharedCredentials {
        Arc::clone(&self.credentials)
    }

    /// A handle with a fixed status whose requests go to `tx` (tests).
    pub fn with_channel(tx: Sender<Request>, status: TokenStatus) -> KeeperHandle {
        KeeperHandle {
            tx,
            status: Arc::new(ArcSwap::from_pointee(status)),
            credentials: Arc::new(ArcSwap::from_pointee(Credentials::new("", ""))),
        }
    }

    /// A handle with a fixed status and no thread behind it: every request
    /// is refused (tests).
    pub fn detached(status: TokenStatus) -> KeeperHandle {
        KeeperHandle::with_channel(crossbeam_channel::bounded(1).0, status)
    }
}

/// Where the keeper starts.
#[derive(Clone, Debug)]
pub struct Start {
    /// The account as loaded at start.
    pub account: Account,
    /// Its source; `None` in demo mode.
    pub origin: Option<Origin>,
}

/// The running keeper thread.
#[derive(Debug)]
pub struct Keeper {
    handle: KeeperHandle,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Starts the thread.
    pub fn spawn(
        config: TokenConfig,
        start: Start,
        upstream: UpstreamControl,
        upstream_stats: Arc<UpstreamStats>,
    ) -> std::io::Result<Keeper> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let hup = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = State::new(config, start, upstream, upstream_stats);
        let status = Arc::new(ArcSwap::from_pointee(state.status()));
        let credentials = Arc::clone(&state.published);
        let (hup2, stop2, status2) = (Arc::clone(&hup), Arc::clone(&stop), Arc::clone(&status));
        let thread = std::thread::Builder::new()
            .name("dhan-token".into())
            .spawn(move || {
                crate::affinity::background("token keeper");
                state.run(&rx, &hup2, &stop2, &status2);
            })?;
        Ok(Keeper {
            handle: KeeperHandle {
                tx,
                status,
                credentials,
            },
            hup,
            stop,
            thread: Some(thread),
        })
    }

    /// A handle for other threads.
    pub fn handle(&self) -> KeeperHandle {
        self.handle.clone()
    }

    /// Set this (e.g. from a SIGHUP handler) to have the file re-read.
    pub fn hup_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.hup)
    }

    /// Stops and joins the thread (a renewal in flight finishes first).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = self.handle.tx.send(Request::Reload);
            let _ = t.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The file's identity: a change in any part means "read it again".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

struct State {
    config: TokenConfig,
    account: Account,
    origin: Option<Origin>,
    source: String,
    upstream: UpstreamControl,
    upstream_stats: Arc<UpstreamStats>,
    stamp: Option<Stamp>,
    next_file_check: Instant,
    file_error: Option<String>,
    renew_error: Option<String>,
    retry_at: Option<Instant>,
    retry_wait: Duration,
    renewals: u64,
    renew_failures: u64,
    rotations: u64,
    handed_over: Instant,
    /// What [`KeeperHandle::credentials`] reads.
    published: SharedCredentials,
}

impl State {
    fn new(
        config: TokenConfig,
        start: Start,
        upstream: UpstreamControl,
        upstream_stats: Arc<UpstreamStats>,
    ) -> State {
        let source = start
            .origin
            .as_ref()
            .map_or_else(|| "demo".to_string(), Origin::to_string);
        let stamp = start.origin.as_ref().and_then(Origin::file).and_then(stamp);
        let now = Instant::now();
        State {
            published: Arc::new(ArcSwap::from_pointee(start.account.credentials.clone())),
            config,
            account: start.account,
            origin: start.origin,
            source,
            upstream,
            upstream_stats,
            stamp,
            next_file_check: now + FILE_CHECK,
            file_error: None,
            renew_error: None,
            retry_at: None,
            retry_wait: RETRY_FIRST,
            renewals: 0,
            renew_failures: 0,
            rotations: 0,
            handed_over: now,
        }
    }

    fn run(
        &mut self,
        rx: &Receiver<Request>,
        hup: &AtomicBool,
        stop: &AtomicBool,
        status: &ArcSwap<TokenStatus>,
    ) {
        let token = self.account.credentials.access_token();
        match jwt::expiry(token) {
            Some(exp) => log::info!(
                "DhanHQ access token from {} expires {}",
                self.source,
                crate::instrument::date::ist_iso(exp)
            ),
            None if self.config.renew != Renew::None && !token.is_empty() => log::warn!(
                "the access token's expiry cannot be read (not a JWT): renewal before expiry \
                 is not scheduled"
            ),
            None => {}
        }
        loop {
            match rx.recv_timeout(TICK) {
                Ok(request) if !stop.load(Ordering::Relaxed) => self.on_request(request),
                Ok(_) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if hup.swap(false, Ordering::Relaxed) {
                log::info!("SIGHUP: re-reading the credentials");
                self.reload(true);
            } else if now >= self.next_file_check {
                self.reload(false);
            }
            self.maybe_renew(now);
            status.store(Arc::new(self.status()));
        }
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Set(credentials) => {
                if credentials == self.account.credentials {
                    log::info!("admin: the credentials given are the ones in use");
                    return;
                }
                self.account.credentials = credentials;
                self.persist();
                self.hand_over("admin");
            }
            Request::Reload => self.reload(true),
        }
    }

    /// Re-reads the credentials file if it changed (or `force`), and hands
    /// over a new token. The environment cannot be re-read by a running
    /// process; that is said once per SIGHUP.
    fn reload(&mut self, force: bool) {
        self.next_file_check = Instant::now() + FILE_CHECK;
        let Some(path) = self
            .origin
            .as_ref()
            .and_then(Origin::file)
            .map(Path::to_path_buf)
        else {
            if force {
                log::warn!(
                    "the credentials come from the {}, which a running process cannot re-read: \
                     use a credentials file (--env-file) or POST /api/admin/credentials",
                    self.source
                );
            }
            return;
        };
        let now_stamp = stamp(&path);
        if !force && now_stamp == self.stamp {
            return;
        }
        self.stamp = now_stamp;
        let read = sources::read_file(&path).and_then(|a| {
            a.ok_or_else(|| format!("credentials file {}: no DHAN_ keys", path.display()))
        });
        match read {
            Err(e) => {
                if self.file_error.as_deref() != Some(e.as_str()) {
                    log::error!("{e}; going on with the token in use");
                }
                self.file_error = Some(e);
            }
            Ok(account) => {
                if self.file_error.take().is_some() {
                    log::info!("credentials file {} reads correctly again", path.display());
                }
                let new_token = account.credentials != self.account.credentials;
                self.account = account;
                if new_token && !self.account.credentials.access_token().is_empty() {
                    self.source = self
                        .origin
                        .as_ref()
                        .map_or_else(String::new, Origin::to_string);
                    self.hand_over("credentials file");
                }
            }
        }
    }

    /// Renews when due: `renew_before` ahead of expiry, or (TOTP) at once
    /// when there is no token or DhanHQ refuses it. Renewals prompted by a
    /// refusal back off like failures until the upstream is up again, so a
    /// token DhanHQ keeps refusing is not regenerated in a tight loop.
    fn maybe_renew(&mut self, now: Instant) {
        if self.config.renew == Renew::None {
            return;
        }
        let refused = self.refused();
        if !refused && self.upstream_stats.connections_up() > 0 && self.renew_error.is_none() {
            self.retry_wait = RETRY_FIRST;
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let refused = refused && now.duration_since(self.handed_over) >= SETTLE;
        let due = self.renew_due_at().is_some_and(|at| unix_now() >= at);
        let missing = self.account.credentials.access_token().is_empty();
        let why = match self.config.renew {
            Renew::Totp if missing => "no access token yet",
            Renew::Totp if refused => "DhanHQ refused the access token",
            _ if due => "the access token expires soon",
            _ => return,
        };
        log::info!(
            "renewing the DhanHQ access token ({}): {why}",
            self.config.renew.as_str()
        );
        let result = match self.config.renew {
            Renew::Dhan => renew::renew(&self.config.rest_url, &self.account.credentials),
            Renew::Totp => renew::generate(&self.config.auth_url, &self.account, unix_now()),
            Renew::None => return,
        };
        let wait = self.retry_wait;
        match result {
            Ok(token) => {
                self.account.credentials =
                    Credentials::new(self.account.credentials.client_id(), token);
                self.renewals += 1;
                self.renew_error = None;
                self.retry_at = refused.then(|| Instant::now() + wait);
                self.persist();
                self.hand_over("renewal");
            }
            Err(e) => {
                self.renew_failures += 1;
                self.retry_at = Some(Instant::now() + wait);
                log::warn!("token renewal failed: {e}; retrying in {wait:?}");
                self.renew_error = Some(format!("token renewal failed: {e}"));
            }
        }
        if self.retry_at.is_some() {
            self.retry_wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// When the current token should be renewed (Unix seconds).
    fn renew_due_at(&self) -> Option<u64> {
        if self.config.renew == Renew::None {
            return None;
        }
        jwt::expiry(self.account.credentials.access_token())
            .map(|exp| exp.saturating_sub(self.config.renew_before.as_secs()))
    }

    /// Some connection is parked because DhanHQ refused the credentials.
    fn refused(&self) -> bool {
        self.upstream_stats
            .slot_states()
            .contains(&SlotState::AuthFailed)
    }

    /// Writes the current credentials back to the file they came from.
    fn persist(&mut self) {
        match self.origin.as_ref().and_then(Origin::file) {
            Some(path) => match sources::write_back(path, &self.account.credentials) {
                Ok(()) => {
                    self.stamp = stamp(path);
                    log::info!("new access token written to {}", path.display());
                }
                Err(e) => {
                    log::error!("{e}: a restart would use the old token");
                    self.file_error = Some(e);
                }
            },
            None => log::info!(
                "the new access token is not persisted: the credentials come from the {}",
                self.source
            ),
        }
    }

    /// Sends the current credentials to the network thread.
    fn hand_over(&mut self, from: &str) {
        self.source = match from {
            "admin" | "renewal" => from.to_string(),
            _ => self.source.clone(),
        };
        self.rotations += 1;
        self.handed_over = Instant::now();
        self.published
            .store(Arc::new(self.account.credentials.clone()));
        let expiry = jwt::expiry(self.account.credentials.access_token())
            .map_or_else(|| "unknown".to_string(), crate::instrument::date::ist_iso);
        log::info!(
            "new DhanHQ access token from {from} (expires {expiry}): reconnecting upstream with it"
        );
        if !self
            .upstream
            .send(Command::Credentials(self.account.credentials.clone()))
        {
            log::warn!("the network thread has stopped; the new token is kept for nothing");
        }
    }

    fn status(&self) -> TokenStatus {
        TokenStatus {
            source: self.source.clone(),
            expires_at: jwt::expiry(self.account.credentials.access_token()),
            renew: self.config.renew,
            next_renewal_at: self.renew_due_at(),
            renewals: self.renewals,
            renew_failures: self.renew_failures,
            rotations: self.rotations,
            refused: self.refused(),
            last_error: self.file_error.clone().or_else(|| self.renew_error.clone()),
        }
    }
}
