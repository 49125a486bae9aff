//! Who wants which instrument, in which mode, and what the upstream must be
//! told: the subscription union with reference counts, within the
//! account's capacity.
//!
//! The holders ([`ClientId`]) are the fanout shards (each standing for its
//! own clients, see [`super::union`]), the watchlist ([`Topics::RELAY`]) and
//! the option chains; unit tests use them as clients.
//!
//! An instrument is subscribed upstream when its first client wants it, in
//! the highest mode any client holds; the mode drops back as soon as that
//! client leaves. When the last client leaves, the upstream unsubscribe waits
//! a grace period, so a dashboard that reloads (or a bot that reconnects)
//! does not churn DhanHQ subscriptions.
//!
//! Capacity: DhanHQ allows an account `connections × instruments per
//! connection` (5 × 5,000). An instrument wanted while every slot is taken
//! is **queued**, not refused: the caller tells the client, and the queue
//! is served first-come first-served as slots free up (an instrument's
//! slot frees when its grace period ends).
//!
//! Work is driven by what changed: [`Topics::take_changes`] looks only at
//! instruments touched since the last call and at grace periods that fell
//! due (a deadline heap), never at every topic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::domain::{InstrumentKey, Mode};

/// A holder: a connection slot within a shard, a shard in the union, the
/// watchlist or a chain.
pub type ClientId = usize;

/// One instrument's subscribers.
#[derive(Debug, Default)]
pub struct Topic {
    /// Each holder with its mode.
    pub subscribers: Vec<(ClientId, Mode)>,
    /// The mode held upstream (the subscribe was sent).
    upstream: Option<Mode>,
    /// Counted against capacity (subscribed, or about to be).
    holds_slot: bool,
    /// Waiting for capacity.
    queued: bool,
    unsubscribe_at: Option<Instant>,
}

impl Topic {
    fn wanted(&self) -> Option<Mode> {
        self.subscribers.iter().map(|(_, m)| *m).max()
    }
}

/// Whether an instrument a client just asked for will flow now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Subscribed (or already held) upstream.
    Live,
    /// Every upstream slot is taken: waiting in the queue.
    Queued,
}

/// Upstream subscription changes to send.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Subscribe, or change mode.
    pub subscribe: Vec<(InstrumentKey, Mode)>,
    /// Unsubscribe.
    pub unsubscribe: Vec<InstrumentKey>,
    /// Queued instruments that got a slot in this call.
    pub promoted: Vec<InstrumentKey>,
}

impl Changes {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// One row of `/api/v2/subscriptions/active`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ActiveSub {
    /// The instrument.
    pub key: InstrumentKey,
    /// The mode held upstream, or wanted while queued.
    pub mode: Mode,
    /// Clients holding it (the watchlist not counted).
    pub clients: usize,
    /// Waiting for upstream capacity.
    pub queued: bool,
}

/// Every instrument any client holds, plus those held upstream on behalf of
/// the relay itself (the watchlist, as client [`Topics::RELAY`]).
#[derive(Debug)]
pub struct Topics {
    topics: HashMap<InstrumentKey, Topic>,
    dirty: Vec<InstrumentKey>,
    deadlines: BinaryHeap<Reverse<(Instant, InstrumentKey)>>,
    queue: VecDeque<InstrumentKey>,
    grace: Duration,
    capacity: usize,
    held: usize,
    queued: usize,
}

impl Topics {
    /// The relay's own subscriber id (watchlist); never a connection slot.
    pub const RELAY: ClientId = usize::MAX;

    /// Empty, with `grace` before an unwanted instrument is dropped upstream
    /// and room for `capacity` instruments upstream.
    pub fn new(grace: Duration, capacity: usize) -> Self {
        Topics {
            topics: HashMap::new(),
            dirty: Vec::new(),
            deadlines: BinaryHeap::new(),
            queue: VecDeque::new(),
            grace,
            capacity,
            held: 0,
            queued: 0,
        }
    }

    /// The topic for `key`, if anyone holds or held it recently.
    pub fn get(&self, key: &InstrumentKey) -> Option<&Topic> {
        self.topics.get(key)
    }

    /// Instruments counted against capacity, and instruments queued.
    pub fn load(&self) -> (usize, usize) {
        (self.held, self.queued)
    }

    /// `client` wants `key` in `mode` (new, or a mode change).
    pub fn add(&mut self, client: ClientId, key: InstrumentKey, mode: Mode) -> Admission {
        let topic = self.topics.entry(key).or_default();
        match topic.subscribers.iter_mut().find(|(c, _)| *c == client) {
            Some(entry) => entry.1 = mode,
            None => topic.subscribers.push((client, mode)),
        }
        self.dirty.push(key);
        if topic.queued {
            return Admission::Queued;
        }
        if !topic.holds_slot {
            if self.held >= self.capacity {
                topic.queued = true;
                self.queued += 1;
                self.queue.push_back(key);
                return Admission::Queued;
            }
            topic.holds_slot = true;
            self.held += 1;
        }
        Admission::Live
    }

