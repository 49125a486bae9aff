//! The fanout's side of option chains ([`crate::chain`]): `subscribe_chain`
//! and `unsubscribe_chain` from `/ws` clients go to the chain thread (which
//! builds ladders: master scans never run here); its events come back —
//! a client subscribed or refused, instruments to hold or release upstream
//! for a chain (each chain is a subscriber of its own in [`Topics`], below
//! the watchlist's id), and each turn's rendered message, queued to every
//! subscriber and conflated per chain for one that reads slowly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::session::{Kind, Session, Slot};
use super::shard::{of_session, Relayed};
use super::topics::Topics;
use super::Worker;
use crate::chain::service::{ChainEvent, ChainRequest};
use crate::fanout::topics::ClientId;

/// Chain events handled per loop turn.
const EVENTS_BUDGET: usize = 256;

/// The link to the chain thread.
#[derive(Debug)]
pub struct ChainLink {
    /// Requests to it.
    pub requests: Sender<ChainRequest>,
    /// Its events (on the lead; the other shards get theirs from it).
    pub events: Receiver<ChainEvent>,
    /// Chain ids to numbers, as the chain thread named them (on each
    /// shard, those its clients subscribed to).
    pub ids: HashMap<Arc<str>, u32>,
}

/// Chain `n`'s subscriber id in [`Topics`].
pub fn topic_client(n: u32) -> ClientId {
    Topics::RELAY - 1 - n as usize
}

impl Worker {
    /// `subscribe_chain`: handed to the chain thread.
    pub(super) fn subscribe_chain(
        &mut self,
        i: usize,
        s: &mut Session,
        underlying: String,
        expiry: String,
        strikes: usize,
        now: Instant,
    ) {
        let Some(link) = &self.chains else {
            return self.client_error(s, "option chains are not served by this relay", now);
        };
        if s.kind != Kind::Feed {
            return self.client_error(s, "chains are served on /ws only", now);
        }
        let request = ChainRequest::Subscribe {
            slot: i,
            session: s.id,
            underlying,
            expiry,
            strikes,
        };
        if link.requests.send(request).is_err() {
            self.client_error(s, "the chain thread has stopped", now);
        }
    }

    /// `unsubscribe_chain`.
    pub(super) fn unsubscribe_chain(&mut self, s: &mut Session, id: &str, now: Instant) {
        let n = self.chains.as_ref().and_then(|l| l.ids.get(id).copied());
        match n.filter(|n| s.chains.contains(n)) {
            Some(n) => {
                s.chains.retain(|c| *c != n);
                if let Some(link) = &self.chains {
                    let _ = link.requests.send(ChainRequest::Release(n));
                }
                let msg = serde_json::json!({"type": "unsubscribed", "chain": id}).to_string();
                s.reply(msg, &self.stats, now);
            }
            None => self.client_error(
                s,
                &format!(
                    "not subscribed to chain '{}'",
                    id.chars().take(64).collect::<String>()
                ),
                now,
            ),
        }
    }

    /// A closing session lets go of its chains.
    pub(super) fn release_chains(&self, s: &Session) {
        if let Some(link) = &self.chains {
            for n in &s.chains {
                let _ = link.requests.send(ChainRequest::Release(*n));
            }
        }
    }

    /// The lead: the chain thread's events of this turn, each handled
    /// here or passed on to the shard it concerns (a render to all).
    pub(super) fn drain_chains(&mut self, now: Instant) {
        let Some(link) = self.chains.as_mut() else {
            return;
        };
        let events: Vec<ChainEvent> = link.events.try_iter().take(EVENTS_BUDGET).collect();
        self.backlog |= !link.events.is_empty();
        if events.is_empty() {
            return; // the common turn: nothing allocated
        }
        let mut to_wake = vec![false; self.followers.len()];
        for event in events {
            let to = match &event {
                ChainEvent::Subscribed { session, .. } | ChainEvent::Refused { session, .. } => {
                    of_session(*session, self.shards)
                }
                ChainEvent::Render { chain, body } => {
                    for f in &self.followers {
                        let _ = f.queue(Relayed::Chain(ChainEvent::Render {
                            chain: *chain,
                            body: body.clone(),
                        }));
                    }
                    to_wake.fill(true);
                    0
                }
                ChainEvent::Hold { .. } => 0,
            };
            match to {
                0 => self.chain_event(event, now),
                k => {
                    let _ = self.followers[k - 1].queue(Relayed::Chain(event));
                    to_wake[k - 1] = true;
                }
            }
        }
        // One wake-up per shard that got something, not one per event.
        for (f, _) in self.followers.iter().zip(to_wake).filter(|(_, w)| *w) {
            f.wake();
        }
    }

    /// One chain event for this shard's clients (or, a hold, the union).
    pub(super) fn chain_event(&mut self, event: ChainEvent, now: Instant) {
        {
            match event {
                ChainEvent::Subscribed {
                    slot,
                    session,
                    chain,
                    id,
                    latest,
                } => {
                    if let Some(link) = self.chains.as_mut() {
                        link.ids.insert(Arc::clone(&id), chain);
                    }
                    match self.sessions.get_mut(slot).and_then(Option::as_mut) {
                        Some(s) if s.id == session => {
                            if !s.chains.contains(&chain) {
                                s.chains.push(chain);
                            }
                            let msg = serde_json::json!({"type": "subscribed", "chain": &*id});
                            s.reply(msg.to_string(), &self.stats, now);
                            if let Some(body) = latest {
                                s.deliver(Slot::Chain(chain), &body, &self.stats, now);
                            }
                            self.dirty.push(slot);
                        }
                        // Gone meanwhile: give the subscription back.
                        _ => {
                            if let Some(link) = &self.chains {
                                let _ = link.requests.send(ChainRequest::Release(chain));
                            }
                        }
                    }
                }
                ChainEvent::Refused {
                    slot,
                    session,
                    message,
                } => {
                    if let Some(mut s) = self.sessions.get_mut(slot).and_then(Option::take) {
                        if s.id == session {
                            self.client_error(&mut s, &message, now);
                            self.dirty.push(slot);
                        }
                        self.sessions[slot] = Some(s);
                    }
                }
                ChainEvent::Hold { chain, add, remove } => {
                    let client = topic_client(chain);
                    for (key, mode) in add {
                        self.union.hold(client, key, Some(mode));
                    }
                    for key in remove {
                        self.union.hold(client, key, None);
                    }
                    self.union_dirty = true;
                }
                ChainEvent::Render { chain, body } => {
                    for (i, s) in self.sessions.iter_mut().enumerate() {
                        if let Some(s) = s.as_mut().filter(|s| s.chains.contains(&chain)) {
                            s.deliver(Slot::Chain(chain), &body, &self.stats, now);
                            self.dirty.push(i);
                        }
                    }
                }
            }
        }
    }
}
