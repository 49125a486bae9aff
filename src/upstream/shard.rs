//! Which instrument rides on which upstream connection, and what each live
//! connection still has to be told.
//!
//! DhanHQ allows a few connections per account and a few thousand
//! instruments per connection. Instruments fill the lowest connection first,
//! so the relay holds as few of the account's connections as it can. Each
//! slot keeps two maps: what the relay `wanted` on it, and what was `sent` to
//! the connection that is up now. Requests are the difference between the
//! two, so a reconnect (which clears `sent`) resubscribes everything exactly
//! once, and a change while disconnected is sent once on reconnect.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{InstrumentKey, Mode};
use crate::wire::request::{encode_subscription, RequestCode};

/// Every connection is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoCapacity;

#[derive(Debug, Default)]
struct Slot {
    wanted: BTreeMap<InstrumentKey, Mode>,
    sent: BTreeMap<InstrumentKey, Mode>,
}

/// The assignment of instruments to connection slots.
#[derive(Debug)]
pub struct Shards {
    slots: Vec<Slot>,
    slot_of: HashMap<InstrumentKey, usize>,
    per_slot: usize,
}

impl Shards {
    /// `slots` connections of at most `per_slot` instruments each.
    pub fn new(slots: usize, per_slot: usize) -> Self {
        Shards {
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
            slot_of: HashMap::new(),
            per_slot: per_slot.max(1),
        }
    }

    /// Wants `key` in `mode`; returns its slot. A known instrument keeps its
    /// slot and changes mode; a new one goes to the lowest slot with room.
    pub fn set(&mut self, key: InstrumentKey, mode: Mode) -> Result<usize, NoCapacity> {
        let slot = match self.slot_of.get(&key) {
            Some(&slot) => slot,
            None => {
                let slot = self
                    .slots
                    .iter()
                    .position(|s| s.wanted.len() < self.per_slot)
                    .ok_or(NoCapacity)?;
                self.slot_of.insert(key, slot);
                slot
            }
        };
        self.slots[slot].wanted.insert(key, mode);
        Ok(slot)
    }

