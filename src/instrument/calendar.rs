//! Market hours: whether an exchange segment trades at a given moment, in
//! India time, from a fixed table of regular sessions, weekends, and the
//! relay's own holiday list (optional file, see [`Holidays::parse`]).
//!
//! Regular sessions (sources: NSE, BSE and MCX trading-hours pages; see
//! `docs/dhanhq-protocol.md`, "Market hours"):
//! - NSE and BSE cash, F&O and indices: 09:15–15:30 (the 09:00–09:15
//!   pre-open call auction counts as closed: no continuous prices).
//! - Currency derivatives (NSE, BSE): 09:00–17:00.
//! - MCX: 09:00–23:30 while the United States keeps daylight saving time
//!   (second Sunday of March to first Sunday of November), 23:55 otherwise
//!   (MCX follows the US markets its contracts track). MCX's agricultural
//!   contracts close earlier; they are not modelled.
//!
//! DhanHQ's market-status packet (code 7) is a bare header with no
//! open/closed flag, so the calendar decides; the relay reflects the
//! packets it receives as a time stamp per segment (see the book).

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use super::{Date, TimeOfDay};
use crate::domain::Segment;

/// The groups of segments that open and close together, and that the
/// holiday file names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Venue {
    /// NSE cash, F&O, and indices (`IDX_I` follows NSE's calendar).
    Nse,
    /// BSE cash and F&O.
    Bse,
    /// NSE and BSE currency derivatives.
    Currency,
    /// MCX commodities.
    Mcx,
}

impl Venue {
    /// Every venue, in display order.
    pub const ALL: [Venue; 4] = [Venue::Nse, Venue::Bse, Venue::Currency, Venue::Mcx];

    /// The venue a segment trades on.
    pub fn of(segment: Segment) -> Venue {
        match segment {
            Segment::IdxI | Segment::NseEq | Segment::NseFno => Venue::Nse,
            Segment::BseEq | Segment::BseFno => Venue::Bse,
            Segment::NseCurrency | Segment::BseCurrency => Venue::Currency,
            Segment::McxComm => Venue::Mcx,
        }
    }

    /// The name used in the holiday file and in `/prices`.
    pub fn name(self) -> &'static str {
        match self {
            Venue::Nse => "NSE",
            Venue::Bse => "BSE",
            Venue::Currency => "CURRENCY",
            Venue::Mcx => "MCX",
        }
    }

    fn parse(s: &str) -> Option<Venue> {
        Venue::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Open or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Market {
    /// In a regular trading session.
    Open,
    /// Outside one (before, after, weekend, holiday).
    Closed,
}

impl Market {
    /// `open` / `closed`, as `/prices` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Market::Open => "open",
            Market::Closed => "closed",
        }
    }
}

/// How a holiday closes a venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closure {
    /// No session at all.
    AllDay,
    /// MCX on an exchange holiday: no morning session, trading from 17:00.
    Evening,
}

/// Dates on which venues do not trade (beyond weekends).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holidays {
    closed: HashMap<(Date, Venue), Closure>,
}

/// MCX's evening session on exchange holidays starts at 17:00.
const EVENING_OPEN: TimeOfDay = match TimeOfDay::new(17, 0) {
    Some(t) => t,
    None => panic!(),
};

impl Holidays {
    /// Reads the holiday file: one date per line, `YYYY-MM-DD` followed by
    /// the venues it closes (`NSE`, `BSE`, `CURRENCY`, `MCX`, `MCX-EVENING`
    /// for MCX trading its evening session only, or `ALL`; none means
    /// `ALL`), then an optional `# comment`. Blank lines and comment lines
    /// are skipped. Errors name the line.
    pub fn parse(text: &str) -> Result<Holidays, String> {
        let mut closed = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: String| format!("line {}: {why}", n + 1);
            let mut words = line.split(|c: char| c.is_whitespace() || c == ',');
            let date: Date = words
                .next()
                .unwrap_or("")
                .parse()
                .map_err(|_| bad(format!("'{line}' does not start with a date YYYY-MM-DD")))?;
            let mut any = false;
            for word in words.filter(|w| !w.is_empty()) {
                any = true;
                if word.eq_ignore_ascii_case("ALL") {
                    for v in Venue::ALL {
                        closed.insert((date, v), Closure::AllDay);
                    }
                } else if word.eq_ignore_ascii_case("MCX-EVENING") {
                    closed.insert((date, Venue::Mcx), Closure::Evening);
                } else {
                    let v = Venue::parse(word).ok_or_else(|| {
                        bad(format!(
                            "unknown venue '{word}' (use NSE, BSE, CURRENCY, MCX, MCX-EVENING or ALL)"
                        ))
                    })?;
                    closed.insert((date, v), Closure::AllDay);
                }
            }
            if !any {
                for v in Venue::ALL {
                    closed.insert((date, v), Closure::AllDay);
                }
            }
        }
        Ok(Holidays { closed })
    }

    /// Reads and parses a holiday file.
    pub fn load(path: &std::path::Path) -> Result<Holidays, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read holiday file {}: {e}", path.display()))?;
        Holidays::parse(&text).map_err(|e| format!("holiday file {}: {e}", path.display()))
    }

    /// Dates listed.
    pub fn len(&self) -> usize {
        self.closed.len()
    }

    /// No dates listed.
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty()
    }
}

/// The calendar: regular sessions plus holidays.
#[derive(Clone, Debug, Default)]
pub struct Calendar {
    holidays: Holidays,
}

impl Calendar {
    /// Regular sessions and these holidays.
    pub fn new(holidays: Holidays) -> Calendar {
        Calendar { holidays }
    }

