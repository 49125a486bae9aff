//! 1-minute bars built from the ticks a client received, written apart
//! from the relay's builder, to check `/api/history` against.

use serde_json::Value;

/// A received tick: (ltt, ltp, cumulative volume).
pub type Seen = (u32, f64, u64);

/// A bar: (minute start, open, high, low, close, volume).
pub type RefBar = (u32, f64, f64, f64, f64, u64);

/// Bars from ticks: minute = ltt − ltt % 60; a tick older than the current
/// minute is ignored; volume = cumulative at the bar's last tick −
/// cumulative at the previous bar's last tick, the first bar counting from
/// the first tick.
pub fn reference_bars(ticks: &[Seen]) -> Vec<RefBar> {
    let mut bars: Vec<RefBar> = Vec::new();
    let Some(first) = ticks.first() else {
        return bars;
    };
    let mut base = first.2;
    let mut last_cum = first.2;
    for &(ltt, ltp, cum) in ticks {
        let m = ltt - ltt % 60;
        match bars.last_mut() {
            Some(b) if b.0 == m => {
                b.2 = b.2.max(ltp);
                b.3 = b.3.min(ltp);
                b.4 = ltp;
                b.5 = cum - base;
            }
            Some(b) if m < b.0 => continue,
            _ => {
                base = last_cum;
                bars.push((m, ltp, ltp, ltp, ltp, cum - base));
            }
        }
        last_cum = cum;
    }
    bars
}

/// The tick a quote (or full) message carries (an index's carries no
/// volume: 0).
pub fn seen(quote: &Value) -> Seen {
    (
        quote["ltt"].as_u64().unwrap() as u32,
        quote["ltp"].as_f64().unwrap(),
        quote["volume"].as_u64().unwrap_or(0),
    )
}

/// The bars of an `/api/history` answer.
pub fn bars_of(history: &Value) -> Vec<RefBar> {
    history["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["t"].as_u64().unwrap() as u32,
                b["o"].as_f64().unwrap(),
                b["h"].as_f64().unwrap(),
                b["l"].as_f64().unwrap(),
                b["c"].as_f64().unwrap(),
                b["v"].as_u64().unwrap(),
            )
        })
        .collect()
}
