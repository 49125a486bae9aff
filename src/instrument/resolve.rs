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
//!
//! Cost: applying the rules is a handful of hash look-ups (symbols,
//! underlyings, company names), plus a walk over one underlying's contracts
//! for the derivative rules — whatever the name, known or not. Finding
//! "did you mean" candidates for an unknown name is the expensive part (a
//! search and an edit-distance pass over every underlying: milliseconds on
//! DhanHQ's 290,000-row file), so [`Master::resolve`] does it and
//! [`Master::resolve_exact`] does not, and [`Master::resolve_many`] does it
//! for a bounded number of failures only: a bulk subscribe of a thousand
//! misspelt names costs about what a thousand hits cost.

use std::fmt;

use super::master::{Instrument, Master};
use super::search::normalize;
use super::{Date, Exchange, Kind, OptionType};
use crate::domain::InstrumentKey;

/// Candidates listed in an error, at most.
const MAX_CANDIDATES: usize = 5;
/// Failed names a [`Resolved::error`] lists, at most.
pub const MAX_LISTED_FAILURES: usize = 20;

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
        /// The closest names in the master (none when not `searched`).
        candidates: Vec<Candidate>,
        /// Whether candidates were looked for ([`Master::resolve`]) or not
        /// ([`Master::resolve_exact`]).
        searched: bool,
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
            ResolveError::Unknown {
                query,
                candidates,
                searched: false,
            } if candidates.is_empty() => write!(
                f,
                "unknown symbol '{query}'; give exchangeSegment and securityId"
            ),
            ResolveError::Unknown {
                query, candidates, ..
            } if candidates.is_empty() => write!(
                f,
                "unknown symbol '{query}' (nothing similar in the instrument master); give exchangeSegment and securityId"
            ),
            ResolveError::Unknown {
                query, candidates, ..
            } => write!(
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

impl ResolveError {
    /// The name as given.
    pub fn query(&self) -> &str {
        match self {
            ResolveError::Unknown { query, .. }
            | ResolveError::Ambiguous { query, .. }
            | ResolveError::NoContract { query, .. } => query,
        }
    }

    /// What to say after the name in a list of failures: `did you mean …?`,
    /// `ambiguous: …`, `no unexpired … as of …`; nothing for an unknown name
    /// without candidates.
    fn brief(&self) -> Option<String> {
        match self {
            ResolveError::Unknown { candidates, .. } if candidates.is_empty() => None,
            ResolveError::Unknown { candidates, .. } => {
                Some(format!("did you mean {}?", list(candidates)))
            }
            ResolveError::Ambiguous { candidates, .. } => {
                Some(format!("ambiguous: {}", list(candidates)))
            }
            ResolveError::NoContract {
                what,
                today,
                last_expiry,
                ..
            } => Some(match last_expiry {
                Some(last) => format!("no unexpired {what} as of {today}, the last expired {last}"),
                None => format!("no unexpired {what} as of {today}"),
            }),
        }
    }
}

/// One name of a bulk resolution that resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedName {
    /// Its position among the names given.
    pub index: usize,
    /// The instrument.
    pub key: InstrumentKey,
    /// The instrument's trading symbol; for a name the fallback of
    /// [`Master::resolve_many_or`] answered, the name as given (trimmed).
    pub symbol: String,
}

/// What [`Master::resolve_many`] made of a list of names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The names that resolved, in the order given.
    pub found: Vec<ResolvedName>,
    /// How many did not.
    pub failed: usize,
    /// One sentence on every failure (`None` when there was none), e.g.
    /// `2 of 1000 symbols not found: RELIANCX12 (did you mean RELIANCE
    /// (NSE_EQ 2885), …?), FOO`; at most [`MAX_LISTED_FAILURES`] names, then
    /// `… and N more`.
    pub error: Option<String>,
}

