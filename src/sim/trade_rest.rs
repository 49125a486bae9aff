//! DhanHQ's trading REST API on the paper book (`paper.rs`): the routes
//! under `/v2` on [`super::Simulator::rest_url`] other than `RenewToken`.
//!
//! The REST thread (`rest.rs`) reads the request and its bounded body, counts
//! it ([`super::SimControl::trading_requests`]) and hands it to one of
//! [`WORKERS`] worker threads over a queue of [`QUEUE`]; a full queue is
//! answered at once with 429 `DH-904`. The workers hold each answer for
//! [`super::SimControl::set_rest_delay`], so a delay never holds up the
//! token endpoints or the feed.
//!
//! * Auth: headers `access-token` and `client-id`, checked by the feed's
//!   rule for that client id (`tokens.rs`); otherwise 401
//!   `Invalid_Authentication` / `DH-901`. A body's `dhanClientId`, when
//!   present, must be the header's.
//! * `GET /v2/fundlimit` → `{dhanClientId, availabelBalance, sodLimit,
//!   collateralAmount, receiveableAmount, utilizedAmount,
//!   blockedPayoutAmount, withdrawableBalance}` (DhanHQ's spellings).
//! * `POST /v2/orders` → `{orderId, orderStatus}`, the status the order has
//!   once the placement is processed (`TRADED` for a market order,
//!   `PENDING` for a resting one, `REJECTED` / `CANCELLED` when refused by
//!   funds / IOC). `PUT /v2/orders/{id}` and `DELETE /v2/orders/{id}` →
//!   `{orderId, orderStatus}`.
//! * `GET /v2/orders` → array of order objects; `GET /v2/orders/{id}` → one
//!   object; `GET /v2/orders/external/{correlationId}` → the latest order
//!   with that correlation id, one object (as DhanHQ's docs show it and
//!   the SDK passes it on).
//! * `GET /v2/positions` → array of position objects.
//!
//! Errors are DhanHQ's object `{errorType, errorCode, errorMessage}`: 400
//! `Input_Exception` / `DH-905` for a missing or bad field (the message
//! names it); 404 `Input_Exception` / `DH-905` for an order id (or
//! correlation id) the client does not have; 400 `Order_Error` / `DH-906`
//! to modify or cancel an order no longer open or when the book is full;
//! 404 for other paths, 405 for another method on a known path. Codes and
//! types are from DhanHQ's v2 annexure ("Trading API Error": DH-901
//! Invalid Authentication … DH-905 Input Exception, DH-906 Order Error);
//! the HTTP status for each is a guess.
//!
//! What was verified where: DhanHQ's v2 "Orders" page
//! (<https://dhanhq.co/docs/v2/orders>) for the routes and the placement
//! body — whose sample sends numbers as strings (`"quantity":"5"`) and
//! unused ones as `""`, so both numbers and numeric strings are accepted
//! and `""` counts as 0 — and the v2 annexure
//! (<https://dhanhq.co/docs/v2/annexure>) for order statuses (`TRANSIT`,
//! `PENDING`, `REJECTED`, `CANCELLED`, `TRADED`, `EXPIRED`), product types,
//! segments and the DH-90x error table. The order object's and the
//! position object's field names follow `PROTOCOL.md` §4 and the brief
//! (those pages' response tables were not in the corpora); the derivative
//! fields' formats (`drvExpiryDate` `YYYY-MM-DD` or null, `drvOptionType`
//! `CALL` / `PUT` or null), `legName` `NA`, `omsErrorCode` `DH-906` on a
//! funds rejection and the HTTP status of each error are guesses.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{json, Value};
use tiny_http::{Method, Request};

use super::paper::{
    ModifySpec, OrderSpec, OrderStatus, OrderType, PaperError, PaperOrder, PaperPosition, Product,
    Side, Validity,
};
use super::rest::{india_time, respond, Answer};
use super::shared::{lock, unix_now, FailNext, Shared};
use crate::domain::{InstrumentKey, SecurityId, Segment};
use crate::instrument::{Master, OptionType};

/// Worker threads answering trading requests.
pub(crate) const WORKERS: usize = 4;
/// Trading requests waiting for a worker, at most.
pub(crate) const QUEUE: usize = 64;
/// How often a worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A trading request handed to a worker.
pub(crate) struct Job {
    pub(crate) request: Request,
    pub(crate) path: String,
    pub(crate) body: Vec<u8>,
}

/// Whether `path` is a trading route (counted, served by the workers).
pub(crate) fn is_trading(path: &str) -> bool {
    path.starts_with("/v2/") && path != "/v2/RenewToken"
}

