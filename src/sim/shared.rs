//! State shared by the simulator's threads: settings, counters, the token
//! registry, the connection registry, the request log, and what travels to
//! a connection.
//!
//! Lock order, to rule out deadlock: the token registry (`Shared::tokens`)
//! before the connection registry (`Shared::conns`) before a connection's
//! `subs`; separately, the paper book (`Shared::paper`) before the order
//! streams (`Shared::streams`), and neither is held while taking the
//! token registry; no thread takes an earlier one while holding a later one. A
//! login is checked and recorded with both registries held, so a token
//! revoked or expired at the same moment is either refused at login or
//! found on the open connection afterwards, never missed. Locks are held for map edits and copies only, never across socket
//! I/O. A poisoned lock (a thread panicked while holding it) is used as is:
//! the maps stay structurally valid.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use tungstenite::Bytes;

use super::market::Instrument;
use super::paper::{Paper, PaperOrder};
use super::tokens::Registry;
use super::{LoggedRequest, SimStats};
use crate::domain::{InstrumentKey, Mode};
use crate::token::jwt;
use crate::wire::DisconnectReason;

/// Most entries [`Shared::requests`] keeps; later requests are applied but
/// not logged, so a long demo run cannot grow without bound.
pub(crate) const MAX_LOGGED_REQUESTS: usize = 100_000;

/// Locks `m`, ignoring poisoning (see the module doc).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settings every thread reads; copied out of [`super::SimConfig`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) ticks_per_sec: u32,
    pub(crate) seed: u64,
    pub(crate) reference_prices: Arc<HashMap<InstrumentKey, f64>>,
    pub(crate) max_per_message: usize,
    pub(crate) max_per_connection: usize,
    pub(crate) max_connections_per_client: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
    /// Lifetime of tokens issued over REST.
    pub(crate) token_lifetime: Duration,
    /// Accounts `generateAccessToken` knows.
    pub(crate) totp_accounts: Vec<TotpAccount>,
    /// Lot sizes of derivatives, for order validation.
    pub(crate) lot_sizes: Arc<HashMap<InstrumentKey, u32>>,
    /// How options are priced from their underlying.
    pub(crate) options: Arc<HashMap<InstrumentKey, super::SimOption>>,
    /// When the simulator started: options' previous closes are priced
    /// then, so every thread builds the same opening state.
    pub(crate) started: SystemTime,
}

/// An account that can generate tokens with PIN + TOTP, secret decoded.
#[derive(Clone)]
pub(crate) struct TotpAccount {
    pub(crate) client_id: String,
    pub(crate) pin: String,
    pub(crate) secret: Vec<u8>,
}

impl std::fmt::Debug for TotpAccount {
    /// PIN and secret are credentials: only the client id is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpAccount")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// An instrument's state before its first trade: the generator's and
    /// the previous-close packet's, so the two agree.
    /// An option with a model ([`Settings::options`]) opens at its model
    /// price at its underlying's previous close.
    pub(crate) fn instrument(&self, key: InstrumentKey) -> Instrument {
        match self.options.get(&key) {
            Some(spec) if spec.underlying != key => {
                let under = f64::from(self.instrument(spec.underlying).prev_close().prev_close);
                Instrument::new_option(self.seed, key, *spec, under, self.started)
            }
            _ => Instrument::new(self.seed, key, self.reference_prices.get(&key).copied()),
        }
    }

    /// An instrument's lot size (1 when unknown).
    pub(crate) fn lot(&self, key: InstrumentKey) -> u32 {
        self.lot_sizes.get(&key).copied().unwrap_or(1).max(1)
    }
}

/// A logged-in order-update stream: whose orders it wants and where to put
/// their alerts (bounded; a full queue drops the alert and counts it).
#[derive(Debug)]
pub(crate) struct StreamSub {
    pub(crate) id: u64,
    pub(crate) client_id: String,
    pub(crate) tx: Sender<String>,
}

/// The error the next `POST /v2/orders` answers with
/// ([`super::SimControl::fail_next_order`]).
#[derive(Clone, Debug)]
pub(crate) struct FailNext {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
}

/// A price in rupees as the feed carries it (`f32`), to the paisa.
pub(crate) fn rupees(p: f32) -> f64 {
    (f64::from(p) * 100.0).round() / 100.0
}

