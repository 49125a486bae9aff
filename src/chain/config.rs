//! `[[chains]]`: which option chains the relay keeps subscribed around the
//! money, validated at start with errors that name the key, the chain and
//! the config line (`config relay.toml, line 12: chains #2 (NIFTY):
//! strikes must be 1..=50`).
//!
//! Validation does not look at the instrument master (it may not be loaded
//! yet); [`resolve_all`] builds the ladders once it is, and refuses a
//! configuration that would need more instruments than the upstream
//! connections leave room for.

use serde::Deserialize;
use toml::Spanned;

use crate::chain::ladder::{self, ExpiryPick, Ladder};
use crate::chain::window::DEFAULT_HYSTERESIS;
use crate::domain::{InstrumentKey, Mode};
use crate::instrument::{Date, Master};

/// Strikes each side of ATM when `strikes` is not given.
pub const DEFAULT_STRIKES: usize = 10;
/// Most strikes each side of ATM one chain may ask for.
pub const MAX_STRIKES: usize = 50;
/// The default `chain_interval_ms`: chain messages at most this often.
pub const DEFAULT_CHAIN_INTERVAL_MS: u64 = 250;
/// The range `chain_interval_ms` must fall in.
pub const CHAIN_INTERVAL_MS: std::ops::RangeInclusive<u64> = 50..=5000;
/// The default `chain_rate`: the risk-free rate for implied volatility and
/// greeks (India's 91-day T-bill, roughly).
pub const DEFAULT_CHAIN_RATE: f64 = 0.065;

/// One `[[chains]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainTable {
    underlying: Spanned<String>,
    expiry: Option<Spanned<String>>,
    strikes: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    hysteresis: Option<Spanned<f64>>,
}

/// A validated `[[chains]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainSpec {
    /// The upper-cased underlying (`NIFTY`).
    pub underlying: String,
    /// Which expiry (default nearest).
    pub expiry: ExpiryPick,
    /// Strikes each side of ATM (1..=50, default 10).
    pub strikes: usize,
    /// The subscription mode of the options (default quote: OI and volume).
    pub mode: Mode,
    /// Re-centre when the price is this many strike steps past the centre
    /// (0.1..=2.0, default 0.75).
    pub hysteresis: f64,
    /// The config line of `underlying`, for messages.
    pub line: Option<usize>,
}

impl ChainSpec {
    /// A chain with the defaults.
    pub fn new(underlying: &str) -> ChainSpec {
        ChainSpec {
            underlying: underlying.trim().to_ascii_uppercase(),
            expiry: ExpiryPick::Nearest,
            strikes: DEFAULT_STRIKES,
            mode: Mode::Quote,
            hysteresis: DEFAULT_HYSTERESIS,
            line: None,
        }
    }

    /// Instruments its window subscribes at most: CE and PE of ATM ± N.
    pub fn window_instruments(&self) -> usize {
        2 * (2 * self.strikes + 1)
    }
}

impl ChainTable {
    /// Validates the `n`th table (1-based, for messages); `at(offset)` is
    /// `config FILE, line L` and `line_of(offset)` the line number.
    pub fn validate(
        self,
        n: usize,
        at: &dyn Fn(usize) -> String,
        line_of: &dyn Fn(usize) -> usize,
    ) -> Result<ChainSpec, String> {
        let name = self.underlying.get_ref().trim().to_ascii_uppercase();
        let start = self.underlying.span().start;
        if name.is_empty() {
            return Err(format!("{}: chains #{n}: underlying is empty", at(start)));
        }
        let who = format!("chains #{n} ({name})");
        let mut spec = ChainSpec {
            line: Some(line_of(start)),
            ..ChainSpec::new(&name)
        };
        if let Some(e) = &self.expiry {
            spec.expiry = e
                .get_ref()
                .parse()
                .map_err(|err| format!("{}: {who}: {err}", at(e.span().start)))?;
        }
        if let Some(s) = &self.strikes {
            let v = *s.get_ref();
            if !(1..=MAX_STRIKES as i64).contains(&v) {
                return Err(format!(
                    "{}: {who}: strikes must be 1..={MAX_STRIKES} (each side of ATM), not {v}",
                    at(s.span().start)
                ));
            }
            spec.strikes = v as usize;
        }
        if let Some(m) = &self.mode {
            spec.mode = m.get_ref().parse().map_err(|_| {
                format!(
                    "{}: {who}: mode '{}' is not one of ticker, quote, full",
                    at(m.span().start),
                    m.get_ref()
                )
            })?;
        }
        if let Some(h) = &self.hysteresis {
            let v = *h.get_ref();
            if !(0.1..=2.0).contains(&v) {
                return Err(format!(
                    "{}: {who}: hysteresis must be 0.1..=2.0 (strike steps), not {v}",
                    at(h.span().start)
                ));
            }
            spec.hysteresis = v;
        }
        Ok(spec)
    }
}

