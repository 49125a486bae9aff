//! State shared by the simulator's threads: settings, counters, the
//! connection registry, the request log, and what travels to a connection.
//!
//! Lock order, to rule out deadlock: the registry (`Shared::conns`) before a
//! connection's `subs`; no thread takes the registry while holding a `subs`
//! lock. Locks are held for map edits and copies only, never across socket
//! I/O. A poisoned lock (a thread panicked while holding it) is used as is:
//! the maps stay structurally valid.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use tungstenite::Bytes;

use super::market::Instrument;
use super::{LoggedRequest, SimStats};
use crate::domain::{InstrumentKey, Mode};
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
}

impl Settings {
    /// An instrument's state before its first trade: the generator's and
    /// the previous-close packet's, so the two agree.
    pub(crate) fn instrument(&self, key: InstrumentKey) -> Instrument {
        Instrument::new(self.seed, key, self.reference_prices.get(&key).copied())
    }
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
}

/// Everything the simulator's threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) stop: AtomicBool,
    pub(crate) stalled: AtomicBool,
    pub(crate) stats: Counters,
    pub(crate) expired: Mutex<Tokens>,
    pub(crate) conns: Mutex<BTreeMap<u64, Entry>>,
    /// Bumped on every change to any connection's subscriptions or login;
    /// the generator rebuilds its routing table when it moves.
    pub(crate) subs_version: AtomicU64,
    pub(crate) requests: Mutex<Vec<LoggedRequest>>,
    next_conn: AtomicU64,
    /// Wakes the generator early (subscriptions changed, unstalled, stop).
    poke: Sender<()>,
}

/// Expired tokens. Secrets: `Debug` shows only how many there are.
#[derive(Default)]
pub(crate) struct Tokens(Vec<String>);

impl Tokens {
    pub(crate) fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    pub(crate) fn insert(&mut self, token: &str) {
        if !self.contains(token) {
            self.0.push(token.to_owned());
        }
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} token(s)", self.0.len())
    }
}

/// Why a login is refused.
pub(crate) type Refusal = DisconnectReason;

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        tls: Option<Arc<rustls::ServerConfig>>,
        poke: Sender<()>,
    ) -> Self {
        Shared {
            settings,
            tls,
            stop: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stats: Counters::default(),
            expired: Mutex::new(Tokens::default()),
            conns: Mutex::new(BTreeMap::new()),
            subs_version: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            poke,
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
    /// take the last slot. The token is compared, never stored or logged.
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
        if lock(&self.expired).contains(token) {
            return Err(DisconnectReason::TokenExpired);
        }
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
        }
        drop(conns);
        self.subs_changed();
        Ok(())
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
        }
    }
}