/// Counters behind [`SimStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connects: AtomicU64,
    pub(crate) auth_rejects: AtomicU64,
    pub(crate) rejected_requests: AtomicU64,
    pub(crate) rejected_instruments: AtomicU64,
    pub(crate) packets_sent: AtomicU64,
    pub(crate) pongs_received: AtomicU64,
    pub(crate) dropped_for_silence: AtomicU64,
    pub(crate) queue_drops: AtomicU64,
    pub(crate) tokens_issued: AtomicU64,
    pub(crate) renewals: AtomicU64,
    pub(crate) generations: AtomicU64,
    pub(crate) auth_refusals_rest: AtomicU64,
    pub(crate) token_disconnects: AtomicU64,
    pub(crate) trading_requests: AtomicU64,
    pub(crate) stream_drops: AtomicU64,
    pub(crate) replay_frames: AtomicU64,
    pub(crate) replay_packets: AtomicU64,
    pub(crate) replay_disconnects: AtomicU64,
    pub(crate) replay_bad_packets: AtomicU64,
    pub(crate) replay_passes: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a connection thread is asked to write.
#[derive(Debug)]
pub(crate) enum Out {
    /// Generated packets (one, or a depth bid+ask pair) for `key` in `mode`.
    /// Dropped at write time if the connection no longer holds `key` in
    /// `mode`, so nothing stale follows an (un)subscribe; batched with
    /// neighbours into one frame at high rates.
    Tick {
        key: InstrumentKey,
        mode: Mode,
        bytes: Bytes,
        packets: u32,
    },
    /// A frame sent exactly as given (inject, send_raw).
    Raw(Bytes),
    /// A replayed frame: sent exactly as given, its own frame, counting
    /// `packets` in `packets_sent`.
    Replay { bytes: Bytes, packets: u32 },
}

/// Out-of-band orders for a connection thread; never dropped.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Control {
    /// Send the disconnect packet, then a close frame.
    Disconnect(DisconnectReason),
    /// Shut the TCP socket down, no close frame.
    Drop,
}

/// Which DhanHQ endpoint a connection reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/?version=2&...`: the Live Market Feed.
    Feed,
    /// `/twentydepth?...`: the 20-level depth feed.
    Depth,
}

/// The other threads' handle on one connection thread.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) id: u64,
    waker: mio::Waker,
    wake_pending: AtomicBool,
    queue: Sender<Out>,
    control: Sender<Control>,
    /// The connection's subscriptions; written by its thread only.
    pub(crate) subs: Mutex<BTreeMap<InstrumentKey, Mode>>,
}

impl ConnHandle {
    pub(crate) fn new(
        id: u64,
        waker: mio::Waker,
        queue: Sender<Out>,
        control: Sender<Control>,
    ) -> Self {
        ConnHandle {
            id,
            waker,
            wake_pending: AtomicBool::new(false),
            queue,
            control,
            subs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Queues `out` without blocking; a full queue drops it and counts.
    /// Call [`ConnHandle::notify`] once after a burst of pushes.
    pub(crate) fn push(&self, out: Out, counters: &Counters) {
        match self.queue.try_send(out) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => bump(&counters.queue_drops),
        }
    }

    /// Queues `out`, waiting for room while the queue is full (waking the
    /// connection thread meanwhile) — for replay at full speed, which must
    /// not drop. `false` if the simulator is stopping (`out` is dropped); a
    /// connection that has ended takes the item and loses it.
    pub(crate) fn push_wait(&self, mut out: Out, shared: &Shared) -> bool {
        loop {
            match self.queue.send_timeout(out, Duration::from_millis(20)) {
                Ok(()) | Err(SendTimeoutError::Disconnected(_)) => return true,
                Err(SendTimeoutError::Timeout(back)) => {
                    if shared.stopping() {
                        return false;
                    }
                    out = back;
                    self.wake();
                }
            }
        }
    }

    /// Sends an order to the connection thread and wakes it.
    pub(crate) fn order(&self, c: Control) {
        let _ = self.control.send(c);
        self.wake();
    }

    /// Wakes the connection thread unless a wake is already pending.
    pub(crate) fn notify(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes the connection thread unconditionally.
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Called by the connection thread before draining its queue.
    pub(crate) fn clear_wake(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
    }
}

/// A logged-in connection: who it is.
#[derive(Clone, Debug)]
pub(crate) struct Login {
    pub(crate) client_id: String,
    pub(crate) endpoint: Endpoint,
}

/// A registry entry: every live connection thread, logged in or not (so
/// shutdown can wake all of them).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) handle: Arc<ConnHandle>,
    pub(crate) login: Option<Login>,
    /// The token it logged in with, to act on its revocation.
    token: Option<Secret>,
    /// When that token stops being valid (Unix seconds), if it does.
    token_exp: Option<u64>,
    /// Already told to go (807) because of its token.
    kicked: bool,
}

/// A token kept to compare against. `Debug` does not show it.
pub(crate) struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Wall-clock Unix seconds (0 before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first whole Unix second at least `lifetime` from now: a token
/// issued for `lifetime` is valid for at least that long.
fn expiry_after(lifetime: Duration) -> u64 {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return lifetime.as_secs();
    };
    let end = now.saturating_add(lifetime);
    end.as_secs()
        .saturating_add(u64::from(end.subsec_nanos() > 0))
}

/// A token just issued.
#[derive(Debug)]
pub(crate) struct NewToken {
    pub(crate) token: String,
    /// Unix seconds.
    pub(crate) exp: u64,
}

/// Everything the simulator's threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) stop: AtomicBool,
    pub(crate) stalled: AtomicBool,
    pub(crate) stats: Counters,
    pub(crate) tokens: Mutex<Registry>,
    pub(crate) conns: Mutex<BTreeMap<u64, Entry>>,
    /// Bumped on every change to any connection's subscriptions or login;
    /// the generator rebuilds its routing table when it moves.
    pub(crate) subs_version: AtomicU64,
    pub(crate) requests: Mutex<Vec<LoggedRequest>>,
    next_conn: AtomicU64,
    /// The paper-trading book. Lock order: after the registries above, and
    /// before `streams` (alerts are queued under it, so they keep order).
    pub(crate) paper: Mutex<Paper>,
    /// Logged-in order-update streams.
    pub(crate) streams: Mutex<Vec<StreamSub>>,
    /// How long trading REST answers are held back.
    pub(crate) rest_delay: Mutex<Option<Duration>>,
    /// The error the next order placement answers with.
    pub(crate) fail_next: Mutex<Option<FailNext>>,
    /// Wakes the generator early (subscriptions changed, unstalled, stop).
    poke: Sender<()>,
    /// Replaying a recording instead of generating ticks.
    pub(crate) replaying: bool,
    /// Set when the replay has ended (not looped).
    pub(crate) replay_finished: AtomicBool,
    /// Replay: each instrument's latest recorded previous-close packet.
    pub(crate) prev_closes: Mutex<HashMap<InstrumentKey, Vec<u8>>>,
}

