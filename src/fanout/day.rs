//! The fanout's part of the daily maintenance ([`crate::maintenance`]):
//! roll the watchlist's expired contracts to the next ones, and drop
//! contracts that expired from every subscription, telling each client
//! which of its instruments went and why. Runs once a day, on a turn of
//! the fanout loop; its cost is one pass over the topics and the sessions.

use std::time::Instant;

use serde_json::{json, Value};

use super::session::Kind;
use super::topics::Topics;
use super::Worker;
use crate::domain::{InstrumentKey, Mode};
use crate::maintenance::{expired, expiry_of, DayDone, DayTurn};

impl Worker {
    /// Applies the maintenance's turns of the day, if one came.
    pub(super) fn take_day_turns(&mut self, now: Instant) {
        while let Ok(turn) = self.day_turns.try_recv() {
            let done = self.turn_day(&turn, now);
            let _ = self.day_done.send(done);
        }
    }

    fn turn_day(&mut self, turn: &DayTurn, now: Instant) -> DayDone {
        let master = self.master.load_full();
        let masters = [&*master, &*turn.previous];
        let rolls = self.watchlist.roll_on(&master, turn.today);
        for roll in &rolls {
            self.topics.remove(Topics::RELAY, roll.from);
            self.topics.add(Topics::RELAY, roll.to, Mode::Ticker);
            self.symbols.insert(roll.to, roll.symbol.clone());
        }
        let dropped: Vec<InstrumentKey> = self
            .topics
            .active()
            .into_iter()
            .map(|a| a.key)
            .filter(|&k| expired(k, &masters, turn.today))
            .collect();
        let mut client_subscriptions = 0;
        for i in 0..self.sessions.len() {
            let Some(s) = self.sessions[i].as_mut().filter(|s| s.kind == Kind::Feed) else {
                continue;
            };
            let held: Vec<InstrumentKey> = dropped
                .iter()
                .copied()
                .filter(|k| s.subs.remove(k).is_some())
                .collect();
            if held.is_empty() {
                continue;
            }
            for &key in &held {
                self.topics.remove(i, key);
            }
            client_subscriptions += held.len();
            self.stats.subscriptions.sub(held.len() as u64);
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
                    if let Some(d) = expiry_of(k, &masters) {
                        v["expiry"] = Value::String(d.to_string());
                    }
                    v
                })
                .collect();
            let msg = json!({
                "type": "expired",
                "instruments": list,
                "message": format!(
                    "{} of your instruments expired and were unsubscribed; subscribe to the next contract to keep following it",
                    held.len()
                ),
            });
            s.reply(msg.to_string(), &self.stats, now);
            self.dirty.push(i);
        }
        for &key in &dropped {
            // The watchlist holds it only when it was configured by id (a
            // symbol entry has rolled by now): it is released all the same.
            if self.topics.remove(Topics::RELAY, key) {
                log::warn!(
                    "watchlist entry {key} expired and cannot roll (configured by id); it shows no price from now on"
                );
            }
            self.symbols.remove(&key);
        }
        // Rolled-from contracts that were not expired (superseded early)
        // keep their own name for anyone still holding them.
        for roll in &rolls {
            if !dropped.contains(&roll.from) {
                match masters.iter().find_map(|m| m.get(roll.from)) {
                    Some(old) => self.symbols.insert(roll.from, old.symbol().to_string()),
                    None => self.symbols.remove(&roll.from),
                };
            }
        }
        if !dropped.is_empty() {
            log::info!(
                "expired contracts dropped from subscriptions: {} ({} client subscriptions)",
                super::client::name_some(&dropped),
                client_subscriptions
            );
        }
        self.view_dirty = true;
        DayDone {
            rolled: rolls.len(),
            dropped,
            client_subscriptions,
        }
    }
}
