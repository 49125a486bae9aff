//! The window of strikes a chain keeps subscribed: the at-the-money (ATM)
//! strike and `N` strikes each side of it, re-centred as the underlying
//! moves.
//!
//! Contract: a pure state machine over a [`Ladder`] and prices passed in.
//! The first price makes the listed strike nearest it the centre. After
//! that the centre stays put until the price is more than `hysteresis` ×
//! the strike step away from the current centre, then jumps to the strike
//! nearest the price (so a price wobbling around a midpoint does not flap
//! the subscriptions). The window is clamped at the ladder's ends: near an
//! end it holds fewer strikes on that side, never strikes that do not
//! exist. [`Window::update`] reports what entered and left so the caller
//! can subscribe the new keys before unsubscribing the old ones (never a
//! gap at the centre).

use crate::chain::ladder::Ladder;
use crate::domain::InstrumentKey;

/// The default hysteresis: three quarters of a strike step past the
/// centre. Half a step (0.5) re-centres whenever the nearest strike
/// changes, so a price wobbling around the midpoint between two strikes
/// flips the window back and forth (measured: 32 flips in 30 s of the
/// busy simulator); 0.75 waits for a quarter step beyond the midpoint.
pub const DEFAULT_HYSTERESIS: f64 = 0.75;

/// ATM ± N strikes of one ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    each_side: usize,
    hysteresis: f64,
    /// Index into `ladder.strikes`; `None` until the first price.
    centre: Option<usize>,
}

/// What a re-centre changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Shift {
    /// Keys now in the window that were not before (ascending strike, CE
    /// before PE).
    pub added: Vec<InstrumentKey>,
    /// Keys that left the window.
    pub removed: Vec<InstrumentKey>,
    /// The ATM strike before (`None` on the first price).
    pub from_atm: Option<f64>,
    /// The ATM strike now.
    pub to_atm: f64,
}

/// The index of the strike nearest `price` (the lower on a tie); `None`
/// for an empty ladder.
fn nearest(ladder: &Ladder, price: f64) -> Option<usize> {
    let s = &ladder.strikes;
    if s.is_empty() {
        return None;
    }
    let above = s.partition_point(|k| k.strike < price);
    if above == 0 {
        return Some(0);
    }
    if above == s.len() {
        return Some(s.len() - 1);
    }
    let (lo, hi) = (s[above - 1].strike, s[above].strike);
    Some(if price - lo <= hi - price {
        above - 1
    } else {
        above
    })
}

impl Window {
    /// A window of `strikes_each_side` strikes each side of ATM that moves
    /// when the price is more than `hysteresis` strike steps past the
    /// centre (a negative or non-finite value counts as 0).
    pub fn new(strikes_each_side: usize, hysteresis: f64) -> Window {
        Window {
            each_side: strikes_each_side,
            hysteresis: if hysteresis.is_finite() {
                hysteresis.max(0.0)
            } else {
                0.0
            },
            centre: None,
        }
    }

    /// Strikes each side of ATM.
    pub fn each_side(&self) -> usize {
        self.each_side
    }

    /// The strike indices in the window for `centre`, clamped.
    fn range(&self, ladder: &Ladder, centre: usize) -> std::ops::Range<usize> {
        let len = ladder.strikes.len();
        if len == 0 {
            return 0..0;
        }
        let centre = centre.min(len - 1);
        centre.saturating_sub(self.each_side)..(centre + self.each_side + 1).min(len)
    }

    fn keys_in(ladder: &Ladder, r: std::ops::Range<usize>) -> Vec<InstrumentKey> {
        ladder.strikes[r]
            .iter()
            .flat_map(|s| [s.call, s.put])
            .flatten()
            .collect()
    }

