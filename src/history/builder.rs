//! The one bar builder: the book runs it per tick, the backfill runs it
//! over recorded frames. Rules in the module doc of [`crate::history`].

use super::{ist_day, Bar};
use crate::wire::feed::FeedData;

/// What one tick did to an instrument's bars.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Outcome {
    /// A bar that finished (a tick of a later minute arrived).
    pub finished: Option<Bar>,
    /// This tick opened the instrument's first bar since the builder was
    /// made: its minute.
    pub first: Option<u32>,
    /// The tick was older than the current minute: ignored, to be counted.
    pub late: bool,
}

/// One instrument's forming bar and what it needs to build the next.
/// `Copy`, 64 bytes; no allocation ever.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BarBuilder {
    /// The forming bar (`t == 0`: none open).
    bar: Bar,
    /// Minute of the last finished bar (0: none today).
    last_closed: u32,
    /// LTT of the last tick that counted.
    last_ltt: u32,
    /// Cumulative volume at the previous bar's last tick.
    base: u32,
    /// Cumulative volume at the latest tick (when `has_cum`).
    cum: u32,
    has_cum: bool,
    /// Latest open interest.
    oi: u32,
    /// India date (days since epoch) of the latest bar.
    day: i64,
    /// A bar was opened since the builder was made.
    opened: bool,
}

impl BarBuilder {
    /// Applies one packet's data.
    #[inline]
    pub fn apply(&mut self, data: &FeedData) -> Outcome {
        self.apply_from(data, 0)
    }

    /// Applies one packet's data; a trade time before `not_before` (epoch
    /// seconds: the book passes the start of the newest India date it has
    /// seen) opens and extends no bar. Such a tick is a stale snapshot (a
    /// quote carrying yesterday's last trade): late only for a builder that
    /// already has bars and a new trade time.
    #[inline]
    pub fn apply_from(&mut self, data: &FeedData, not_before: u32) -> Outcome {
        let mut out = Outcome::default();
        let (ltp, ltt, cum, oi) = match *data {
            FeedData::Ticker(t) => (t.ltp, t.ltt, None, None),
            FeedData::Quote(q) => (q.ltp, q.ltt, Some(q.volume), None),
            FeedData::Full(f) => (f.quote.ltp, f.quote.ltt, Some(f.quote.volume), Some(f.oi)),
            FeedData::Oi(o) => {
                self.oi = o.oi;
                if self.bar.t != 0 {
                    self.bar.oi = o.oi;
                }
                return out;
            }
            FeedData::PrevClose(_) | FeedData::MarketStatus => return out,
        };
        if ltt < 60 || !ltp.is_finite() {
            return out;
        }
        if ltt < not_before {
            out.late = self.opened && ltt != self.last_ltt;
            return out;
        }
        let minute = ltt - ltt % 60;
        let day = ist_day(minute);
        if self.opened && day != self.day {
            if day < self.day {
                out.late = ltt != self.last_ltt;
                return out;
            }
            // A new India date: the cumulative volume restarted.
            if self.bar.t != 0 {
                out.finished = Some(self.bar);
                self.bar.t = 0;
            }
            self.last_closed = 0;
            self.has_cum = false;
        }
        if self.bar.t != 0 && minute == self.bar.t {
            self.bar.h = self.bar.h.max(ltp);
            self.bar.l = self.bar.l.min(ltp);
            self.bar.c = ltp;
        } else if (self.bar.t != 0 && minute > self.bar.t)
            || (self.bar.t == 0 && minute > self.last_closed)
        {
            if self.bar.t != 0 {
                out.finished = Some(self.bar);
                self.last_closed = self.bar.t;
            }
            self.base = match (self.has_cum, cum) {
                (true, _) => self.cum,
                (false, Some(c)) => c,
                (false, None) => 0,
            };
            if !self.opened {
                self.opened = true;
                out.first = Some(minute);
            }
            self.day = day;
            self.bar = Bar {
                t: minute,
                o: ltp,
                h: ltp,
                l: ltp,
                c: ltp,
                oi: self.oi,
                v: 0,
            };
        } else {
            out.late = ltt != self.last_ltt;
            return out;
        }
        if let Some(c) = cum {
            self.cum = c;
            self.has_cum = true;
            self.bar.v = u64::from(c.saturating_sub(self.base));
        }
        if let Some(oi) = oi {
            self.oi = oi;
        }
        self.bar.oi = self.oi;
        self.last_ltt = ltt;
        out
    }

    /// Closes the forming bar if its minute ended `grace` seconds before
    /// `now` (epoch seconds, the feed clock); the bar, if it did.
    #[inline]
    pub fn sweep(&mut self, now: u32, grace: u32) -> Option<Bar> {
        if self.bar.t == 0 || self.bar.t.saturating_add(60 + grace) > now {
            return None;
        }
        let bar = self.bar;
        self.last_closed = bar.t;
        self.bar.t = 0;
        Some(bar)
    }

    /// The forming bar, if one is open.
    #[inline]
    pub fn forming(&self) -> Option<Bar> {
        (self.bar.t != 0).then_some(self.bar)
    }

