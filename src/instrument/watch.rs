//! The configured watchlist against the master: resolving entries given by
//! symbol at start, and the daily expiry roll of entries that resolved to a
//! dated contract (a future rolls to the next one once it has expired).

use std::time::SystemTime;

use super::{Date, Master, TimeOfDay};
use crate::domain::InstrumentKey;
use crate::fanout::WatchItem;

/// A watchlist entry as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// The name shown in `/prices` (and, without `key`, the name resolved).
    pub symbol: String,
    /// An explicit instrument (`exchange_segment` + `security_id`).
    pub key: Option<InstrumentKey>,
    /// The config file line, for messages.
    pub line: Option<usize>,
}

impl WatchSpec {
    /// An entry resolved through the master.
    pub fn by_symbol(symbol: &str) -> WatchSpec {
        WatchSpec {
            symbol: symbol.to_string(),
            key: None,
            line: None,
        }
    }

    /// An entry with an explicit instrument.
    pub fn by_key(symbol: &str, key: InstrumentKey) -> WatchSpec {
        WatchSpec {
            symbol: symbol.to_string(),
            key: Some(key),
            line: None,
        }
    }
}

/// The watchlist, resolved.
#[derive(Clone, Debug, Default)]
pub struct ResolvedWatchlist {
    /// Entries with their instruments, in configured order.
    pub items: Vec<WatchItem>,
    /// Symbols of entries resolved to a contract with an expiry: these roll.
    pub rolling: Vec<String>,
    /// One line per entry resolved by symbol, for the start-up log.
    pub notes: Vec<String>,
    /// Entries left out (a lenient resolution), with why.
    pub skipped: Vec<String>,
}

fn describe(spec: &WatchSpec) -> String {
    match spec.line {
        Some(line) => format!("watchlist '{}' (config line {line})", spec.symbol),
        None => format!("watchlist '{}'", spec.symbol),
    }
}

/// Resolves the watchlist as of `today`. With `strict`, an entry that does
/// not resolve is an error; otherwise (the master is only the embedded
/// sample) it is skipped and reported in `skipped`.
pub fn resolve_watchlist(
    specs: &[WatchSpec],
    master: &Master,
    today: Date,
    strict: bool,
) -> Result<ResolvedWatchlist, String> {
    let mut out = ResolvedWatchlist::default();
    for spec in specs {
        if let Some(key) = spec.key {
            out.items.push(WatchItem {
                symbol: spec.symbol.clone(),
                key,
            });
            continue;
        }
        match master.resolve(&spec.symbol, today) {
            Ok(inst) => {
                let mut note = format!("{} → {inst}", describe(spec));
                if let Some(expiry) = inst.expiry() {
                    note.push_str(&format!(", expires {expiry}; rolls after that"));
                    out.rolling.push(spec.symbol.clone());
                }
                out.notes.push(note);
                out.items.push(WatchItem {
                    symbol: spec.symbol.clone(),
                    key: inst.key(),
                });
            }
            Err(e) if strict => {
                return Err(format!(
                    "{}: {e}; fix the symbol or give exchange_segment and security_id",
                    describe(spec)
                ))
            }
            Err(e) => out
                .skipped
                .push(format!("{}: {e}; left out", describe(spec))),
        }
    }
    Ok(out)
}

/// When to re-check rolling entries: once a day at `at` (India time), the
/// first time the clock shows a later date than the last check.
#[derive(Clone, Debug)]
pub struct RollSchedule {
    at: TimeOfDay,
    last: Date,
}

impl RollSchedule {
    /// Checked last on `checked` (the start-up resolution).
    pub fn new(at: TimeOfDay, checked: Date) -> RollSchedule {
        RollSchedule { at, last: checked }
    }

    /// The date to check for, when a check is due at `now` (and marks it
    /// done).
    pub fn due(&mut self, now: SystemTime) -> Option<Date> {
        let today = Date::today_ist(now);
        if today > self.last && TimeOfDay::ist(now) >= self.at {
            self.last = today;
            Some(today)
        } else {
            None
        }
    }
}

/// One entry moving to a new contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roll {
    /// Index in the watchlist.
    pub index: usize,
    /// The entry's symbol.
    pub symbol: String,
    /// The contract it held.
    pub from: InstrumentKey,
    /// The contract it holds now.
    pub to: InstrumentKey,
    /// A log line saying so.
    pub message: String,
}

/// What the daily check changes: the rolls, and warnings for entries that
/// no longer resolve (they keep their contract).
pub fn plan_rolls(
    master: &Master,
    watchlist: &[WatchItem],
    rolling: &[String],
    today: Date,
) -> (Vec<Roll>, Vec<String>) {
    let mut rolls = Vec::new();
    let mut warnings = Vec::new();
    for (index, item) in watchlist.iter().enumerate() {
        if !rolling.contains(&item.symbol) {
            continue;
        }
        match master.resolve(&item.symbol, today) {
            Ok(inst) if inst.key() != item.key => {
                let old = master
                    .get(item.key)
                    .map_or(item.key.to_string(), |i| i.to_string());
                let expired = master
                    .get(item.key)
                    .and_then(|i| i.expiry())
                    .map_or(String::new(), |d| format!(" (expired {d})"));
                rolls.push(Roll {
                    index,
                    symbol: item.symbol.clone(),
                    from: item.key,
                    to: inst.key(),
                    message: format!(
                        "expiry roll: watchlist '{}' moves from {old}{expired} to {inst}",
                        item.symbol
                    ),
                });
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!(
                "expiry roll: watchlist '{}' keeps {}: {e}",
                item.symbol, item.key
            )),
        }
    }
    (rolls, warnings)
}
