//! The one subscription union of every fanout shard, with the account's
//! upstream capacity, its queue and the unsubscribe grace ([`Topics`],
//! [`DepthTopics`]).
//!
//! Each shard keeps its own clients in a [`super::local::Local`] index and
//! stands here as a single holder per instrument (its shard number), in the
//! highest mode its clients hold. The watchlist ([`Topics::RELAY`]) and the
//! option chains hold instruments here too. So two clients on two shards
//! wanting one instrument make one upstream subscription, and the
//! capacity and its first-come first-served queue count the whole relay,
//! not a shard.
//!
//! This is the fanout's only lock. It is taken for client control work
//! (a subscribe or unsubscribe, one instrument at a time; a closing client)
//! and at the end of a turn in which the shard changed something, a grace
//! period fell due or a queued instrument of its clients got a slot. Never
//! per tick: ticks are delivered from the shard's own index. Whoever holds
//! it does bookkeeping only (hash maps, a lock-free channel send): no
//! system call, no log line, no wait. Commands are queued to the network
//! thread under the lock, so they reach it in the order the union decided
//! them, whichever shard sends them; the wake-ups (the network thread's,
//! other shards') and the log line come after the lock is released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::Waker;

use super::local::Held;
use super::rest::{SharedView, View};
use super::stats::FanoutStats;
use super::topics::{ActiveSub, Admission, ClientId, DepthTopics, Topics};
use super::VIEW_EVERY;
use crate::domain::{InstrumentKey, Mode};
use crate::instrument::watch::WatchItem;
use crate::upstream::{Command, UpstreamControl};

/// Shared by every shard (see the module docs).
pub struct Union {
    inner: Mutex<Inner>,
    /// Each shard's waker, to tell it a queued instrument got a slot.
    wakers: Vec<Arc<Waker>>,
    /// Per shard: [`Inner::promoted`] holds something for it.
    promoted: Vec<Flag>,
    epoch: Instant,
    /// When a grace period ends or the view is due, in nanoseconds after
    /// `epoch` (`u64::MAX`: nothing pending): read by every shard each
    /// turn without the lock.
    due_ns: AtomicU64,
}

/// A shard's "promoted" flag, on a cache line of its own (each shard reads
/// its own every turn).
#[derive(Default)]
#[repr(align(64))]
struct Flag(AtomicBool);

impl std::fmt::Debug for Union {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Union")
    }
}

struct Inner {
    topics: Topics,
    depth: DepthTopics,
    /// Client holdings per instrument over all shards, for the view.
    clients: HashMap<InstrumentKey, usize>,
    /// Per shard: instruments its clients hold that just got a slot.
    promoted: Vec<Vec<InstrumentKey>>,
    upstream: UpstreamControl,
    stats: Arc<FanoutStats>,
    view: SharedView,
    watchlist: Vec<WatchItem>,
    view_dirty: bool,
    next_view: Instant,
}

impl Union {
    /// The union of `wakers.len()` shards, holding the watchlist's
    /// instruments from the start.
    pub fn new(
        grace: Duration,
        capacity: usize,
        upstream: UpstreamControl,
        stats: Arc<FanoutStats>,
        view: SharedView,
        watchlist: &[WatchItem],
        wakers: Vec<Arc<Waker>>,
    ) -> Union {
        let mut topics = Topics::new(grace, capacity);
        for w in watchlist {
            topics.add(Topics::RELAY, w.key, Mode::Ticker);
        }
        let now = Instant::now();
        Union {
            inner: Mutex::new(Inner {
                topics,
                depth: DepthTopics::new(grace),
                clients: HashMap::new(),
                promoted: vec![Vec::new(); wakers.len()],
                upstream,
                stats,
                view,
                watchlist: watchlist.to_vec(),
                view_dirty: true,
                next_view: now,
            }),
            promoted: wakers.iter().map(|_| Flag::default()).collect(),
            wakers,
            epoch: now,
            // The watchlist's subscribe is due at once.
            due_ns: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Bookkeeping only happens under the lock; a panic there (a bug)
        // leaves maps that are still consistent enough to go on with.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client of `shard` took `key` ([`super::local::Local::add`] said
    /// how): whether it flows now or waits for capacity.
    pub fn add(&self, shard: usize, key: InstrumentKey, held: Held) -> Admission {
        let mut u = self.lock();
        if held.changed {
            *u.clients.entry(key).or_default() += 1;
        }
        u.view_dirty = true;
        let mode = held.shard_mode.unwrap_or(Mode::Ticker);
        u.topics.add(shard, key, mode)
    }

    /// A client of `shard` let go of `key` ([`super::local::Local::remove`]
    /// said how).
    pub fn remove(&self, shard: usize, key: InstrumentKey, held: Held) {
        if !held.changed {
            return;
        }
        let mut u = self.lock();
        if let Some(n) = u.clients.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                u.clients.remove(&key);
            }
        }
        u.view_dirty = true;
        match held.shard_mode {
            None => {
                u.topics.remove(shard, key);
            }
            // The shard's mode may have dropped with the client.
            Some(mode) => {
                u.topics.add(shard, key, mode);
            }
        }
    }