/// Levenshtein distance, for "did you mean" candidates (symbols here,
/// option underlyings in [`crate::chain::ladder`]).
pub(crate) fn distance(a: &[u8], b: &[u8]) -> usize {
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
    /// Resolves a name to one instrument, as of `today` (India's date); an
    /// unknown name's error lists the closest candidates. For one name a
    /// person typed (the watchlist, the search box); for many, see
    /// [`Master::resolve_many`].
    pub fn resolve(&self, query: &str, today: Date) -> Result<Instrument<'_>, ResolveError> {
        self.resolve_with(query, today, true)
    }

    /// [`Master::resolve`] without the candidates: an unknown name is
    /// [`ResolveError::Unknown`] with an empty list. Hash look-ups only,
    /// whatever the name (see the module doc); ambiguity and expiry errors
    /// are as `resolve` gives them.
    pub fn resolve_exact(&self, query: &str, today: Date) -> Result<Instrument<'_>, ResolveError> {
        self.resolve_with(query, today, false)
    }

    /// Resolves every name with [`Master::resolve_exact`], looking for
    /// "did you mean" candidates for the first `suggest_for` unknown names
    /// only, and sums the failures up in one message
    /// ([`Resolved::error`]). For a client's subscribe of many names: its
    /// cost does not depend on how many are misspelt.
    pub fn resolve_many<I, S>(&self, queries: I, today: Date, suggest_for: usize) -> Resolved
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.resolve_many_or(queries, today, suggest_for, |_| None)
    }

    /// [`Master::resolve_many`], asking `fallback` about each name the
    /// master does not resolve before counting it as a failure (the fanout's
    /// watchlist names, say).
    pub fn resolve_many_or<I, S>(
        &self,
        queries: I,
        today: Date,
        suggest_for: usize,
        mut fallback: impl FnMut(&str) -> Option<InstrumentKey>,
    ) -> Resolved
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Resolved::default();
        let mut listed: Vec<ResolveError> = Vec::new();
        let mut suggested = 0;
        let mut total = 0;
        let mut all_unknown = true;
        for (index, query) in queries.into_iter().enumerate() {
            total += 1;
            let query = query.as_ref();
            let err = match self.resolve_exact(query, today) {
                Ok(inst) => {
                    out.found.push(ResolvedName {
                        index,
                        key: inst.key(),
                        symbol: inst.symbol().to_string(),
                    });
                    continue;
                }
                Err(e) => e,
            };
            if let Some(key) = fallback(query) {
                out.found.push(ResolvedName {
                    index,
                    key,
                    symbol: query.trim().to_string(),
                });
                continue;
            }
            out.failed += 1;
            all_unknown &= matches!(err, ResolveError::Unknown { .. });
            if listed.len() == MAX_LISTED_FAILURES {
                continue;
            }
            let err = match err {
                ResolveError::Unknown { .. } if suggested < suggest_for => {
                    suggested += 1;
                    // The same rules, so the same failure, now with candidates.
                    self.resolve(query, today).err().unwrap_or(err)
                }
                e => e,
            };
            listed.push(err);
        }
        if out.failed > 0 {
            out.error = Some(summarize(&listed, out.failed, total, all_unknown));
        }
        out
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
            searched: candidates,
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
        if self
            .contracts(body, Kind::Future)
            .iter()
            .any(|&i| in_exchange(&self.at(i)))
        {
            return self.nearest(query, body, exchange, today, None);
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
        self.named(name).iter().map(|&i| self.at(i)).collect()
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
            .contracts(under, kind)
            .iter()
            .map(|&i| self.at(i))
            .filter(|i| i.expiry().is_some())
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
    /// underlyings within a small edit distance (typos), else the hits of
    /// the longest prefix that has any.
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
        // Nothing alike yet (a typo plus extra characters, `RELIANCX12`):
        // the longest prefix of at least 3 characters that finds something
        // (`RELIANC` → RELIANCE). A search per character dropped, at most.
        if out.is_empty() {
            let ends: Vec<usize> = body.char_indices().map(|(i, _)| i).skip(3).collect();
            for &end in ends.iter().rev() {
                let mut hits = self
                    .search(&body[..end], MAX_CANDIDATES * 4)
                    .into_iter()
                    .filter(|i| exchange.map_or(true, |e| i.exchange() == e))
                    .peekable();
                if hits.peek().is_some() {
                    for i in hits {
                        push(i.into(), &mut out);
                    }
                    break;
                }
            }
        }
        out
    }
}