    /// `client` no longer wants `key`; true if it held it.
    pub fn remove(&mut self, client: ClientId, key: InstrumentKey) -> bool {
        let Some(topic) = self.topics.get_mut(&key) else {
            return false;
        };
        let before = topic.subscribers.len();
        topic.subscribers.retain(|(c, _)| *c != client);
        let removed = topic.subscribers.len() != before;
        if removed {
            self.dirty.push(key);
        }
        removed
    }

    /// What the upstream must be told now: instruments touched since the
    /// last call, grace periods that ended, queued instruments that got a
    /// slot. Call again by [`Topics::next_deadline`].
    pub fn take_changes(&mut self, now: Instant) -> Changes {
        let mut changes = Changes::default();
        let mut check = std::mem::take(&mut self.dirty);
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            check.push(key);
        }
        check.sort_unstable();
        check.dedup();
        for key in check {
            let Some(topic) = self.topics.get_mut(&key) else {
                continue;
            };
            match topic.wanted() {
                Some(_) if topic.queued => {}
                Some(want) => {
                    topic.unsubscribe_at = None;
                    if topic.upstream != Some(want) {
                        topic.upstream = Some(want);
                        changes.subscribe.push((key, want));
                    }
                }
                None if topic.queued => {
                    // Left in the queue; skipped when it comes up.
                    self.queued -= 1;
                    self.topics.remove(&key);
                }
                None if topic.upstream.is_none() => {
                    // Added and dropped before the subscribe went out.
                    self.release(key);
                }
                None => match topic.unsubscribe_at {
                    None => {
                        let at = now + self.grace;
                        topic.unsubscribe_at = Some(at);
                        self.deadlines.push(Reverse((at, key)));
                    }
                    Some(at) if at <= now => {
                        changes.unsubscribe.push(key);
                        self.release(key);
                    }
                    Some(_) => {}
                },
            }
        }
        self.promote(&mut changes);
        changes
    }

    /// Frees `key`'s slot and forgets it.
    fn release(&mut self, key: InstrumentKey) {
        if let Some(t) = self.topics.remove(&key) {
            if t.holds_slot {
                self.held -= 1;
            }
        }
    }

    /// Gives free slots to queued instruments, oldest first.
    fn promote(&mut self, changes: &mut Changes) {
        while self.held < self.capacity {
            let Some(key) = self.queue.pop_front() else {
                return;
            };
            let Some(topic) = self.topics.get_mut(&key) else {
                continue; // nobody wants it any more
            };
            let Some(want) = topic.wanted().filter(|_| topic.queued) else {
                continue;
            };
            topic.queued = false;
            topic.holds_slot = true;
            topic.upstream = Some(want);
            self.queued -= 1;
            self.held += 1;
            changes.subscribe.push((key, want));
            changes.promoted.push(key);
        }
    }

    /// When a pending unsubscribe falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Instruments held upstream or queued, sorted, with their mode and
    /// client count.
    pub fn active(&self) -> Vec<ActiveSub> {
        let mut v: Vec<ActiveSub> = self
            .topics
            .iter()
            .filter_map(|(k, t)| {
                let clients = t
                    .subscribers
                    .iter()
                    .filter(|(c, _)| *c != Self::RELAY)
                    .count();
                let mode = if t.queued { t.wanted() } else { t.upstream }?;
                Some(ActiveSub {
                    key: *k,
                    mode,
                    clients,
                    queued: t.queued,
                })
            })
            .collect();
        v.sort_unstable();
        v
    }
}

/// Who wants which instrument's 20-level book: the depth feed's
/// subscription union. No modes and no queue: an instrument is subscribed
/// on the depth feed when its first `depth20` client comes and unsubscribed
/// after the same grace as the main feed when its last one leaves; the
/// network thread opens depth connections while any instrument is wanted
/// and closes them when none is.
#[derive(Debug)]
pub struct DepthTopics {
    topics: HashMap<InstrumentKey, DepthTopic>,
    dirty: Vec<InstrumentKey>,
    deadlines: BinaryHeap<Reverse<(Instant, InstrumentKey)>>,
    grace: Duration,
}

/// One instrument's `depth20` subscribers.
#[derive(Debug, Default)]
pub struct DepthTopic {
    /// The clients holding it.
    pub subscribers: Vec<ClientId>,
    upstream: bool,
    unsubscribe_at: Option<Instant>,
}

