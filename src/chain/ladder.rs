//! An option chain's strike ladder, read from the instrument master: for
//! one underlying and one expiry, every listed strike with its CE and PE
//! keys, the strike step, the lot size, and the instrument whose price
//! decides the money (the index, the stock, or for options on futures the
//! matching future).
//!
//! Pure: the master and `today` (India's date) are arguments; nothing here
//! reads a clock or subscribes anything. Errors are sentences for a person
//! (an unknown underlying lists close names; a missing expiry lists the
//! listed ones).

use std::fmt;
use std::str::FromStr;

use crate::domain::{InstrumentKey, Segment};
use crate::instrument::{Date, Exchange, Instrument, Kind, Master, OptionType};

/// Which of an underlying's listed expiries a chain follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExpiryPick {
    /// The first expiry not before today.
    #[default]
    Nearest,
    /// The one after that.
    Next,
    /// The last listed expiry of the nearest month that has one.
    Monthly,
    /// This date exactly.
    On(Date),
}

impl FromStr for ExpiryPick {
    type Err = String;

    /// `nearest`, `next`, `monthly` (case-insensitive) or `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "nearest" => Ok(ExpiryPick::Nearest),
            "next" => Ok(ExpiryPick::Next),
            "monthly" => Ok(ExpiryPick::Monthly),
            _ => match t.parse::<Date>() {
                Ok(d) if t.len() == 10 => Ok(ExpiryPick::On(d)),
                _ => Err(format!(
                    "expiry '{t}' is not one of nearest, next, monthly or a date YYYY-MM-DD"
                )),
            },
        }
    }
}

impl fmt::Display for ExpiryPick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpiryPick::Nearest => f.write_str("nearest"),
            ExpiryPick::Next => f.write_str("next"),
            ExpiryPick::Monthly => f.write_str("monthly"),
            ExpiryPick::On(d) => write!(f, "{d}"),
        }
    }
}

/// One strike of a ladder: its call and put, where listed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Strike {
    /// The strike price in rupees.
    pub strike: f64,
    /// The CE contract.
    pub call: Option<InstrumentKey>,
    /// The PE contract.
    pub put: Option<InstrumentKey>,
}

/// The option series of one underlying and expiry.
#[derive(Clone, Debug, PartialEq)]
pub struct Ladder {
    /// The upper-cased underlying (`NIFTY`, `CRUDEOIL`).
    pub underlying: String,
    /// The expiry date.
    pub expiry: Date,
    /// The most common gap between consecutive listed strikes.
    pub strike_step: f64,
    /// Contracts per lot.
    pub lot_size: u32,
    /// Whose price decides the money: the index (`IDX_I`), the stock
    /// (`NSE_EQ`/`BSE_EQ`), or for options on futures the future of the
    /// same month (else the nearest one).
    pub price_source: InstrumentKey,
    /// Every listed strike, ascending.
    pub strikes: Vec<Strike>,
    /// The options' feed segment (`NSE_FNO`, `BSE_FNO`, `MCX_COMM`, …).
    pub segment: Segment,
}

/// The options of `underlying` in the segment that lists most of them
/// (an underlying with options on two exchanges is rare; the bigger
/// series wins).
fn options<'m>(master: &'m Master, underlying: &str) -> Vec<Instrument<'m>> {
    let under = underlying.trim().to_ascii_uppercase();
    let all: Vec<Instrument<'m>> = master
        .contracts(&under, Kind::Option)
        .iter()
        .map(|&i| master.at(i))
        .filter(|i| i.expiry().is_some() && i.strike().is_some() && i.option_type().is_some())
        .collect();
    let mut best: Option<(Segment, usize)> = None;
    for s in Segment::ALL {
        let n = all.iter().filter(|i| i.key().segment == s).count();
        if n > 0 && !matches!(best, Some((_, m)) if m >= n) {
            best = Some((s, n));
        }
    }
    match best {
        Some((s, _)) => all.into_iter().filter(|i| i.key().segment == s).collect(),
        None => Vec::new(),
    }
}

