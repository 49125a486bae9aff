//! The configured watchlist against the master: resolving entries given by
//! symbol at start, and the expiry roll of entries that resolved to a dated
//! contract (a future rolls to the next one once it has expired), which the
//! daily maintenance runs.
//!
//! Layering: this module owns the watchlist's data ([`WatchItem`],
//! [`Watchlist`]) and its calendar; the fanout owns subscriptions and asks
//! [`Watchlist::roll_on`] what moved. Nothing here imports the fanout.

use std::collections::HashMap;

use super::{Date, Master};
use crate::domain::InstrumentKey;

/// A watchlist entry with its instrument: the symbol clients of the replaced
/// backend read as a flat key in `/prices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchItem {
    /// The name shown (`NIFTY`), as configured.
    pub symbol: String,
    /// The instrument it stands for now (it changes when a future rolls).
    pub key: InstrumentKey,
}

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

/// The resolved watchlist as the relay keeps it while running: the entries,
/// which of them roll, and when the roll is next checked. Owns its items, so
/// a roll edits one place; the caller moves its subscriptions from the
/// [`Roll`]s it is handed.
///
/// Look-ups by symbol are case-insensitive (`nifty` finds `NIFTY`); when two
/// entries share a symbol or an instrument, the first in configured order
/// answers.
#[derive(Clone, Debug)]
pub struct Watchlist {
    items: Vec<WatchItem>,
    rolling: Vec<String>,
    /// Upper-cased symbol → index of its first entry.
    by_symbol: HashMap<String, usize>,
    /// Instrument → index of its first entry; rebuilt after a roll.
    by_key: HashMap<InstrumentKey, usize>,
}

impl Watchlist {
    /// The watchlist as `resolved`; `resolved`'s notes and skipped entries
    /// are for the start-up log and are not kept.
    pub fn new(resolved: ResolvedWatchlist) -> Watchlist {
        let mut by_symbol = HashMap::with_capacity(resolved.items.len());
        for (i, item) in resolved.items.iter().enumerate() {
            by_symbol
                .entry(item.symbol.to_ascii_uppercase())
                .or_insert(i);
        }
        let mut list = Watchlist {
            items: resolved.items,
            rolling: resolved.rolling,
            by_symbol,
            by_key: HashMap::new(),
        };
        list.index_keys();
        list
    }

    fn index_keys(&mut self) {
        self.by_key.clear();
        for (i, item) in self.items.iter().enumerate() {
            self.by_key.entry(item.key).or_insert(i);
        }
    }

    /// The entries, in configured order.
    pub fn items(&self) -> &[WatchItem] {
        &self.items
    }

    /// Symbols of the entries that roll (resolved to a dated contract).
    pub fn rolling(&self) -> &[String] {
        &self.rolling
    }

    /// The instrument an entry's symbol stands for now (case-insensitive).
    pub fn key_of(&self, symbol: &str) -> Option<InstrumentKey> {
        let i = *self.by_symbol.get(&symbol.trim().to_ascii_uppercase())?;
        Some(self.items[i].key)
    }

    /// The symbol of the entry holding `key`, as configured.
    pub fn symbol_of(&self, key: InstrumentKey) -> Option<&str> {
        let i = *self.by_key.get(&key)?;
        Some(&self.items[i].symbol)
    }

    /// The daily check (run by the maintenance): moves every rolling entry
    /// whose contract has been superseded on `today` to the contract it
    /// resolves to now, logs each move (info) and each entry that no longer
    /// resolves (warning; it keeps its contract), and returns the moves so
    /// the caller can move its subscriptions.
    pub fn roll_on(&mut self, master: &Master, today: Date) -> Vec<Roll> {
        let (rolls, warnings) = plan_rolls(master, &self.items, &self.rolling, today);
        for w in &warnings {
            log::warn!("{w}");
        }
        for roll in &rolls {
            log::info!("{}", roll.message);
            self.items[roll.index].key = roll.to;
        }
        if !rolls.is_empty() {
            self.index_keys();
        }
        rolls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date::from_ymd(y, m, d).unwrap()
    }