/// Why a login is refused.
pub(crate) type Refusal = DisconnectReason;

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        tls: Option<Arc<rustls::ServerConfig>>,
        tokens: Registry,
        poke: Sender<()>,
        paper: Paper,
    ) -> Self {
        Shared {
            paper: Mutex::new(paper),
            streams: Mutex::new(Vec::new()),
            rest_delay: Mutex::new(None),
            fail_next: Mutex::new(None),
            settings,
            tls,
            stop: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stats: Counters::default(),
            tokens: Mutex::new(tokens),
            conns: Mutex::new(BTreeMap::new()),
            subs_version: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            poke,
            replaying: false,
            replay_finished: AtomicBool::new(false),
            prev_closes: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn subs_changed(&self) {
        self.subs_version.fetch_add(1, Ordering::SeqCst);
        self.poke_generator();
    }

    /// Makes the generator look at the shared state now rather than at its
    /// next timeout. Never blocks: one pending poke is enough.
    pub(crate) fn poke_generator(&self) {
        let _ = self.poke.try_send(());
    }

    /// Adds a connection thread to the registry.
    pub(crate) fn register(&self, handle: Arc<ConnHandle>) {
        lock(&self.conns).insert(
            handle.id,
            Entry {
                handle,
                login: None,
                token: None,
                token_exp: None,
                kicked: false,
            },
        );
    }

    /// Removes a connection thread from the registry.
    pub(crate) fn deregister(&self, id: u64) {
        let removed = lock(&self.conns).remove(&id);
        if removed.is_some_and(|e| e.login.is_some()) {
            self.subs_changed();
        }
    }

    /// Checks a login and, if it is accepted, records it — atomically with
    /// the per-client connection count, so two racing connects cannot both
    /// take the last slot, and with the token registry, so a revocation
    /// cannot slip between check and record. The token is kept in the
    /// registry entry (to act on its revocation or expiry), never logged.
    pub(crate) fn log_in(
        &self,
        id: u64,
        endpoint: Endpoint,
        token: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<(), Refusal> {
        let token = token.filter(|t| !t.is_empty());
        let client_id = client_id.filter(|c| !c.is_empty());
        let Some(token) = token else {
            return Err(DisconnectReason::AuthFailed);
        };
        let Some(client_id) = client_id else {
            return Err(DisconnectReason::InvalidClientId);
        };
        let tokens = lock(&self.tokens);
        let token_exp = tokens.check(token, Some(client_id), unix_now())?;
        let mut conns = lock(&self.conns);
        let held = conns
            .values()
            .filter_map(|e| e.login.as_ref())
            .filter(|l| l.endpoint == endpoint && l.client_id == client_id)
            .count();
        if held >= self.settings.max_connections_per_client {
            return Err(DisconnectReason::TooManyConnections);
        }
        if let Some(entry) = conns.get_mut(&id) {
            entry.login = Some(Login {
                client_id: client_id.to_owned(),
                endpoint,
            });
            entry.token = Some(Secret(token.to_owned()));
            entry.token_exp = token_exp;
        }
        drop(conns);
        drop(tokens);
        self.subs_changed();
        Ok(())
    }

    /// Whether a login with `token` would be accepted now (any client id
    /// the token belongs to).
    pub(crate) fn token_valid(&self, token: &str) -> bool {
        !token.is_empty() && lock(&self.tokens).check(token, None, unix_now()).is_ok()
    }

    /// Issues a token for `client_id` valid for `lifetime`, revoking the
    /// client's previously issued ones (807 to their open connections).
    pub(crate) fn issue(&self, client_id: &str, lifetime: Duration) -> NewToken {
        let mut tokens = lock(&self.tokens);
        let new = self.issue_locked(&mut tokens, client_id, lifetime);
        drop(tokens);
        self.kick(&new.1);
        new.0
    }

    /// Issues under the registry lock; returns the token and the tokens it
    /// revoked (for [`Shared::kick`] once the lock is released).
    fn issue_locked(
        &self,
        tokens: &mut Registry,
        client_id: &str,
        lifetime: Duration,
    ) -> (NewToken, Vec<String>) {
        let now = unix_now();
        let exp = expiry_after(lifetime);
        let token = jwt::unsigned(client_id, exp, now);
        let revoked = tokens.issue(client_id, &token, exp, now);
        bump(&self.stats.tokens_issued);
        (NewToken { token, exp }, revoked)
    }

    /// DhanHQ's RenewToken: if `old` is valid for `client_id`, issues a new
    /// token for the client ([`Settings::token_lifetime`]) and revokes `old`
    /// at once (807 to its open connections). `None` if `old` is not valid.
    pub(crate) fn renew(&self, old: &str, client_id: &str) -> Option<NewToken> {
        let mut tokens = lock(&self.tokens);
        tokens.check(old, Some(client_id), unix_now()).ok()?;
        let (new, mut revoked) =
            self.issue_locked(&mut tokens, client_id, self.settings.token_lifetime);
        tokens.revoke(old);
        drop(tokens);
        revoked.push(old.to_owned());
        self.kick(&revoked);
        bump(&self.stats.renewals);
        Some(new)
    }

    /// Refuses `token` from now on and tells its open connections (807).
    pub(crate) fn revoke(&self, token: &str) {
        lock(&self.tokens).revoke(token);
        self.kick(&[token.to_owned()]);
    }

    /// Refuses `token` for new connections; open ones are left alone.
    pub(crate) fn expire(&self, token: &str) {
        lock(&self.tokens).refuse(token);
    }

    /// Sends 807 and a close to every open connection logged in with one of
    /// `tokens`.
    fn kick(&self, tokens: &[String]) {
        if tokens.is_empty() {
            return;
        }
        self.kick_where(|e| {
            e.token
                .as_ref()
                .is_some_and(|Secret(t)| tokens.iter().any(|r| r == t))
        });
    }

    /// Sends 807 to each logged-in, not yet kicked connection `pick` picks.
    fn kick_where(&self, pick: impl Fn(&Entry) -> bool) {
        let mut doomed = Vec::new();
        for entry in lock(&self.conns).values_mut() {
            if entry.login.is_some() && !entry.kicked && pick(entry) {
                entry.kicked = true;
                doomed.push(entry.handle.clone());
            }
        }
        for conn in doomed {
            bump(&self.stats.token_disconnects);
            conn.order(Control::Disconnect(DisconnectReason::TokenExpired));
        }
    }

    /// Token expiry, run four times a second (by the generator thread):
    /// forgets issued tokens past their `exp` and sends 807 to the open
    /// connections whose token's `exp` has passed.
    pub(crate) fn expire_tokens(&self) {
        let now = unix_now();
        lock(&self.tokens).prune(now);
        self.kick_where(|e| e.token_exp.is_some_and(|exp| exp <= now));
    }

    /// Records each `(key, ltp)` as the instrument's last traded price
    /// (generated or injected) and fills the paper orders it reaches.
    pub(crate) fn prices(&self, moved: &[(InstrumentKey, f64)]) {
        let now = unix_now();
        let mut paper = lock(&self.paper);
        for &(key, ltp) in moved {
            let updates = paper.on_price(key, ltp, now);
            if !updates.is_empty() {
                self.publish(&updates);
            }
        }
    }

    /// `key`'s current LTP: the last one generated, injected or seen by the
    /// paper book, else the price model's opening level if the simulator
    /// has a reference for it (so an instrument nobody subscribed to has a
    /// price); `None` for an instrument it knows nothing about.
    pub(crate) fn ltp(&self, paper: &Paper, key: InstrumentKey) -> Option<f64> {
        paper.ltp(key).or_else(|| {
            self.settings
                .reference_prices
                .contains_key(&key)
                .then(|| rupees(self.settings.instrument(key).ticker().ltp))
        })
    }

    /// Queues an alert for each snapshot on every stream of its client.
    /// Called with the paper lock held, so alerts keep their order.
    pub(crate) fn publish(&self, updates: &[PaperOrder]) {
        let streams = lock(&self.streams);
        if streams.is_empty() {
            return;
        }
        for o in updates {
            let mut text = None;
            for s in streams.iter().filter(|s| s.client_id == o.client_id) {
                let t = text.get_or_insert_with(|| super::order_stream::alert(o).to_string());
                if s.tx.try_send(t.clone()).is_err() {
                    bump(&self.stats.stream_drops);
                }
            }
        }
    }

    /// Whether `token` is accepted now for `client_id` (trading REST and
    /// the order stream: the feed's rule, see `tokens.rs`).
    pub(crate) fn token_ok(&self, token: &str, client_id: &str) -> bool {
        !token.is_empty()
            && !client_id.is_empty()
            && lock(&self.tokens)
                .check(token, Some(client_id), unix_now())
                .is_ok()
    }

    /// Replay: keeps `packet` as `key`'s latest previous-close packet (its
    /// buffer reused).
    pub(crate) fn remember_prev_close(&self, key: InstrumentKey, packet: &[u8]) {
        let mut table = lock(&self.prev_closes);
        let kept = table.entry(key).or_default();
        kept.clear();
        kept.extend_from_slice(packet);
    }

    /// Replay: `key`'s latest recorded previous-close packet, if any.
    pub(crate) fn recorded_prev_close(&self, key: InstrumentKey) -> Option<Bytes> {
        lock(&self.prev_closes)
            .get(&key)
            .map(|p| Bytes::copy_from_slice(p))
    }

    /// Appends to the request log (bounded by [`MAX_LOGGED_REQUESTS`]).
    pub(crate) fn log_request(&self, entry: LoggedRequest) {
        let mut log = lock(&self.requests);
        if log.len() < MAX_LOGGED_REQUESTS {
            log.push(entry);
        }
    }

    /// Handles of logged-in connections, with their login.
    pub(crate) fn open_conns(&self) -> Vec<(Arc<ConnHandle>, Login)> {
        lock(&self.conns)
            .values()
            .filter_map(|e| Some((e.handle.clone(), e.login.clone()?)))
            .collect()
    }

    /// Every live connection thread's handle, logged in or not.
    pub(crate) fn all_conns(&self) -> Vec<Arc<ConnHandle>> {
        lock(&self.conns)
            .values()
            .map(|e| e.handle.clone())
            .collect()
    }

    pub(crate) fn stats(&self) -> SimStats {
        let c = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            connects: get(&c.connects),
            open: lock(&self.conns)
                .values()
                .filter(|e| e.login.is_some())
                .count(),
            auth_rejects: get(&c.auth_rejects),
            rejected_requests: get(&c.rejected_requests),
            rejected_instruments: get(&c.rejected_instruments),
            packets_sent: get(&c.packets_sent),
            pongs_received: get(&c.pongs_received),
            dropped_for_silence: get(&c.dropped_for_silence),
            queue_drops: get(&c.queue_drops),
            tokens_issued: get(&c.tokens_issued),
            renewals: get(&c.renewals),
            generations: get(&c.generations),
            auth_refusals_rest: get(&c.auth_refusals_rest),
            token_disconnects: get(&c.token_disconnects),
            trading_requests: get(&c.trading_requests),
            order_stream_drops: get(&c.stream_drops),
            order_streams: lock(&self.streams).len(),
            replay_frames: get(&c.replay_frames),
            replay_packets: get(&c.replay_packets),
            replay_disconnects: get(&c.replay_disconnects),
            replay_bad_packets: get(&c.replay_bad_packets),
            replay_passes: get(&c.replay_passes),
            replay_finished: self.replay_finished.load(Ordering::SeqCst),
        }
    }
}
