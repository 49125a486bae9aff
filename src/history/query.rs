//! `GET /api/history`'s body: one instrument's bars, finished ones from the
//! [`Board`], the forming one from the book's snapshot, in 1, 5 or 15
//! minute bars aligned to India time from midnight (09:15, 09:20, …).

use serde_json::{json, Value};

use super::{Bar, Board};
use crate::domain::InstrumentKey;
use crate::fanout::rest::price_value;
use crate::instrument::date::IST_OFFSET_SECS;

/// The intervals served, as asked for.
pub const INTERVALS: [(&str, u32); 3] = [("1m", 1), ("5m", 5), ("15m", 15)];

/// Minutes per bar for an `interval` parameter; `None` for anything else.
pub fn interval_minutes(interval: &str) -> Option<u32> {
    INTERVALS
        .iter()
        .find(|(name, _)| *name == interval)
        .map(|&(_, m)| m)
}

/// The start of the `minutes`-minute bucket holding epoch second `t`,
/// aligned to India time's midnight.
pub fn bucket(t: u32, minutes: u32) -> u32 {
    let len = i64::from(minutes) * 60;
    let local = i64::from(t) + IST_OFFSET_SECS;
    (i64::from(t) - local.rem_euclid(len)) as u32
}

/// Folds 1-minute bars (oldest first; `true`: partial) into `minutes`-minute
/// bars: first open, highest high, lowest low, last close, summed volume,
/// last OI; partial if any of its minutes is.
pub fn aggregate(bars: &[(Bar, bool)], minutes: u32) -> Vec<(Bar, bool)> {
    if minutes <= 1 {
        return bars.to_vec();
    }
    let mut out: Vec<(Bar, bool)> = Vec::new();
    for &(b, partial) in bars {
        let t = bucket(b.t, minutes);
        match out.last_mut() {
            Some((a, p)) if a.t == t => {
                a.h = a.h.max(b.h);
                a.l = a.l.min(b.l);
                a.c = b.c;
                a.v += b.v;
                a.oi = b.oi;
                *p |= partial;
            }
            _ => out.push((Bar { t, ..b }, partial)),
        }
    }
    out
}

/// One instrument's bars, oldest first, the forming bar last (`true`) when
/// it is newer than the last finished bar and of the board's day.
pub fn bars_of(board: &Board, key: InstrumentKey, forming: Option<Bar>) -> Vec<(Bar, bool)> {
    let mut bars: Vec<(Bar, bool)> = board
        .get(key)
        .map(|s| s.bars().into_iter().map(|b| (b, false)).collect())
        .unwrap_or_default();
    if let Some(f) = forming {
        let newer = bars.last().map_or(true, |(l, _)| f.t > l.t);
        let today = board.day.map_or(true, |d| super::ist_day(f.t) >= d);
        if newer && today {
            bars.push((f, true));
        }
    }
    bars
}