    /// The forming bar, or a bar with `t == 0` (for dense tables).
    #[inline]
    pub fn forming_or_empty(&self) -> Bar {
        if self.bar.t != 0 {
            self.bar
        } else {
            Bar::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::feed::{Full, Oi, PrevClose, Quote, Ticker};

    /// 2026-12-03 09:15:00 India time.
    const T0: u32 = 1_796_269_500;

    fn quote(ltp: f32, ltt: u32, volume: u32) -> FeedData {
        FeedData::Quote(Quote {
            ltp,
            ltt,
            volume,
            ..Quote::default()
        })
    }

    #[test]
    fn t0_is_a_quarter_past_nine_in_india() {
        assert_eq!(super::super::ist_minute_of_day(T0), 9 * 60 + 15);
    }

    #[test]
    fn ohlc_volume_deltas_and_the_minute_roll() {
        let mut b = BarBuilder::default();
        let o = b.apply(&quote(100.0, T0 + 1, 1_000));
        assert_eq!((o.first, o.finished, o.late), (Some(T0), None, false));
        b.apply(&quote(102.0, T0 + 20, 1_050));
        b.apply(&quote(99.0, T0 + 40, 1_080));
        b.apply(&quote(101.0, T0 + 59, 1_100));
        let f = b.forming().unwrap();
        assert_eq!(
            (f.t, f.o, f.h, f.l, f.c, f.v),
            (T0, 100.0, 102.0, 99.0, 101.0, 100),
            "first bar: volume since the first tick seen"
        );
        let o = b.apply(&quote(103.0, T0 + 61, 1_130));
        assert_eq!(o.finished, Some(f));
        assert_eq!(o.first, None);
        let g = b.forming().unwrap();
        assert_eq!((g.t, g.o, g.c, g.v), (T0 + 60, 103.0, 103.0, 30));
        // A gap of two minutes: the next bar counts from the last tick.
        let o = b.apply(&quote(104.0, T0 + 185, 1_200));
        assert_eq!(o.finished.unwrap().t, T0 + 60);
        assert_eq!(b.forming().unwrap().v, 70);
        assert_eq!(b.forming().unwrap().t, T0 + 180);
    }

    #[test]
    fn oi_packets_and_full_packets_set_the_bars_oi() {
        let mut b = BarBuilder::default();
        b.apply(&FeedData::Oi(Oi { oi: 7 }));
        assert_eq!(b.forming(), None, "OI opens no bar");
        b.apply(&FeedData::Ticker(Ticker {
            ltp: 5.0,
            ltt: T0 + 3,
        }));
        assert_eq!(b.forming().unwrap().oi, 7, "carried from before");
        b.apply(&FeedData::Oi(Oi { oi: 9 }));
        assert_eq!(b.forming().unwrap().oi, 9);
        let full = Full {
            quote: Quote {
                ltp: 5.5,
                ltt: T0 + 70,
                volume: 10,
                ..Quote::default()
            },
            oi: 12,
            ..Full::default()
        };
        let o = b.apply(&FeedData::Full(full));
        assert_eq!(o.finished.unwrap().oi, 9);
        assert_eq!(b.forming().unwrap().oi, 12);
        assert_eq!(b.forming().unwrap().v, 0, "first volume seen: baseline");
        b.apply(&FeedData::PrevClose(PrevClose {
            prev_close: 1.0,
            prev_oi: 1,
        }));
        b.apply(&FeedData::MarketStatus);
        assert_eq!(b.forming().unwrap().c, 5.5);
    }

    #[test]
    fn ticker_only_instruments_have_zero_volume() {
        let mut b = BarBuilder::default();
        for (i, p) in [10.0, 12.0, 9.0].into_iter().enumerate() {
            b.apply(&FeedData::Ticker(Ticker {
                ltp: p,
                ltt: T0 + i as u32,
            }));
        }
        let f = b.forming().unwrap();
        assert_eq!((f.o, f.h, f.l, f.c, f.v), (10.0, 12.0, 9.0, 9.0, 0));
    }

    #[test]
    fn late_ticks_are_ignored_and_flagged_but_a_repeated_ltt_is_not() {
        let mut b = BarBuilder::default();
        b.apply(&quote(100.0, T0 + 61, 10));
        let o = b.apply(&quote(50.0, T0 + 30, 11));
        assert!(o.late);
        assert_eq!(b.forming().unwrap().l, 100.0, "ignored for OHLC");
        // Swept: a later tick of the same minute is late too …
        assert_eq!(b.sweep(T0 + 120 + 2, 3), None, "grace not over");
        assert_eq!(b.sweep(T0 + 120 + 3, 3).unwrap().t, T0 + 60);
        assert_eq!(b.forming(), None);
        assert!(b.apply(&quote(1.0, T0 + 90, 12)).late);
        // … but a quote repeating the last trade's time is no trade at all.
        assert!(!b.apply(&quote(100.0, T0 + 61, 10)).late);
        assert_eq!(b.forming(), None);
        // The next minute opens normally; volume from the last counted tick.
        let o = b.apply(&quote(101.0, T0 + 121, 15));
        assert_eq!((o.finished, o.first), (None, None));
        assert_eq!(b.forming().unwrap().v, 5);
    }

    #[test]
    fn a_new_india_date_resets_the_volume_baseline() {
        let mut b = BarBuilder::default();
        b.apply(&quote(100.0, T0, 5_000));
        let next_day = T0 + 86_400;
        let o = b.apply(&quote(90.0, next_day + 5, 300));
        assert_eq!(o.finished.unwrap().t, T0);
        assert_eq!(o.first, None);
        assert_eq!(
            b.forming().unwrap().v,
            0,
            "counts from the day's first tick"
        );
        b.apply(&quote(91.0, next_day + 10, 350));
        assert_eq!(b.forming().unwrap().v, 50);
        // Yesterday's tick now: late.
        assert!(b.apply(&quote(1.0, T0 + 120, 1)).late);
    }

    #[test]
    fn size_is_small() {
        assert_eq!(std::mem::size_of::<Bar>(), 32);
        assert!(std::mem::size_of::<BarBuilder>() <= 72);
    }
}
