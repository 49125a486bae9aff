//! Prices as text: the shortest decimal that reads back as the same `f32`.
//!
//! DhanHQ sends prices as `f32`. Widening to `f64` and printing gives
//! `1465.4000244140625`; printing the `f32` itself with a shortest-round-trip
//! algorithm (Ryū) gives `1465.4`, which is what the exchange quoted and what
//! parses back to the identical `f32`. Formatting writes into a stack buffer
//! and never allocates, so the fanout thread can call it per update.

use std::fmt;

/// Why a value cannot be printed as a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPrice {
    /// NaN: a garbled packet, never a real quote.
    NotANumber,
    /// Positive or negative infinity.
    Infinite,
}

impl fmt::Display for BadPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadPrice::NotANumber => "price is NaN",
            BadPrice::Infinite => "price is infinite",
        })
    }
}

impl std::error::Error for BadPrice {}

/// A reusable buffer that formats prices; keep one per thread.
#[derive(Default)]
pub struct PriceFormatter {
    buf: ryu::Buffer,
}

impl fmt::Debug for PriceFormatter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PriceFormatter")
    }
}

impl PriceFormatter {
    /// A new formatter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shortest decimal that round-trips `price`, valid as a JSON number.
    ///
    /// NaN and infinities are errors (JSON cannot carry them, and they are
    /// never real quotes). Negative prices are printed: they are rare but
    /// real (MCX crude settled below zero in April 2020), so flagging them is
    /// the book's job, not the formatter's. `-0.0` prints as `0.0`. Whole
    /// numbers keep one decimal (`5545.0`), as the replaced backend printed.
    pub fn format(&mut self, price: f32) -> Result<&str, BadPrice> {
        if price.is_nan() {
            return Err(BadPrice::NotANumber);
        }
        if price.is_infinite() {
            return Err(BadPrice::Infinite);
        }
        let price = if price == 0.0 { 0.0 } else { price };
        Ok(self.buf.format_finite(price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(p: f32) -> String {
        PriceFormatter::new().format(p).unwrap().to_string()
    }

    #[test]
    fn shortest_round_trip_not_widened_digits() {
        assert_eq!(f64::from(1465.4f32).to_string(), "1465.4000244140625");
        assert_eq!(fmt(1465.4), "1465.4");
        assert_eq!(fmt(83858.53), "83858.53");
        assert_eq!(fmt(25760.85), "25760.85");
        assert_eq!(fmt(5545.0), "5545.0");
        assert_eq!(fmt(0.0), "0.0");
        assert_eq!(fmt(-0.0), "0.0");
        assert_eq!(fmt(-37.63), "-37.63");
    }

    #[test]
    fn every_tick_of_five_paise_round_trips() {
        // 0.05 ticks from 0 to 100,000: what most NSE instruments move by.
        let mut f = PriceFormatter::new();
        for paise in (0..10_000_000u32).step_by(5 * 97) {
            let p = paise as f32 / 100.0;
            let text = f.format(p).unwrap();
            assert_eq!(text.parse::<f32>().unwrap(), p, "{text}");
            assert!(text.len() <= 12, "{text} is not short");
        }
        assert_eq!(fmt(0.05), "0.05");
        assert_eq!(fmt(0.1 + 0.05), "0.15");
    }

    #[test]
    fn output_is_valid_json_for_extremes() {
        for p in [f32::MAX, f32::MIN_POSITIVE, 1e-7, 1e20, -f32::MAX] {
            let text = fmt(p);
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back as f32, p, "{text}");
        }
    }

    #[test]
    fn nan_and_infinity_are_rejected() {
        let mut f = PriceFormatter::new();
        assert_eq!(f.format(f32::NAN), Err(BadPrice::NotANumber));
        assert_eq!(f.format(f32::INFINITY), Err(BadPrice::Infinite));
        assert_eq!(f.format(f32::NEG_INFINITY), Err(BadPrice::Infinite));
    }
}
