//! Who wants which instrument, in which mode, and what the upstream must be
//! told: the subscription union with reference counts.
//!
//! An instrument is subscribed upstream when its first client wants it, in
//! the highest mode any client holds; the mode drops back as soon as that
//! client leaves. When the last client leaves, the upstream unsubscribe waits
//! a grace period, so a dashboard that reloads (or a bot that reconnects)
//! does not churn DhanHQ subscriptions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::book::Update;
use crate::domain::{InstrumentKey, Mode};

/// A client, by its connection slot.
pub type ClientId = usize;

/// One instrument's subscribers.
#[derive(Debug, Default)]
pub struct Topic {
    /// Each subscribed client with its mode.
    pub subscribers: Vec<(ClientId, Mode)>,
    /// The latest update seen, for snapshot-on-subscribe.
    pub last: Option<Update>,
    upstream: Option<Mode>,
    unsubscribe_at: Option<Instant>,
}

impl Topic {
    fn wanted(&self) -> Option<Mode> {
        self.subscribers.iter().map(|(_, m)| *m).max()
    }

    /// The mode the upstream holds it in, if any.
    pub fn upstream_mode(&self) -> Option<Mode> {
        self.upstream
    }
}

/// Upstream subscription changes to send.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Subscribe, or change mode.
    pub subscribe: Vec<(InstrumentKey, Mode)>,
    /// Unsubscribe.
    pub unsubscribe: Vec<InstrumentKey>,
}

impl Changes {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// Every instrument any client holds, plus those held upstream on behalf of
/// the relay itself (the watchlist, as client [`Topics::RELAY`]).
#[derive(Debug)]
pub struct Topics {
    topics: HashMap<InstrumentKey, Topic>,
    dirty: Vec<InstrumentKey>,
    grace: Duration,
}

impl Topics {
    /// The relay's own subscriber id (watchlist); never a connection slot.
    pub const RELAY: ClientId = usize::MAX;

    /// Empty, with `grace` before an unwanted instrument is dropped upstream.
    pub fn new(grace: Duration) -> Self {
        Topics {
            topics: HashMap::new(),
            dirty: Vec::new(),
            grace,
        }
    }

    /// The topic for `key`, if anyone holds or held it recently.
    pub fn get(&self, key: &InstrumentKey) -> Option<&Topic> {
        self.topics.get(key)
    }

    /// The topic for `key`, mutable (for recording updates).
    pub fn get_mut(&mut self, key: &InstrumentKey) -> Option<&mut Topic> {
        self.topics.get_mut(key)
    }

    /// Every topic.
    pub fn iter(&self) -> impl Iterator<Item = (&InstrumentKey, &Topic)> {
        self.topics.iter()
    }

    /// `client` wants `key` in `mode` (new, or a mode change).
    pub fn add(&mut self, client: ClientId, key: InstrumentKey, mode: Mode) {
        let topic = self.topics.entry(key).or_default();
        match topic.subscribers.iter_mut().find(|(c, _)| *c == client) {
            Some(entry) => entry.1 = mode,
            None => topic.subscribers.push((client, mode)),
        }
        self.dirty.push(key);
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

    /// Removes `client` from every topic (recovery path; O(topics)).
    pub fn remove_client(&mut self, client: ClientId) {
        for (key, topic) in self.topics.iter_mut() {
            let before = topic.subscribers.len();
            topic.subscribers.retain(|(c, _)| *c != client);
            if topic.subscribers.len() != before {
                self.dirty.push(*key);
            }
        }
    }

    /// What the upstream must be told now. Unsubscribes wait out the grace
    /// period; call again by [`Topics::next_deadline`].
    pub fn take_changes(&mut self, now: Instant) -> Changes {
        let mut changes = Changes::default();
        let mut check: Vec<InstrumentKey> = std::mem::take(&mut self.dirty);
        check.extend(
            self.topics
                .iter()
                .filter(|(_, t)| t.unsubscribe_at.is_some_and(|at| at <= now))
                .map(|(k, _)| *k),
        );
        check.sort();
        check.dedup();
        for key in check {
            let Some(topic) = self.topics.get_mut(&key) else {
                continue;
            };
            match (topic.wanted(), topic.upstream) {
                (Some(want), held) => {
                    topic.unsubscribe_at = None;
                    if held != Some(want) {
                        topic.upstream = Some(want);
                        changes.subscribe.push((key, want));
                    }
                }
                (None, None) => {
                    self.topics.remove(&key);
                }
                (None, Some(_)) => match topic.unsubscribe_at {
                    None => topic.unsubscribe_at = Some(now + self.grace),
                    Some(at) if at <= now => {
                        changes.unsubscribe.push(key);
                        self.topics.remove(&key);
                    }
                    Some(_) => {}
                },
            }
        }
        changes
    }

    /// When a pending unsubscribe falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.topics.values().filter_map(|t| t.unsubscribe_at).min()
    }

    /// Instruments subscribed upstream, with their mode and client count.
    pub fn active(&self) -> Vec<(InstrumentKey, Mode, usize)> {
        let mut v: Vec<_> = self
            .topics
            .iter()
            .filter_map(|(k, t)| {
                let clients = t
                    .subscribers
                    .iter()
                    .filter(|(c, _)| *c != Self::RELAY)
                    .count();
                t.upstream.map(|m| (*k, m, clients))
            })
            .collect();
        v.sort();
        v
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
        let mut t = Topics::new(GRACE);
        let now = Instant::now();
        t.add(1, key(1), Mode::Ticker);
        t.add(2, key(1), Mode::Ticker);
        assert_eq!(
            t.take_changes(now),
            Changes {
                subscribe: vec![(key(1), Mode::Ticker)],
                unsubscribe: vec![]
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
                subscribe: vec![],
                unsubscribe: vec![key(1)]
            }
        );
        assert!(t.get(&key(1)).is_none());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_return_within_the_grace_period_keeps_the_subscription() {
        let mut t = Topics::new(GRACE);
        let now = Instant::now();
        t.add(1, key(1), Mode::Quote);
        t.take_changes(now);
        t.remove(1, key(1));
        t.take_changes(now);
        t.add(3, key(1), Mode::Quote);
        assert!(t.take_changes(now + GRACE).is_empty());
        assert_eq!(t.active(), vec![(key(1), Mode::Quote, 1)]);
    }

    #[test]
    fn mode_follows_the_highest_holder_up_and_down() {
        let mut t = Topics::new(GRACE);
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
        let mut t = Topics::new(GRACE);
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
}
