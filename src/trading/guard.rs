//! The guards: limits an order must pass before anything leaves the box.
//!
//! Checked in this order, each refusal naming its guard (the `guard` field
//! of the 422 answer) and the number that failed it: the segment and the
//! product are allowed, the quantity is at most `max_quantity` and a whole
//! number of lots (lot size from the instrument master, for every
//! instrument whose lot is above 1: futures, options, currency and MCX
//! contracts), prices are whole ticks (tick size from the master: DhanHQ
//! refuses others), a limit price and a trigger price are within
//! `price_band_pct` of the last traded price, and the order's value is at
//! most `max_order_value`. The value is quantity × the limit price (LIMIT,
//! STOP_LOSS), × the higher of trigger and last price (STOP_LOSS_MARKET)
//! or × the last traded price (MARKET); an order
//! the relay cannot value or band-check because the instrument has not
//! traded since start is refused rather than let through unchecked.

use super::order::{OrderType, Terms};
use super::Guards;

/// What the guards know about the instrument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Facts<'a> {
    /// DhanHQ's segment name.
    pub segment: &'a str,
    /// Units per lot (1 for cash equities).
    pub lot_size: u32,
    /// The price step (0: not known, not checked).
    pub tick_size: f64,
    /// The last traded price, if one arrived.
    pub ltp: Option<f64>,
    /// The name shown in messages.
    pub name: &'a str,
}

/// A refusal: which guard, and why in words.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// The config key of the guard (`max_quantity`, `lot_size`, …).
    pub guard: &'static str,
    /// What failed, with the numbers.
    pub message: String,
}

fn refuse(guard: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { guard, message })
}

/// Checks an order (`product` is `None` for a modification, which keeps
/// the order's product).
pub fn check(
    guards: &Guards,
    facts: &Facts<'_>,
    product: Option<&str>,
    terms: &Terms,
) -> Result<(), Refusal> {
    if !guards.segments.iter().any(|s| s == facts.segment) {
        return refuse(
            "segments",
            format!(
                "orders on {} are not allowed here (trading.segments: {})",
                facts.segment,
                guards.segments.join(", ")
            ),
        );
    }
    if let Some(p) = product {
        if !guards.products.iter().any(|g| g == p) {
            return refuse(
                "products",
                format!(
                    "product {p} is not allowed here (trading.products: {})",
                    guards.products.join(", ")
                ),
            );
        }
    }
    let q = terms.quantity;
    if let Some(max) = guards.max_quantity {
        if q > max {
            return refuse(
                "max_quantity",
                format!("quantity {q} is over trading.max_quantity {max}"),
            );
        }
    }
    if facts.lot_size > 1 && q % facts.lot_size != 0 {
        let lot = facts.lot_size;
        return refuse(
            "lot_size",
            format!(
                "quantity {q} is not a whole number of lots of {} (lot size {lot}: try {} or {})",
                facts.name,
                (q / lot).max(1) * lot,
                (q / lot + 1) * lot
            ),
        );
    }
    for (what, p) in [
        ("price", terms.price),
        ("triggerPrice", terms.trigger_price),
    ] {
        let (Some(p), tick) = (p, facts.tick_size) else {
            continue;
        };
        let steps = p / tick;
        if tick > 0.0 && (steps - steps.round()).abs() > 1e-6 {
            return refuse(
                "tick_size",
                format!(
                    "{what} {p} is not a whole number of ticks of {} (tick size {tick}: try {} or {})",
                    facts.name,
                    round_to(steps.floor() * tick),
                    round_to(steps.ceil() * tick)
                ),
            );
        }
    }
    let unpriced = || {
        format!(
            "{} has no last traded price yet, so the order cannot be checked; subscribe it or wait for a trade",
            facts.name
        )
    };
    let ltp = facts.ltp.filter(|l| *l > 0.0);
    if let Some(band) = guards.price_band_pct {
        // The limit price and the trigger both: a stop far from the market
        // is as much a fat finger as a limit is.
        for (what, p) in [
            ("price", terms.price),
            ("triggerPrice", terms.trigger_price),
        ] {
            let Some(p) = p else { continue };
            let Some(ltp) = ltp else {
                return refuse("price_band_pct", unpriced());
            };
            let off = (p - ltp).abs() / ltp * 100.0;
            if off > band {
                return refuse(
                    "price_band_pct",
                    format!(
                        "{what} {p} is {off:.2}% from the last traded price {ltp} of {}; trading.price_band_pct allows {band}%",
                        facts.name
                    ),
                );
            }
        }
    }
    if let Some(max) = guards.max_order_value {
        let per_unit = match terms.order_type {
            OrderType::Limit | OrderType::StopLoss => terms.price,
            // Fills at the market once triggered: whichever is higher.
            OrderType::StopLossMarket => match (terms.trigger_price, ltp) {
                (Some(t), Some(l)) => Some(t.max(l)),
                _ => None,
            },
            OrderType::Market => ltp,
        };
        let Some(per_unit) = per_unit else {
            return refuse("max_order_value", unpriced());
        };
        let value = per_unit * f64::from(q);
        if value > max {
            return refuse(
                "max_order_value",
                format!("order value {value:.2} is over trading.max_order_value {max:.2}"),
            );
        }
    }
    Ok(())
}

