//! What a client sends to place or modify an order, parsed and checked for
//! shape (the guards check limits), and DhanHQ's order body built from it.
//!
//! An order names its instrument as the feed does (`{"symbol":"RELIANCE"}`
//! or `{"exchangeSegment":"NSE_EQ","securityId":"2885"}`) and carries
//! `side`, `quantity` (units, not lots), `orderType`, `price`,
//! `triggerPrice`, `productType`, `validity` and an optional
//! `correlationId`. DhanHQ's body uses `transactionType` for the side and
//! takes `securityId` as a string, prices as numbers, and the client id as
//! `dhanClientId` (as the official SDK 2.3.0 `_order.py` and
//! `dhan_http.py` send them). Every order leaves with a `correlationId`:
//! the client's, or one the relay makes, so a placement whose answer was
//! lost can be looked up instead of sent twice.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

use crate::fanout::protocol::{instrument, InstrumentRef};

/// BUY or SELL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl Side {
    /// DhanHQ's `transactionType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// DhanHQ's order types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderType {
    /// At the market.
    Market,
    /// At `price` or better.
    Limit,
    /// A LIMIT at `price` once `triggerPrice` trades.
    StopLoss,
    /// A MARKET once `triggerPrice` trades.
    StopLossMarket,
}

impl OrderType {
    const ALL: [OrderType; 4] = [
        OrderType::Market,
        OrderType::Limit,
        OrderType::StopLoss,
        OrderType::StopLossMarket,
    ];

    /// DhanHQ's name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Market => "MARKET",
            OrderType::Limit => "LIMIT",
            OrderType::StopLoss => "STOP_LOSS",
            OrderType::StopLossMarket => "STOP_LOSS_MARKET",
        }
    }

    /// Whether it carries a limit price.
    pub fn has_price(self) -> bool {
        matches!(self, OrderType::Limit | OrderType::StopLoss)
    }

    /// Whether it carries a trigger price.
    pub fn has_trigger(self) -> bool {
        matches!(self, OrderType::StopLoss | OrderType::StopLossMarket)
    }
}

/// DAY or IOC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Good for the day.
    Day,
    /// Immediate or cancel.
    Ioc,
}

impl Validity {
    /// DhanHQ's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Validity::Day => "DAY",
            Validity::Ioc => "IOC",
        }
    }
}

/// A new order as the client asked for it (instrument not yet resolved).
#[derive(Clone, Debug, PartialEq)]
pub struct OrderRequest {
    /// The instrument as named.
    pub instrument: InstrumentRef,
    /// The order's terms.
    pub terms: Terms,
    /// `side`.
    pub side: Side,
    /// `productType`, upper case (the guards check the allowed set).
    pub product: String,
    /// `correlationId`, checked; the relay's own when absent.
    pub correlation_id: String,
}

/// What a new order and a modification both carry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    /// Units (not lots).
    pub quantity: u32,
    /// `orderType`.
    pub order_type: OrderType,
    /// The limit price (LIMIT, STOP_LOSS).
    pub price: Option<f64>,
    /// The trigger price (STOP_LOSS, STOP_LOSS_MARKET).
    pub trigger_price: Option<f64>,
    /// `validity`.
    pub validity: Validity,
}

/// Longest correlation id DhanHQ takes (its docs: up to 25 characters,
/// letters, digits, `-` and `_`, a restriction the relay keeps to).
pub const CORRELATION_MAX: usize = 25;

const ORDER_FIELDS: [&str; 11] = [
    "symbol",
    "exchangeSegment",
    "securityId",
    "side",
    "quantity",
    "orderType",
    "price",
    "triggerPrice",
    "productType",
    "validity",
    "correlationId",
];

const MODIFY_FIELDS: [&str; 5] = ["quantity", "orderType", "price", "triggerPrice", "validity"];