    /// Feeds the underlying's price. Returns what changed when the set of
    /// strikes in the window changed (always on the first usable price);
    /// `None` otherwise, including for a price that is not finite and
    /// positive or an empty ladder. The centre can move without the set
    /// changing (at a clamped end): [`Window::atm`] then reports the new
    /// centre and this returns `None`.
    pub fn update(&mut self, ladder: &Ladder, price: f64) -> Option<Shift> {
        if !(price.is_finite() && price > 0.0) {
            return None;
        }
        let to = nearest(ladder, price)?;
        let from = match self.centre {
            None => {
                self.centre = Some(to);
                return Some(Shift {
                    added: Self::keys_in(ladder, self.range(ladder, to)),
                    removed: Vec::new(),
                    from_atm: None,
                    to_atm: ladder.strikes[to].strike,
                });
            }
            Some(c) => c.min(ladder.strikes.len() - 1),
        };
        let centre = ladder.strikes[from].strike;
        let step = if ladder.strike_step > 0.0 {
            ladder.strike_step
        } else {
            // One strike (no step): nothing to move to anyway.
            return None;
        };
        if (price - centre).abs() <= self.hysteresis * step || to == from {
            return None;
        }
        self.centre = Some(to);
        let (old, new) = (self.range(ladder, from), self.range(ladder, to));
        if old == new {
            return None;
        }
        let only = |a: &std::ops::Range<usize>, b: &std::ops::Range<usize>| -> Vec<InstrumentKey> {
            let idx: Vec<usize> = a.clone().filter(|i| !b.contains(i)).collect();
            idx.into_iter()
                .flat_map(|i| [ladder.strikes[i].call, ladder.strikes[i].put])
                .flatten()
                .collect()
        };
        Some(Shift {
            added: only(&new, &old),
            removed: only(&old, &new),
            from_atm: Some(centre),
            to_atm: ladder.strikes[to].strike,
        })
    }

    /// The ATM strike (`None` before the first price).
    pub fn atm(&self, ladder: &Ladder) -> Option<f64> {
        let c = self.centre?;
        ladder
            .strikes
            .get(c.min(ladder.strikes.len().checked_sub(1)?))
            .map(|s| s.strike)
    }