/// `v` without float noise (`1400.1000000002` → `1400.1`).
fn round_to(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trading::order::Validity;

    fn terms(quantity: u32, order_type: OrderType, price: Option<f64>) -> Terms {
        Terms {
            quantity,
            order_type,
            price,
            trigger_price: order_type.has_trigger().then_some(100.0),
            validity: Validity::Day,
        }
    }

    const EQ: Facts<'static> = Facts {
        segment: "NSE_EQ",
        lot_size: 1,
        tick_size: 0.05,
        ltp: Some(100.0),
        name: "ABC",
    };

    fn guard_of(facts: &Facts<'_>, product: &str, t: Terms) -> Option<&'static str> {
        check(&Guards::default(), facts, Some(product), &t)
            .err()
            .map(|r| r.guard)
    }

    #[test]
    fn each_guard_refuses_with_its_name() {
        use OrderType::*;
        assert_eq!(guard_of(&EQ, "CNC", terms(10, Limit, Some(101.0))), None);
        assert_eq!(guard_of(&EQ, "CNC", terms(10, Market, None)), None);
        let idx = Facts {
            segment: "IDX_I",
            ..EQ
        };
        assert_eq!(
            guard_of(&idx, "CNC", terms(1, Market, None)),
            Some("segments")
        );
        assert_eq!(
            guard_of(&EQ, "MTF", terms(1, Market, None)),
            Some("products")
        );
        assert_eq!(
            guard_of(&EQ, "CNC", terms(5_001, Market, None)),
            Some("max_quantity")
        );
        assert_eq!(
            guard_of(&EQ, "CNC", terms(10, Limit, Some(106.0))),
            Some("price_band_pct")
        );
        assert_eq!(
            guard_of(&EQ, "CNC", terms(10, StopLoss, Some(94.0))),
            Some("price_band_pct")
        );
        assert_eq!(
            guard_of(&EQ, "CNC", terms(2_001, Limit, Some(100.0))),
            Some("max_order_value")
        );
        assert_eq!(guard_of(&EQ, "CNC", terms(2_000, Limit, Some(100.0))), None);
        let fut = Facts {
            segment: "NSE_FNO",
            lot_size: 75,
            tick_size: 0.05,
            ltp: Some(25_000.0),
            name: "NIFTY-Dec2026-FUT",
        };
        let r = check(
            &Guards::default(),
            &fut,
            Some("MARGIN"),
            &terms(80, Market, None),
        )
        .unwrap_err();
        assert_eq!(r.guard, "lot_size");
        assert!(r.message.contains("try 75 or 150"), "{}", r.message);
        // 2 lots of NIFTY at 25,000 is 3,750,000: over the default limit.
        assert_eq!(
            guard_of(&fut, "MARGIN", terms(150, Market, None)),
            Some("max_order_value")
        );
    }

    #[test]
    fn a_stop_far_from_the_market_is_refused() {
        // BUY 5,000 SL-M with a trigger of 0.05 on a 100 stock: not a cheap
        // order, a fat finger.
        let t = Terms {
            trigger_price: Some(0.05),
            ..terms(5_000, OrderType::StopLossMarket, None)
        };
        let r = check(&Guards::default(), &EQ, Some("CNC"), &t).unwrap_err();
        assert_eq!(r.guard, "price_band_pct");
        assert!(r.message.starts_with("triggerPrice 0.05"), "{}", r.message);
        // Near the market it is valued at the higher of trigger and LTP.
        let t = Terms {
            trigger_price: Some(98.0),
            ..terms(2_001, OrderType::StopLossMarket, None)
        };
        assert_eq!(guard_of(&EQ, "CNC", t), Some("max_order_value"));
    }

    #[test]
    fn prices_are_whole_ticks() {
        use OrderType::*;
        assert_eq!(guard_of(&EQ, "CNC", terms(1, Limit, Some(100.05))), None);
        assert_eq!(
            guard_of(&EQ, "CNC", terms(1, Limit, Some(1400.1 - 1300.0))),
            None
        );
        let r = check(
            &Guards::default(),
            &EQ,
            Some("CNC"),
            &terms(1, Limit, Some(100.03)),
        )
        .unwrap_err();
        assert_eq!(r.guard, "tick_size");
        assert!(r.message.contains("try 100 or 100.05"), "{}", r.message);
        let crude = Facts {
            segment: "MCX_COMM",
            tick_size: 1.0,
            ..EQ
        };
        assert_eq!(
            guard_of(&crude, "CNC", terms(1, Limit, Some(100.5))),
            Some("tick_size")
        );
        let unknown = Facts {
            tick_size: 0.0,
            ..EQ
        };
        assert_eq!(
            guard_of(&unknown, "CNC", terms(1, Limit, Some(100.03))),
            None
        );
    }

    #[test]
    fn no_last_price_is_a_refusal_not_a_pass() {
        let dark = Facts { ltp: None, ..EQ };
        let r = check(
            &Guards::default(),
            &dark,
            Some("CNC"),
            &terms(1, OrderType::Market, None),
        )
        .unwrap_err();
        assert_eq!(r.guard, "max_order_value");
        assert!(r.message.contains("no last traded price"), "{}", r.message);
        assert_eq!(
            guard_of(&dark, "CNC", terms(1, OrderType::Limit, Some(1.0))),
            Some("price_band_pct")
        );
        // Without the guards that need a price, it passes.
        let open = Guards {
            max_order_value: None,
            price_band_pct: None,
            ..Guards::default()
        };
        assert!(check(
            &open,
            &dark,
            Some("CNC"),
            &terms(1, OrderType::Market, None)
        )
        .is_ok());
        // A stop-loss-market needs a last price too (band and value).
        assert_eq!(
            guard_of(&dark, "CNC", terms(10, OrderType::StopLossMarket, None)),
            Some("price_band_pct")
        );
    }
}