/// `N of M symbols not found: A, B (did you mean …?), … and K more`:
/// "not resolved" instead unless every failure is an unknown name.
fn summarize(listed: &[ResolveError], failed: usize, total: usize, all_unknown: bool) -> String {
    let mut out = format!(
        "{failed} of {total} symbols not {}: ",
        if all_unknown { "found" } else { "resolved" }
    );
    for (i, e) in listed.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(e.query());
        if let Some(why) = e.brief() {
            out.push_str(" (");
            out.push_str(&why);
            out.push(')');
        }
    }
    if failed > listed.len() {
        out.push_str(&format!(", … and {} more", failed - listed.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::Segment;

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date::from_ymd(y, m, d).unwrap()
    }

    /// The company-name rule as it was first written: a substring scan of
    /// the haystack for `\n` + name ending a record. The reference for the
    /// hash index that replaced it.
    fn by_name_scan<'a>(m: &'a Master, name: &[u8]) -> Vec<Instrument<'a>> {
        let mut needle = vec![b'\n'];
        needle.extend_from_slice(name);
        let finder = memchr::memmem::Finder::new(&needle);
        let mut out: Vec<Instrument<'_>> = Vec::new();
        // Up to the final separator, as the search ranges end.
        for pos in finder.find_iter(&m.hay[..m.starts[m.len()] as usize]) {
            let row = (m.starts.partition_point(|&s| s as usize <= pos) - 1) as u32;
            let whole = pos + needle.len() == m.starts[row as usize + 1] as usize;
            let inst = m.at(row);
            if whole
                && matches!(inst.kind(), Kind::Index | Kind::Equity)
                && out.last() != Some(&inst)
            {
                out.push(inst);
            }
        }
        out
    }

    #[test]
    fn the_name_index_agrees_with_a_haystack_scan() {
        let synth = Master::parse(super::super::synth::generate(8_000, 5).as_bytes()).unwrap();
        for m in [Master::sample(), synth] {
            let mut names: Vec<Vec<u8>> = m
                .iter()
                .map(|i| i.name().to_ascii_uppercase().into_bytes())
                .collect();
            names.extend(
                ["", "LTD", "NIFTY 5", "RELIANCE INDUSTRIES", "ZZZ"].map(|s| s.as_bytes().to_vec()),
            );
            names.sort();
            names.dedup();
            for name in &names {
                assert_eq!(
                    m.by_name(name),
                    by_name_scan(&m, name),
                    "{}",
                    String::from_utf8_lossy(name)
                );
            }
        }
    }

    #[test]
    fn an_underlyings_rows_are_in_kind_order() {
        let m = Master::parse(super::super::synth::generate(8_000, 5).as_bytes()).unwrap();
        for (under, rows) in &m.by_under {
            let kinds: Vec<Kind> = rows.iter().map(|&i| m.at(i).kind()).collect();
            assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{under}");
            for kind in [Kind::Index, Kind::Equity, Kind::Future, Kind::Option] {
                let want: Vec<u32> = rows
                    .iter()
                    .copied()
                    .filter(|&i| m.at(i).kind() == kind)
                    .collect();
                assert_eq!(m.contracts(under, kind), want, "{under} {kind:?}");
            }
        }
    }

    #[test]
    fn resolve_exact_follows_the_same_rules_without_candidates() {
        let m = Master::sample();
        let t = day(2026, 11, 22);
        for q in [
            "NIFTY",
            "nifty 50",
            "RELIANCE",
            "BSE:RELIANCE",
            "reliance industries ltd",
            "CRUDEOIL",
            "MCX:CRUDEOIL",
            "NIFTY FUT",
            "NIFTY 25000 CE",
            "NIFTY DEC FUT",
            "NIFTY-Nov2026-25000-CE",
            "RELAINCE",
            "RELIANCX12",
            "MCX:RELIANCE",
            "",
        ] {
            let full = m.resolve(q, t);
            let exact = m.resolve_exact(q, t);
            match (&full, &exact) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{q:?}"),
                (
                    Err(ResolveError::Unknown {
                        query, searched, ..
                    }),
                    Err(ResolveError::Unknown {
                        query: q2,
                        candidates,
                        searched: s2,
                    }),
                ) => {
                    assert_eq!(query, q2);
                    assert!(*searched && !s2 && candidates.is_empty(), "{q:?}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{q:?}"),
                _ => panic!("{q:?}: {full:?} vs {exact:?}"),
            }
        }
        let e = m.resolve_exact("RELAINCE", t).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown symbol 'RELAINCE'; give exchangeSegment and securityId",
            "no claim about similar names: none were looked for"
        );
        assert!(m
            .resolve("RELAINCE", t)
            .unwrap_err()
            .to_string()
            .contains("closest: RELIANCE (NSE_EQ 2885)"));
        let e = m.resolve_exact("CRUDEOIL", day(2028, 1, 10)).unwrap_err();
        assert!(matches!(e, ResolveError::NoContract { .. }), "{e}");
    }

    #[test]
    fn resolve_many_resolves_all_and_suggests_for_the_first_few_failures() {
        let m = Master::sample();
        let t = day(2026, 11, 22);
        let names = ["NIFTY", "RELAINCE", "crudeoil", "CRUDOIL", "FOO", " TCS "];
        let r = m.resolve_many(names, t, 1);
        let found: Vec<(usize, InstrumentKey, &str)> = r
            .found
            .iter()
            .map(|f| (f.index, f.key, f.symbol.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (0, InstrumentKey::new(Segment::IdxI, 13), "NIFTY"),
                (
                    2,
                    InstrumentKey::new(Segment::McxComm, 472794),
                    "CRUDEOIL-18Dec2026-FUT"
                ),
                (5, InstrumentKey::new(Segment::NseEq, 11536), "TCS"),
            ]
        );
        assert_eq!(r.failed, 3);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "3 of 6 symbols not found: RELAINCE (did you mean RELIANCE (NSE_EQ 2885)?), \
                 CRUDOIL, FOO"
            ),
            "candidates for the first failure only"
        );
        // A typo plus extra characters: candidates by the longest prefix.
        let r = m.resolve_many(["RELIANCX12", "QZX0000W"], t, 3);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "2 of 2 symbols not found: RELIANCX12 (did you mean RELIANCE (NSE_EQ 2885), \
                 RELIANCE (BSE_EQ 500325), RELIANCE-Oct2026-FUT (NSE_FNO 52012), \
                 RELIANCE-Nov2026-FUT (NSE_FNO 52013), RELIANCE-Dec2026-FUT (NSE_FNO 52014)?), \
                 QZX0000W"
            )
        );
        let r = m.resolve_many(["NIFTY", "BANKNIFTY"], t, 3);
        assert_eq!((r.found.len(), r.failed, r.error), (2, 0, None));
        assert_eq!(
            m.resolve_many(Vec::<String>::new(), t, 3),
            Resolved::default()
        );
    }

    #[test]
    fn resolve_many_lists_twenty_failures_and_keeps_other_reasons() {
        let m = Master::sample();
        let t = day(2026, 11, 22);
        let mut names: Vec<String> = vec!["NIFTY-Nov2026-25000-CE".into(), "RELIANCX12".into()];
        names.extend((0..998).map(|i| format!("RELIANCX{i}")));
        names.push("SENSEX".into());
        let r = m.resolve_many(&names, t, 0);
        assert_eq!((r.found.len(), r.failed), (1, 1000));
        assert_eq!(r.found[0].index, 1000);
        let e = r.error.unwrap();
        assert!(
            e.starts_with(
                "1000 of 1001 symbols not resolved: NIFTY-Nov2026-25000-CE (ambiguous: \
                 NIFTY-Nov2026-25000-CE (NSE_FNO 60000), NIFTY-Nov2026-25000-CE (NSE_FNO 60006)), \
                 RELIANCX12, RELIANCX0, "
            ),
            "{e}"
        );
        assert!(e.ends_with(", RELIANCX17, … and 980 more"), "{e}");
        assert!(!e.contains("did you mean"), "suggest_for 0: {e}");
        // An expired name says so, briefly.
        let r = m.resolve_many(["CRUDEOIL"], day(2028, 1, 10), 3);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "1 of 1 symbols not resolved: CRUDEOIL (no unexpired MCX future as of \
                 2028-01-10, the last expired 2027-11-18)"
            )
        );
    }

    #[test]
    fn resolve_many_asks_the_fallback_before_failing() {
        let m = Master::sample();
        let t = day(2026, 11, 22);
        let mine = InstrumentKey::new(Segment::NseEq, 1);
        let r = m.resolve_many_or(["MYNAME", "NIFTY", "OTHER"], t, 3, |q| {
            q.eq_ignore_ascii_case("myname").then_some(mine)
        });
        assert_eq!(r.found[0].index, 0);
        assert_eq!(
            (r.found[0].key, r.found[0].symbol.as_str()),
            (mine, "MYNAME")
        );
        assert_eq!(r.found[1].index, 1);
        assert_eq!(r.failed, 1);
        assert!(r
            .error
            .unwrap()
            .starts_with("1 of 3 symbols not found: OTHER"));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance(b"RELIANCE", b"RELAINCE"), 2);
        assert_eq!(distance(b"CRUDEOIL", b"CRUDOIL"), 1);
        assert_eq!(distance(b"", b"ABC"), 3);
        assert_eq!(distance(b"NIFTY", b"NIFTY"), 0);
    }
}