/// Serves jobs until [`Shared::stop`] is set.
pub(crate) fn worker(shared: &Shared, jobs: &Receiver<Job>) {
    while !shared.stopping() {
        let job = match jobs.recv_timeout(POLL) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(delay) = *lock(&shared.rest_delay) {
            let until = Instant::now() + delay;
            while !shared.stopping() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(POLL));
            }
        }
        let answer = route(shared, &job.request, &job.path, &job.body);
        respond(job.request, &job.path, answer);
    }
}

/// DhanHQ's `errorType` for an `errorCode` (v2 annexure).
pub(crate) fn error_type(code: &str) -> &'static str {
    match code {
        "DH-901" => "Invalid_Authentication",
        "DH-902" => "Invalid_Access",
        "DH-903" => "User_Account",
        "DH-904" => "Rate_Limit",
        "DH-905" => "Input_Exception",
        "DH-906" => "Order_Error",
        "DH-907" => "Data_Error",
        "DH-908" => "Internal_Server_Error",
        "DH-909" => "Network_Error",
        _ => "Others",
    }
}

fn input(message: impl AsRef<str>) -> Answer {
    Answer::error(400, "Input_Exception", "DH-905", message.as_ref())
}

fn header<'a>(request: &'a Request, name: &'static str) -> &'a str {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map_or("", |h| h.value.as_str().trim())
}

fn route(shared: &Shared, request: &Request, path: &str, body: &[u8]) -> Answer {
    let method = request.method().clone();
    let parts: Vec<&str> = path
        .trim_start_matches("/v2/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    if method == Method::Post && parts == ["orders"] {
        if let Some(f) = lock(&shared.fail_next).take() {
            return Answer::error(f.status, error_type(&f.code), &f.code, &f.message);
        }
    }
    let known = matches!(
        parts.as_slice(),
        ["fundlimit"] | ["positions"] | ["orders"] | ["orders", _] | ["orders", "external", _]
    );
    if !known {
        return Answer::error(404, "Not_Found", "404", "no such endpoint");
    }
    let client = header(request, "client-id");
    if !shared.token_ok(header(request, "access-token"), client) {
        return Answer::error(
            401,
            "Invalid_Authentication",
            "DH-901",
            "Client ID or user generated access token is invalid or expired.",
        );
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return input("the request body is not a JSON object"),
        }
    };
    if let Some(c) = body.get("dhanClientId").and_then(Value::as_str) {
        if c != client {
            return input("dhanClientId: does not match the client-id header");
        }
    }
    match (method, parts.as_slice()) {
        (Method::Get, ["fundlimit"]) => funds(shared, client),
        (Method::Get, ["positions"]) => positions(shared, client),
        (Method::Get, ["orders"]) => {
            let paper = lock(&shared.paper);
            let list: Vec<Value> = paper
                .orders()
                .iter()
                .filter(|o| o.client_id == client)
                .map(order_json)
                .collect();
            Answer::ok(Value::Array(list))
        }
        (Method::Post, ["orders"]) => place(shared, client, &body),
        (Method::Get, ["orders", "external", corr]) => {
            let corr = crate::percent::decode_component(corr);
            let paper = lock(&shared.paper);
            match paper
                .orders()
                .iter()
                .rev()
                .find(|o| o.client_id == client && !corr.is_empty() && o.correlation_id == corr)
            {
                Some(o) => Answer::ok(order_json(o)),
                None => Answer::error(
                    404,
                    "Input_Exception",
                    "DH-905",
                    "no order with this correlationId",
                ),
            }
        }
        (Method::Get, ["orders", id]) => {
            let paper = lock(&shared.paper);
            match id.parse().ok().and_then(|id| paper.order(client, id)) {
                Some(o) => Answer::ok(order_json(o)),
                None => not_found(),
            }
        }
        (Method::Put, ["orders", id]) => modify(shared, client, id, &body),
        (Method::Delete, ["orders", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return not_found();
            };
            let mut paper = lock(&shared.paper);
            match paper.cancel(client, id, unix_now()) {
                Ok(updates) => {
                    shared.publish(&updates);
                    status_answer(id, OrderStatus::Cancelled)
                }
                Err(e) => paper_error(e),
            }
        }
        _ => Answer::error(405, "Input_Exception", "DH-905", "method not allowed"),
    }
}

fn not_found() -> Answer {
    Answer::error(404, "Input_Exception", "DH-905", "no such order")
}