/// Depth-feed subscription changes to send.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DepthChanges {
    /// Subscribe (RequestCode 23).
    pub subscribe: Vec<InstrumentKey>,
    /// Unsubscribe (RequestCode 24).
    pub unsubscribe: Vec<InstrumentKey>,
}

impl DepthTopics {
    /// Empty, with `grace` before an unwanted instrument is dropped.
    pub fn new(grace: Duration) -> Self {
        DepthTopics {
            topics: HashMap::new(),
            dirty: Vec::new(),
            deadlines: BinaryHeap::new(),
            grace,
        }
    }

    /// The topic for `key`.
    pub fn get(&self, key: &InstrumentKey) -> Option<&DepthTopic> {
        self.topics.get(key)
    }

    /// `client` wants `key`'s 20-level book.
    pub fn add(&mut self, client: ClientId, key: InstrumentKey) {
        let topic = self.topics.entry(key).or_default();
        if !topic.subscribers.contains(&client) {
            topic.subscribers.push(client);
        }
        self.dirty.push(key);
    }

    /// `client` no longer wants it; true if it held it.
    pub fn remove(&mut self, client: ClientId, key: InstrumentKey) -> bool {
        let Some(topic) = self.topics.get_mut(&key) else {
            return false;
        };
        let before = topic.subscribers.len();
        topic.subscribers.retain(|c| *c != client);
        let removed = topic.subscribers.len() != before;
        if removed {
            self.dirty.push(key);
        }
        removed
    }

