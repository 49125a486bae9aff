//! Symbol resolution: a name as people write it → one instrument.
//!
//! Rules, in order (an `NSE:`/`BSE:`/`MCX:` prefix restricts every rule to
//! that exchange):
//! 1. `<UNDERLYING> FUT` → that underlying's nearest unexpired future;
//!    `<UNDERLYING> <STRIKE> CE|PE` → the nearest unexpired option at that
//!    strike.
//! 2. An exact trading symbol: indices before equities before derivatives,
//!    NSE before BSE, the main series (`EQ`, `A`) before others.
//!    `RELIANCE` → NSE_EQ 2885, `BSE:RELIANCE` → BSE_EQ 500325.
//! 3. An underlying with futures but no cash instrument (`CRUDEOIL`) → its
//!    nearest unexpired future.
//! 4. An exact custom symbol (`NIFTY DEC FUT`), then an exact company name
//!    of an index or equity (`RELIANCE INDUSTRIES LTD`).
//!
//! "Nearest unexpired" is the smallest expiry on or after `today` (India's
//! date: a contract trades on its expiry day), chosen within **one**
//! exchange: MCX when the underlying has MCX contracts (commodity futures
//! `FUTCOM`, options `OPTFUT` only), else NSE, else BSE. Contracts of
//! different exchanges are never compared, so a nearer look-alike elsewhere
//! can not win. Two instruments left tied are an ambiguity, never a guess;
//! errors list the closest candidates.

use std::fmt;

use super::master::{Instrument, Master};
use super::search::normalize;
use super::{Date, Exchange, Kind, OptionType};
use crate::domain::InstrumentKey;

/// Candidates listed in an error, at most.
const MAX_CANDIDATES: usize = 5;

/// An instrument named in an error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Trading symbol.
    pub symbol: String,
    /// Segment and id.
    pub key: InstrumentKey,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} {})",
            self.symbol, self.key.segment, self.key.security_id
        )
    }
}

impl From<Instrument<'_>> for Candidate {
    fn from(i: Instrument<'_>) -> Self {
        Candidate {
            symbol: i.symbol().to_string(),
            key: i.key(),
        }
    }
}

/// Why a name did not resolve to one instrument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// Nothing by that name.
    Unknown {
        /// The name as given.
        query: String,
        /// The closest names in the master.
        candidates: Vec<Candidate>,
    },
    /// Several instruments fit equally well.
    Ambiguous {
        /// The name as given.
        query: String,
        /// The instruments that fit.
        candidates: Vec<Candidate>,
    },
    /// The underlying exists but has no contract of that shape on or after
    /// `today`.
    NoContract {
        /// The name as given.
        query: String,
        /// What was looked for (`MCX future`, `NSE 25000 CE option`, …).
        what: String,
        /// The date resolved for.
        today: Date,
        /// The latest expiry seen, if any contract exists.
        last_expiry: Option<Date>,
    },
}

