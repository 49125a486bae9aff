//! One chain message from the book's snapshot: per strike in the window,
//! CE and PE with last price, change against the previous close, OI and
//! its change against the previous OI, volume, best bid and ask (full mode
//! only), and IV with the greeks computed here; per chain the underlying's
//! price, ATM, put-call ratio by OI and max pain.
//!
//! The model (issue 15): Black-76 on the future's price where a future of
//! the same expiry is listed (and always for MCX options on futures, whose
//! price source is the future), else Black–Scholes on the spot. Time to
//! expiry runs to the exchange's close on expiry day.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::greeks::{self, Model, Right};
use super::ladder::Ladder;
use crate::book::InstrumentState;
use crate::book::Snapshot;
use crate::domain::InstrumentKey;
use crate::fanout::rest::price_value;

/// What pricing the chain uses, and from which instrument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pricing {
    /// Black-76 or Black–Scholes.
    pub model: Model,
    /// Whose last price is the model's underlying (a future for Black-76).
    pub source: InstrumentKey,
    /// The risk-free rate (a fraction).
    pub rate: f64,
    /// The exchange's close on expiry day, minutes after midnight IST.
    pub close_minutes: u16,
}

/// The rows of the window: the strikes from `lo` to `hi` (indices into
/// `ladder.strikes`, inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    /// First strike's index.
    pub lo: usize,
    /// Last strike's index.
    pub hi: usize,
}

/// The chain message (`{"type":"chain",…}`), or, without `type`, the REST
/// body.
#[allow(clippy::too_many_arguments)]
pub fn chain_json(
    id: &str,
    ladder: &Ladder,
    rows: Rows,
    atm: Option<f64>,
    pricing: &Pricing,
    snapshot: &Snapshot,
    now: SystemTime,
    with_type: bool,
) -> Value {
    let ltp = |k: InstrumentKey| snapshot.get(k).and_then(|s| s.ltp).map(f64::from);
    let model_price = ltp(pricing.source);
    let years = greeks::years_to_expiry(now, ladder.expiry, pricing.close_minutes);
    let mut out_rows = Vec::with_capacity(rows.hi + 1 - rows.lo);
    let (mut ce_oi, mut pe_oi) = (0u64, 0u64);
    let mut pain: Vec<(f64, u64, u64)> = Vec::new();
    for strike in ladder.strikes.get(rows.lo..=rows.hi).unwrap_or(&[]) {
        let side = |key: Option<InstrumentKey>, right: Right| -> (Value, u64) {
            let Some(key) = key else {
                return (Value::Null, 0);
            };
            let state = snapshot.get(key);
            let oi = state.and_then(|s| s.oi).map_or(0, u64::from);
            let v = option_json(
                key,
                state,
                right,
                strike.strike,
                model_price,
                years,
                pricing,
            );
            (v, oi)
        };
        let (ce, c_oi) = side(strike.call, Right::Call);
        let (pe, p_oi) = side(strike.put, Right::Put);
        ce_oi += c_oi;
        pe_oi += p_oi;
        pain.push((strike.strike, c_oi, p_oi));
        out_rows.push(json!({"strike": strike.strike, "ce": ce, "pe": pe}));
    }
    let mut m = Map::new();
    if with_type {
        m.insert("type".into(), json!("chain"));
    }
    m.insert("id".into(), json!(id));
    m.insert("underlying".into(), json!(ladder.underlying));
    m.insert("expiry".into(), json!(ladder.expiry.to_string()));
    m.insert(
        "underlyingPrice".into(),
        price_value(snapshot.get(ladder.price_source).and_then(|s| s.ltp)),
    );
    m.insert("atm".into(), json!(atm));
    m.insert("strikeStep".into(), json!(ladder.strike_step));
    m.insert("lotSize".into(), json!(ladder.lot_size));
    m.insert(
        "pcr".into(),
        json!((ce_oi > 0).then(|| round(pe_oi as f64 / ce_oi as f64, 4))),
    );
    m.insert("maxPain".into(), json!(max_pain(&pain)));
    let stamp = crate::instrument::date::ist_timestamp(now);
    m.insert("updatedAt".into(), json!(format!("{stamp}+05:30")));
    m.insert(
        "model".into(),
        json!(match pricing.model {
            Model::Black76 => "black-76",
            Model::BlackScholes => "black-scholes",
        }),
    );
    m.insert("rate".into(), json!(pricing.rate));
    m.insert("rows".into(), Value::Array(out_rows));
    Value::Object(m)
}

/// One side of a row.
fn option_json(
    key: InstrumentKey,
    state: Option<&InstrumentState>,
    right: Right,
    strike: f64,
    underlying: Option<f64>,
    years: f64,
    pricing: &Pricing,
) -> Value {
    let ltp = state.and_then(|s| s.ltp).map(f64::from);
    let prev = state.and_then(|s| s.prev_close);
    let oi = state.and_then(|s| s.oi);
    let change = match (ltp, prev) {
        (Some(l), Some(p)) if p.prev_close > 0.0 => Some(round(l - f64::from(p.prev_close), 2)),
        _ => None,
    };
    let oi_change = match (oi, prev) {
        (Some(o), Some(p)) => Some(i64::from(o) - i64::from(p.prev_oi)),
        _ => None,
    };
    let best = state.and_then(|s| s.full).map(|f| f.depth[0]);
    let g = match (ltp, underlying) {
        (Some(price), Some(u)) if price > 0.0 && u > 0.0 => {
            greeks::greeks(pricing.model, right, u, strike, years, pricing.rate, price)
        }
        _ => None,
    };
    json!({
        "securityId": key.security_id.to_string(),
        "ltp": price_value(state.and_then(|s| s.ltp)),
        "change": change,
        "oi": oi,
        "oiChange": oi_change,
        "volume": state.and_then(|s| s.quote).map(|q| q.volume),
        "bid": price_value(best.filter(|b| b.bid_qty > 0).map(|b| b.bid_price)),
        "ask": price_value(best.filter(|b| b.ask_qty > 0).map(|b| b.ask_price)),
        "iv": g.map(|g| round(g.iv, 6)),
        "delta": g.map(|g| round(g.delta, 6)),
        "gamma": g.map(|g| round(g.gamma, 8)),
        "theta": g.map(|g| round(g.theta, 6)),
        "vega": g.map(|g| round(g.vega, 6)),
    })
}

/// The strike at which option writers pay the least at expiry: for each
/// candidate expiry price K (the listed strikes), calls pay OI × (K − s)
/// above their strike s and puts OI × (s − K) below it. `None` without OI.
pub fn max_pain(rows: &[(f64, u64, u64)]) -> Option<f64> {
    if rows.iter().all(|&(_, c, p)| c == 0 && p == 0) {
        return None;
    }
    rows.iter()
        .map(|&(k, _, _)| {
            let pay: f64 = rows
                .iter()
                .map(|&(s, c, p)| c as f64 * (k - s).max(0.0) + p as f64 * (s - k).max(0.0))
                .sum();
            (k, pay)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pain_is_where_writers_pay_least() {
        // Heavy put OI at 100 and call OI at 120: pain is least at 110.
        let rows = [(100.0, 0, 1000), (110.0, 100, 100), (120.0, 1000, 0)];
        assert_eq!(max_pain(&rows), Some(110.0));
        assert_eq!(max_pain(&[(100.0, 0, 0)]), None);
        // All call OI low: expiring at the lowest strike pays calls nothing.
        assert_eq!(max_pain(&[(100.0, 10, 0), (110.0, 10, 0)]), Some(100.0));
    }
}