fn paper_error(e: PaperError) -> Answer {
    match e {
        PaperError::Input(m) => input(m),
        PaperError::NotFound => not_found(),
        PaperError::Final(s) => Answer::error(
            400,
            "Order_Error",
            "DH-906",
            &format!("the order is {} and can no longer be changed", s.name()),
        ),
        PaperError::Full => {
            Answer::error(400, "Order_Error", "DH-906", "the paper order book is full")
        }
    }
}

fn status_answer(id: u64, status: OrderStatus) -> Answer {
    Answer::ok(json!({ "orderId": id.to_string(), "orderStatus": status.name() }))
}

/// A text field: missing or empty → `None`.
fn text<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A required enum field.
fn choice<T>(body: &Value, name: &str, parse: fn(&str) -> Option<T>) -> Result<T, Answer> {
    let s = text(body, name).ok_or_else(|| input(format!("{name}: missing")))?;
    parse(s).ok_or_else(|| input(format!("{name}: unknown value {s:?}")))
}

/// A number field (a JSON number or a numeric string); missing/null → 0.
fn number(body: &Value, name: &str) -> Result<f64, Answer> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| input(format!("{name}: not a number"))),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(0.0),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| input(format!("{name}: not a number"))),
        Some(_) => Err(input(format!("{name}: not a number"))),
    }
}

/// A whole-number field; `required` makes a missing one an error.
fn whole(body: &Value, name: &str, required: bool) -> Result<i64, Answer> {
    if required && matches!(body.get(name), None | Some(Value::Null)) {
        return Err(input(format!("{name}: missing")));
    }
    let f = number(body, name)?;
    if f.fract() != 0.0 || f.abs() > 1e15 {
        return Err(input(format!("{name}: must be a whole number")));
    }
    Ok(f as i64)
}

fn place(shared: &Shared, client: &str, body: &Value) -> Answer {
    let spec = match order_spec(body) {
        Ok(s) => s,
        Err(a) => return a,
    };
    if let Some(c) = text(body, "correlationId") {
        if c.len() > 30 {
            return input("correlationId: at most 30 characters");
        }
    }
    let lot = shared.settings.lot(spec.key);
    let mut paper = lock(&shared.paper);
    let Some(ltp) = shared.ltp(&paper, spec.key) else {
        return input(format!(
            "securityId: the simulator has no price for {}",
            spec.key
        ));
    };
    match paper.place(client, &spec, lot, ltp, unix_now()) {
        Ok((id, updates)) => {
            shared.publish(&updates);
            let status = updates.last().map_or(OrderStatus::Pending, |o| o.status);
            status_answer(id, status)
        }
        Err(e) => paper_error(e),
    }
}

fn order_spec(body: &Value) -> Result<OrderSpec, Answer> {
    let side = choice(body, "transactionType", Side::parse)?;
    let segment = choice(body, "exchangeSegment", |s| s.parse::<Segment>().ok())?;
    let security_id = match body.get("securityId") {
        Some(Value::String(s)) => s.trim().parse::<u32>().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => return Err(input("securityId: missing")),
    }
    .ok_or_else(|| input("securityId: not a security id"))?;
    Ok(OrderSpec {
        correlation_id: text(body, "correlationId").unwrap_or("").to_owned(),
        side,
        key: InstrumentKey {
            segment,
            security_id: SecurityId(security_id),
        },
        product: choice(body, "productType", Product::parse)?,
        order_type: choice(body, "orderType", OrderType::parse)?,
        validity: choice(body, "validity", Validity::parse)?,
        quantity: whole(body, "quantity", true)?,
        disclosed_quantity: whole(body, "disclosedQuantity", false)?,
        price: number(body, "price")?,
        trigger_price: number(body, "triggerPrice")?,
        after_market: match body.get("afterMarketOrder") {
            Some(Value::Bool(b)) => *b,
            None | Some(Value::Null) => false,
            Some(_) => return Err(input("afterMarketOrder: must be true or false")),
        },
        bo_profit: number(body, "boProfitValue")?,
        bo_stop_loss: number(body, "boStopLossValue")?,
    })
}