    /// The CE and PE keys of ATM ± N (clamped at the ends), ascending
    /// strike, CE before PE; empty before the first price.
    pub fn keys(&self, ladder: &Ladder) -> Vec<InstrumentKey> {
        match self.centre {
            Some(c) => Self::keys_in(ladder, self.range(ladder, c)),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ladder::Strike;
    use crate::domain::Segment;
    use crate::instrument::Date;

    /// Strikes 25,000–26,600 every 50; CE id = 1000 + i, PE id = 2000 + i.
    fn ladder() -> Ladder {
        let strikes = (0..33u32)
            .map(|i| Strike {
                strike: 25_000.0 + 50.0 * f64::from(i),
                call: Some(InstrumentKey::new(Segment::NseFno, 1000 + i)),
                put: Some(InstrumentKey::new(Segment::NseFno, 2000 + i)),
            })
            .collect();
        Ladder {
            underlying: "NIFTY".into(),
            expiry: Date::from_ymd(2026, 12, 8).unwrap(),
            strike_step: 50.0,
            lot_size: 75,
            price_source: InstrumentKey::new(Segment::IdxI, 13),
            strikes,
            segment: Segment::NseFno,
        }
    }

    fn ids(keys: &[InstrumentKey]) -> Vec<u32> {
        keys.iter().map(|k| k.security_id.0).collect()
    }

    #[test]
    fn first_price_centres_on_the_nearest_strike() {
        let l = ladder();
        let mut w = Window::new(2, DEFAULT_HYSTERESIS);
        assert_eq!((w.atm(&l), w.keys(&l)), (None, vec![]));
        assert_eq!(w.update(&l, f64::NAN), None);
        assert_eq!(w.update(&l, 0.0), None);
        let s = w.update(&l, 25_824.0).unwrap();
        // 25,824 is nearer 25,800 (index 16) than 25,850.
        assert_eq!((s.from_atm, s.to_atm), (None, 25_800.0));
        assert_eq!(
            ids(&s.added),
            vec![1014, 2014, 1015, 2015, 1016, 2016, 1017, 2017, 1018, 2018]
        );
        assert!(s.removed.is_empty());
        assert_eq!(w.keys(&l), s.added);
        assert_eq!(w.atm(&l), Some(25_800.0));
    }

    #[test]
    fn moves_inside_the_hysteresis_do_nothing() {
        let l = ladder();
        let mut w = Window::new(3, 0.5);
        w.update(&l, 25_800.0).unwrap();
        let before = w.keys(&l);
        // Up to half a step (25) either side, inclusive: no move, even past
        // the midpoint where another strike is nearer.
        for p in [25_800.0, 25_810.0, 25_825.0, 25_775.0, 25_790.0] {
            assert_eq!(w.update(&l, p), None, "{p}");
            assert_eq!(w.atm(&l), Some(25_800.0), "{p}");
        }
        assert_eq!(w.keys(&l), before);
        // A wider hysteresis holds further out.
        let mut wide = Window::new(3, 1.5);
        wide.update(&l, 25_800.0).unwrap();
        assert_eq!(wide.update(&l, 25_870.0), None);
        assert_eq!(wide.atm(&l), Some(25_800.0));
        let s = wide.update(&l, 25_880.0).unwrap();
        assert_eq!(s.to_atm, 25_900.0);
    }

    #[test]
    fn three_steps_shift_the_window_three_strikes_each_side() {
        let l = ladder();
        let mut w = Window::new(5, DEFAULT_HYSTERESIS);
        w.update(&l, 25_800.0).unwrap();
        let s = w.update(&l, 25_950.0).unwrap();
        assert_eq!((s.from_atm, s.to_atm), (Some(25_800.0), 25_950.0));
        // Old window 25,550–26,050 (indices 11..=21), new 25,700–26,200
        // (14..=24).
        assert_eq!(ids(&s.added), vec![1022, 2022, 1023, 2023, 1024, 2024]);
        assert_eq!(ids(&s.removed), vec![1011, 2011, 1012, 2012, 1013, 2013]);
        assert_eq!(w.keys(&l).len(), 22);
        assert!(w
            .keys(&l)
            .contains(&InstrumentKey::new(Segment::NseFno, 1019)));
        // And back down.
        let s = w.update(&l, 25_800.0).unwrap();
        assert_eq!(ids(&s.added), vec![1011, 2011, 1012, 2012, 1013, 2013]);
        assert_eq!(ids(&s.removed), vec![1022, 2022, 1023, 2023, 1024, 2024]);
        // Added and removed never overlap, and the centre stays inside both
        // windows (never a gap at the centre).
        assert!(s.added.iter().all(|k| !s.removed.contains(k)));
    }

    #[test]
    fn the_window_clamps_at_the_ends() {
        let l = ladder();
        let mut w = Window::new(5, DEFAULT_HYSTERESIS);
        let s = w.update(&l, 24_000.0).unwrap();
        assert_eq!(s.to_atm, 25_000.0);
        assert_eq!(ids(&w.keys(&l)).len(), 12, "ATM and 5 above only");
        // One step up from the bottom: the centre moves and the window
        // gains a strike on top.
        let s = w.update(&l, 25_050.0).unwrap();
        assert_eq!(ids(&s.added), vec![1006, 2006]);
        assert!(s.removed.is_empty());
        // Far above the top: ATM is the last strike, 5 below it.
        let s = w.update(&l, 30_000.0).unwrap();
        assert_eq!(s.to_atm, 26_600.0);
        assert_eq!(ids(&w.keys(&l))[..2], [1027, 2027]);
        assert_eq!(w.keys(&l).len(), 12);
        // A window wider than the ladder holds every strike; moving the
        // centre changes nothing in the set.
        let mut all = Window::new(50, DEFAULT_HYSTERESIS);
        assert_eq!(all.update(&l, 25_800.0).unwrap().added.len(), 66);
        assert_eq!(all.update(&l, 26_400.0), None);
        assert_eq!(all.atm(&l), Some(26_400.0));
    }

    #[test]
    fn missing_sides_and_empty_ladders() {
        let mut l = ladder();
        l.strikes[16].put = None;
        let mut w = Window::new(0, DEFAULT_HYSTERESIS);
        let s = w.update(&l, 25_800.0).unwrap();
        assert_eq!(ids(&s.added), vec![1016]);
        l.strikes.clear();
        let mut e = Window::new(3, DEFAULT_HYSTERESIS);
        assert_eq!(e.update(&l, 25_800.0), None);
        assert_eq!((e.atm(&l), e.keys(&l)), (None, vec![]));
    }
}