    /// The relay itself (the watchlist, [`Topics::RELAY`], or a chain)
    /// holds `key` in `mode`, or (`None`) no longer does; true if it held
    /// it before.
    pub fn hold(&self, holder: ClientId, key: InstrumentKey, mode: Option<Mode>) -> bool {
        let mut u = self.lock();
        u.view_dirty = true;
        match mode {
            Some(mode) => {
                let before = u
                    .topics
                    .get(&key)
                    .is_some_and(|t| t.subscribers.iter().any(|(c, _)| *c == holder));
                u.topics.add(holder, key, mode);
                before
            }
            None => u.topics.remove(holder, key),
        }
    }

    /// `shard` now has a `depth20` client for `key` (its first).
    pub fn add_depth(&self, shard: usize, key: InstrumentKey) {
        self.lock().depth.add(shard, key);
    }

    /// `shard`'s last `depth20` client for `key` left.
    pub fn remove_depth(&self, shard: usize, key: InstrumentKey) {
        self.lock().depth.remove(shard, key);
    }

    /// The watchlist changed (the day's roll): for the view.
    pub fn set_watchlist(&self, items: &[WatchItem]) {
        let mut u = self.lock();
        u.watchlist = items.to_vec();
        u.view_dirty = true;
    }

    /// Instruments counted against capacity, and instruments queued.
    pub fn load(&self) -> (usize, usize) {
        self.lock().topics.load()
    }

    /// Instruments held upstream or queued, with their client counts.
    pub fn active(&self) -> Vec<ActiveSub> {
        self.lock().active()
    }

    /// Whether a shard must [`Union::sync`] this turn even though it
    /// changed nothing: a grace period or the view fell due. One atomic
    /// load.
    pub fn due(&self, now: Instant) -> bool {
        self.due_ns.load(Relaxed) <= self.ns(now)
    }

