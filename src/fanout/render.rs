//! Updates as the client protocol's JSON (`docs/dhanhq-protocol.md`), written
//! once per update and mode and shared by every subscriber.
//!
//! Hand-written into a reused buffer: field order is fixed, numbers come from
//! the price formatter (shortest round-trip `f32`). Finished messages are
//! carved out of a 64 KiB arena (`BytesMut::split`), so a message costs no
//! allocation of its own: the arena is replaced about once per 64 KiB of
//! output, and sharing a message with every subscriber is a reference count.
//!
//! Which message a client gets: a ticker packet is a `ticker` message for
//! everyone; a quote packet is a `quote` message for quote and full clients
//! (a `ticker` for ticker clients); a full packet is rendered in each
//! client's mode. OI and previous-close packets carry no price of their own:
//! they update the instrument, ride along as `oi`, `prevClose` and `prevOi`
//! on every later message, and are also pushed at once as a message in the
//! client's mode (when a price is known), so a quiet instrument's change
//! figures are right without waiting for its next trade.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use crate::book::{Depth20, InstrumentState, Update, UpdateKind};
use crate::domain::Mode;
use crate::price::PriceFormatter;

/// Arena block size for finished messages.
const ARENA: usize = 64 * 1024;

/// Renders updates and states; keep one per thread.
#[derive(Debug, Default)]
pub struct Renderer {
    buf: String,
    arena: BytesMut,
    price: PriceFormatter,
}

/// The message type a client in `mode` gets for an update of `kind`.
pub fn message_mode(kind: UpdateKind, mode: Mode) -> Mode {
    match kind {
        UpdateKind::Ticker => Mode::Ticker,
        UpdateKind::Quote => mode.min(Mode::Quote),
        UpdateKind::Full | UpdateKind::Oi | UpdateKind::PrevClose => mode,
    }
}

impl Renderer {
    /// A new renderer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The message for `update` as a `mode` subscriber sees it; `None` when
    /// there is nothing to show yet (no price known).
    pub fn update(&mut self, update: &Update, mode: Mode, symbol: Option<&str>) -> Option<Bytes> {
        self.state(&update.state, message_mode(update.kind, mode), symbol)
    }