    /// Instruments held on the depth feed (or about to be).
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// No instrument held.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// What the depth feed must be told now (see [`Topics::take_changes`]).
    pub fn take_changes(&mut self, now: Instant) -> DepthChanges {
        let mut changes = DepthChanges::default();
        let mut check = std::mem::take(&mut self.dirty);
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            check.push(key);
        }
        check.sort_unstable();
        check.dedup();
        for key in check {
            let Some(topic) = self.topics.get_mut(&key) else {
                continue;
            };
            if !topic.subscribers.is_empty() {
                topic.unsubscribe_at = None;
                if !topic.upstream {
                    topic.upstream = true;
                    changes.subscribe.push(key);
                }
            } else if !topic.upstream {
                self.topics.remove(&key);
            } else {
                match topic.unsubscribe_at {
                    None => {
                        let at = now + self.grace;
                        topic.unsubscribe_at = Some(at);
                        self.deadlines.push(Reverse((at, key)));
                    }
                    Some(at) if at <= now => {
                        changes.unsubscribe.push(key);
                        self.topics.remove(&key);
                    }
                    Some(_) => {}
                }
            }
        }
        changes
    }

    /// When a pending unsubscribe falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;

    const GRACE: Duration = Duration::from_secs(2);

    fn key(i: u32) -> InstrumentKey {
        InstrumentKey::new(Segment::NseEq, i)
    }

    #[test]
    fn two_clients_one_instrument_one_upstream_subscription() {
        let mut t = Topics::new(GRACE, 100);
        let now = Instant::now();
        t.add(1, key(1), Mode::Ticker);
        t.add(2, key(1), Mode::Ticker);
        assert_eq!(
            t.take_changes(now),
            Changes {
                subscribe: vec![(key(1), Mode::Ticker)],
                ..Changes::default()
            }
        );
        assert!(t.remove(1, key(1)));
        assert!(t.take_changes(now).is_empty(), "one client still holds it");
        assert!(t.remove(2, key(1)));
        assert!(t.take_changes(now).is_empty(), "grace period");
        assert_eq!(t.next_deadline(), Some(now + GRACE));
        assert_eq!(
            t.take_changes(now + GRACE),
            Changes {
                unsubscribe: vec![key(1)],
                ..Changes::default()
            }
        );
        assert!(t.get(&key(1)).is_none());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_return_within_the_grace_period_keeps_the_subscription() {
        let mut t = Topics::new(GRACE, 100);
        let now = Instant::now();
        t.add(1, key(1), Mode::Quote);
        t.take_changes(now);
        t.remove(1, key(1));
        t.take_changes(now);
        t.add(3, key(1), Mode::Quote);
        assert!(t.take_changes(now + GRACE).is_empty());
        assert_eq!(
            t.active(),
            vec![ActiveSub {
                key: key(1),
                mode: Mode::Quote,
                clients: 1,
                queued: false
            }]
        );
    }

    #[test]
    fn mode_follows_the_highest_holder_up_and_down() {
        let mut t = Topics::new(GRACE, 100);
        let now = Instant::now();
        t.add(1, key(1), Mode::Ticker);
        t.take_changes(now);
        t.add(2, key(1), Mode::Full);
        assert_eq!(t.take_changes(now).subscribe, vec![(key(1), Mode::Full)]);
        t.add(2, key(1), Mode::Quote);
        assert_eq!(t.take_changes(now).subscribe, vec![(key(1), Mode::Quote)]);
        t.remove(2, key(1));
        assert_eq!(t.take_changes(now).subscribe, vec![(key(1), Mode::Ticker)]);
    }

    #[test]
    fn removing_what_was_never_held_changes_nothing() {
        let mut t = Topics::new(GRACE, 100);
        assert!(!t.remove(1, key(9)));
        t.add(1, key(1), Mode::Ticker);
        assert!(!t.remove(2, key(1)));
        t.remove(1, key(1));
        assert!(
            t.take_changes(Instant::now()).is_empty(),
            "never reached upstream"
        );
        assert!(t.get(&key(1)).is_none());
    }

    #[test]
    fn past_capacity_instruments_queue_and_get_slots_as_they_free() {
        // Regression: instruments past the account's capacity used to be
        // refused upstream silently and never retried.
        let mut t = Topics::new(GRACE, 2);
        let now = Instant::now();
        assert_eq!(t.add(1, key(1), Mode::Ticker), Admission::Live);
        assert_eq!(t.add(1, key(2), Mode::Ticker), Admission::Live);
        assert_eq!(t.add(2, key(3), Mode::Quote), Admission::Queued);
        assert_eq!(t.add(3, key(3), Mode::Ticker), Admission::Queued);
        assert_eq!(t.add(2, key(4), Mode::Ticker), Admission::Queued);
        let c = t.take_changes(now);
        assert_eq!(
            c.subscribe,
            vec![(key(1), Mode::Ticker), (key(2), Mode::Ticker)]
        );
        assert_eq!(t.load(), (2, 2));
        assert!(t
            .active()
            .iter()
            .any(|a| a.key == key(3) && a.queued && a.clients == 2));
        // key(4) is abandoned while queued: it never takes a slot.
        t.remove(2, key(4));
        t.take_changes(now);
        assert_eq!(t.load(), (2, 1));
        // key(1) released: its slot frees when the grace period ends.
        t.remove(1, key(1));
        assert!(t.take_changes(now).is_empty());
        let c = t.take_changes(now + GRACE);
        assert_eq!(c.unsubscribe, vec![key(1)]);
        assert_eq!(
            c.subscribe,
            vec![(key(3), Mode::Quote)],
            "highest wanted mode"
        );
        assert_eq!(c.promoted, vec![key(3)]);
        assert_eq!(t.load(), (2, 0));
        assert_eq!(t.add(4, key(5), Mode::Ticker), Admission::Queued);
    }

    #[test]
    fn only_touched_and_due_topics_are_examined() {
        let mut t = Topics::new(GRACE, 10_000);
        let now = Instant::now();
        for i in 0..5_000 {
            t.add(1, key(i), Mode::Ticker);
        }
        assert_eq!(t.take_changes(now).subscribe.len(), 5_000);
        assert!(t.dirty.is_empty() && t.deadlines.is_empty());
        assert!(t.take_changes(now).is_empty());
        t.remove(1, key(7));
        t.take_changes(now);
        assert_eq!(t.next_deadline(), Some(now + GRACE));
        assert_eq!(
            t.deadlines.len(),
            1,
            "one pending unsubscribe, not 5,000 scans"
        );
        // A return within the grace leaves a stale deadline that changes nothing.
        t.add(2, key(7), Mode::Ticker);
        t.take_changes(now);
        assert!(t.take_changes(now + GRACE).is_empty());
        assert!(t.deadlines.is_empty());
    }

    #[test]
    fn depth_is_subscribed_once_and_dropped_after_the_grace() {
        let mut t = DepthTopics::new(GRACE);
        let now = Instant::now();
        t.add(1, key(1));
        t.add(2, key(1));
        assert_eq!(t.take_changes(now).subscribe, vec![key(1)]);
        t.remove(1, key(1));
        assert!(t.take_changes(now) == DepthChanges::default());
        t.remove(2, key(1));
        assert!(t.take_changes(now) == DepthChanges::default(), "grace");
        assert_eq!(t.next_deadline(), Some(now + GRACE));
        assert_eq!(t.take_changes(now + GRACE).unsubscribe, vec![key(1)]);
        assert!(t.is_empty());
    }

    #[test]
    fn an_instrument_added_and_dropped_in_one_turn_frees_its_slot() {
        let mut t = Topics::new(GRACE, 1);
        t.add(1, key(1), Mode::Ticker);
        t.remove(1, key(1));
        assert!(t.take_changes(Instant::now()).is_empty());
        assert_eq!(t.load(), (0, 0));
        assert_eq!(t.add(1, key(2), Mode::Ticker), Admission::Live);
    }
}
