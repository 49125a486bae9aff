//! The book on the network thread: one hop fewer.
//!
//! The network thread applies each tick to a [`Book`] of its own as soon as
//! it is decoded and hands the [`Update`] (the instrument's whole new state)
//! straight to the fanout, so a tick crosses one thread boundary (network →
//! fanout), not two — none when both loops share a thread (`threads =
//! "compact"`). The book thread still gets every tick, on its own ring, for
//! what is not on the latency path: snapshots for REST and
//! snapshot-on-subscribe, market-status times, and 1-minute bars. Both books
//! apply the same ticks in the same order, so they agree; the book thread's
//! simply runs behind, by at most its snapshot interval.
//!
//! Per tick this costs the network thread one [`Book::apply`] (a hash
//! look-up and a copy) and one ring push per fanout shard ([`Outlet`]);
//! per loop turn one wake-up of each shard that got something (none in the
//! compact layout). Nothing is allocated after an instrument is first seen.
//!
//! A full fanout ring is never a silent drop. With the fanout on other
//! threads the network thread waits for the shard whose ring is full
//! ([`crate::spsc`]): so the slowest shard paces every shard, as a single
//! fanout loop paced itself, and nothing is lost. On the same
//! thread waiting would never end, so instead the update goes to a spill
//! queue, and the network loop reads no further frame until the fanout has
//! drained the ring below [`ROOM`] (see [`LiveBook::has_room`]): the spill
//! holds at most the rest of one frame, and pressure goes back to the
//! socket as before.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use ringbuf::traits::{Observer, Producer};
use ringbuf::HeapProd;

use super::{Book, BookCommand, BookStats, Depth20, Notify, Update};
use crate::clock;
use crate::metrics::{Counter, LatencyRecorder};
use crate::spsc::push_or_wait;
use crate::tick::{DepthTick, Tick};

/// Free slots the update ring must have before the network loop reads
/// another frame, when it shares the fanout's thread: more than a DhanHQ
/// frame carries in practice, so the spill stays empty.
const ROOM: usize = 1024;

/// [`ROOM`] for the depth ring (a depth frame carries a few side packets).
const DEPTH_ROOM: usize = 64;

/// One fanout shard's rings, and how to wake it.
pub struct Outlet {
    /// Every update, in order.
    pub updates: HeapProd<Update>,
    /// Every 20-level book, in order.
    pub depth: HeapProd<Depth20>,
    /// Wakes the shard.
    pub notify: Notify,
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outlet")
    }
}

/// The network thread's book and its ends of the fanout's rings. Made by
/// [`super::BookThread::live`].
pub struct LiveBook {
    pub(super) book: Book,
    /// One per fanout shard: each gets every update.
    pub(super) outlets: Vec<Outlet>,
    /// [`BookCommand`]s, also sent to the book thread.
    pub(super) commands: Receiver<BookCommand>,
    pub(super) stats: Arc<BookStats>,
    /// Network receive → applied (recorded just before the push).
    pub(super) latency: LatencyRecorder,
    /// Updates forwarded since the shards were last woken.
    pub(super) forwarded: u64,
    /// Wake the shards at the end of this turn even without updates.
    pub(super) poke: bool,
    /// `Some`: the (single) fanout shard runs on this thread; what a full
    /// ring did not take waits here, in order.
    pub(super) spill: Option<Spill>,
}

/// Updates a full ring did not take (the compact layout only).
#[derive(Default)]
pub(super) struct Spill {
    updates: VecDeque<Update>,
    depth: VecDeque<Depth20>,
}

impl std::fmt::Debug for LiveBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveBook")
    }
}

impl LiveBook {
    /// For a fanout on this same thread (one shard): a full ring spills
    /// instead of waiting (see the module docs).
    pub fn spill_when_full(mut self) -> LiveBook {
        assert_eq!(
            self.outlets.len(),
            1,
            "only a single shard shares the thread"
        );
        self.spill = Some(Spill::default());
        self
    }

