//! The fanout's part of the daily maintenance ([`crate::maintenance`]):
//! roll the watchlist's expired contracts to the next ones, and drop
//! contracts that expired from every subscription, telling each client
//! which of its instruments went and why. Runs once a day: the lead shard
//! rolls the watchlist and decides what expired (in the union), then every
//! shard drops those contracts from its own clients and answers the
//! maintenance. Its cost is one pass over the union and the sessions.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::session::Kind;
use super::shard::Relayed;
use super::topics::Topics;
use super::Worker;
use crate::domain::{InstrumentKey, Mode};
use crate::instrument::watch::Roll;
use crate::maintenance::{expired, expiry_of, DayDone, DayTurn};

/// What the lead decided at a turn of the day, for every shard.
#[derive(Debug)]
pub struct Day {
    turn: DayTurn,
    /// The watchlist's rolls.
    rolls: Vec<Roll>,
    /// Contracts that expired, dropped from every subscription.
    dropped: Vec<InstrumentKey>,
}

impl Worker {
    /// The lead: applies the maintenance's turns of the day, if one came,
    /// and passes each on to the other shards.
    pub(super) fn take_day_turns(&mut self, now: Instant) {
        while let Ok(turn) = self.day_turns.try_recv() {
            let day = Arc::new(self.decide_day(turn));
            for f in &self.followers {
                let _ = f.send(Relayed::Day(Arc::clone(&day)));
            }
            let client_subscriptions = self.turn_day(&day, now);
            if !day.dropped.is_empty() {
                log::info!(
                    "expired contracts dropped from subscriptions: {}",
                    super::client::name_some(&day.dropped)
                );
            }
            let _ = self.day_done.send(DayDone {
                rolled: day.rolls.len(),
                dropped: day.dropped.clone(),
                client_subscriptions,
            });
        }
    }

    /// Another shard: the lead's decision, applied to this shard's clients.
    pub(super) fn follow_day(&mut self, day: &Day, now: Instant) {
        let client_subscriptions = self.turn_day(day, now);
        let _ = self.day_done.send(DayDone {
            client_subscriptions,
            ..DayDone::default()
        });
    }

    /// Rolls the watchlist and finds what expired among the instruments
    /// held upstream; the watchlist lets go of those it held.
    fn decide_day(&mut self, turn: DayTurn) -> Day {
        let master = self.master.load_full();
        let masters = [&*master, &*turn.previous];
        let rolls = self.watchlist.roll_on(&master, turn.today);
        for roll in &rolls {
            self.union.hold(Topics::RELAY, roll.from, None);
            self.union.hold(Topics::RELAY, roll.to, Some(Mode::Ticker));
        }
        self.union.set_watchlist(self.watchlist.items());
        let dropped: Vec<InstrumentKey> = self
            .union
            .active()
            .into_iter()
            .map(|a| a.key)
            .filter(|&k| expired(k, &masters, turn.today))
            .collect();
        for &key in &dropped {
            // The watchlist holds it only when it was configured by id (a
            // symbol entry has rolled by now): it is released all the same.
            if self.union.hold(Topics::RELAY, key, None) {
                log::warn!(
                    "watchlist entry {key} expired and cannot roll (configured by id); it shows no price from now on"
                );
            }
        }
        self.union_dirty = true;
        Day {
            turn,
            rolls,
            dropped,
        }
    }

    /// Drops the expired contracts from this shard's clients, telling
    /// each, and updates the names shown; returns the client
    /// subscriptions dropped.
    fn turn_day(&mut self, day: &Day, now: Instant) -> usize {
        let master = self.master.load_full();
        let masters = [&*master, &*day.turn.previous];
        for roll in &day.rolls {
            self.symbols.insert(roll.to, roll.symbol.clone());
        }
        let mut client_subscriptions = 0;
        for i in 0..self.sessions.len() {
            let Some(mut s) = self.sessions[i].take() else {
                continue;
            };
            let held: Vec<InstrumentKey> = if s.kind == Kind::Feed {
                day.dropped
                    .iter()
                    .copied()
                    .filter(|k| s.subs.remove(k).is_some())
                    .collect()
            } else {
                Vec::new()
            };
            for &key in &held {
                s.queued.remove(&key);
                if s.depth20.remove(&key) {
                    self.release_depth(i, key);
                }
                self.release(i, key);
            }
            if !held.is_empty() {
                client_subscriptions += held.len();
                self.stats.subscriptions.sub(held.len() as u64);
                let msg = self.expired_message(&held, &masters);
                s.reply(msg, &self.stats, now);
                self.dirty.push(i);
            }
            self.sessions[i] = Some(s);
        }
        for key in &day.dropped {
            self.symbols.remove(key);
        }
        // Rolled-from contracts that were not expired (superseded early)
        // keep their own name for anyone still holding them.
        for roll in &day.rolls {
            if !day.dropped.contains(&roll.from) {
                match masters.iter().find_map(|m| m.get(roll.from)) {
                    Some(old) => self.symbols.insert(roll.from, old.symbol().to_string()),
                    None => self.symbols.remove(&roll.from),
                };
            }
        }
        client_subscriptions
    }

    /// The `expired` message naming `held`.
    fn expired_message(
        &self,
        held: &[InstrumentKey],
        masters: &[&crate::instrument::Master],
    ) -> String {
        let list: Vec<Value> = held
            .iter()
            .map(|&k| {
                let mut v = json!({
                    "exchangeSegment": k.segment.name(),
                    "securityId": k.security_id.to_string(),
                });
                if let Some(symbol) = self.symbols.get(&k) {
                    v["symbol"] = Value::String(symbol.clone());
                } else if let Some(inst) = masters.iter().find_map(|m| m.get(k)) {
                    v["symbol"] = Value::String(inst.symbol().to_string());
                }
                if let Some(d) = expiry_of(k, masters) {
                    v["expiry"] = Value::String(d.to_string());
                }
                v
            })
            .collect();
        json!({
            "type": "expired",
            "instruments": list,
            "message": format!(
                "{} of your instruments expired and were unsubscribed; subscribe to the next contract to keep following it",
                held.len()
            ),
        })
        .to_string()
    }
}