    /// CRUDEOIL (rolling) and NIFTY (not), resolved against the sample on
    /// CRUDEOIL's November expiry day.
    fn crude_and_nifty(master: &Master) -> Watchlist {
        let nov19 = day(2026, 11, 19);
        let specs = [
            WatchSpec::by_symbol("CRUDEOIL"),
            WatchSpec::by_symbol("NIFTY"),
            WatchSpec::by_key("Reliance BSE", InstrumentKey::new(Segment::BseEq, 500325)),
        ];
        let resolved = resolve_watchlist(&specs, master, nov19, true).unwrap();
        Watchlist::new(resolved)
    }

    const NOV: InstrumentKey = InstrumentKey::new(Segment::McxComm, 472787);
    const DEC: InstrumentKey = InstrumentKey::new(Segment::McxComm, 472794);
    const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);

    #[test]
    fn an_expired_future_rolls_to_the_next_the_day_after() {
        let m = Master::sample();
        let mut w = crude_and_nifty(&m);
        assert_eq!(w.rolling(), ["CRUDEOIL"]);
        assert_eq!(w.key_of("CRUDEOIL"), Some(NOV));
        assert!(
            w.roll_on(&m, day(2026, 11, 19)).is_empty(),
            "not on its expiry day"
        );
        let rolls = w.roll_on(&m, day(2026, 11, 20));
        assert_eq!(rolls.len(), 1, "{rolls:?}");
        assert_eq!((rolls[0].index, rolls[0].from, rolls[0].to), (0, NOV, DEC));
        assert_eq!(rolls[0].symbol, "CRUDEOIL");
        // The watchlist moved itself: items and both look-ups.
        assert_eq!(w.items()[0].key, DEC);
        assert_eq!(w.key_of("crudeoil"), Some(DEC));
        assert_eq!(w.symbol_of(DEC), Some("CRUDEOIL"));
        assert_eq!(w.symbol_of(NOV), None);
        assert_eq!(w.key_of("NIFTY"), Some(NIFTY), "the rest stays");
        assert!(w.roll_on(&m, day(2026, 11, 20)).is_empty(), "moved once");
    }

    #[test]
    fn an_entry_that_no_longer_resolves_keeps_its_contract() {
        let m = Master::sample();
        let mut w = crude_and_nifty(&m);
        // Past the sample's last CRUDEOIL contract: a warning, not a move.
        let (rolls, warnings) = plan_rolls(&m, w.items(), w.rolling(), day(2028, 1, 1));
        assert!(rolls.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("watchlist 'CRUDEOIL' keeps MCX_COMM:472787")
                && warnings[0].contains("no unexpired MCX future"),
            "{warnings:?}"
        );
        assert!(w.roll_on(&m, day(2028, 1, 1)).is_empty());
        assert_eq!(w.key_of("CRUDEOIL"), Some(NOV));
    }

    #[test]
    fn look_ups_ignore_case_and_the_first_entry_answers() {
        let m = Master::sample();
        let w = crude_and_nifty(&m);
        let bse = InstrumentKey::new(Segment::BseEq, 500325);
        for name in ["nifty", "Nifty", " NIFTY "] {
            assert_eq!(w.key_of(name), Some(NIFTY), "{name:?}");
        }
        assert_eq!(w.key_of("reliance bse"), Some(bse));
        assert_eq!(w.symbol_of(bse), Some("Reliance BSE"), "as configured");
        assert_eq!(w.key_of("RELIANCE"), None, "only the watchlist's names");
        assert_eq!(w.symbol_of(InstrumentKey::new(Segment::NseEq, 2885)), None);
        let twice = ResolvedWatchlist {
            items: vec![
                WatchItem {
                    symbol: "A".into(),
                    key: NIFTY,
                },
                WatchItem {
                    symbol: "a".into(),
                    key: bse,
                },
            ],
            ..ResolvedWatchlist::default()
        };
        let w = Watchlist::new(twice);
        assert_eq!(w.key_of("A"), Some(NIFTY));
        assert_eq!(w.symbol_of(bse), Some("a"));
        assert!(w.rolling().is_empty());
    }
}
