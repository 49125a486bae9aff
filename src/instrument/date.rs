//! Calendar dates and India time, without a time-zone library: India keeps
//! UTC+05:30 all year (no daylight saving), so "today in Asia/Kolkata" is a
//! fixed offset from the epoch.
//!
//! The crate's one home for calendar maths: the day-number conversions,
//! [`CivilTime`] (an instant split into calendar fields) and the timestamp
//! formats built on it — India time for API bodies ([`ist_timestamp`]), UTC
//! for log lines (`crate::logging`). Nothing else repeats the offset or the
//! arithmetic.
//!
//! Time is passed in ([`WallClock`]): resolution and expiry rolls take
//! `today` as an argument, so tests pin the date and replay is exact.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Asia/Kolkata's offset from UTC, in seconds.
pub const IST_OFFSET_SECS: i64 = 19_800;

/// A calendar date (proleptic Gregorian), stored as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i32);

/// Why a date field did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadDate;

impl fmt::Display for BadDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a date (expected YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)")
    }
}

impl std::error::Error for BadDate {}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`): year, month (1–12), day (1–31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days from 1970-01-01 to `y-m-d` (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Date {
    /// The date `y-m-d`, if it exists.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Date> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        Some(Date(days_from_civil(i64::from(y), m, d) as i32))
    }

    /// Year, month (1–12), day (1–31).
    pub fn ymd(self) -> (i32, u32, u32) {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        (y as i32, m, d)
    }

    /// Days since 1970-01-01.
    pub const fn days(self) -> i32 {
        self.0
    }

    /// The date `n` days later (earlier for negative `n`).
    pub const fn add_days(self, n: i32) -> Date {
        Date(self.0 + n)
    }

    /// The calendar date in India at `t`.
    pub fn today_ist(t: SystemTime) -> Date {
        Date(ist_seconds(t).div_euclid(86_400) as i32)
    }

    /// Parses a scrip-master expiry: `YYYY-MM-DD`, optionally followed by a
    /// time (`HH:MM:SS`, ignored: the contract's date is what counts).
    /// Empty, `NA`, `0` and placeholders before 1950 (`0001-01-01`,
    /// `1980-01-01 00:00:00` is kept) are "no expiry".
    pub fn parse_expiry(s: &str) -> Result<Option<Date>, BadDate> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("NA") || s == "0" {
            return Ok(None);
        }
        let date = s.split([' ', 'T']).next().unwrap_or("");
        let b = date.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(BadDate);
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, BadDate> {
            let part = &date[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(BadDate);
            }
            part.parse().map_err(|_| BadDate)
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if y < 1950 {
            return Ok(None);
        }
        Date::from_ymd(y as i32, m, d).map(Some).ok_or(BadDate)
    }
}

impl fmt::Display for Date {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl std::str::FromStr for Date {
    type Err = BadDate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse_expiry(s)?.ok_or(BadDate)
    }
}

/// Whole seconds since the epoch (rounded down, also before 1970) and the
/// microseconds past that second.
fn since_epoch(t: SystemTime) -> (i64, u32) {
    let micros: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    };
    (
        micros.div_euclid(1_000_000) as i64,
        micros.rem_euclid(1_000_000) as u32,
    )
}

/// Seconds since the epoch, shifted to India's wall clock.
fn ist_seconds(t: SystemTime) -> i64 {
    since_epoch(t).0 + IST_OFFSET_SECS
}

/// An instant split into calendar fields on some fixed-offset clock: what
/// timestamps print. Built by [`CivilTime::at`] or [`CivilTime::from_epoch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59 (the epoch count has no leap seconds).
    pub second: u32,
    /// Microseconds past the second.
    pub micros: u32,
}

impl CivilTime {
    /// `secs` whole seconds since the epoch on the clock in question (already
    /// shifted by its offset) plus `micros`.
    pub fn from_epoch(secs: i64, micros: u32) -> CivilTime {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400) as u32;
        CivilTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            micros,
        }
    }

    /// The wall clock `offset_secs` east of UTC at `t`: 0 for UTC,
    /// [`IST_OFFSET_SECS`] for India.
    pub fn at(t: SystemTime, offset_secs: i64) -> CivilTime {
        let (secs, micros) = since_epoch(t);
        CivilTime::from_epoch(secs + offset_secs, micros)
    }
}

impl fmt::Display for CivilTime {
    /// `YYYY-MM-DDTHH:MM:SS` (ISO 8601 without fraction or zone: callers
    /// add the precision and zone they need).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// India time at `t` as ISO 8601 with microseconds and no zone
/// (`2026-02-03T09:09:55.456386`): the `/prices` timestamp, as the replaced
/// backend printed it.
pub fn ist_timestamp(t: SystemTime) -> String {
    let c = CivilTime::at(t, IST_OFFSET_SECS);
    format!("{c}.{:06}", c.micros)
}

/// India time at `unix_secs` as ISO 8601 with its zone, to the second:
/// `2026-12-03T09:00:00+05:30`.
pub fn ist_iso(unix_secs: u64) -> String {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
    format!("{}+05:30", CivilTime::at(t, IST_OFFSET_SECS))
}

/// A time of day in India (minutes after midnight), e.g. when the daily
/// expiry check runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// `hh:mm`, if valid.
    pub const fn new(hour: u16, minute: u16) -> Option<TimeOfDay> {
        if hour < 24 && minute < 60 {
            Some(TimeOfDay(hour * 60 + minute))
        } else {
            None
        }
    }

