//! What ties the fanout shards together besides the [`super::union`]: a
//! way into each ([`Door`]), the count of clients each serves, so the front
//! door hands a new client to the least loaded ([`Load`]), and what the
//! lead shard passes on to the others ([`Relayed`]).
//!
//! Shard 0, the lead, is the one the rest of the engine talks to for
//! relay-wide events: order updates, option-chain events, the day's turn.
//! It serves its own clients and passes each event on to the shards it
//! concerns. None of these is on the tick path.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, SendError, Sender};
use mio::Waker;

use crate::chain::service::ChainEvent;

/// A channel into one shard and that shard's waker.
#[derive(Debug)]
pub struct Door<T> {
    tx: Sender<T>,
    waker: Arc<Waker>,
}

impl<T> Clone for Door<T> {
    fn clone(&self) -> Self {
        Door {
            tx: self.tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl<T> Door<T> {
    /// A door over `tx`, waking `waker`.
    pub fn new(tx: Sender<T>, waker: Arc<Waker>) -> Door<T> {
        Door { tx, waker }
    }

    /// Sends and wakes the shard; the message back if it has ended.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.queue(msg)?;
        self.wake();
        Ok(())
    }

    /// Sends without waking: for several messages in a row, then one
    /// [`Door::wake`].
    pub fn queue(&self, msg: T) -> Result<(), SendError<T>> {
        self.tx.send(msg)
    }

    /// Wakes the shard (one system call).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// A channel into each shard whose waker is in `wakers`: the doors, and
/// the receiving ends by shard.
pub fn doors<T>(wakers: &[Arc<Waker>]) -> (Vec<Door<T>>, Vec<Receiver<T>>) {
    wakers
        .iter()
        .map(|w| {
            let (tx, rx) = crossbeam_channel::unbounded();
            (Door::new(tx, Arc::clone(w)), rx)
        })
        .unzip()
}

/// Clients per shard: raised by the front door as it hands a client over
/// (so a burst of connections spreads before any shard has taken one),
/// lowered by the shard when the client goes.
#[derive(Debug, Clone)]
pub struct Load(Arc<[AtomicUsize]>);

impl Load {
    /// `shards` shards with no client.
    pub fn new(shards: usize) -> Load {
        Load((0..shards.max(1)).map(|_| AtomicUsize::new(0)).collect())
    }

    /// The shard with the fewest clients (the lowest numbered on a tie).
    pub fn least_loaded(&self) -> usize {
        (0..self.0.len())
            .min_by_key(|&i| self.0[i].load(Relaxed))
            .unwrap_or(0)
    }

    /// One client more on `shard`.
    pub fn add(&self, shard: usize) {
        self.0[shard].fetch_add(1, Relaxed);
    }

    /// One client fewer on `shard`.
    pub fn remove(&self, shard: usize) {
        let _ = self.0[shard].fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// Clients per shard now, for `/stats`.
    pub fn counts(&self) -> Vec<usize> {
        self.0.iter().map(|n| n.load(Relaxed)).collect()
    }
}

/// What the lead shard passes on to the others.
#[derive(Debug)]
pub enum Relayed {
    /// An order update, for the shard's `subscribe_orders` clients.
    Order(Bytes),
    /// A chain event for the shard's clients.
    Chain(ChainEvent),
    /// The day turned: the lead rolled the watchlist and decided what
    /// expired; the shard drops it from its clients and answers the
    /// maintenance.
    Day(Arc<super::day::Day>),
}

/// The shard a session id belongs to: shard `k` of `n` numbers its
/// sessions `k + 1`, `k + 1 + n`, `k + 1 + 2n`, …, so ids are unique
/// across the relay and say where a session lives.
pub fn of_session(id: u64, shards: usize) -> usize {
    (id.saturating_sub(1) % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_clients_go_to_the_least_loaded_shard() {
        let load = Load::new(3);
        let mut picked = Vec::new();
        for _ in 0..6 {
            let s = load.least_loaded();
            load.add(s);
            picked.push(s);
        }
        assert_eq!(picked, vec![0, 1, 2, 0, 1, 2]);
        load.remove(1);
        load.remove(1);
        assert_eq!(load.least_loaded(), 1);
        load.remove(1);
        assert_eq!(load.counts(), vec![2, 0, 2], "never below zero");
    }

    #[test]
    fn session_ids_name_their_shard() {
        for shards in 1..5 {
            for k in 0..shards {
                for n in 0..4u64 {
                    let id = k as u64 + 1 + n * shards as u64;
                    assert_eq!(of_session(id, shards), k);
                }
            }
        }
    }
}