fn modify(shared: &Shared, client: &str, id: &str, body: &Value) -> Answer {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    if let Some(b) = body.get("orderId") {
        let same = match b {
            Value::String(s) => s.parse::<u64>().ok() == Some(id),
            Value::Number(n) => n.as_u64() == Some(id),
            _ => false,
        };
        if !same {
            return input("orderId: does not match the path");
        }
    }
    let spec = (|| {
        Ok::<_, Answer>(ModifySpec {
            order_type: choice(body, "orderType", OrderType::parse)?,
            quantity: whole(body, "quantity", true)?,
            price: number(body, "price")?,
            trigger_price: number(body, "triggerPrice")?,
            disclosed_quantity: whole(body, "disclosedQuantity", false)?,
            validity: choice(body, "validity", Validity::parse)?,
        })
    })();
    let spec = match spec {
        Ok(s) => s,
        Err(a) => return a,
    };
    let mut paper = lock(&shared.paper);
    let Some(key) = paper.order(client, id).map(|o| o.key) else {
        return not_found();
    };
    let lot = shared.settings.lot(key);
    let ltp = shared.ltp(&paper, key).unwrap_or(0.0);
    match paper.modify(client, id, &spec, lot, ltp, unix_now()) {
        Ok(updates) => {
            shared.publish(&updates);
            let status = updates.last().map_or(OrderStatus::Pending, |o| o.status);
            status_answer(id, status)
        }
        Err(e) => paper_error(e),
    }
}

fn money(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn funds(shared: &Shared, client: &str) -> Answer {
    let f = lock(&shared.paper).funds(client);
    Answer::ok(json!({
        "dhanClientId": client,
        "availabelBalance": money(f.available),
        "sodLimit": money(f.sod_limit),
        "collateralAmount": 0.0,
        "receiveableAmount": 0.0,
        "utilizedAmount": money(f.utilized),
        "blockedPayoutAmount": 0.0,
        "withdrawableBalance": money(f.withdrawable),
    }))
}

fn positions(shared: &Shared, client: &str) -> Answer {
    let paper = lock(&shared.paper);
    let list: Vec<Value> = paper
        .positions()
        .iter()
        .filter(|p| p.client_id == client)
        .map(|p| {
            let ltp = p
                .key
                .and_then(|k| shared.ltp(&paper, k))
                .unwrap_or(p.cost_price);
            position_json(p, ltp)
        })
        .collect();
    Answer::ok(Value::Array(list))
}

/// Instrument details for order objects and alerts: from the embedded
/// sample master when it has the instrument, else blanks.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub(crate) symbol: String,
    pub(crate) display_name: String,
    pub(crate) instrument: String,
    pub(crate) series: String,
    pub(crate) expiry: Option<String>,
    pub(crate) strike: f64,
    pub(crate) option: Option<&'static str>,
    pub(crate) tick_size: f64,
    pub(crate) lot: f64,
}

/// `key`'s details (see [`Meta`]).
pub(crate) fn meta(key: InstrumentKey) -> Meta {
    static SAMPLE: OnceLock<Master> = OnceLock::new();
    let master = SAMPLE.get_or_init(Master::sample);
    match master.get(key) {
        Some(i) => Meta {
            symbol: i.symbol().to_owned(),
            display_name: i.name().to_owned(),
            instrument: i.instrument().to_owned(),
            series: i.series().to_owned(),
            expiry: i.expiry().map(|d| d.to_string()),
            strike: i.strike().unwrap_or(0.0),
            option: i.option_type().map(|o| match o {
                OptionType::Call => "CE",
                OptionType::Put => "PE",
            }),
            // The master gives it in paise (`5.0000` = ₹0.05).
            tick_size: i.tick_rupees(),
            lot: i.lot_size(),
        },
        None => Meta {
            symbol: key.security_id.to_string(),
            display_name: key.security_id.to_string(),
            lot: 1.0,
            tick_size: 0.05,
            ..Meta::default()
        },
    }
}

fn option_name(o: Option<&str>) -> Value {
    match o {
        Some("CE") => json!("CALL"),
        Some("PE") => json!("PUT"),
        _ => Value::Null,
    }
}

/// DhanHQ's order object.
pub(crate) fn order_json(o: &PaperOrder) -> Value {
    let m = meta(o.key);
    let time = |t| india_time(t).replace('T', " ");
    let (code, description) = match o.status {
        OrderStatus::Rejected => ("DH-906", o.reason.as_str()),
        _ => ("", o.reason.as_str()),
    };
    json!({
        "dhanClientId": o.client_id,
        "orderId": o.order_id.to_string(),
        "correlationId": o.correlation_id,
        "orderStatus": o.status.name(),
        "transactionType": o.side.name(),
        "exchangeSegment": o.key.segment.name(),
        "productType": o.product.name(),
        "orderType": o.order_type.name(),
        "validity": o.validity.name(),
        "tradingSymbol": m.symbol,
        "securityId": o.key.security_id.to_string(),
        "quantity": o.quantity,
        "disclosedQuantity": o.disclosed_quantity,
        "price": o.price,
        "triggerPrice": o.trigger_price,
        "afterMarketOrder": o.after_market,
        "boProfitValue": o.bo_profit,
        "boStopLossValue": o.bo_stop_loss,
        "legName": "NA",
        "createTime": time(o.created),
        "updateTime": time(o.updated),
        "exchangeTime": time(o.updated),
        "drvExpiryDate": m.expiry,
        "drvOptionType": option_name(m.option),
        "drvStrikePrice": m.strike,
        "omsErrorCode": code,
        "omsErrorDescription": description,
        "algoId": "",
        "remainingQuantity": o.remaining(),
        "averageTradedPrice": o.avg_price,
        "filledQty": o.filled_qty,
    })
}

