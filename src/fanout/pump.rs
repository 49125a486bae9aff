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

use super::dhan;
use super::render::message_mode;
use super::session::{Health, Kind, Slot};
use super::{client::name_some, Worker};
use crate::clock;

impl Worker {
    /// Takes every queued update and hands it to its subscribers.
    pub(super) fn drain_updates(&mut self, now: Instant) {
        let Worker {
            shard,
            updates,
            local,
            sessions,
            renderer,
            dhan: dhan_renderer,
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
            let topic = local.seen(key, now);
            if topic.subscribers.is_empty() {
                topic.last = Some(update);
                continue;
            }
            let oi_changed = dhan::oi_changed(topic.last.as_ref(), &update);
            topic.last = Some(update);
            // Rendered at most once per message type, shared by all.
            let mut rendered: [Option<Option<Bytes>>; 3] = [None, None, None];
            let mut packets: [Option<Option<Bytes>>; 5] = [None, None, None, None, None];
            let mut delivered = false;
            for &(client, mode) in &topic.subscribers {
                let Some(Some(s)) = sessions.get_mut(client) else {
                    continue; // the relay's own watchlist entry
                };
                if s.kind == Kind::Dhan {
                    for &p in dhan::packets_for(update.kind, mode, oi_changed) {
                        let msg = packets[p.index()]
                            .get_or_insert_with(|| dhan_renderer.packet(p, &update.state));
                        if let Some(msg) = msg {
                            if !s.is_dirty() {
                                dirty.push(client);
                            }
                            s.deliver(Slot::Packet(key, p.code()), msg, stats, now);
                            delivered = true;
                        }
                    }
                    continue;
                }
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
        // Every shard takes every update: the lead counts them.
        if n > 0 && *shard == 0 {
            stats.updates.add(n);
        }
    }

    /// Takes every queued 20-level book and hands it, rendered once, to its
    /// `depth20` subscribers.
    pub(super) fn drain_depth(&mut self, now: Instant) {
        let Worker {
            depth_updates: Some(updates),
            local,
            sessions,
            renderer,
            dhan: dhan_renderer,
            stats,
            symbols,
            turn_recv,
            dirty,
            ..
        } = self
        else {
            return;
        };
        while let Some(d) = updates.try_pop() {
            let Some(subscribers) = local.depth(&d.key) else {
                continue;
            };
            let mut rendered: Option<Bytes> = None;
            let mut packet: Option<Bytes> = None;
            for &client in subscribers {
                let Some(Some(s)) = sessions.get_mut(client) else {
                    continue;
                };
                if s.kind == Kind::DhanDepth {
                    // The side that just came, as DhanHQ sent it.
                    let p = packet.get_or_insert_with(|| dhan_renderer.depth(&d, d.side));
                    if !s.is_dirty() {
                        dirty.push(client);
                    }
                    s.deliver(Slot::Packet(d.key, dhan::depth_code(d.side)), p, stats, now);
                    continue;
                }
                if s.kind != Kind::Feed {
                    continue;
                }
                let msg = rendered.get_or_insert_with(|| {
                    renderer.depth20(&d, symbols.get(&d.key).map(String::as_str))
                });
                if !s.is_dirty() {
                    dirty.push(client);
                }
                s.deliver(Slot::Depth20(d.key), msg, stats, now);
            }
            if rendered.is_some() || packet.is_some() {
                turn_recv.push(d.recv_ns);
            }
        }
    }

    /// One flush per dirty client (a client with a flush interval that
    /// wrote less than one interval ago stays dirty for a later turn), then
    /// the tick-to-wire latencies.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut held_until: Option<Instant> = None;
        dirty.retain(|&i| {
            let Some(Some(s)) = self.sessions.get_mut(i) else {
                return false;
            };
            if let Some(at) = s.flush_wait(now) {
                held_until = Some(held_until.map_or(at, |h| h.min(at)));
                return true;
            }
            if s.flush(&self.stats, now) == Health::Gone {
                self.close_slot(i);
            }
            false
        });
        self.dirty = dirty;
        self.held_until = held_until;
        if !self.turn_recv.is_empty() {
            let wire_ns = clock::now_ns();
            for recv in self.turn_recv.drain(..) {
                self.latency.record(wire_ns.saturating_sub(recv));
            }
        }
    }

    /// Brings the union up to date when this turn changed it or something
    /// there fell due (the union tells the network thread), then tells this
    /// shard's clients whose queued instruments just got an upstream slot.
    pub(super) fn push_changes(&mut self, now: Instant) {
        if !std::mem::take(&mut self.union_dirty) && !self.union.due(now) {
            return;
        }
        let promoted = self.union.sync(self.shard, now);
        self.announce_promoted(&promoted, now);
    }

    /// Tells this shard's clients about queued instruments that another
    /// shard's turn gave a slot (before this turn's updates, so a client
    /// hears it before the first tick).
    pub(super) fn take_promoted(&mut self, now: Instant) {
        let promoted = self.union.take_promoted(self.shard);
        self.announce_promoted(&promoted, now);
    }

    /// Tells each client that was waiting for one of `promoted` (and only
    /// those: a client that subscribed after the slot was given got it
    /// live).
    fn announce_promoted(&mut self, promoted: &[crate::domain::InstrumentKey], now: Instant) {
        if promoted.is_empty() {
            return;
        }
        let mut per_client: std::collections::HashMap<usize, Vec<crate::domain::InstrumentKey>> =
            std::collections::HashMap::new();
        for key in promoted {
            let Some(t) = self.local.get(key) else {
                continue;
            };
            for &(client, _) in &t.subscribers {
                if let Some(Some(s)) = self.sessions.get_mut(client) {
                    if s.queued.remove(key) {
                        per_client.entry(client).or_default().push(*key);
                    }
                }
            }
        }
        for (client, keys) in per_client {
            let Some(Some(s)) = self.sessions.get_mut(client) else {
                continue;
            };
            if s.kind.is_dhan() {
                continue; // no message for it in DhanHQ's protocol
            }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ringbuf::traits::Producer;
    use serde_json::Value;

    use super::super::session::tests::{pair, read_frames};
    use super::super::test_worker::{worker, Harness};
    use super::super::topics::Topics;
    use crate::book::{InstrumentState, Update, UpdateKind};
    use crate::domain::{InstrumentKey, Mode, Segment};
    use crate::upstream::Command;
    use crate::wire::feed::Quote;

    fn key(id: u32) -> InstrumentKey {
        InstrumentKey::new(Segment::NseEq, id)
    }

    fn quote_update(id: u32, ltp: f32) -> Update {
        let mut state = InstrumentState::new(key(id));
        state.ltp = Some(ltp);
        state.ltt = 1;
        state.seq = 1;
        state.quote = Some(Quote {
            ltp,
            ltq: 1,
            ltt: 1,
            avg_price: ltp,
            volume: 10,
            total_sell_qty: 1,
            total_buy_qty: 1,
            open: ltp,
            close: ltp,
            high: ltp,
            low: ltp,
        });
        Update {
            kind: UpdateKind::Quote,
            state,
        }
    }

    /// Puts a fake session (a loopback socket pair) in slot `i`, holding
    /// `keys` in `mode`; returns the peer end.
    fn client(
        h: &mut Harness,
        cap: usize,
        keys: &[InstrumentKey],
        mode: Mode,
    ) -> (usize, std::net::TcpStream) {
        let (mut s, peer) = pair(cap);
        let i = h.worker.sessions.len();
        for k in keys {
            s.subs.insert(*k, mode);
            h.worker.hold(i, *k, mode);
        }
        h.worker.sessions.push(Some(Box::new(s)));
        (i, peer)
    }

    fn json(frame: &[u8]) -> Value {
        serde_json::from_slice(frame).unwrap()
    }

    #[test]
    fn one_render_per_message_type_reaches_every_subscriber_in_its_mode() {
        let mut h = worker(100);
        let (_, mut ticker) = client(&mut h, 64 * 1024, &[key(1)], Mode::Ticker);
        let (_, mut quote) = client(&mut h, 64 * 1024, &[key(1)], Mode::Quote);
        let (_, mut other) = client(&mut h, 64 * 1024, &[key(2)], Mode::Quote);
        h.worker
            .union
            .hold(Topics::RELAY, key(1), Some(Mode::Ticker));
        let now = Instant::now();
        h.updates.try_push(quote_update(1, 10.5)).unwrap();
        h.updates.try_push(quote_update(9, 1.0)).unwrap(); // nobody holds it
        h.worker.drain_updates(now);
        h.worker.flush_dirty(now);
        let t = json(&read_frames(&mut ticker, 1)[0]);
        let q = json(&read_frames(&mut quote, 1)[0]);
        assert_eq!(
            (t["type"].as_str(), t["ltp"].as_f64()),
            (Some("ticker"), Some(10.5))
        );
        assert_eq!(
            (q["type"].as_str(), q["volume"].as_u64()),
            (Some("quote"), Some(10))
        );
        assert_eq!(h.worker.stats.updates.get(), 2);
        assert_eq!(
            h.worker.stats.messages.get(),
            2,
            "one per subscriber, none for the relay"
        );
        other
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            std::io::Read::read(&mut other, &mut byte).is_err(),
            "key(2)'s client got nothing"
        );
        assert!(h.worker.dirty.is_empty() && h.worker.turn_recv.is_empty());
    }

    #[test]
    fn a_client_that_does_not_read_is_conflated_while_the_others_get_everything() {
        let mut h = worker(100);
        let keys: Vec<InstrumentKey> = (1..=4).map(key).collect();
        let (slow_i, slow_peer) = client(&mut h, 4096, &keys, Mode::Quote);
        // Small kernel buffers on both ends, as the fanout sets them.
        super::super::set_send_buffer(
            h.worker.sessions[slow_i]
                .as_mut()
                .unwrap()
                .stream_mut()
                .tcp(),
            4096,
        );
        let small: libc::c_int = 4096;
        // SAFETY: setsockopt reads a live local c_int; the fd is owned by
        // `slow_peer` for the call.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&slow_peer),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let (_, mut fast) = client(&mut h, 1 << 20, &keys, Mode::Quote);
        let rounds = 2_000;
        let reader = std::thread::spawn(move || read_frames(&mut fast, rounds * 4));
        for r in 0..rounds {
            let now = Instant::now();
            for id in 1..=4 {
                h.updates.try_push(quote_update(id, r as f32)).unwrap();
            }
            h.worker.drain_updates(now);
            h.worker.flush_dirty(now);
        }
        // The fast client reads everything, in order per instrument.
        let frames = reader.join().unwrap();
        assert_eq!(frames.len(), rounds * 4);
        let last = json(frames.last().unwrap());
        assert_eq!(last["ltp"].as_f64(), Some((rounds - 1) as f64));
        // The slow one was conflated, and is behind.
        assert!(h.worker.stats.conflated.get() > 0);
        let slow = h.worker.sessions[slow_i].as_ref().unwrap();
        assert!(slow.too_slow(
            Instant::now() + Duration::from_secs(10),
            Duration::from_secs(5)
        ));
    }

    #[test]
    fn a_freed_slot_is_announced_only_to_the_clients_that_waited_for_it() {
        let mut h = worker(100);
        let (waited, mut waited_peer) = client(&mut h, 64 * 1024, &[key(2)], Mode::Ticker);
        let (_, mut live_peer) = client(&mut h, 64 * 1024, &[key(2)], Mode::Ticker);
        h.worker.sessions[waited]
            .as_mut()
            .unwrap()
            .queued
            .insert(key(2));
        let now = Instant::now();
        h.worker.announce_promoted(&[key(2)], now);
        h.worker.flush_dirty(now);
        let told = json(&read_frames(&mut waited_peer, 1)[0]);
        assert!(
            told["message"].as_str().unwrap().contains("capacity freed"),
            "{told}"
        );
        live_peer
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            std::io::Read::read(&mut live_peer, &mut byte).is_err(),
            "a client that got it live is not told"
        );
        // Told once.
        h.worker.announce_promoted(&[key(2)], now);
        assert!(h.worker.dirty.is_empty());
    }

    #[test]
    fn unsubscribes_reach_the_network_thread_before_subscribes() {
        // Regression: a promoted (queued) instrument was subscribed before
        // the unsubscribe that freed its slot, refused upstream, and never
        // retried.
        let mut h = worker(1);
        h.worker.hold(1, key(1), Mode::Ticker);
        let now = Instant::now();
        h.worker.push_changes(now);
        assert!(
            matches!(h.upstream.try_recv(), Ok(Command::Subscribe(s)) if s == vec![(key(1), Mode::Ticker)])
        );
        h.worker.hold(2, key(2), Mode::Ticker); // queued: capacity 1
        h.worker.release(1, key(1));
        h.worker.push_changes(now);
        assert_eq!(h.worker.stats.upstream_queued.get(), 1);
        h.worker.push_changes(now + Duration::from_secs(3)); // after the grace
        let first = h.upstream.try_recv().unwrap();
        let second = h.upstream.try_recv().unwrap();
        assert!(matches!(first, Command::Unsubscribe(u) if u == vec![key(1)]));
        assert!(matches!(second, Command::Subscribe(s) if s == vec![(key(2), Mode::Ticker)]));
        assert_eq!(
            (
                h.worker.stats.upstream_held.get(),
                h.worker.stats.upstream_queued.get()
            ),
            (1, 0)
        );
    }
}