    /// The time of day in India at `t`.
    pub fn ist(t: SystemTime) -> TimeOfDay {
        TimeOfDay((ist_seconds(t).rem_euclid(86_400) / 60) as u16)
    }

    /// Minutes after midnight.
    pub const fn minutes(self) -> u16 {
        self.0
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = String;

    /// `HH:MM` (24-hour).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a time of day HH:MM (24-hour, India time)");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if m.to_string().len() > 2 || h.to_string().len() > 2 {
            return Err(bad());
        }
        TimeOfDay::new(h, m).ok_or_else(bad)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// The wall clock the relay reads for calendar decisions (today's date,
/// the daily expiry check). The system clock by default; tests inject one.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl WallClock {
    /// The system clock.
    pub fn system() -> WallClock {
        WallClock(Arc::new(SystemTime::now))
    }

    /// A clock that reads `f`.
    pub fn new(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> WallClock {
        WallClock(Arc::new(f))
    }

    /// A clock stopped at `t`.
    pub fn fixed(t: SystemTime) -> WallClock {
        WallClock::new(move || t)
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }

    /// Today in India.
    pub fn today(&self) -> Date {
        Date::today_ist(self.now())
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::system()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WallClock({:?})", self.now())
    }
}

/// The instant `hh:mm` India time on `date`, for tests and tools.
pub fn ist_instant(date: Date, hour: u32, minute: u32) -> SystemTime {
    let secs =
        i64::from(date.days()) * 86_400 + i64::from(hour * 3600 + minute * 60) - IST_OFFSET_SECS;
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_formats() {
        let d = Date::from_ymd(2026, 12, 18).unwrap();
        assert_eq!(Date::parse_expiry("2026-12-18 23:30:00"), Ok(Some(d)));
        assert_eq!(Date::parse_expiry("2026-12-18"), Ok(Some(d)));
        assert_eq!(Date::parse_expiry(" 2026-12-18T14:30:00 "), Ok(Some(d)));
        for none in [
            "",
            "NA",
            "0",
            "0001-01-01",
            "0001-01-01 00:00:00",
            "1900-01-01",
        ] {
            assert_eq!(Date::parse_expiry(none), Ok(None), "{none:?}");
        }
        for bad in [
            "2026-13-45",
            "2026-02-29",
            "26-12-18",
            "2026/12/18",
            "soon",
            "2026-1-18",
        ] {
            assert_eq!(Date::parse_expiry(bad), Err(BadDate), "{bad:?}");
        }
        assert_eq!(
            Date::parse_expiry("2028-02-29")
                .unwrap()
                .unwrap()
                .to_string(),
            "2028-02-29"
        );
        assert_eq!(d.to_string(), "2026-12-18");
        assert_eq!(d.ymd(), (2026, 12, 18));
        assert_eq!(Date::from_ymd(1970, 1, 1).unwrap().days(), 0);
    }

    #[test]
    fn today_is_india_time() {
        let nov22 = Date::from_ymd(2026, 11, 22).unwrap();
        // 2026-11-21 18:29:59 UTC is 23:59:59 IST; a second later it is the 22nd.
        let before = ist_instant(nov22, 0, 0) - Duration::from_secs(1);
        assert_eq!(Date::today_ist(before), nov22.add_days(-1));
        assert_eq!(Date::today_ist(ist_instant(nov22, 0, 0)), nov22);
        assert_eq!(
            TimeOfDay::ist(ist_instant(nov22, 8, 45)),
            TimeOfDay::new(8, 45).unwrap()
        );
        assert_eq!(WallClock::fixed(ist_instant(nov22, 23, 59)).today(), nov22);
    }

    #[test]
    fn civil_days_round_trip() {
        for days in [-719_468, -1, 0, 1, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn ist_timestamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_770_089_995_456_386);
        assert_eq!(ist_timestamp(t), "2026-02-03T09:09:55.456386");
        // 18:30 UTC is midnight in India: the date turns.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_285_800);
        assert_eq!(ist_timestamp(t), "2026-11-22T00:00:00.000000");
        assert_eq!(ist_timestamp(UNIX_EPOCH), "1970-01-01T05:30:00.000000");
        // Before the epoch the fields still count forwards within the second.
        let t = UNIX_EPOCH - Duration::from_micros(19_800_000_001);
        assert_eq!(ist_timestamp(t), "1969-12-31T23:59:59.999999");
    }

    #[test]
    fn civil_times() {
        let c = CivilTime::at(UNIX_EPOCH + Duration::from_millis(1_729_412_345_007), 0);
        assert_eq!(c.to_string(), "2024-10-20T08:19:05");
        assert_eq!(c.micros, 7_000);
        assert_eq!(
            CivilTime::from_epoch(-1, 0).to_string(),
            "1969-12-31T23:59:59"
        );
    }

    #[test]
    fn times_of_day() {
        assert_eq!("08:45".parse(), Ok(TimeOfDay::new(8, 45).unwrap()));
        assert_eq!("0:05".parse::<TimeOfDay>().unwrap().to_string(), "00:05");
        for bad in ["24:00", "8", "08:60", "ab:cd", "08:450"] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
    }
}