/// DhanHQ's position object, unrealised P&L at `ltp`.
fn position_json(p: &PaperPosition, ltp: f64) -> Value {
    let key = p.key.unwrap_or(InstrumentKey::new(Segment::NseEq, 0));
    let m = meta(key);
    json!({
        "dhanClientId": p.client_id,
        "tradingSymbol": m.symbol,
        "securityId": key.security_id.to_string(),
        "positionType": p.position_type(),
        "exchangeSegment": key.segment.name(),
        "productType": p.product.map_or("", Product::name),
        "buyAvg": money(p.buy_avg()),
        "costPrice": money(p.cost_price),
        "buyQty": p.buy_qty,
        "sellAvg": money(p.sell_avg()),
        "sellQty": p.sell_qty,
        "netQty": p.net_qty,
        "realizedProfit": money(p.realized),
        "unrealizedProfit": money(p.unrealized(ltp)),
        "rbiReferenceRate": 1.0,
        "multiplier": 1,
        "carryForwardBuyQty": 0,
        "carryForwardSellQty": 0,
        "carryForwardBuyValue": 0.0,
        "carryForwardSellValue": 0.0,
        "dayBuyQty": p.buy_qty,
        "daySellQty": p.sell_qty,
        "dayBuyValue": money(p.buy_value),
        "daySellValue": money(p.sell_value),
        "drvExpiryDate": m.expiry,
        "drvOptionType": option_name(m.option),
        "drvStrikePrice": m.strike,
        "crossCurrency": false,
    })
}

/// Records the error the next placement answers with.
pub(crate) fn fail_next(shared: &Shared, status: u16, code: &str, message: &str) {
    *lock(&shared.fail_next) = Some(FailNext {
        status,
        code: code.to_owned(),
        message: message.to_owned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_sample_body_parses_strings_and_blanks_included() {
        // DhanHQ's v2 "Orders" page sends numbers as strings and leaves
        // unused ones "".
        let body = json!({
            "dhanClientId": "1000000003", "correlationId": "123abc678",
            "transactionType": "BUY", "exchangeSegment": "NSE_EQ",
            "productType": "INTRADAY", "orderType": "MARKET", "validity": "DAY",
            "securityId": "11536", "quantity": "5", "disclosedQuantity": "",
            "price": "", "triggerPrice": "", "afterMarketOrder": false,
            "amoTime": "", "boProfitValue": "", "boStopLossValue": ""
        });
        let spec = order_spec(&body).unwrap_or_else(|a| panic!("{}", a.body));
        assert_eq!(spec.key, InstrumentKey::new(Segment::NseEq, 11536));
        assert_eq!(
            (spec.quantity, spec.price, spec.correlation_id.as_str()),
            (5, 0.0, "123abc678")
        );
        assert_eq!((spec.side, spec.order_type), (Side::Buy, OrderType::Market));

        for (field, value, needle) in [
            ("quantity", json!("2.5"), "whole"),
            ("quantity", Value::Null, "missing"),
            ("securityId", json!("x"), "securityId"),
            ("validity", json!("GTC"), "validity"),
            ("price", json!([1]), "price"),
        ] {
            let mut b = body.clone();
            b[field] = value;
            let a = order_spec(&b).expect_err(field);
            assert_eq!(a.status, 400);
            assert!(
                a.body["errorMessage"].as_str().unwrap().contains(needle),
                "{}",
                a.body
            );
        }
    }

    #[test]
    fn error_types_follow_dhans_annexure() {
        assert_eq!(error_type("DH-901"), "Invalid_Authentication");
        assert_eq!(error_type("DH-906"), "Order_Error");
        assert_eq!(error_type("DH-999"), "Others");
        assert!(is_trading("/v2/orders") && is_trading("/v2/fundlimit"));
        assert!(!is_trading("/v2/RenewToken") && !is_trading("/app/generateAccessToken"));
    }
}