fn where_(spec: &ChainSpec) -> String {
    match spec.line {
        Some(l) => format!("chain {} (line {l})", spec.underlying),
        None => format!("chain {}", spec.underlying),
    }
}

/// Builds every chain's ladder against `master` as of `today`, in order.
/// Refuses, naming the chain, one whose underlying or expiry the master
/// does not list, two chains on the same series, and a set that would need
/// more than `connection_budget` instruments: each chain's window (CE and
/// PE of ATM ± N, or the whole ladder when it is shorter) plus each
/// distinct price source.
pub fn resolve_all(
    specs: &[ChainSpec],
    master: &Master,
    today: Date,
    connection_budget: usize,
) -> Result<Vec<Ladder>, String> {
    let mut ladders: Vec<Ladder> = Vec::with_capacity(specs.len());
    let mut need = 0usize;
    let mut sources: Vec<InstrumentKey> = Vec::new();
    let mut parts = Vec::with_capacity(specs.len());
    for spec in specs {
        let l = ladder::build(master, &spec.underlying, spec.expiry, today)
            .map_err(|e| format!("{}: {e}", where_(spec)))?;
        if let Some(j) = ladders
            .iter()
            .position(|o| o.underlying == l.underlying && o.expiry == l.expiry)
        {
            return Err(format!(
                "{}: the same series ({} {}) as {}",
                where_(spec),
                l.underlying,
                l.expiry,
                where_(&specs[j])
            ));
        }
        let listed: usize = l
            .strikes
            .iter()
            .map(|s| usize::from(s.call.is_some()) + usize::from(s.put.is_some()))
            .sum();
        let n = spec.window_instruments().min(listed);
        need += n;
        parts.push(format!("{} {} {n}", l.underlying, l.expiry));
        if !sources.contains(&l.price_source) {
            sources.push(l.price_source);
        }
        ladders.push(l);
    }
    need += sources.len();
    if need > connection_budget {
        return Err(format!(
            "chains need {need} instruments ({} + {} price source{}) but the upstream \
             connections leave room for {connection_budget}: fewer strikes or chains, or more \
             connections",
            parts.join(" + "),
            sources.len(),
            if sources.len() == 1 { "" } else { "s" }
        ));
    }
    Ok(ladders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;

    fn specs(text: &str) -> Result<Vec<ChainSpec>, String> {
        #[derive(Deserialize)]
        struct File {
            chains: Vec<ChainTable>,
        }
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let line_of = |o: usize| text[..o].matches('\n').count() + 1;
        let at = |o: usize| format!("config t.toml, line {}", line_of(o));
        f.chains
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.validate(i + 1, &at, &line_of))
            .collect()
    }

    fn today() -> Date {
        Date::from_ymd(2026, 12, 3).unwrap()
    }

    #[test]
    fn defaults_and_every_key() {
        let s = specs(
            "[[chains]]\nunderlying = \"nifty\"\n\n[[chains]]\nunderlying = \"SENSEX\"\nexpiry = \"2026-12-17\"\nstrikes = 5\nmode = \"full\"\nhysteresis = 1.0\n",
        )
        .unwrap();
        assert_eq!(
            s[0],
            ChainSpec {
                line: Some(2),
                ..ChainSpec::new("NIFTY")
            }
        );
        assert_eq!(
            (s[0].expiry, s[0].strikes, s[0].mode, s[0].hysteresis),
            (ExpiryPick::Nearest, 10, Mode::Quote, 0.75)
        );
        assert_eq!(
            s[1],
            ChainSpec {
                underlying: "SENSEX".into(),
                expiry: ExpiryPick::On(Date::from_ymd(2026, 12, 17).unwrap()),
                strikes: 5,
                mode: Mode::Full,
                hysteresis: 1.0,
                line: Some(5),
            }
        );
        assert_eq!(s[1].window_instruments(), 22);
    }

    #[test]
    fn errors_name_the_key_the_chain_and_the_line() {
        let cases = [
            (
                "[[chains]]\nunderlying = \"NIFTY\"\n[[chains]]\nunderlying = \"NIFTY\"\nstrikes = 51\n",
                "config t.toml, line 5: chains #2 (NIFTY): strikes must be 1..=50",
            ),
            (
                "[[chains]]\nunderlying = \"NIFTY\"\nstrikes = 0\n",
                "line 3: chains #1 (NIFTY): strikes must be 1..=50",
            ),
            (
                "[[chains]]\nunderlying = \"NIFTY\"\nexpiry = \"weekly\"\n",
                "line 3: chains #1 (NIFTY): expiry 'weekly' is not one of nearest, next, monthly",
            ),
            (
                "[[chains]]\nunderlying = \"NIFTY\"\nmode = \"depth\"\n",
                "line 3: chains #1 (NIFTY): mode 'depth' is not one of ticker, quote, full",
            ),
            (
                "[[chains]]\nunderlying = \"NIFTY\"\nhysteresis = 2.5\n",
                "line 3: chains #1 (NIFTY): hysteresis must be 0.1..=2.0",
            ),
            (
                "[[chains]]\nunderlying = \" \"\n",
                "line 2: chains #1: underlying is empty",
            ),
        ];
        for (text, want) in cases {
            let e = specs(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = specs("[[chains]]\nunderlying = \"NIFTY\"\nstrike = 5\n").unwrap_err();
        assert!(e.contains("unknown field `strike`"), "{e}");
        let e = specs("[[chains]]\nexpiry = \"next\"\n").unwrap_err();
        assert!(e.contains("missing field `underlying`"), "{e}");
    }

    #[test]
    fn resolve_all_builds_ladders_within_the_budget() {
        let m = Master::sample();
        let mut nifty = ChainSpec::new("NIFTY");
        nifty.strikes = 10;
        let mut sensex = ChainSpec::new("SENSEX");
        sensex.expiry = ExpiryPick::Monthly;
        sensex.strikes = 5;
        let both = [nifty.clone(), sensex.clone()];
        // 42 + 22 window instruments + 2 indices.
        let l = resolve_all(&both, &m, today(), 66).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].underlying.as_str(), l[0].expiry.to_string()),
            ("NIFTY", "2026-12-08".to_string())
        );
        assert_eq!(l[1].expiry.to_string(), "2026-12-24");
        assert_eq!(l[1].price_source, InstrumentKey::new(Segment::IdxI, 51));
        let e = resolve_all(&both, &m, today(), 65).unwrap_err();
        assert_eq!(
            e,
            "chains need 66 instruments (NIFTY 2026-12-08 42 + SENSEX 2026-12-24 22 + 2 price \
             sources) but the upstream connections leave room for 65: fewer strikes or chains, \
             or more connections"
        );
        // Two expiries of one underlying share its price source.
        let mut next = ChainSpec::new("NIFTY");
        next.expiry = ExpiryPick::Next;
        next.strikes = 1;
        assert_eq!(
            resolve_all(&[nifty.clone(), next], &m, today(), 49).map(|l| l.len()),
            Ok(2)
        );
        // A window wider than the ladder counts only what is listed.
        let mut crude = ChainSpec::new("CRUDEOIL");
        crude.strikes = 50;
        assert!(resolve_all(&[crude.clone()], &m, today(), 25).is_ok());
        assert!(resolve_all(&[crude], &m, today(), 24).is_err());
    }

    #[test]
    fn resolve_all_names_the_chain_that_fails() {
        let m = Master::sample();
        let mut bad = ChainSpec::new("NIFTI");
        bad.line = Some(7);
        let e = resolve_all(&[ChainSpec::new("NIFTY"), bad], &m, today(), 5000).unwrap_err();
        assert!(
            e.starts_with("chain NIFTI (line 7): unknown underlying 'NIFTI' (did you mean NIFTY"),
            "{e}"
        );
        let mut dated = ChainSpec::new("NIFTY");
        dated.expiry = ExpiryPick::On(Date::from_ymd(2026, 12, 8).unwrap());
        let e = resolve_all(&[ChainSpec::new("nifty"), dated], &m, today(), 5000).unwrap_err();
        assert!(
            e.contains("the same series (NIFTY 2026-12-08) as chain NIFTY"),
            "{e}"
        );
    }
}