/// The body of `POST /api/orders`. Errors name the field.
pub fn parse_order(body: &[u8]) -> Result<OrderRequest, String> {
    let obj = object(body, &ORDER_FIELDS, "an order")?;
    let instrument = instrument(&Value::Object(obj.clone())).map_err(|e| {
        format!("{e}: name the instrument with symbol, or exchangeSegment and securityId")
    })?;
    let side = match text(&obj, "side")?.as_deref() {
        Some("BUY") => Side::Buy,
        Some("SELL") => Side::Sell,
        Some(other) => return Err(format!("side must be BUY or SELL, not '{}'", cut(other))),
        None => return Err("side is missing (BUY or SELL)".into()),
    };
    let product =
        text(&obj, "productType")?.ok_or("productType is missing (CNC, INTRADAY, MARGIN, …)")?;
    let correlation_id = match text_as_is(&obj, "correlationId")? {
        Some(id) => checked_correlation(&id)?,
        None => new_correlation_id(),
    };
    Ok(OrderRequest {
        instrument,
        terms: terms(&obj)?,
        side,
        product,
        correlation_id,
    })
}

/// The body of `PUT /api/orders/{id}`: the new terms, in full (DhanHQ's
/// modify takes them all).
pub fn parse_modify(body: &[u8]) -> Result<Terms, String> {
    let obj = object(body, &MODIFY_FIELDS, "a modification")?;
    terms(&obj)
}

fn object(body: &[u8], fields: &[&str], what: &str) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body must be {what} as a JSON object (line {}, column {}: {e})",
            e.line(),
            e.column()
        )
    })?;
    let Value::Object(obj) = v else {
        return Err(format!("the body must be {what} as a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(format!(
            "unknown field '{}' (fields: {})",
            cut(k),
            fields.join(", ")
        ));
    }
    Ok(obj)
}

fn terms(obj: &Map<String, Value>) -> Result<Terms, String> {
    let quantity = match obj.get("quantity") {
        None => return Err("quantity is missing (units, not lots)".into()),
        Some(v) => v
            .as_u64()
            .filter(|&q| q > 0 && q <= u64::from(u32::MAX))
            .ok_or_else(|| format!("quantity must be a whole number above 0, not {}", quote(v)))?
            as u32,
    };
    let order_type = match text(obj, "orderType")?.as_deref() {
        None => {
            return Err("orderType is missing (MARKET, LIMIT, STOP_LOSS, STOP_LOSS_MARKET)".into())
        }
        Some(t) => OrderType::ALL
            .into_iter()
            .find(|o| o.as_str() == t)
            .ok_or_else(|| {
                format!(
                    "orderType must be MARKET, LIMIT, STOP_LOSS or STOP_LOSS_MARKET, not '{}'",
                    cut(t)
                )
            })?,
    };
    let price = number(obj, "price")?;
    let trigger_price = number(obj, "triggerPrice")?;
    match (order_type.has_price(), price) {
        (true, None) => {
            return Err(format!(
                "price is required for a {} order",
                order_type.as_str()
            ))
        }
        (false, Some(_)) => {
            return Err(format!(
                "price is not taken by a {} order (leave it out)",
                order_type.as_str()
            ))
        }
        _ => {}
    }
    match (order_type.has_trigger(), trigger_price) {
        (true, None) => {
            return Err(format!(
                "triggerPrice is required for a {} order",
                order_type.as_str()
            ))
        }
        (false, Some(_)) => {
            return Err(format!(
                "triggerPrice is not taken by a {} order (leave it out)",
                order_type.as_str()
            ))
        }
        _ => {}
    }
    let validity = match text(obj, "validity")?.as_deref() {
        None | Some("DAY") => Validity::Day,
        Some("IOC") => Validity::Ioc,
        Some(other) => return Err(format!("validity must be DAY or IOC, not '{}'", cut(other))),
    };
    Ok(Terms {
        quantity,
        order_type,
        price,
        trigger_price,
        validity,
    })
}