    /// Applies one tick and forwards the update, if clients can see a
    /// change.
    #[inline]
    pub fn apply(&mut self, tick: &Tick, stop: &AtomicBool) {
        let Some(update) = self.book.apply(tick) else {
            return;
        };
        self.latency
            .record(clock::now_ns().saturating_sub(tick.recv_ns));
        let LiveBook {
            outlets,
            stats,
            spill,
            ..
        } = self;
        let mut spill = spill.as_mut().map(|s| &mut s.updates);
        let mut forwarded = false;
        for o in outlets {
            let full = &stats.ring_full_waits;
            forwarded |= forward(
                &mut o.updates,
                spill.as_deref_mut(),
                update,
                full,
                stop,
                &mut o.notify,
            );
        }
        if forwarded {
            self.forwarded += 1;
        }
    }

    /// Applies one depth side packet and forwards the instrument's whole
    /// 20 + 20 rows, as [`LiveBook::apply`] does.
    pub fn apply_depth(&mut self, tick: &DepthTick, stop: &AtomicBool) {
        let d = self.book.apply_depth(tick);
        let LiveBook {
            outlets,
            stats,
            spill,
            ..
        } = self;
        let mut spill = spill.as_mut().map(|s| &mut s.depth);
        let mut forwarded = false;
        for o in outlets {
            let full = &stats.ring_full_waits;
            forwarded |= forward(
                &mut o.depth,
                spill.as_deref_mut(),
                d,
                full,
                stop,
                &mut o.notify,
            );
        }
        if forwarded {
            self.forwarded += 1;
        }
    }

    /// Whether the network loop may read another frame: always with the
    /// fanout on another thread (a full ring waits); on the same thread,
    /// once the spill has gone into the rings and they have [`ROOM`] (or
    /// half their size, if smaller).
    pub fn has_room(&mut self) -> bool {
        let (Some(spill), [o]) = (&mut self.spill, &mut self.outlets[..]) else {
            return true;
        };
        refill(&mut o.updates, &mut spill.updates);
        refill(&mut o.depth, &mut spill.depth);
        let room = |vacant: usize, capacity: usize, want: usize| vacant >= want.min(capacity / 2);
        spill.updates.is_empty()
            && spill.depth.is_empty()
            && room(o.updates.vacant_len(), o.updates.capacity().get(), ROOM)
            && room(o.depth.vacant_len(), o.depth.capacity().get(), DEPTH_ROOM)
    }

    /// The end of a network loop turn: wakes the fanout once if anything
    /// was forwarded, applies [`BookCommand`]s (one empty-channel check),
    /// and publishes the latency histogram once a second.
    pub fn end_turn(&mut self) {
        // What a frame spilled goes on even when no further frame is read
        // (the frame that spilled ended its connection, say).
        if let (Some(spill), [o]) = (&mut self.spill, &mut self.outlets[..]) {
            refill(&mut o.updates, &mut spill.updates);
            refill(&mut o.depth, &mut spill.depth);
        }
        if self.forwarded > 0 || std::mem::take(&mut self.poke) {
            for o in &mut self.outlets {
                (o.notify)();
            }
            self.stats.updates.add(std::mem::take(&mut self.forwarded));
        }
        while let Ok(BookCommand::Remove(keys)) = self.commands.try_recv() {
            self.book.remove(&keys);
        }
        self.latency.maybe_publish(Instant::now());
    }

    /// Updates wait in the spill for room in the fanout's ring.
    pub fn spilled(&self) -> bool {
        self.spill
            .as_ref()
            .is_some_and(|s| !s.updates.is_empty() || !s.depth.is_empty())
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

/// Pushes `item` to the fanout: behind anything spilled, else into the
/// ring; a full ring spills (`spill` given) or waits. False only when a
/// wait was given up (shutdown, or the fanout gone).
fn forward<T>(
    ring: &mut HeapProd<T>,
    spill: Option<&mut VecDeque<T>>,
    item: T,
    full: &Counter,
    stop: &AtomicBool,
    notify: &mut Notify,
) -> bool {
    let Some(spill) = spill else {
        return push_or_wait(ring, item, full, stop, notify);
    };
    if spill.is_empty() {
        match ring.try_push(item) {
            Ok(()) => return true,
            Err(back) => {
                full.inc();
                spill.push_back(back);
            }
        }
    } else {
        spill.push_back(item);
    }
    true
}

/// Moves spilled items into the ring, oldest first, while it takes them.
fn refill<T>(ring: &mut HeapProd<T>, spill: &mut VecDeque<T>) {
    while let Some(item) = spill.pop_front() {
        if let Err(back) = ring.try_push(item) {
            spill.push_front(back);
            return;
        }
    }
}