fn list(c: &[Candidate]) -> String {
    c.iter()
        .map(Candidate::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Unknown { query, candidates } if candidates.is_empty() => write!(
                f,
                "unknown symbol '{query}' (nothing similar in the instrument master); give exchangeSegment and securityId"
            ),
            ResolveError::Unknown { query, candidates } => write!(
                f,
                "unknown symbol '{query}'; closest: {}",
                list(candidates)
            ),
            ResolveError::Ambiguous { query, candidates } => write!(
                f,
                "ambiguous symbol '{query}': {}; name one by its trading symbol, or give exchangeSegment and securityId",
                list(candidates)
            ),
            ResolveError::NoContract {
                query,
                what,
                today,
                last_expiry,
            } => {
                write!(f, "no unexpired {what} for '{query}' as of {today}")?;
                if let Some(last) = last_expiry {
                    write!(f, " (the last one expired on {last})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ResolveError {}

/// Levenshtein distance, for "did you mean" candidates.
fn distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Which exchange's contracts to choose among.
fn pick_exchange(given: Option<Exchange>, rows: &[Instrument<'_>]) -> Option<Exchange> {
    given.or_else(|| {
        [Exchange::Mcx, Exchange::Nse, Exchange::Bse]
            .into_iter()
            .find(|e| rows.iter().any(|r| r.exchange() == *e))
    })
}

impl Master {
    /// Resolves a name to one instrument, as of `today` (India's date).
    pub fn resolve(&self, query: &str, today: Date) -> Result<Instrument<'_>, ResolveError> {
        self.resolve_with(query, today, true)
    }

    /// `resolve`; an unknown name lists candidates only with `candidates`
    /// (candidate lists resolve names themselves, and must not recurse).
    fn resolve_with(
        &self,
        query: &str,
        today: Date,
        candidates: bool,
    ) -> Result<Instrument<'_>, ResolveError> {
        let norm = normalize(query);
        let (exchange, body) = match norm.split_once(':') {
            Some((e, rest)) if Exchange::parse(e.trim()).is_some() => {
                (Exchange::parse(e.trim()), rest.trim())
            }
            _ => (None, norm.as_str()),
        };
        let unknown = || ResolveError::Unknown {
            query: query.trim().to_string(),
            candidates: if candidates {
                self.closest(body, exchange, today)
            } else {
                Vec::new()
            },
        };
        if body.is_empty() {
            return Err(unknown());
        }
        let in_exchange = |i: &Instrument<'_>| exchange.map_or(true, |e| i.exchange() == e);
        let tokens: Vec<&str> = body.split(' ').collect();
        let n = tokens.len();
        // 1. Derivative forms.
        if n >= 2 && tokens[n - 1] == "FUT" {
            let under = tokens[..n - 1].join(" ");
            if self.by_under.contains_key(under.as_str()) {
                return self.nearest(query, &under, exchange, today, None);
            }
        }
        if n >= 3 {
            if let (Some(opt), Ok(strike)) = (
                OptionType::parse(tokens[n - 1]),
                tokens[n - 2].parse::<f64>(),
            ) {
                let under = tokens[..n - 2].join(" ");
                if self.by_under.contains_key(under.as_str()) {
                    return self.nearest(query, &under, exchange, today, Some((strike, opt)));
                }
            }
        }
        // 2. Exact trading symbol.
        let exact: Vec<Instrument<'_>> = self
            .exact(body.as_bytes(), false)
            .into_iter()
            .map(|i| self.at(i))
            .filter(in_exchange)
            .collect();
        if !exact.is_empty() {
            return self.best_of(query, &exact);
        }
        // 3. An underlying known only by its derivatives.
        if let Some(rows) = self.by_under.get(body) {
            if rows
                .iter()
                .any(|&i| self.at(i).kind() == Kind::Future && in_exchange(&self.at(i)))
            {
                return self.nearest(query, body, exchange, today, None);
            }
        }
        // 4. Custom symbol, then company name.
        let custom: Vec<Instrument<'_>> = self
            .exact(body.as_bytes(), true)
            .into_iter()
            .map(|i| self.at(i))
            .filter(in_exchange)
            .collect();
        if !custom.is_empty() {
            return self.best_of(query, &custom);
        }
        let named = self.by_name(body.as_bytes());
        let named: Vec<Instrument<'_>> = named.into_iter().filter(in_exchange).collect();
        if !named.is_empty() {
            // One security on several exchanges is fine (NSE wins); two
            // different securities with the same name are not.
            let mut securities: Vec<&str> = named.iter().map(|i| i.underlying()).collect();
            securities.sort_unstable();
            securities.dedup();
            if securities.len() > 1 {
                let mut seen = Vec::new();
                let candidates = named
                    .iter()
                    .filter(|i| {
                        let fresh = !seen.contains(&i.underlying());
                        seen.push(i.underlying());
                        fresh
                    })
                    .take(MAX_CANDIDATES)
                    .map(|i| Candidate::from(*i))
                    .collect();
                return Err(ResolveError::Ambiguous {
                    query: query.trim().to_string(),
                    candidates,
                });
            }
            return self.best_of(query, &named);
        }
        Err(unknown())
    }

    /// The best of rows sharing a name: rank order already puts indices
    /// before equities before derivatives, NSE before BSE, main series
    /// first; a tie on all of those is ambiguous.
    fn best_of<'a>(
        &'a self,
        query: &str,
        rows: &[Instrument<'a>],
    ) -> Result<Instrument<'a>, ResolveError> {
        let class = |i: &Instrument<'_>| {
            let main = matches!(i.series(), "EQ" | "A" | "NA" | "X" | "");
            (i.kind(), i.exchange(), !main)
        };
        let best = rows[0];
        let tied: Vec<Candidate> = rows
            .iter()
            .filter(|i| class(i) == class(&best))
            .take(MAX_CANDIDATES)
            .map(|i| Candidate::from(*i))
            .collect();
        if tied.len() > 1 {
            return Err(ResolveError::Ambiguous {
                query: query.trim().to_string(),
                candidates: tied,
            });
        }
        Ok(best)
    }

    /// Indices and equities whose company name is exactly `name`.
    fn by_name(&self, name: &[u8]) -> Vec<Instrument<'_>> {
        let mut needle = Vec::with_capacity(name.len() + 1);
        needle.push(b'\n');
        needle.extend_from_slice(name);
        let finder = memchr::memmem::Finder::new(&needle);
        let mut out: Vec<Instrument<'_>> = Vec::new();
        let hits = self
            .ranges(&needle)
            .into_iter()
            .flat_map(|(from, to)| finder.find_iter(&self.hay[from..to]).map(move |i| from + i));
        for pos in hits {
            let row = (self.starts.partition_point(|&s| s as usize <= pos) - 1) as u32;
            let end = pos + needle.len();
            let whole = end == self.starts[row as usize + 1] as usize;
            let inst = self.at(row);
            // The name is a row's last field.
            if whole
                && matches!(inst.kind(), Kind::Index | Kind::Equity)
                && out.last() != Some(&inst)
            {
                out.push(inst);
            }
        }
        out
    }

    /// The nearest unexpired future (or option at `strike`) of `under`.
    fn nearest(
        &self,
        query: &str,
        under: &str,
        exchange: Option<Exchange>,
        today: Date,
        option: Option<(f64, OptionType)>,
    ) -> Result<Instrument<'_>, ResolveError> {
        let kind = if option.is_some() {
            Kind::Option
        } else {
            Kind::Future
        };
        let rows: Vec<Instrument<'_>> = self
            .by_under
            .get(under)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|&i| self.at(i))
            .filter(|i| i.kind() == kind && i.expiry().is_some())
            .filter(|i| match option {
                Some((strike, t)) => {
                    i.option_type() == Some(t)
                        && i.strike().is_some_and(|s| (s - strike).abs() < 1e-6)
                }
                None => true,
            })
            .collect();
        let chosen = pick_exchange(exchange, &rows);
        let what = match (option, chosen) {
            (None, Some(e)) => format!("{} future", e.name()),
            (None, None) => "future".to_string(),
            (Some((s, t)), e) => format!(
                "{}{s} {} option",
                e.map(|e| format!("{} ", e.name())).unwrap_or_default(),
                t.name()
            ),
        };
        // One exchange only; on MCX, commodity contracts only.
        let pool: Vec<Instrument<'_>> = rows
            .into_iter()
            .filter(|i| Some(i.exchange()) == chosen)
            .filter(|i| {
                i.exchange() != Exchange::Mcx
                    || i.instrument()
                        == if kind == Kind::Future {
                            "FUTCOM"
                        } else {
                            "OPTFUT"
                        }
            })
            .collect();
        let live: Vec<Instrument<'_>> = pool
            .iter()
            .copied()
            .filter(|i| i.expiry().is_some_and(|e| e >= today))
            .collect();
        let Some(nearest) = live.iter().filter_map(|i| i.expiry()).min() else {
            return Err(ResolveError::NoContract {
                query: query.trim().to_string(),
                what,
                today,
                last_expiry: pool.iter().filter_map(|i| i.expiry()).max(),
            });
        };
        let best: Vec<Instrument<'_>> = live
            .into_iter()
            .filter(|i| i.expiry() == Some(nearest))
            .collect();
        if best.len() > 1 {
            return Err(ResolveError::Ambiguous {
                query: query.trim().to_string(),
                candidates: best
                    .iter()
                    .take(MAX_CANDIDATES)
                    .map(|i| Candidate::from(*i))
                    .collect(),
            });
        }
        Ok(best[0])
    }

    /// The instruments closest to an unknown name: search hits first, then
    /// underlyings within a small edit distance (typos).
    fn closest(&self, body: &str, exchange: Option<Exchange>, today: Date) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        let push = |c: Candidate, out: &mut Vec<Candidate>| {
            if out.len() < MAX_CANDIDATES && !out.contains(&c) {
                out.push(c);
            }
        };
        if body.is_empty() {
            return out;
        }
        for i in self.search(body, MAX_CANDIDATES * 4) {
            if exchange.map_or(true, |e| i.exchange() == e) {
                push(i.into(), &mut out);
            }
        }
        if out.len() >= MAX_CANDIDATES {
            return out;
        }
        let b = body.as_bytes();
        let budget = (b.len() / 4).max(1);
        let mut near: Vec<(usize, u32, &str)> = self
            .by_under
            .iter()
            .filter(|(k, _)| k.len().abs_diff(b.len()) <= budget)
            .filter_map(|(k, rows)| {
                let d = distance(k.as_bytes(), b);
                (d <= budget).then(|| (d, rows[0], &**k))
            })
            .collect();
        near.sort_unstable();
        for (_, first, under) in near {
            let inst = self
                .resolve_with(under, today, false)
                .unwrap_or_else(|_| self.at(first));
            if exchange.map_or(true, |e| inst.exchange() == e) {
                push(inst.into(), &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(distance(b"RELIANCE", b"RELAINCE"), 2);
        assert_eq!(distance(b"CRUDEOIL", b"CRUDOIL"), 1);
        assert_eq!(distance(b"", b"ABC"), 3);
        assert_eq!(distance(b"NIFTY", b"NIFTY"), 0);
    }
}