fn listed_expiries(opts: &[Instrument<'_>], today: Date) -> Vec<Date> {
    let mut v: Vec<Date> = opts
        .iter()
        .filter_map(|i| i.expiry())
        .filter(|&d| d >= today)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The listed option expiries of `underlying`, ascending, not before
/// `today` (empty for an unknown name or one without options).
pub fn expiries(master: &Master, underlying: &str, today: Date) -> Vec<Date> {
    listed_expiries(&options(master, underlying), today)
}

fn list(dates: &[Date]) -> String {
    dates
        .iter()
        .map(Date::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Underlyings with options whose names are close to `name` (at most 5,
/// closest first).
fn close_names(master: &Master, name: &str) -> Vec<String> {
    let mut v: Vec<(usize, &str)> = master
        .by_under
        .keys()
        .filter(|u| !master.contracts(u, Kind::Option).is_empty())
        .filter_map(|u| {
            let d = crate::instrument::resolve::distance(name.as_bytes(), u.as_bytes());
            let near = d <= 2.max(name.len() / 4)
                || (name.len() >= 3 && (u.starts_with(name) || name.starts_with(&**u)));
            near.then_some((d, &**u))
        })
        .collect();
    v.sort_unstable();
    v.into_iter().take(5).map(|(_, u)| u.to_string()).collect()
}

/// The expiry `pick` names among `listed` (ascending).
fn pick_expiry(under: &str, pick: ExpiryPick, listed: &[Date]) -> Result<Date, String> {
    let first = *listed
        .first()
        .ok_or_else(|| format!("{under} has no unexpired options"))?;
    match pick {
        ExpiryPick::Nearest => Ok(first),
        ExpiryPick::Next => listed.get(1).copied().ok_or_else(|| {
            format!("{under} lists only one expiry ({first}), so there is no next one")
        }),
        ExpiryPick::Monthly => {
            let (y, m, _) = first.ymd();
            Ok(listed
                .iter()
                .rev()
                .copied()
                .find(|d| {
                    let (dy, dm, _) = d.ymd();
                    (dy, dm) == (y, m)
                })
                .unwrap_or(first))
        }
        ExpiryPick::On(d) if listed.contains(&d) => Ok(d),
        ExpiryPick::On(d) => Err(format!(
            "{under} has no options expiring {d}; listed expiries: {}",
            list(listed)
        )),
    }
}

/// The most common gap between consecutive strikes (the smaller on a tie;
/// 0 with fewer than two strikes).
fn most_common_gap(strikes: &[Strike]) -> f64 {
    let mut gaps: Vec<i64> = strikes
        .windows(2)
        .map(|w| ((w[1].strike - w[0].strike) * 10_000.0).round() as i64)
        .filter(|&g| g > 0)
        .collect();
    gaps.sort_unstable();
    let mut best = (0usize, 0i64);
    let mut i = 0;
    while i < gaps.len() {
        let j = gaps[i..].partition_point(|&g| g == gaps[i]) + i;
        if j - i > best.0 {
            best = (j - i, gaps[i]);
        }
        i = j;
    }
    best.1 as f64 / 10_000.0
}

/// Whose price decides the money for `opt`'s series.
fn price_source(
    master: &Master,
    under: &str,
    opt: Instrument<'_>,
    expiry: Date,
    today: Date,
) -> Result<InstrumentKey, String> {
    let exchange = opt.exchange();
    let rows = |kind: Kind| -> Vec<Instrument<'_>> {
        master
            .contracts(under, kind)
            .iter()
            .map(|&i| master.at(i))
            .collect()
    };
    let class = opt.instrument().to_ascii_uppercase();
    if class.starts_with("OPTIDX") {
        let idx = rows(Kind::Index);
        if let Some(i) = idx
            .iter()
            .find(|i| i.exchange() == exchange)
            .or(idx.first())
        {
            return Ok(i.key());
        }
    } else if class.starts_with("OPTSTK") {
        let want = if exchange == Exchange::Bse {
            Segment::BseEq
        } else {
            Segment::NseEq
        };
        let eq = rows(Kind::Equity);
        if let Some(i) = eq.iter().find(|i| i.key().segment == want).or(eq.first()) {
            return Ok(i.key());
        }
    }
    // Options on futures (and any series without its spot): the future of
    // the expiry's month, else the nearest unexpired one.
    let mut futs: Vec<Instrument<'_>> = rows(Kind::Future)
        .into_iter()
        .filter(|f| f.exchange() == exchange && f.expiry().is_some_and(|d| d >= today))
        .collect();
    futs.sort_by_key(|f| f.expiry());
    let (y, m, _) = expiry.ymd();
    let same_month = futs.iter().find(|f| {
        f.expiry().is_some_and(|d| {
            let (fy, fm, _) = d.ymd();
            (fy, fm) == (y, m)
        })
    });
    same_month
        .or(futs.first())
        .map(|f| f.key())
        .ok_or_else(|| format!("{under}: no index, stock or future to price its options from"))
}

/// The ladder of `underlying`'s options expiring as `pick` says, as of
/// `today`.
pub fn build(
    master: &Master,
    underlying: &str,
    pick: ExpiryPick,
    today: Date,
) -> Result<Ladder, String> {
    let under = underlying.trim().to_ascii_uppercase();
    let opts = options(master, &under);
    if opts.is_empty() {
        if master.by_under.contains_key(under.as_str()) {
            return Err(format!("{under} has no listed options"));
        }
        let close = close_names(master, &under);
        return Err(if close.is_empty() {
            format!("unknown underlying '{under}'")
        } else {
            format!(
                "unknown underlying '{under}' (did you mean {}?)",
                close.join(", ")
            )
        });
    }
    let listed = listed_expiries(&opts, today);
    if listed.is_empty() {
        let last = opts.iter().filter_map(|i| i.expiry()).max();
        return Err(match last {
            Some(d) => format!("{under} has no unexpired options (the last expired {d})"),
            None => format!("{under} has no unexpired options"),
        });
    }
    let expiry = pick_expiry(&under, pick, &listed)?;
    let series: Vec<Instrument<'_>> = opts
        .into_iter()
        .filter(|i| i.expiry() == Some(expiry))
        .collect();
    let mut strikes: Vec<Strike> = Vec::new();
    let mut sorted = series.clone();
    sorted.sort_by(|a, b| {
        let (x, y) = (a.strike().unwrap_or(0.0), b.strike().unwrap_or(0.0));
        x.total_cmp(&y)
    });
    for i in &sorted {
        let k = i.strike().unwrap_or(0.0);
        if !matches!(strikes.last(), Some(s) if (s.strike - k).abs() <= 1e-6) {
            strikes.push(Strike {
                strike: k,
                call: None,
                put: None,
            });
        }
        let Some(s) = strikes.last_mut() else {
            continue;
        };
        let slot = match i.option_type() {
            Some(OptionType::Call) => &mut s.call,
            Some(OptionType::Put) => &mut s.put,
            None => continue,
        };
        // A duplicate (same strike, type and expiry) keeps the first.
        slot.get_or_insert(i.key());
    }
    let first = series[0];
    let lot = first.lot_size();
    Ok(Ladder {
        strike_step: most_common_gap(&strikes),
        lot_size: if lot.is_finite() && lot >= 1.0 {
            lot.min(u32::MAX as f64) as u32
        } else {
            1
        },
        price_source: price_source(master, &under, first, expiry, today)?,
        segment: first.key().segment,
        underlying: under,
        expiry,
        strikes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn today() -> Date {
        day("2026-12-03")
    }

    #[test]
    fn expiry_picks_parse_in_words() {
        assert_eq!("nearest".parse(), Ok(ExpiryPick::Nearest));
        assert_eq!("Next".parse(), Ok(ExpiryPick::Next));
        assert_eq!(" monthly ".parse(), Ok(ExpiryPick::Monthly));
        assert_eq!("2026-12-29".parse(), Ok(ExpiryPick::On(day("2026-12-29"))));
        for bad in [
            "",
            "weekly",
            "2026-12-32",
            "2026-12-29 14:30:00",
            "29-12-2026",
        ] {
            let e = bad.parse::<ExpiryPick>().unwrap_err();
            assert!(e.contains("nearest, next, monthly"), "{bad}: {e}");
        }
        assert_eq!(ExpiryPick::On(day("2026-12-08")).to_string(), "2026-12-08");
    }

    #[test]
    fn sample_nifty_weekly_ladder() {
        let m = Master::sample();
        assert_eq!(
            expiries(&m, "nifty", today()),
            vec![day("2026-12-08"), day("2026-12-15"), day("2026-12-29")]
        );
        let l = build(&m, "NIFTY", ExpiryPick::Nearest, today()).unwrap();
        assert_eq!(l.underlying, "NIFTY");
        assert_eq!(l.expiry, day("2026-12-08"));
        assert_eq!(l.segment, Segment::NseFno);
        assert_eq!(l.strike_step, 50.0);
        assert_eq!(l.lot_size, 75);
        assert_eq!(l.price_source, InstrumentKey::new(Segment::IdxI, 13));
        assert_eq!(l.strikes.len(), 33);
        assert_eq!(l.strikes[0].strike, 25_000.0);
        assert_eq!(l.strikes[32].strike, 26_600.0);
        assert!(l.strikes.windows(2).all(|w| w[0].strike < w[1].strike));
        for s in &l.strikes {
            for (key, ty) in [(s.call, OptionType::Call), (s.put, OptionType::Put)] {
                let i = m.get(key.expect("both sides listed")).unwrap();
                assert_eq!(i.strike(), Some(s.strike));
                assert_eq!(i.option_type(), Some(ty));
                assert_eq!(i.expiry(), Some(l.expiry));
            }
        }
        let next = build(&m, "NIFTY", ExpiryPick::Next, today()).unwrap();
        assert_eq!(next.expiry, day("2026-12-15"));
        let monthly = build(&m, "NIFTY", ExpiryPick::Monthly, today()).unwrap();
        assert_eq!(monthly.expiry, day("2026-12-29"));
        let on = build(&m, "NIFTY", ExpiryPick::On(day("2026-12-15")), today()).unwrap();
        assert_eq!(on, next);
        // Expired series are not listed: after the 8th, the 15th is nearest.
        let later = build(&m, "NIFTY", ExpiryPick::Nearest, day("2026-12-09")).unwrap();
        assert_eq!(later.expiry, day("2026-12-15"));
        // On expiry day the expiring series is still the nearest.
        let on_day = build(&m, "NIFTY", ExpiryPick::Nearest, day("2026-12-08")).unwrap();
        assert_eq!(on_day.expiry, day("2026-12-08"));
    }

    #[test]
    fn sample_sensex_and_crudeoil() {
        let m = Master::sample();
        let s = build(&m, "SENSEX", ExpiryPick::Nearest, today()).unwrap();
        assert_eq!(s.expiry, day("2026-12-10"));
        assert_eq!(s.segment, Segment::BseFno);
        assert_eq!((s.strike_step, s.lot_size), (100.0, 20));
        assert_eq!(s.price_source, InstrumentKey::new(Segment::IdxI, 51));
        assert_eq!(s.strikes.len(), 41);
        let monthly = build(&m, "SENSEX", ExpiryPick::Monthly, today()).unwrap();
        assert_eq!(monthly.expiry, day("2026-12-24"));

        let c = build(&m, "CRUDEOIL", ExpiryPick::Nearest, today()).unwrap();
        assert_eq!(c.expiry, day("2026-12-16"));
        assert_eq!(c.segment, Segment::McxComm);
        assert_eq!((c.strike_step, c.lot_size), (50.0, 100));
        // The December future (expiring the 18th), not the options' month
        // neighbour or another exchange's.
        assert_eq!(c.price_source, InstrumentKey::new(Segment::McxComm, 472794));
        // January's options: January's future.
        let jan = build(&m, "CRUDEOIL", ExpiryPick::Next, today()).unwrap();
        assert_eq!(jan.expiry, day("2027-01-15"));
        assert_eq!(
            jan.price_source,
            InstrumentKey::new(Segment::McxComm, 472801)
        );
        assert_eq!(jan.strike_step, 100.0);

        let r = build(&m, "RELIANCE", ExpiryPick::Nearest, today()).unwrap();
        assert_eq!(r.price_source, InstrumentKey::new(Segment::NseEq, 2885));
        assert_eq!(r.expiry, day("2026-12-29"));
    }

    #[test]
    fn errors_say_what_is_there() {
        let m = Master::sample();
        let e = build(&m, "NIFTI", ExpiryPick::Nearest, today()).unwrap_err();
        assert!(
            e.contains("unknown underlying 'NIFTI'") && e.contains("NIFTY"),
            "{e}"
        );
        let e = build(&m, "ZZZZZZZZ", ExpiryPick::Nearest, today()).unwrap_err();
        assert_eq!(e, "unknown underlying 'ZZZZZZZZ'");
        let e = build(&m, "TCS", ExpiryPick::Nearest, today()).unwrap_err();
        assert_eq!(e, "TCS has no listed options");
        let e = build(&m, "NIFTY", ExpiryPick::On(day("2026-12-09")), today()).unwrap_err();
        assert_eq!(
            e,
            "NIFTY has no options expiring 2026-12-09; listed expiries: 2026-12-08, 2026-12-15, 2026-12-29"
        );
        let e = build(&m, "USDINR", ExpiryPick::Nearest, today()).unwrap_err();
        assert!(
            e.contains("no unexpired options (the last expired 2026-11-27)"),
            "{e}"
        );
        let e = build(&m, "BANKNIFTY", ExpiryPick::Next, today()).unwrap_err();
        assert!(e.contains("only one expiry (2026-12-29)"), "{e}");
        assert!(expiries(&m, "NOPE", today()).is_empty());
    }

    #[test]
    fn strike_step_is_the_most_common_gap() {
        let s = |k: &[f64]| -> Vec<Strike> {
            k.iter()
                .map(|&strike| Strike {
                    strike,
                    call: None,
                    put: None,
                })
                .collect()
        };
        assert_eq!(most_common_gap(&s(&[100.0, 150.0, 200.0, 300.0])), 50.0);
        assert_eq!(
            most_common_gap(&s(&[100.0, 200.0, 250.0, 350.0, 450.0])),
            100.0
        );
        // A tie goes to the smaller gap.
        assert_eq!(most_common_gap(&s(&[100.0, 150.0, 250.0])), 50.0);
        assert_eq!(most_common_gap(&s(&[84.0, 84.25, 84.5])), 0.25);
        assert_eq!(most_common_gap(&s(&[100.0])), 0.0);
    }
}