/// A string field, trimmed and upper-cased.
fn text(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    Ok(text_as_is(obj, key)?.map(|s| s.to_ascii_uppercase()))
}

fn text_as_is(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(other) => Err(format!(
            "{key} must be a non-empty string, not {}",
            quote(other)
        )),
    }
}

/// A positive price; `null` or absent is none.
fn number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|p| p.is_finite() && *p > 0.0 && *p < 1e9)
            .map(Some)
            .ok_or_else(|| format!("{key} must be a price above 0, not {}", quote(v))),
    }
}

fn checked_correlation(id: &str) -> Result<String, String> {
    let ok = id.len() <= CORRELATION_MAX
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(id.to_string())
    } else {
        Err(format!(
            "correlationId must be up to {CORRELATION_MAX} letters, digits, '-' or '_', not '{}'",
            cut(id)
        ))
    }
}

/// `dr-<ms since epoch, base 36>-<counter>`: unique within a process and
/// across restarts (the clock moves on), short enough for DhanHQ.
fn new_correlation_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("dr-{}-{}", base36(ms), base36(n))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn cut(s: &str) -> String {
    let mut short: String = s.chars().take(30).collect();
    if short.len() < s.len() {
        short.push('…');
    }
    short
}

fn quote(v: &Value) -> String {
    cut(&v.to_string())
}

/// DhanHQ's `POST /v2/orders` body for `order` on `segment`/`security_id`.
pub fn place_body(order: &OrderRequest, segment: &str, security_id: u32, client_id: &str) -> Value {
    let t = &order.terms;
    json!({
        "dhanClientId": client_id,
        "correlationId": order.correlation_id,
        "transactionType": order.side.as_str(),
        "exchangeSegment": segment,
        "productType": order.product,
        "orderType": t.order_type.as_str(),
        "validity": t.validity.as_str(),
        "securityId": security_id.to_string(),
        "quantity": t.quantity,
        "disclosedQuantity": 0,
        "price": t.price.unwrap_or(0.0),
        "triggerPrice": t.trigger_price.unwrap_or(0.0),
        "afterMarketOrder": false,
    })
}

/// DhanHQ's `PUT /v2/orders/{orderId}` body.
pub fn modify_body(order_id: &str, terms: &Terms, client_id: &str) -> Value {
    json!({
        "dhanClientId": client_id,
        "orderId": order_id,
        "orderType": terms.order_type.as_str(),
        "legName": "ENTRY_LEG",
        "quantity": terms.quantity,
        "price": terms.price.unwrap_or(0.0),
        "disclosedQuantity": 0,
        "triggerPrice": terms.trigger_price.unwrap_or(0.0),
        "validity": terms.validity.as_str(),
    })
}

