//! The history thread's per-instrument bar lists and what readers see.
//!
//! A [`Series`] is written by the history thread only and read by anyone:
//! bars are stored in atomic cells, then the length is raised with
//! `Release`; a reader loads the length with `Acquire` and reads that many
//! cells. Stored bars are never rewritten, so a reader never sees a torn
//! bar and nobody waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{ist_minute_of_day, Bar};
use crate::domain::{InstrumentKey, Segment};

/// One bar in four atomic words.
#[derive(Debug, Default)]
struct Cell([AtomicU64; 4]);

/// One instrument's finished bars of the day, oldest first; append-only.
#[derive(Debug)]
pub struct Series {
    cells: Box<[Cell]>,
    len: AtomicUsize,
}

impl Series {
    /// An empty series with room for `capacity` bars.
    pub fn with_capacity(capacity: usize) -> Series {
        Series {
            cells: (0..capacity.max(1)).map(|_| Cell::default()).collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// Bars it holds without growing.
    pub fn capacity(&self) -> usize {
        self.cells.len()
    }

    /// Bars stored.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// No bars yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `bar` (writer only); `false` when full.
    pub fn push(&self, bar: Bar) -> bool {
        let n = self.len.load(Ordering::Relaxed);
        let Some(cell) = self.cells.get(n) else {
            return false;
        };
        let w = [
            u64::from(bar.t) | u64::from(bar.oi) << 32,
            u64::from(bar.o.to_bits()) | u64::from(bar.h.to_bits()) << 32,
            u64::from(bar.l.to_bits()) | u64::from(bar.c.to_bits()) << 32,
            bar.v,
        ];
        for (c, w) in cell.0.iter().zip(w) {
            c.store(w, Ordering::Relaxed);
        }
        self.len.store(n + 1, Ordering::Release);
        true
    }

    /// Bar `i`, if stored.
    pub fn get(&self, i: usize) -> Option<Bar> {
        if i >= self.len() {
            return None;
        }
        let w = self.cells[i]
            .0
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed));
        Some(Bar {
            t: w[0] as u32,
            oi: (w[0] >> 32) as u32,
            o: f32::from_bits(w[1] as u32),
            h: f32::from_bits((w[1] >> 32) as u32),
            l: f32::from_bits(w[2] as u32),
            c: f32::from_bits((w[2] >> 32) as u32),
            v: w[3],
        })
    }

    /// The last bar stored.
    pub fn last(&self) -> Option<Bar> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// Every bar stored now, oldest first.
    pub fn bars(&self) -> Vec<Bar> {
        let n = self.len();
        (0..n).filter_map(|i| self.get(i)).collect()
    }

    /// A copy with twice the room (the writer grows a full series).
    pub fn grown(&self) -> Series {
        let next = Series::with_capacity(self.capacity() * 2);
        for b in self.bars() {
            next.push(b);
        }
        next
    }
}

/// Minute of the day (India time) a segment's session ends.
fn session_end(segment: Segment) -> u32 {
    match segment {
        Segment::McxComm => 23 * 60 + 55,
        Segment::NseCurrency | Segment::BseCurrency => 17 * 60,
        _ => 15 * 60 + 30,
    }
}

/// Bars to make room for when an instrument's first bar is at `t`: the
/// minutes left in its session, plus 16 (at least 16).
pub fn initial_capacity(segment: Segment, t: u32) -> usize {
    let left = session_end(segment).saturating_sub(ist_minute_of_day(t));
    left as usize + 16
}

/// Every instrument's series as the history thread last published them.
#[derive(Debug, Default, Clone)]
pub struct Board {
    /// India date (days since 1970-01-01) the bars belong to; `None`
    /// before the first bar.
    pub day: Option<i64>,
    series: HashMap<InstrumentKey, Arc<Series>>,
}

impl Board {
    /// A board of these series (the history thread, tests).
    pub fn new(day: Option<i64>, series: HashMap<InstrumentKey, Arc<Series>>) -> Board {
        Board { day, series }
    }

    /// `key`'s series.
    pub fn get(&self, key: InstrumentKey) -> Option<&Series> {
        self.series.get(&key).map(|s| &**s)
    }

    /// Instruments held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// The latest [`Board`], readable from any thread without locking.
pub type SharedBoard = Arc<ArcSwap<Board>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(t: u32) -> Bar {
        Bar {
            t,
            o: 1.5,
            h: 2.25,
            l: -0.5,
            c: 1.0,
            oi: u32::MAX,
            v: u64::MAX - 1,
        }
    }

    #[test]
    fn bars_round_trip_and_a_full_series_refuses_then_grows() {
        let s = Series::with_capacity(2);
        assert!(s.is_empty());
        assert!(s.push(bar(60)));
        assert!(s.push(bar(120)));
        assert!(!s.push(bar(180)), "full");
        assert_eq!(s.bars(), vec![bar(60), bar(120)]);
        let g = s.grown();
        assert_eq!(g.capacity(), 4);
        assert!(g.push(bar(180)));
        assert_eq!(g.last(), Some(bar(180)));
        assert_eq!(s.len(), 2, "the old one is unchanged");
    }

    #[test]
    fn capacity_is_the_session_left() {
        // 09:15 India time on 2026-12-03.
        let t0 = 1_796_269_500;
        assert_eq!(initial_capacity(Segment::NseEq, t0), 375 + 16);
        assert_eq!(initial_capacity(Segment::McxComm, t0 - 15 * 60), 895 + 16);
        assert_eq!(initial_capacity(Segment::NseFno, t0 + 400 * 60), 16);
    }

    #[test]
    fn readers_on_other_threads_see_whole_bars() {
        let s = Arc::new(Series::with_capacity(10_000));
        let r = Arc::clone(&s);
        let reader = std::thread::spawn(move || {
            let mut seen = 0;
            while seen < 10_000 {
                let bars = r.bars();
                for (i, b) in bars.iter().enumerate() {
                    assert_eq!(b.t, (i as u32 + 1) * 60);
                    assert_eq!(b.v, u64::from(b.t) * 3);
                }
                seen = bars.len();
            }
        });
        for i in 1..=10_000u32 {
            s.push(Bar {
                t: i * 60,
                v: u64::from(i * 60) * 3,
                ..Bar::default()
            });
        }
        reader.join().unwrap();
    }
}
