//! The hot path: take the book's updates, render each once per message
//! type, queue the same bytes to every subscriber, flush every dirty client
//! with one vectored write, then tell the network thread what changed.
//!
//! Per update: one hash look-up (the topic), at most three renders into
//! the shared arena, one reference-count per subscriber. Per client per
//! turn: one `writev`. No allocation in steady state (proven by
//! `tests/hot_path_alloc.rs`).

use std::time::Instant;

use bytes::Bytes;
use ringbuf::traits::Consumer;

use super::render::message_mode;
use super::session::{Health, Slot};
use super::{client::name_some, Worker};
use crate::clock;
use crate::upstream::Command;

impl Worker {
    /// Takes every queued update and hands it to its subscribers.
    pub(super) fn drain_updates(&mut self, now: Instant) {
        let Worker {
            updates,
            topics,
            sessions,
            renderer,
            stats,
            symbols,
            turn_recv,
            dirty,
            ..
        } = self;
        let mut n = 0u64;
        while let Some(update) = updates.try_pop() {
            n += 1;
            let key = update.state.key;
            let Some(topic) = topics.get_mut(&key) else {
                continue;
            };
            topic.last = Some(update);
            // Rendered at most once per message type, shared by all.
            let mut rendered: [Option<Option<Bytes>>; 3] = [None, None, None];
            let mut delivered = false;
            for &(client, mode) in &topic.subscribers {
                let Some(Some(s)) = sessions.get_mut(client) else {
                    continue; // the relay's own watchlist entry
                };
                let as_mode = message_mode(update.kind, mode);
                let msg = rendered[as_mode as usize].get_or_insert_with(|| {
                    renderer.update(&update, as_mode, symbols.get(&key).map(String::as_str))
                });
                if let Some(msg) = msg {
                    if !s.is_dirty() {
                        dirty.push(client);
                    }
                    s.deliver(Slot::Instrument(key), msg, stats, now);
                    delivered = true;
                }
            }
            if delivered {
                turn_recv.push(update.state.recv_ns);
            }
        }
        if n > 0 {
            stats.updates.add(n);
        }
    }

    /// One flush per dirty client, then the tick-to-wire latencies.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &i in &dirty {
            let Some(Some(s)) = self.sessions.get_mut(i) else {
                continue;
            };
            if s.flush(&self.stats, now) == Health::Gone {
                self.close_slot(i);
            }
        }
        dirty.clear();
        self.dirty = dirty;
        if !self.turn_recv.is_empty() {
            let wire_ns = clock::now_ns();
            for recv in self.turn_recv.drain(..) {
                self.latency.record(wire_ns.saturating_sub(recv));
            }
        }
    }

    /// Tells the network thread what changed, and clients whose queued
    /// instruments just got an upstream slot.
    pub(super) fn push_changes(&mut self, now: Instant) {
        let changes = self.topics.take_changes(now);
        let (held, queued) = self.topics.load();
        self.stats.upstream_held.set(held as u64);
        self.stats.upstream_queued.set(queued as u64);
        if !changes.promoted.is_empty() {
            self.announce_promoted(&changes.promoted, now);
        }
        // Unsubscribes first: the network thread applies commands in order,
        // and a promoted instrument needs the slot the unsubscribe frees.
        if !changes.unsubscribe.is_empty() {
            self.upstream
                .send(Command::Unsubscribe(changes.unsubscribe));
            self.view_dirty = true;
        }
        if !changes.subscribe.is_empty() {
            self.upstream.send(Command::Subscribe(changes.subscribe));
            self.view_dirty = true;
        }
    }

    fn announce_promoted(&mut self, promoted: &[crate::domain::InstrumentKey], now: Instant) {
        log::info!(
            "upstream capacity freed: {} queued instruments subscribed",
            promoted.len()
        );
        let mut per_client: std::collections::HashMap<usize, Vec<crate::domain::InstrumentKey>> =
            std::collections::HashMap::new();
        for key in promoted {
            if let Some(t) = self.topics.get(key) {
                for &(client, _) in &t.subscribers {
                    per_client.entry(client).or_default().push(*key);
                }
            }
        }
        for (client, keys) in per_client {
            let Some(Some(s)) = self.sessions.get_mut(client) else {
                continue;
            };
            let text = format!(
                "upstream capacity freed: {} queued instruments now subscribed: {}",
                keys.len(),
                name_some(&keys)
            );
            s.reply(
                super::protocol::status_message(None, &text),
                &self.stats,
                now,
            );
            self.dirty.push(client);
        }
    }
}