/// An order id from a path: DhanHQ's are digits; anything else is refused
/// before it is put in a URL.
pub fn checked_order_id(id: &str) -> Result<&str, String> {
    if !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(format!("'{}' is not an order id", cut(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{InstrumentKey, SecurityId, Segment};

    fn err(body: &str) -> String {
        parse_order(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_limit_order_by_symbol_and_by_key() {
        let o = parse_order(
            br#"{"symbol":"RELIANCE","side":"buy","quantity":5,"orderType":"LIMIT","price":1400.5,
                 "productType":"cnc","correlationId":"bot-1"}"#,
        )
        .unwrap();
        assert_eq!(o.instrument, InstrumentRef::Symbol("RELIANCE".into()));
        assert_eq!(o.side, Side::Buy);
        assert_eq!(o.product, "CNC");
        assert_eq!(o.terms.validity, Validity::Day);
        assert_eq!(o.correlation_id, "bot-1");
        let body = place_body(&o, "NSE_EQ", 2885, "100");
        assert_eq!(body["transactionType"], "BUY");
        assert_eq!(body["securityId"], "2885");
        assert_eq!(body["price"], 1400.5);
        assert_eq!(body["triggerPrice"], 0.0);
        assert_eq!(body["dhanClientId"], "100");
        assert_eq!(body["orderType"], "LIMIT");

        let o = parse_order(
            br#"{"exchangeSegment":"NSE_FNO","securityId":"35001","side":"SELL","quantity":75,
                 "orderType":"STOP_LOSS_MARKET","triggerPrice":24000,"productType":"MARGIN","validity":"IOC"}"#,
        )
        .unwrap();
        assert_eq!(
            o.instrument,
            InstrumentRef::Key(InstrumentKey {
                segment: Segment::NseFno,
                security_id: SecurityId(35001)
            })
        );
        assert!(o.correlation_id.starts_with("dr-") && o.correlation_id.len() <= CORRELATION_MAX);
        assert_eq!(o.terms.validity, Validity::Ioc);
    }

    #[test]
    fn every_mistake_names_its_field() {
        let base = r#""symbol":"X","side":"BUY","productType":"CNC""#;
        for (body, want) in [
            ("nope".to_string(), "must be an order as a JSON object"),
            ("[1]".into(), "JSON object"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"MARKET\",\"qty\":1}}"), "unknown field 'qty'"),
            (r#"{"side":"BUY","quantity":1,"orderType":"MARKET","productType":"CNC"}"#.into(), "name the instrument"),
            (format!("{{{base},\"orderType\":\"MARKET\"}}"), "quantity is missing"),
            (format!("{{{base},\"quantity\":0,\"orderType\":\"MARKET\"}}"), "quantity must be a whole number"),
            (format!("{{{base},\"quantity\":1.5,\"orderType\":\"MARKET\"}}"), "quantity must be a whole number"),
            (format!("{{{base},\"quantity\":1}}"), "orderType is missing"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"GTT\"}}"), "orderType must be"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"LIMIT\"}}"), "price is required"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"LIMIT\",\"price\":-2}}"), "price must be a price above 0"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"MARKET\",\"price\":10}}"), "price is not taken"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"STOP_LOSS\",\"price\":10}}"), "triggerPrice is required"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"LIMIT\",\"price\":1,\"triggerPrice\":1}}"), "triggerPrice is not taken"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"MARKET\",\"validity\":\"GTC\"}}"), "validity must be DAY or IOC"),
            (format!("{{{base},\"quantity\":1,\"orderType\":\"MARKET\",\"correlationId\":\"a b\"}}"), "correlationId must be"),
            (r#"{"symbol":"X","side":"HOLD","quantity":1,"orderType":"MARKET","productType":"CNC"}"#.into(), "side must be BUY or SELL"),
            (r#"{"symbol":"X","side":"BUY","quantity":1,"orderType":"MARKET"}"#.into(), "productType is missing"),
        ] {
            let e = err(&body);
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn modifications_and_order_ids() {
        let t = parse_modify(br#"{"quantity":2,"orderType":"LIMIT","price":10.05}"#).unwrap();
        let body = modify_body("1123", &t, "100");
        assert_eq!(body["orderId"], "1123");
        assert_eq!(body["price"], 10.05);
        assert_eq!(body["validity"], "DAY");
        assert!(parse_modify(br#"{"quantity":2}"#)
            .unwrap_err()
            .contains("orderType is missing"));
        assert!(
            parse_modify(br#"{"quantity":2,"orderType":"MARKET","side":"BUY"}"#)
                .unwrap_err()
                .contains("unknown field 'side'")
        );
        assert_eq!(checked_order_id("112111182198"), Ok("112111182198"));
        assert!(checked_order_id("../x").is_err());
        assert!(checked_order_id("").is_err());
    }

    #[test]
    fn relay_correlation_ids_are_unique_and_short() {
        let a = new_correlation_id();
        let b = new_correlation_id();
        assert_ne!(a, b);
        assert!(checked_correlation(&a).is_ok(), "{a}");
    }
}
