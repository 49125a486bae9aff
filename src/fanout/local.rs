//! One fanout shard's own index: which of its clients hold which
//! instrument, in which mode, and the latest update it saw for each. The
//! hot path ([`super::pump`]) reads only this, so delivering a tick takes
//! no lock and touches no other shard's memory.
//!
//! Every shard gets every update, so the latest one is kept for any
//! instrument that ticks, held by this shard's clients or not (the
//! watchlist, a chain, another shard's client): a client that subscribes
//! gets it at once, fresher than the book thread's snapshot, which trails
//! by up to its publication interval. An instrument none of this shard's
//! clients holds is forgotten once it has been quiet for [`QUIET`]; by then
//! the book's snapshot has its state.
//!
//! What the upstream must be told is the [`super::union::Union`]'s
//! business: a shard stands there as one holder per instrument, in the
//! highest mode any of its clients holds. [`Local::add`] and
//! [`Local::remove`] say when that changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::book::Update;
use crate::domain::{InstrumentKey, Mode};

use super::topics::ClientId;

/// How long an instrument no client of this shard holds keeps its latest
/// update here after it last ticked.
pub const QUIET: Duration = Duration::from_secs(2);

/// One instrument's subscribers on this shard.
#[derive(Debug)]
pub struct LocalTopic {
    /// Each subscribed client with its mode.
    pub subscribers: Vec<(ClientId, Mode)>,
    /// The latest update seen, for snapshot-on-subscribe.
    pub last: Option<Update>,
    /// When it last ticked (the loop turn's time).
    seen: Instant,
}

impl LocalTopic {
    fn new(seen: Instant) -> LocalTopic {
        LocalTopic {
            subscribers: Vec::new(),
            last: None,
            seen,
        }
    }
}

impl LocalTopic {
    fn wanted(&self) -> Option<Mode> {
        self.subscribers.iter().map(|(_, m)| *m).max()
    }
}

/// What one [`Local::add`] or [`Local::remove`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The client's holding was new (add) or existed (remove).
    pub changed: bool,
    /// The shard's mode for the instrument after the call (`None`: no
    /// client of this shard holds it any more).
    pub shard_mode: Option<Mode>,
}

/// The shard's subscribers, by instrument, on the main and depth feeds.
#[derive(Debug, Default)]
pub struct Local {
    topics: HashMap<InstrumentKey, LocalTopic>,
    depth: HashMap<InstrumentKey, Vec<ClientId>>,
}

impl Local {
    /// `key`'s subscribers on this shard.
    pub fn get(&self, key: &InstrumentKey) -> Option<&LocalTopic> {
        self.topics.get(key)
    }

    /// `key` ticked at `now`: its entry, for the pump to record the update
    /// and find the subscribers (an allocation only for an instrument
    /// first seen, or seen again after [`Local::sweep`] forgot it).
    #[inline]
    pub fn seen(&mut self, key: InstrumentKey, now: Instant) -> &mut LocalTopic {
        let topic = self
            .topics
            .entry(key)
            .or_insert_with(|| LocalTopic::new(now));
        topic.seen = now;
        topic
    }

    /// Forgets the instruments no client of this shard holds that have not
    /// ticked for [`QUIET`] (once a second: one pass over the entries).
    pub fn sweep(&mut self, now: Instant) {
        self.topics.retain(|_, t| {
            !t.subscribers.is_empty() || now.saturating_duration_since(t.seen) < QUIET
        });
    }

    /// `client` holds `key` in `mode` (new, or a mode change).
    pub fn add(&mut self, client: ClientId, key: InstrumentKey, mode: Mode) -> Held {
        let topic = self
            .topics
            .entry(key)
            .or_insert_with(|| LocalTopic::new(Instant::now()));
        let changed = match topic.subscribers.iter_mut().find(|(c, _)| *c == client) {
            Some(entry) => {
                entry.1 = mode;
                false
            }
            None => {
                topic.subscribers.push((client, mode));
                true
            }
        };
        Held {
            changed,
            shard_mode: topic.wanted(),
        }
    }

    /// `client` lets go of `key` (its entry stays, for [`Local::sweep`]).
    pub fn remove(&mut self, client: ClientId, key: InstrumentKey) -> Held {
        let Some(topic) = self.topics.get_mut(&key) else {
            return Held {
                changed: false,
                shard_mode: None,
            };
        };
        let before = topic.subscribers.len();
        topic.subscribers.retain(|(c, _)| *c != client);
        Held {
            changed: topic.subscribers.len() != before,
            shard_mode: topic.wanted(),
        }
    }