    /// When [`Union::due`] turns true without anyone's change.
    pub fn next_due(&self) -> Option<Instant> {
        match self.due_ns.load(Relaxed) {
            u64::MAX => None,
            ns => Some(self.epoch + Duration::from_nanos(ns)),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Tells the network thread what changed, publishes the view when
    /// due, hands each shard the queued instruments of its clients that
    /// got a slot (waking the others), and returns `shard`'s own.
    pub fn sync(&self, shard: usize, now: Instant) -> Vec<InstrumentKey> {
        let done = self.sync_locked(shard, now);
        if done.queued {
            done.upstream.wake();
        }
        if done.promoted > 0 {
            log::info!(
                "upstream capacity freed: {} queued instruments subscribed",
                done.promoted
            );
        }
        for h in done.wake {
            let _ = self.wakers[h].wake();
        }
        self.take_promoted(shard)
    }

    /// `shard`'s queued instruments that got a slot since it last asked
    /// (the lock only when [`Union::sync`] left some for it).
    pub fn take_promoted(&self, shard: usize) -> Vec<InstrumentKey> {
        // A load first: every shard asks every turn, and a swap would take
        // the cache line for writing each time.
        let flag = &self.promoted[shard].0;
        if !flag.load(Relaxed) || !flag.swap(false, Relaxed) {
            return Vec::new();
        }
        std::mem::take(&mut self.lock().promoted[shard])
    }

    /// [`Union::sync`]'s work under the lock.
    fn sync_locked(&self, shard: usize, now: Instant) -> Synced {
        let mut u = self.lock();
        let changes = u.topics.take_changes(now);
        let (held, queued) = u.topics.load();
        u.stats.upstream_held.set(held as u64);
        u.stats.upstream_queued.set(queued as u64);
        let mut wake = Vec::new();
        if !changes.promoted.is_empty() {
            let shards = u.promoted.len();
            for key in &changes.promoted {
                let holders: Vec<usize> = u.topics.get(key).map_or_else(Vec::new, |t| {
                    t.subscribers
                        .iter()
                        .map(|(c, _)| *c)
                        .filter(|c| *c < shards)
                        .collect()
                });
                for h in holders {
                    u.promoted[h].push(*key);
                }
            }
            for (h, keys) in u.promoted.iter().enumerate() {
                if !keys.is_empty() && !self.promoted[h].0.swap(true, Relaxed) && h != shard {
                    wake.push(h);
                }
            }
        }
        u.view_dirty |= !changes.is_empty();
        let depth = u.depth.take_changes(now);
        // Unsubscribes first: the network thread applies commands in order,
        // and a promoted instrument needs the slot the unsubscribe frees.
        let commands = [
            (!changes.unsubscribe.is_empty()).then_some(Command::Unsubscribe(changes.unsubscribe)),
            (!changes.subscribe.is_empty()).then_some(Command::Subscribe(changes.subscribe)),
            (!depth.unsubscribe.is_empty()).then_some(Command::UnsubscribeDepth(depth.unsubscribe)),
            (!depth.subscribe.is_empty()).then_some(Command::SubscribeDepth(depth.subscribe)),
        ];
        let mut sent = false;
        for command in commands.into_iter().flatten() {
            sent |= u.upstream.queue(command);
        }
        if u.view_dirty && now >= u.next_view {
            u.view_dirty = false;
            u.next_view = now + VIEW_EVERY;
            let view = View {
                watchlist: u.watchlist.clone(),
                active: u.active(),
            };
            u.view.store(Arc::new(view));
        }
        let due = u
            .topics
            .next_deadline()
            .into_iter()
            .chain(u.depth.next_deadline())
            .chain(u.view_dirty.then_some(u.next_view))
            .min()
            .map_or(u64::MAX, |at| self.ns(at));
        self.due_ns.store(due, Relaxed);
        Synced {
            upstream: u.upstream.clone(),
            queued: sent,
            promoted: changes.promoted.len(),
            wake,
        }
    }
}

/// What [`Union::sync_locked`] leaves to do once the lock is released.
struct Synced {
    /// The network thread's control, to wake …
    upstream: UpstreamControl,
    /// … if commands were queued.
    queued: bool,
    /// Instruments that got a slot, for the log.
    promoted: usize,
    /// Other shards whose clients' instruments got a slot.
    wake: Vec<usize>,
}

impl Inner {
    fn active(&self) -> Vec<ActiveSub> {
        let mut active = self.topics.active();
        for a in &mut active {
            a.clients = self.clients.get(&a.key).copied().unwrap_or(0);
        }
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::fanout::local::Local;
    use mio::{Poll, Token};

    fn key(i: u32) -> InstrumentKey {
        InstrumentKey::new(Segment::NseEq, i)
    }

    struct Rig {
        union: Union,
        commands: crossbeam_channel::Receiver<Command>,
        view: SharedView,
        _polls: Vec<Poll>,
    }

    fn rig(shards: usize, capacity: usize) -> Rig {
        let polls: Vec<Poll> = (0..=shards).map(|_| Poll::new().unwrap()).collect();
        let waker = |p: &Poll| Arc::new(Waker::new(p.registry(), Token(0)).unwrap());
        let (tx, commands) = crossbeam_channel::unbounded();
        let view: SharedView = Arc::default();
        let union = Union::new(
            Duration::ZERO,
            capacity,
            UpstreamControl::new(tx, waker(&polls[shards])),
            Arc::default(),
            Arc::clone(&view),
            &[],
            polls[..shards].iter().map(waker).collect(),
        );
        Rig {
            union,
            commands,
            view,
            _polls: polls,
        }
    }

    fn subscribes(rx: &crossbeam_channel::Receiver<Command>) -> Vec<(InstrumentKey, Mode)> {
        rx.try_iter()
            .flat_map(|c| match c {
                Command::Subscribe(v) => v,
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn two_shards_one_instrument_one_subscription_in_the_highest_mode() {
        let r = rig(2, 10);
        let (mut a, mut b) = (Local::default(), Local::default());
        let now = Instant::now();
        assert_eq!(
            r.union.add(0, key(1), a.add(7, key(1), Mode::Ticker)),
            Admission::Live
        );
        assert_eq!(
            r.union.add(1, key(1), b.add(7, key(1), Mode::Quote)),
            Admission::Live
        );
        r.union.sync(0, now);
        assert_eq!(subscribes(&r.commands), vec![(key(1), Mode::Quote)]);
        let active = r.view.load().active.clone();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].clients, 2, "clients are counted, not shards");
        // Shard 1's client leaves: the mode drops back, nothing unsubscribes.
        r.union.remove(1, key(1), b.remove(7, key(1)));
        r.union.sync(1, now);
        let cmds: Vec<Command> = r.commands.try_iter().collect();
        assert!(
            matches!(&cmds[..], [Command::Subscribe(v)] if v == &vec![(key(1), Mode::Ticker)]),
            "{cmds:?}"
        );
    }

    #[test]
    fn capacity_counts_every_shard_and_a_freed_slot_reaches_the_waiting_shard() {
        let r = rig(2, 1);
        let (mut a, mut b) = (Local::default(), Local::default());
        let now = Instant::now();
        assert_eq!(
            r.union.add(0, key(1), a.add(1, key(1), Mode::Ticker)),
            Admission::Live
        );
        assert_eq!(
            r.union.add(1, key(2), b.add(1, key(2), Mode::Ticker)),
            Admission::Queued,
            "shard 1 waits for the slot shard 0 holds"
        );
        assert!(r.union.sync(0, now).is_empty());
        assert!(r.union.take_promoted(1).is_empty());
        r.union.remove(0, key(1), a.remove(1, key(1)));
        // Grace zero: the first sync starts it, a later one ends it.
        r.union.sync(0, now);
        let later = now + Duration::from_millis(1);
        assert!(r.union.due(later), "the grace's end is due");
        assert!(r.union.sync(0, later).is_empty(), "shard 0 holds nothing");
        assert_eq!(r.union.take_promoted(1), vec![key(2)], "shard 1 is told");
        assert!(r.union.take_promoted(1).is_empty(), "once");
    }
}