/// The JSON body: `{"exchangeSegment","securityId","symbol","interval",
/// "bars":[{"t","o","h","l","c","v","oi"(,"partial":true)}]}`.
pub fn body(
    key: InstrumentKey,
    symbol: Option<&str>,
    interval: &str,
    bars: &[(Bar, bool)],
) -> String {
    let list: Vec<Value> = bars
        .iter()
        .map(|&(b, partial)| {
            let mut v = json!({
                "t": b.t,
                "o": price_value(Some(b.o)),
                "h": price_value(Some(b.h)),
                "l": price_value(Some(b.l)),
                "c": price_value(Some(b.c)),
                "v": b.v,
                "oi": b.oi,
            });
            if partial {
                v["partial"] = Value::Bool(true);
            }
            v
        })
        .collect();
    json!({
        "exchangeSegment": key.segment.name(),
        "securityId": key.security_id.to_string(),
        "symbol": symbol,
        "interval": interval,
        "bars": list,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::history::{ist_minute_of_day, Series};
    use std::collections::HashMap;
    use std::sync::Arc;

    /// 09:15 India time, 2026-12-03.
    const T0: u32 = 1_796_269_500;

    fn bar(t: u32, p: f32, v: u64) -> Bar {
        Bar {
            t,
            o: p,
            h: p + 1.0,
            l: p - 1.0,
            c: p + 0.5,
            oi: p as u32,
            v,
        }
    }

    #[test]
    fn buckets_align_to_india_time() {
        assert_eq!(bucket(T0 + 59, 1), T0);
        assert_eq!(bucket(T0 + 4 * 60 + 59, 5), T0);
        assert_eq!(ist_minute_of_day(bucket(T0 + 5 * 60, 5)), 9 * 60 + 20);
        assert_eq!(ist_minute_of_day(bucket(T0 + 14 * 60, 15)), 9 * 60 + 15);
        assert_eq!(ist_minute_of_day(bucket(T0 + 15 * 60, 15)), 9 * 60 + 30);
        // 09:12 sits in the 09:10 (5m) and 09:00 (15m) buckets.
        assert_eq!(ist_minute_of_day(bucket(T0 - 180, 5)), 9 * 60 + 10);
        assert_eq!(ist_minute_of_day(bucket(T0 - 180, 15)), 9 * 60);
        // MCX at 23:52 India time.
        let late = T0 + (14 * 60 + 37) * 60;
        assert_eq!(ist_minute_of_day(late), 23 * 60 + 52);
        assert_eq!(ist_minute_of_day(bucket(late, 15)), 23 * 60 + 45);
    }

    #[test]
    fn five_minute_bars_fold_ohlc_volume_oi_and_partial() {
        let ones: Vec<(Bar, bool)> = (0..7)
            .map(|i| (bar(T0 + i * 60, 100.0 + i as f32, 10), i == 6))
            .collect();
        let five = aggregate(&ones, 5);
        assert_eq!(five.len(), 2);
        let (a, p) = five[0];
        assert_eq!(
            (a.t, a.o, a.h, a.l, a.c, a.v, a.oi, p),
            (T0, 100.0, 105.0, 99.0, 104.5, 50, 104, false)
        );
        let (b, p) = five[1];
        assert_eq!((b.t, b.o, b.c, b.v, p), (T0 + 300, 105.0, 106.5, 20, true));
        assert_eq!(aggregate(&ones, 15).len(), 1);
        assert_eq!(aggregate(&ones, 1), ones);
    }

    #[test]
    fn the_forming_bar_goes_last_unless_already_finished() {
        let key = InstrumentKey::new(Segment::NseEq, 1);
        let s = Series::with_capacity(4);
        s.push(bar(T0, 1.0, 1));
        s.push(bar(T0 + 60, 2.0, 1));
        let board = Board::new(
            Some(crate::history::ist_day(T0)),
            HashMap::from([(key, Arc::new(s))]),
        );
        let got = bars_of(&board, key, Some(bar(T0 + 120, 3.0, 1)));
        assert_eq!(got.len(), 3);
        assert!(got[2].1);
        // The book's snapshot is older than the board: the bar is not repeated.
        assert_eq!(bars_of(&board, key, Some(bar(T0 + 60, 2.0, 1))).len(), 2);
        let v: Value = serde_json::from_str(&body(key, Some("X"), "1m", &got)).unwrap();
        assert_eq!(
            v["bars"][0],
            json!({"t": T0, "o": 1.0, "h": 2.0, "l": 0.0, "c": 1.5, "v": 1, "oi": 1})
        );
        assert_eq!(v["bars"][2]["partial"], true);
        assert_eq!(v["bars"][1].get("partial"), None);
        assert_eq!(
            (v["exchangeSegment"].as_str(), v["securityId"].as_str()),
            (Some("NSE_EQ"), Some("1"))
        );
        assert_eq!(interval_minutes("15m"), Some(15));
        assert_eq!(interval_minutes("1h"), None);
    }
}
