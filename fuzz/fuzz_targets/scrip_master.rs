//! Any bytes as a DhanHQ scrip master (CSV, columns found by header name),
//! loaded with `instrument::Master::parse` (what the engine calls on a file,
//! a download or the cache), then searched and resolved by names taken from
//! the loaded instruments and from the input's own fields.
//!
//! Asserts, beyond "does not panic":
//! - `len()` is the number of instruments `iter()` yields, and `get(key)`
//!   finds each of them (duplicate keys were dropped at load);
//! - `search(q, 5)` returns at most 5 distinct instruments; an instrument's
//!   own trading symbol, when it is plain (printable ASCII, no spaces), finds
//!   at least one (the trigram pre-filter must not hide an exact match);
//! - `resolve(q, today)` returns an instrument `get` knows, or an error that
//!   says something.
#![no_main]

use dhan_relay::instrument::{Date, Master};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(master) = Master::parse(data) else {
        return;
    };
    assert_eq!(master.len(), master.iter().count());
    for inst in master.iter() {
        assert_eq!(master.get(inst.key()), Some(inst), "get({})", inst.key());
    }

    // Names: the first instruments' trading and custom symbols, and a few
    // raw fields of the input (whatever they hold).
    let text = String::from_utf8_lossy(data);
    let mut names: Vec<String> = Vec::new();
    for inst in master.iter().take(2) {
        names.push(inst.symbol().to_string());
        names.push(inst.custom_symbol().to_string());
    }
    names.extend(
        text.split([',', '\n'])
            .filter(|f| !f.trim().is_empty())
            .step_by(7)
            .take(3)
            .map(str::to_string),
    );

    let days = [
        Date::from_ymd(2026, 11, 22).expect("valid date"),
        Date::from_ymd(2031, 1, 1).expect("valid date"),
    ];
    for q in &names {
        let found = master.search(q, 5);
        assert!(found.len() <= 5, "{} results for limit 5", found.len());
        for (i, a) in found.iter().enumerate() {
            assert!(!found[..i].contains(a), "{a:?} twice for {q:?}");
        }
        let plain = !q.is_empty() && q.bytes().all(|b| b.is_ascii_graphic());
        if plain && master.iter().any(|i| i.symbol() == q) {
            assert!(!found.is_empty(), "no result for the trading symbol {q:?}");
        }
        for today in days {
            match master.resolve(q, today) {
                Ok(inst) => assert!(master.get(inst.key()).is_some(), "resolved to {inst:?}"),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
});
