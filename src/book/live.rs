//! The book on the network thread: one hop fewer.
//!
//! The network thread applies each tick to a [`Book`] of its own as soon as
//! it is decoded and hands the [`Update`] (the instrument's whole new state)
//! straight to the fanout, so a tick crosses one thread boundary (network →
//! fanout), not two. The book thread still gets every tick, on its own ring,
//! for what is not on the latency path: snapshots for REST and
//! snapshot-on-subscribe, market-status times, and 1-minute bars. Both books
//! apply the same ticks in the same order, so they agree; the book thread's
//! simply runs behind, by at most its snapshot interval.
//!
//! Per tick this costs the network thread one [`Book::apply`] (a hash
//! look-up and a copy) and one ring push; per loop turn one wake-up of the
//! fanout. Nothing is allocated after an instrument is first seen, and
//! nothing here waits but a full update ring (see [`crate::spsc`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use ringbuf::HeapProd;

use super::{Book, BookCommand, BookStats, Depth20, Notify, Update};
use crate::clock;
use crate::metrics::LatencyRecorder;
use crate::spsc::push_or_wait;
use crate::tick::{DepthTick, Tick};

/// The network thread's book and its ends of the fanout's rings. Made by
/// [`super::BookThread::live`].
pub struct LiveBook {
    pub(super) book: Book,
    pub(super) updates: HeapProd<Update>,
    pub(super) depth: HeapProd<Depth20>,
    /// Wakes the fanout.
    pub(super) notify: Notify,
    /// [`BookCommand`]s, also sent to the book thread.
    pub(super) commands: Receiver<BookCommand>,
    pub(super) stats: Arc<BookStats>,
    /// Network receive → applied and forwarded.
    pub(super) latency: LatencyRecorder,
    /// Updates forwarded since the fanout was last woken.
    pub(super) forwarded: u64,
    /// Wake the fanout at the end of this turn even without updates.
    pub(super) poke: bool,
}

impl std::fmt::Debug for LiveBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveBook")
    }
}

impl LiveBook {
    /// Applies one tick and forwards the update, if clients can see a
    /// change. Waits while the fanout's ring is full (waking the fanout);
    /// gives up only when `stop` is set or the fanout is gone.
    #[inline]
    pub fn apply(&mut self, tick: &Tick, stop: &AtomicBool) {
        let Some(update) = self.book.apply(tick) else {
            return;
        };
        self.latency
            .record(clock::now_ns().saturating_sub(tick.recv_ns));
        let LiveBook {
            updates,
            notify,
            stats,
            ..
        } = self;
        if push_or_wait(updates, update, &stats.ring_full_waits, stop, notify) {
            self.forwarded += 1;
        }
    }

    /// Applies one depth side packet and forwards the instrument's whole
    /// 20 + 20 rows, with the same waiting as [`LiveBook::apply`].
    pub fn apply_depth(&mut self, tick: &DepthTick, stop: &AtomicBool) {
        let d = self.book.apply_depth(tick);
        let LiveBook {
            depth,
            notify,
            stats,
            ..
        } = self;
        if push_or_wait(depth, d, &stats.ring_full_waits, stop, notify) {
            self.forwarded += 1;
        }
    }

    /// The end of a network loop turn: wakes the fanout once if anything
    /// was forwarded, applies [`BookCommand`]s (one empty-channel check),
    /// and publishes the latency histogram once a second.
    pub fn end_turn(&mut self) {
        if self.forwarded > 0 || std::mem::take(&mut self.poke) {
            (self.notify)();
            self.stats.updates.add(std::mem::take(&mut self.forwarded));
        }
        while let Ok(BookCommand::Remove(keys)) = self.commands.try_recv() {
            self.book.remove(&keys);
        }
        self.latency.maybe_publish(Instant::now());
    }

    /// Wakes the fanout at the end of this turn: an upstream connection
    /// came up or went down, which it announces to clients at once.
    pub fn poke_fanout(&mut self) {
        self.poke = true;
    }

    /// Publishes what the latency histogram holds (at shutdown).
    pub fn finish(&mut self) {
        self.latency.publish(Instant::now());
    }
}