    /// Whether `venue` trades at `now`.
    pub fn venue(&self, venue: Venue, now: SystemTime) -> Market {
        let date = Date::today_ist(now);
        let time = TimeOfDay::ist(now);
        if weekday(date) >= 5 {
            return Market::Closed;
        }
        let (mut open, close) = session(venue, date);
        match self.holidays.closed.get(&(date, venue)) {
            Some(Closure::AllDay) => return Market::Closed,
            Some(Closure::Evening) => open = EVENING_OPEN,
            None => {}
        }
        if time >= open && time < close {
            Market::Open
        } else {
            Market::Closed
        }
    }

    /// Whether `segment` trades at `now`.
    pub fn market(&self, segment: Segment, now: SystemTime) -> Market {
        self.venue(Venue::of(segment), now)
    }
}

fn hm(h: u16, m: u16) -> TimeOfDay {
    TimeOfDay::new(h, m).expect("valid session time")
}

/// A venue's regular session on a weekday: (open, close), India time.
fn session(venue: Venue, date: Date) -> (TimeOfDay, TimeOfDay) {
    match venue {
        Venue::Nse | Venue::Bse => (hm(9, 15), hm(15, 30)),
        Venue::Currency => (hm(9, 0), hm(17, 0)),
        Venue::Mcx if us_daylight_saving(date) => (hm(9, 0), hm(23, 30)),
        Venue::Mcx => (hm(9, 0), hm(23, 55)),
    }
}

/// Monday = 0 … Sunday = 6 (1970-01-01 was a Thursday).
fn weekday(date: Date) -> i32 {
    (date.days() + 3).rem_euclid(7)
}

/// The `n`th Sunday (1-based) of a month.
fn nth_sunday(year: i32, month: u32, n: i32) -> Date {
    let first = Date::from_ymd(year, month, 1).expect("valid month");
    let to_sunday = (6 - weekday(first)).rem_euclid(7);
    first.add_days(to_sunday + 7 * (n - 1))
}

/// Whether US daylight saving time is in force on `date` (from the second
/// Sunday of March to the first Sunday of November).
fn us_daylight_saving(date: Date) -> bool {
    let (y, _, _) = date.ymd();
    date >= nth_sunday(y, 3, 2) && date < nth_sunday(y, 11, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::date::ist_instant;

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date::from_ymd(y, m, d).unwrap()
    }

    #[test]
    fn weekdays_and_dst_boundaries() {
        assert_eq!(weekday(day(2026, 12, 3)), 3, "a Thursday");
        assert_eq!(weekday(day(2026, 12, 6)), 6, "a Sunday");
        assert_eq!(nth_sunday(2026, 3, 2), day(2026, 3, 8));
        assert_eq!(nth_sunday(2026, 11, 1), day(2026, 11, 1));
        assert!(!us_daylight_saving(day(2026, 3, 7)));
        assert!(us_daylight_saving(day(2026, 3, 9)));
        assert!(!us_daylight_saving(day(2026, 11, 2)));
    }

    #[test]
    fn regular_sessions_by_venue() {
        let cal = Calendar::default();
        let thu = day(2026, 12, 3);
        let at = |h, m| ist_instant(thu, h, m);
        assert_eq!(cal.market(Segment::NseEq, at(9, 14)), Market::Closed);
        assert_eq!(cal.market(Segment::NseEq, at(9, 15)), Market::Open);
        assert_eq!(cal.market(Segment::IdxI, at(15, 29)), Market::Open);
        assert_eq!(cal.market(Segment::BseFno, at(15, 30)), Market::Closed);
        assert_eq!(cal.market(Segment::NseCurrency, at(16, 59)), Market::Open);
        assert_eq!(cal.market(Segment::NseCurrency, at(17, 0)), Market::Closed);
        // December: US standard time, MCX runs to 23:55.
        assert_eq!(cal.market(Segment::McxComm, at(23, 40)), Market::Open);
        let july = |h, m| ist_instant(day(2026, 7, 2), h, m);
        assert_eq!(cal.market(Segment::McxComm, july(23, 40)), Market::Closed);
        assert_eq!(cal.market(Segment::McxComm, july(23, 29)), Market::Open);
        let sat = ist_instant(day(2026, 12, 5), 11, 0);
        for seg in Segment::ALL {
            assert_eq!(cal.market(seg, sat), Market::Closed, "{seg}");
        }
    }

    #[test]
    fn holidays_close_the_venues_they_name() {
        let text = "# 2026 list\n2026-12-03 NSE, BSE MCX-EVENING  # a holiday\n\n2026-12-04\n";
        let cal = Calendar::new(Holidays::parse(text).unwrap());
        let at = |d, h, m| ist_instant(day(2026, 12, d), h, m);
        assert_eq!(cal.market(Segment::NseEq, at(3, 11, 0)), Market::Closed);
        assert_eq!(cal.market(Segment::BseEq, at(3, 11, 0)), Market::Closed);
        assert_eq!(cal.market(Segment::BseCurrency, at(3, 11, 0)), Market::Open);
        assert_eq!(cal.market(Segment::McxComm, at(3, 11, 0)), Market::Closed);
        assert_eq!(cal.market(Segment::McxComm, at(3, 18, 0)), Market::Open);
        for seg in Segment::ALL {
            assert_eq!(cal.market(seg, at(4, 12, 0)), Market::Closed, "{seg}");
        }
        assert_eq!(cal.market(Segment::NseEq, at(2, 12, 0)), Market::Open);
    }

    #[test]
    fn a_bad_holiday_line_is_named() {
        let e = Holidays::parse("2026-01-26\nnot a date\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = Holidays::parse("2026-01-26 NYSE\n").unwrap_err();
        assert!(e.contains("unknown venue 'NYSE'"), "{e}");
        assert!(Holidays::parse("").unwrap().is_empty());
    }
}