    /// The instrument's current state in `mode` (lowered to what is known),
    /// for snapshot-on-subscribe and for updates; `None` without a price.
    pub fn state(
        &mut self,
        s: &InstrumentState,
        mode: Mode,
        symbol: Option<&str>,
    ) -> Option<Bytes> {
        let ltp = s.ltp?;
        let mode = match (mode, s.quote, s.full) {
            (Mode::Full, Some(_), Some(_)) => Mode::Full,
            (Mode::Full | Mode::Quote, Some(_), _) => Mode::Quote,
            _ => Mode::Ticker,
        };
        self.buf.clear();
        let b = &mut self.buf;
        let _ = write!(
            b,
            r#"{{"type":"{}","exchangeSegment":"{}","securityId":"{}""#,
            mode.name(),
            s.key.segment.name(),
            s.key.security_id
        );
        if let Some(symbol) = symbol {
            b.push_str(r#","symbol":"#);
            push_json_string(b, symbol);
        }
        self.price_field("ltp", ltp);
        let _ = write!(self.buf, r#","ltt":{}"#, s.ltt);
        if let (Mode::Quote | Mode::Full, Some(q)) = (mode, s.quote) {
            let _ = write!(self.buf, r#","ltq":{}"#, q.ltq);
            self.price_field("avgPrice", q.avg_price);
            let _ = write!(
                self.buf,
                r#","volume":{},"totalSellQuantity":{},"totalBuyQuantity":{}"#,
                q.volume, q.total_sell_qty, q.total_buy_qty
            );
            self.price_field("open", q.open);
            self.price_field("close", q.close);
            self.price_field("high", q.high);
            self.price_field("low", q.low);
        }
        if let Some(oi) = s.oi {
            let _ = write!(self.buf, r#","oi":{oi}"#);
        }
        if let (Mode::Full, Some(f)) = (mode, s.full) {
            let _ = write!(
                self.buf,
                r#","oiDayHigh":{},"oiDayLow":{},"depth":["#,
                f.oi_day_high, f.oi_day_low
            );
            for (i, level) in f.depth.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                let _ = write!(
                    self.buf,
                    r#"{{"bidQuantity":{},"askQuantity":{},"bidOrders":{},"askOrders":{}"#,
                    level.bid_qty, level.ask_qty, level.bid_orders, level.ask_orders
                );
                self.price_field("bidPrice", level.bid_price);
                self.price_field("askPrice", level.ask_price);
                self.buf.push('}');
            }
            self.buf.push(']');
        }
        if let Some(p) = s.prev_close {
            self.price_field("prevClose", p.prev_close);
            let _ = write!(self.buf, r#","prevOi":{}"#, p.prev_oi);
        }
        let _ = write!(self.buf, r#","seq":{}}}"#, s.seq);
        if self.arena.capacity() < self.buf.len() {
            self.arena.reserve(ARENA.max(self.buf.len()));
        }
        self.arena.extend_from_slice(self.buf.as_bytes());
        // Built from a `String`: valid UTF-8, as a text frame needs.
        Some(self.arena.split().freeze())
    }

    /// The `depth20` message of a 20-level book: `bids` and `asks`, 20
    /// `{"price","quantity","orders"}` rows each, best first as DhanHQ sent
    /// them (prices are the depth feed's f64, printed shortest; NaN or
    /// infinity as `null`).
    pub fn depth20(&mut self, d: &Depth20, symbol: Option<&str>) -> Bytes {
        self.buf.clear();
        let b = &mut self.buf;
        let _ = write!(
            b,
            r#"{{"type":"depth20","exchangeSegment":"{}","securityId":"{}""#,
            d.key.segment.name(),
            d.key.security_id
        );
        if let Some(symbol) = symbol {
            b.push_str(r#","symbol":"#);
            push_json_string(b, symbol);
        }
        for (name, rows) in [("bids", &d.bids), ("asks", &d.asks)] {
            let _ = write!(b, r#","{name}":["#);
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    b.push(',');
                }
                b.push_str(r#"{"price":"#);
                if row.price.is_finite() {
                    let _ = write!(b, "{}", row.price);
                } else {
                    b.push_str("null");
                }
                let _ = write!(
                    b,
                    r#","quantity":{},"orders":{}}}"#,
                    row.quantity, row.orders
                );
            }
            b.push(']');
        }
        let _ = write!(b, r#","seq":{}}}"#, d.seq);
        if self.arena.capacity() < self.buf.len() {
            self.arena.reserve(ARENA.max(self.buf.len()));
        }
        self.arena.extend_from_slice(self.buf.as_bytes());
        self.arena.split().freeze()
    }

    /// `,"name":price`, or `,"name":null` for NaN/infinity (a garbled packet
    /// must not break the JSON).
    fn price_field(&mut self, name: &str, value: f32) {
        let _ = write!(self.buf, r#","{name}":"#);
        match self.price.format(value) {
            Ok(text) => self.buf.push_str(text),
            Err(_) => self.buf.push_str("null"),
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::FullExtras;
    use crate::domain::{InstrumentKey, Segment};
    use crate::wire::feed::{DepthLevel, PrevClose, Quote};
    use serde_json::{json, Value};

    fn state() -> InstrumentState {
        let mut s = InstrumentState::new(InstrumentKey::new(Segment::BseEq, 500325));
        s.ltp = Some(1465.4);
        s.ltt = 1_729_412_345;
        s.seq = 3;
        s
    }

    fn parse(b: Option<Bytes>) -> Value {
        serde_json::from_slice(&b.expect("rendered")).unwrap()
    }

    #[test]
    fn ticker_matches_the_protocol_example() {
        let v = parse(Renderer::new().state(&state(), Mode::Ticker, None));
        assert_eq!(
            v,
            json!({"type": "ticker", "exchangeSegment": "BSE_EQ", "securityId": "500325",
                   "ltp": 1465.4, "ltt": 1729412345, "seq": 3})
        );
    }

    #[test]
    fn quote_and_full_fields_with_ride_alongs() {
        let mut s = state();
        s.quote = Some(Quote {
            ltp: 1465.4,
            ltq: 5,
            ltt: 1_729_412_345,
            avg_price: 1460.05,
            volume: 10,
            total_sell_qty: 20,
            total_buy_qty: 30,
            open: 1450.0,
            close: 1440.5,
            high: 1470.0,
            low: 1449.95,
        });
        s.oi = Some(77);
        s.prev_close = Some(PrevClose {
            prev_close: 1440.5,
            prev_oi: 70,
        });
        s.full = Some(FullExtras {
            oi_day_high: 80,
            oi_day_low: 60,
            depth: [DepthLevel {
                bid_qty: 1,
                ask_qty: 2,
                bid_orders: 3,
                ask_orders: 4,
                bid_price: 1465.35,
                ask_price: 1465.45,
            }; 5],
        });
        let mut r = Renderer::new();
        let q = parse(r.state(&s, Mode::Quote, Some("RELIANCE")));
        assert_eq!(q["type"], "quote");
        assert_eq!(q["symbol"], "RELIANCE");
        for (k, v) in [
            ("ltq", json!(5)),
            ("avgPrice", json!(1460.05)),
            ("volume", json!(10)),
            ("totalSellQuantity", json!(20)),
            ("totalBuyQuantity", json!(30)),
            ("open", json!(1450.0)),
            ("close", json!(1440.5)),
            ("high", json!(1470.0)),
            ("low", json!(1449.95)),
            ("oi", json!(77)),
            ("prevClose", json!(1440.5)),
            ("prevOi", json!(70)),
        ] {
            assert_eq!(q[k], v, "{k}");
        }
        assert!(q.get("depth").is_none());
        let f = parse(r.state(&s, Mode::Full, None));
        assert_eq!(f["type"], "full");
        assert_eq!(
            (f["oiDayHigh"].clone(), f["oiDayLow"].clone()),
            (json!(80), json!(60))
        );
        let depth = f["depth"].as_array().unwrap();
        assert_eq!(depth.len(), 5);
        assert_eq!(
            depth[0],
            json!({"bidQuantity": 1, "askQuantity": 2, "bidOrders": 3, "askOrders": 4,
                   "bidPrice": 1465.35, "askPrice": 1465.45})
        );
        // Printed text keeps the exchange's digits.
        let text = r.state(&s, Mode::Full, None).unwrap();
        assert!(std::str::from_utf8(&text)
            .unwrap()
            .contains(r#""bidPrice":1465.35,"#));
    }

    #[test]
    fn modes_are_lowered_to_what_is_known_and_priceless_states_render_nothing() {
        let mut r = Renderer::new();
        let v = parse(r.state(&state(), Mode::Full, None));
        assert_eq!(v["type"], "ticker");
        let mut empty = state();
        empty.ltp = None;
        assert!(r.state(&empty, Mode::Ticker, None).is_none());
    }

    #[test]
    fn message_type_by_update_kind_and_client_mode() {
        use Mode::*;
        assert_eq!(message_mode(UpdateKind::Ticker, Full), Ticker);
        assert_eq!(message_mode(UpdateKind::Quote, Full), Quote);
        assert_eq!(message_mode(UpdateKind::Quote, Ticker), Ticker);
        assert_eq!(message_mode(UpdateKind::Full, Quote), Quote);
        assert_eq!(message_mode(UpdateKind::PrevClose, Full), Full);
    }

    #[test]
    fn bad_floats_become_null_and_strings_are_escaped() {
        let mut s = state();
        s.ltp = Some(f32::NAN);
        let v = parse(Renderer::new().state(&s, Mode::Ticker, Some("A\"B\\C\n")));
        assert_eq!(v["ltp"], Value::Null);
        assert_eq!(v["symbol"], "A\"B\\C\n");
    }
}