    /// Every instrument `client` holds on the main feed (the recovery path
    /// after a panic, when its session's own list cannot be trusted;
    /// O(instruments)).
    pub fn held_by(&self, client: ClientId) -> Vec<InstrumentKey> {
        self.topics
            .iter()
            .filter(|(_, t)| t.subscribers.iter().any(|(c, _)| *c == client))
            .map(|(k, _)| *k)
            .collect()
    }

    /// `key`'s `depth20` subscribers on this shard.
    pub fn depth(&self, key: &InstrumentKey) -> Option<&[ClientId]> {
        self.depth.get(key).map(Vec::as_slice)
    }

    /// `client` wants `key`'s 20-level book; true if it is the shard's
    /// first.
    pub fn add_depth(&mut self, client: ClientId, key: InstrumentKey) -> bool {
        let subscribers = self.depth.entry(key).or_default();
        if !subscribers.contains(&client) {
            subscribers.push(client);
        }
        subscribers.len() == 1
    }

    /// `client` no longer wants it; true if it was the shard's last.
    pub fn remove_depth(&mut self, client: ClientId, key: InstrumentKey) -> bool {
        let Some(subscribers) = self.depth.get_mut(&key) else {
            return false;
        };
        let before = subscribers.len();
        subscribers.retain(|c| *c != client);
        let last = before > 0 && subscribers.is_empty();
        if subscribers.is_empty() {
            self.depth.remove(&key);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;

    fn key(i: u32) -> InstrumentKey {
        InstrumentKey::new(Segment::NseEq, i)
    }

    #[test]
    fn the_shard_mode_is_its_highest_client_mode() {
        let mut l = Local::default();
        let a = l.add(1, key(1), Mode::Ticker);
        assert_eq!((a.changed, a.shard_mode), (true, Some(Mode::Ticker)));
        let b = l.add(2, key(1), Mode::Full);
        assert_eq!((b.changed, b.shard_mode), (true, Some(Mode::Full)));
        // A mode change is not a new holding.
        let c = l.add(2, key(1), Mode::Quote);
        assert_eq!((c.changed, c.shard_mode), (false, Some(Mode::Quote)));
        let d = l.remove(2, key(1));
        assert_eq!((d.changed, d.shard_mode), (true, Some(Mode::Ticker)));
        let e = l.remove(1, key(1));
        assert_eq!((e.changed, e.shard_mode), (true, None));
        let f = l.remove(1, key(1));
        assert!(!f.changed, "removing what was not held changes nothing");
    }

    #[test]
    fn the_latest_update_outlives_the_subscribers_until_the_instrument_is_quiet() {
        let mut l = Local::default();
        let t0 = Instant::now();
        // Held by nobody here (the watchlist, say), it still ticks.
        l.seen(key(1), t0).last = Some(Update {
            kind: crate::book::UpdateKind::Ticker,
            state: crate::book::InstrumentState::new(key(1)),
        });
        l.add(1, key(2), Mode::Ticker);
        l.seen(key(2), t0);
        l.sweep(t0 + QUIET / 2);
        assert!(l.get(&key(1)).is_some_and(|t| t.last.is_some()));
        // Quiet for long enough: forgotten, unless a client holds it.
        l.sweep(t0 + QUIET);
        assert!(l.get(&key(1)).is_none());
        assert!(l.get(&key(2)).is_some());
        l.remove(1, key(2));
        l.sweep(t0 + QUIET);
        assert!(l.get(&key(2)).is_none());
    }

    #[test]
    fn held_by_finds_every_holding_of_a_client() {
        let mut l = Local::default();
        l.add(1, key(1), Mode::Ticker);
        l.add(1, key(2), Mode::Ticker);
        l.add(2, key(3), Mode::Ticker);
        let mut held = l.held_by(1);
        held.sort_unstable();
        assert_eq!(held, vec![key(1), key(2)]);
    }

    #[test]
    fn depth_reports_the_first_and_the_last_subscriber() {
        let mut l = Local::default();
        assert!(l.add_depth(1, key(1)));
        assert!(!l.add_depth(2, key(1)));
        assert!(!l.add_depth(2, key(1)), "twice is once");
        assert_eq!(l.depth(&key(1)), Some(&[1, 2][..]));
        assert!(!l.remove_depth(1, key(1)));
        assert!(l.remove_depth(2, key(1)));
        assert!(!l.remove_depth(2, key(1)), "not held: not the last");
        assert!(l.depth(&key(1)).is_none());
    }
}
