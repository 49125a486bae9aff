//! Instruments by name: DhanHQ's scrip master, loaded into an indexed,
//! immutable [`Master`]; symbol resolution (`NIFTY` → `IDX_I 13`,
//! `CRUDEOIL` → the nearest unexpired MCX future); ranked search; where the
//! master comes from (file, download with a daily cache, or the sample
//! embedded in the binary); and the watchlist's expiry roll.
//!
//! Contract:
//! - Loading never fails on a bad row: it is counted and reported (first few
//!   with line numbers). Only an unreadable source or a file without the
//!   master's columns is an error.
//! - Exchange + segment letter map to feed segments in one table
//!   ([`feed_segment`]); rows of segments the feed does not carry (NSE/BSE
//!   commodities) are skipped and counted, so they can never be subscribed.
//! - Resolution takes `today` (India's date) as an argument; nothing here
//!   reads a clock.
//! - A commodity name resolves to MCX futures (`FUTCOM`) only: the replaced
//!   backend once subscribed another exchange's crude contract because it
//!   mixed exchanges while picking the nearest expiry.
//! - Look-ups on the per-update path do not exist here: the fanout copies
//!   the symbols it needs when a client subscribes.

pub mod calendar;
mod csv;
pub mod date;
mod master;
pub(crate) mod resolve;
pub mod search;
pub mod source;
pub mod synth;
pub mod watch;

pub use calendar::{Calendar, Holidays, Market, Venue};
pub use date::{Date, TimeOfDay, WallClock};
pub use master::{Instrument, LoadReport, Master, MasterError, RowProblem};
pub use resolve::{Candidate, ResolveError, Resolved, ResolvedName, MAX_LISTED_FAILURES};
pub use watch::{WatchItem, Watchlist};

use crate::domain::Segment;

/// The master in use, swapped whole by the daily maintenance; readers
/// `load()` it per request (lock-free) and never hold it across a turn.
pub type SharedMaster = std::sync::Arc<arc_swap::ArcSwap<Master>>;

/// The exchanges in DhanHQ's scrip master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exchange {
    /// National Stock Exchange.
    Nse,
    /// BSE.
    Bse,
    /// Multi Commodity Exchange.
    Mcx,
}

impl Exchange {
    /// `NSE`, `BSE`, `MCX`.
    pub const fn name(self) -> &'static str {
        match self {
            Exchange::Nse => "NSE",
            Exchange::Bse => "BSE",
            Exchange::Mcx => "MCX",
        }
    }

    /// Parses the master's `SEM_EXM_EXCH_ID` (case-insensitive).
    pub fn parse(s: &str) -> Option<Exchange> {
        [Exchange::Nse, Exchange::Bse, Exchange::Mcx]
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s))
    }
}

/// The feed segment of an exchange and segment letter; `Err(true)` for a
/// letter DhanHQ uses that the Live Market Feed does not carry (NSE or BSE
/// `M`), `Err(false)` for an unknown letter.
pub fn feed_segment(exchange: Exchange, letter: &str) -> Result<Segment, bool> {
    use Exchange::*;
    Ok(match (exchange, letter) {
        (Nse | Bse, "I") => Segment::IdxI,
        (Nse, "E") => Segment::NseEq,
        (Nse, "D") => Segment::NseFno,
        (Nse, "C") => Segment::NseCurrency,
        (Bse, "E") => Segment::BseEq,
        (Bse, "D") => Segment::BseFno,
        (Bse, "C") => Segment::BseCurrency,
        (Mcx, "M") => Segment::McxComm,
        (_, "I" | "E" | "D" | "C" | "M") => return Err(true),
        _ => return Err(false),
    })
}

/// What an instrument is, from `SEM_INSTRUMENT_NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `INDEX`.
    Index,
    /// `EQUITY`.
    Equity,
    /// `FUTIDX`, `FUTSTK`, `FUTCOM`, `FUTCUR`, …
    Future,
    /// `OPTIDX`, `OPTSTK`, `OPTFUT`, `OPTCUR`, …
    Option,
    /// Anything else.
    Other,
}

impl Kind {
    /// The kind of a `SEM_INSTRUMENT_NAME`.
    pub fn of(instrument: &str) -> Kind {
        // Bytes, not a `str` slice: a non-ASCII name must not split a char.
        let up = |p: &str| {
            instrument
                .as_bytes()
                .get(..p.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
        };
        if instrument.eq_ignore_ascii_case("INDEX") {
            Kind::Index
        } else if instrument.eq_ignore_ascii_case("EQUITY") {
            Kind::Equity
        } else if up("FUT") {
            Kind::Future
        } else if up("OPT") {
            Kind::Option
        } else {
            Kind::Other
        }
    }
}

/// Call or put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptionType {
    /// `CE`.
    Call,
    /// `PE`.
    Put,
}

impl OptionType {
    /// `CE` / `PE` (also `CALL` / `PUT`), case-insensitive.
    pub fn parse(s: &str) -> Option<OptionType> {
        match s.to_ascii_uppercase().as_str() {
            "CE" | "CALL" => Some(OptionType::Call),
            "PE" | "PUT" => Some(OptionType::Put),
            _ => None,
        }
    }

    /// `CE` / `PE`.
    pub const fn name(self) -> &'static str {
        match self {
            OptionType::Call => "CE",
            OptionType::Put => "PE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_letters_map_to_feed_segments() {
        use Exchange::*;
        let table = [
            (Nse, "I", Ok(Segment::IdxI)),
            (Bse, "I", Ok(Segment::IdxI)),
            (Nse, "E", Ok(Segment::NseEq)),
            (Nse, "D", Ok(Segment::NseFno)),
            (Nse, "C", Ok(Segment::NseCurrency)),
            (Bse, "E", Ok(Segment::BseEq)),
            (Bse, "D", Ok(Segment::BseFno)),
            (Bse, "C", Ok(Segment::BseCurrency)),
            (Mcx, "M", Ok(Segment::McxComm)),
            (Nse, "M", Err(true)),
            (Bse, "M", Err(true)),
            (Mcx, "E", Err(true)),
            (Mcx, "I", Err(true)),
            (Nse, "X", Err(false)),
            (Nse, "", Err(false)),
        ];
        for (exchange, letter, want) in table {
            assert_eq!(
                feed_segment(exchange, letter),
                want,
                "{exchange:?} {letter}"
            );
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of("INDEX"), Kind::Index);
        assert_eq!(Kind::of("EQUITY"), Kind::Equity);
        for f in ["FUTIDX", "FUTSTK", "FUTCOM", "FUTCUR"] {
            assert_eq!(Kind::of(f), Kind::Future);
        }
        for o in ["OPTIDX", "OPTSTK", "OPTFUT", "OPTCUR"] {
            assert_eq!(Kind::of(o), Kind::Option);
        }
        assert_eq!(Kind::of("ETF"), Kind::Other);
        // Regression (found by the scrip_master fuzz target): a non-ASCII
        // instrument name used to panic by slicing inside a character.
        for odd in ["EQ\u{20ac}UITY", "I\u{fffd}DEX", "F\u{e9}T", "\u{20ac}"] {
            assert_eq!(Kind::of(odd), Kind::Other, "{odd}");
        }
        let row = "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_TRADING_SYMBOL,SEM_EXPIRY_DATE\nNSE,E,2885,EQ\u{20ac}UITY,RELIANCE,\n";
        assert!(
            Master::parse(row.as_bytes()).is_ok(),
            "a bad row, not a panic"
        );
        assert_eq!(Exchange::parse("mcx"), Some(Exchange::Mcx));
        assert_eq!(Exchange::parse("NCDEX"), None);
    }
}