    /// No longer wants `key`; returns the slot it was on.
    pub fn remove(&mut self, key: InstrumentKey) -> Option<usize> {
        let slot = self.slot_of.remove(&key)?;
        self.slots[slot].wanted.remove(&key);
        Some(slot)
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: there is at least one slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Instruments wanted on `slot`.
    pub fn wanted(&self, slot: usize) -> usize {
        self.slots[slot].wanted.len()
    }

    /// Most instruments per slot.
    pub fn per_slot(&self) -> usize {
        self.per_slot
    }

    /// Most instruments over all slots.
    pub fn capacity(&self) -> usize {
        self.slots.len() * self.per_slot
    }

    /// Instruments wanted in total.
    pub fn total(&self) -> usize {
        self.slot_of.len()
    }

    /// The connection on `slot` went down: nothing is subscribed there now.
    pub fn connection_lost(&mut self, slot: usize) {
        self.slots[slot].sent.clear();
    }

    /// The JSON requests that bring `slot`'s live connection from what it was
    /// sent to what is wanted, unsubscribes first; marks them as sent.
    pub fn sync(&mut self, slot: usize) -> Vec<String> {
        let Slot { wanted, sent } = &mut self.slots[slot];
        let mut unsubscribe: BTreeMap<Mode, Vec<InstrumentKey>> = BTreeMap::new();
        let mut subscribe: BTreeMap<Mode, Vec<InstrumentKey>> = BTreeMap::new();
        for (key, &old) in sent.iter() {
            if wanted.get(key) != Some(&old) {
                // Gone, or changing mode: DhanHQ does not document whether a
                // second subscribe replaces the first mode, so drop the old
                // one explicitly.
                unsubscribe.entry(old).or_default().push(*key);
            }
        }
        for (key, &mode) in wanted.iter() {
            if sent.get(key) != Some(&mode) {
                subscribe.entry(mode).or_default().push(*key);
            }
        }
        *sent = wanted.clone();
        let unsubs = unsubscribe
            .into_iter()
            .map(|(mode, keys)| (RequestCode::unsubscribe(mode), keys));
        let subs = subscribe
            .into_iter()
            .map(|(mode, keys)| (RequestCode::subscribe(mode), keys));
        unsubs
            .chain(subs)
            .flat_map(|(code, keys)| {
                // Main-feed codes never fail to encode.
                encode_subscription(code, &keys).unwrap_or_default()
            })
            .collect()
    }

    /// [`Shards::sync`] for the 20-level depth feed, where an instrument
    /// has no mode: RequestCode 24 for what went (the SDK's code; see
    /// docs/dhanhq-protocol.md), then 23 for what came, 50 per message.
    pub fn sync_depth(&mut self, slot: usize) -> Vec<String> {
        let Slot { wanted, sent } = &mut self.slots[slot];
        let gone: Vec<InstrumentKey> = sent
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        let came: Vec<InstrumentKey> = wanted
            .keys()
            .filter(|k| !sent.contains_key(k))
            .copied()
            .collect();
        *sent = wanted.clone();
        // Only NSE_EQ and NSE_FNO are ever wanted here (the fanout checks);
        // anything else would fail to encode and is dropped.
        let mut out = encode_subscription(RequestCode::UnsubscribeDepth, &gone).unwrap_or_default();
        out.extend(encode_subscription(RequestCode::SubscribeDepth, &came).unwrap_or_default());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::wire::request::parse;

    fn key(i: u32) -> InstrumentKey {
        InstrumentKey::new(Segment::NseFno, i)
    }

    fn decoded(reqs: &[String]) -> Vec<(u8, usize)> {
        reqs.iter()
            .map(|r| {
                let r = parse(r).unwrap();
                (r.code.code(), r.instruments.len())
            })
            .collect()
    }

    #[test]
    fn fills_the_lowest_slot_first() {
        let mut s = Shards::new(5, 3);
        let slots: Vec<_> = (0..7)
            .map(|i| s.set(key(i), Mode::Ticker).unwrap())
            .collect();
        assert_eq!(slots, vec![0, 0, 0, 1, 1, 1, 2]);
        assert_eq!(
            s.set(key(1), Mode::Full),
            Ok(0),
            "mode change keeps the slot"
        );
        assert_eq!(s.remove(key(0)), Some(0));
        assert_eq!(s.set(key(100), Mode::Ticker), Ok(0), "freed room is reused");
        assert_eq!(s.total(), 7);
    }

    #[test]
    fn refuses_past_capacity() {
        let mut s = Shards::new(2, 2);
        for i in 0..4 {
            s.set(key(i), Mode::Ticker).unwrap();
        }
        assert_eq!(s.set(key(9), Mode::Ticker), Err(NoCapacity));
        assert_eq!((s.total(), s.capacity()), (4, 4));
    }

    #[test]
    fn six_thousand_over_five_thousand_per_connection_use_two() {
        let mut s = Shards::new(5, 5000);
        for i in 0..6000 {
            s.set(key(i), Mode::Quote).unwrap();
        }
        assert_eq!((s.wanted(0), s.wanted(1), s.wanted(2)), (5000, 1000, 0));
        assert_eq!(s.sync(0).len(), 50);
        assert_eq!(s.sync(1).len(), 10);
        assert!(s.sync(2).is_empty());
    }

    #[test]
    fn sync_sends_only_the_difference_and_resends_after_a_loss() {
        let mut s = Shards::new(1, 100);
        for i in 0..150 {
            s.set(key(i), Mode::Ticker).unwrap_or(0);
        }
        assert_eq!(decoded(&s.sync(0)), vec![(15, 100)]);
        assert!(s.sync(0).is_empty(), "nothing twice");

        s.set(key(1), Mode::Full).unwrap();
        s.remove(key(2));
        assert_eq!(decoded(&s.sync(0)), vec![(16, 2), (21, 1)]);

        s.connection_lost(0);
        assert_eq!(decoded(&s.sync(0)), vec![(15, 98), (21, 1)]);
    }

    #[test]
    fn depth_sync_sends_23_and_24_fifty_per_message() {
        let mut s = Shards::new(2, 50);
        for i in 0..60 {
            s.set(key(i), Mode::Full).unwrap();
        }
        assert_eq!(decoded(&s.sync_depth(0)), vec![(23, 50)]);
        assert_eq!(decoded(&s.sync_depth(1)), vec![(23, 10)]);
        s.remove(key(55));
        assert_eq!(decoded(&s.sync_depth(1)), vec![(24, 1)]);
        assert!(s.sync_depth(1).is_empty());
    }

    #[test]
    fn changes_while_down_are_sent_once_on_reconnect() {
        let mut s = Shards::new(1, 10);
        s.set(key(1), Mode::Ticker).unwrap();
        s.sync(0);
        s.connection_lost(0);
        s.remove(key(1));
        s.set(key(2), Mode::Quote).unwrap();
        assert_eq!(decoded(&s.sync(0)), vec![(17, 1)]);
    }
}
