//! DhanHQ's live order-update WebSocket (`wss://api-order-update.dhan.co`),
//! for the paper book: its own listener ([`super::Simulator::order_update_url`],
//! plain `ws://`), one acceptor thread, one thread per connection (blocking
//! tungstenite), at most [`MAX_CONNECTIONS`] at once (more are closed at
//! accept).
//!
//! The client's first message must be a text frame
//! `{"LoginReq":{"MsgCode":42,"ClientId":"..","Token":".."},"UserType":"SELF"}`
//! within [`LOGIN_TIMEOUT`]; the token must pass the feed's rule
//! (`tokens.rs`) for that client id. Anything else gets a close frame with
//! code 1008 (policy) and a reason that never contains the token. No login
//! acknowledgement is sent (none is documented). After login every status
//! change of that client's paper orders arrives, in order, as
//! `{"Type":"order_alert","Data":{..}}` ([`alert`]); each connection has a
//! queue of [`QUEUE`] alerts, and a full queue drops the alert (counted in
//! [`super::SimStats::order_stream_drops`]). Frames the client sends after
//! login are read and ignored; pings are answered. A stream stays open
//! when its token is later revoked or expires (DhanHQ's behaviour there is
//! not documented).
//!
//! # What the alert's fields are based on
//!
//! * Verified against DhanHQ's v2 docs page "Live Order Update"
//!   (<https://dhanhq.co/docs/v2/order-update/>, via the `search` docs
//!   corpus): the endpoint, the login message and its fields
//!   (`MsgCode` 42, `ClientId`, `Token`, `UserType` `SELF`), JSON messages.
//! * From a transcription of that page's sample message and field table
//!   (found through the code corpus, a third party's notes, not DhanHQ
//!   itself): the field names and sample shapes, `Exchange` `NSE`,
//!   `Segment` `E`, `Source` `N` (`P` for API orders), `Product`
//!   `C`/`I`/`M`/`F`/`V`/`B` (CNC, INTRADAY, MARGIN, MTF, CO, BO), `TxnType`
//!   `B`/`S`, `OrderType` `LMT`/`MKT`/`SL`/`SLM`, `Validity` `DAY`/`IOC`,
//!   times as `YYYY-MM-DD HH:MM:SS` India time, `ReasonDescription`
//!   `CONFIRMED` when nothing went wrong, `OptType` `XX` and `ExpiryDate`
//!   `0001-01-01 00:00:00` for cash instruments, `LegNo` 1 for a plain
//!   order, `MktType` `NL`, `OffMktFlag` `"0"`/`"1"`. That table lists
//!   `Status` in upper case (`TRADED`, …) while the sample shows
//!   `"Cancelled"`; the sample wins here: `Transit`, `Pending`, `Rejected`,
//!   `Cancelled`, `Traded`, `Expired`.
//! * Guessed: `Segment` letters other than `E` (`D` derivatives, `C`
//!   currency, `M` commodity, `I` index), `Exchange` for MCX (`MCX`),
//!   `Source` `P` for orders placed through this API, `Remarks` (the
//!   correlation id, else empty), `ExchOrderNo` (the order id with a
//!   prefix), `TradedPrice` (the last fill's price, 0 before).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::paper::PaperOrder;
use super::rest::india_time;
use super::shared::{lock, Shared, StreamSub};
use super::trade_rest::meta;
use crate::domain::Segment;

/// Most simultaneous order-stream connections.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Alerts queued per connection.
pub(crate) const QUEUE: usize = 4_096;
/// How long a client has for the handshake and its login message.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the threads look at the stop flag and their queue.
const POLL: Duration = Duration::from_millis(20);

/// Binds the listener on `ip`, any free port.
pub(crate) fn bind(ip: std::net::IpAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Accepts until [`Shared::stop`] is set, then joins the connection threads.
pub(crate) fn run(shared: &Arc<Shared>, listener: TcpListener) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                threads.retain(|t| !t.is_finished());
                if live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                live.fetch_add(1, Ordering::SeqCst);
                let (shared, live2) = (shared.clone(), live.clone());
                let spawned = std::thread::Builder::new()
                    .name("dhan-sim-orders".into())
                    .spawn(move || {
                        serve(&shared, stream);
                        live2.fetch_sub(1, Ordering::SeqCst);
                    });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(_) => {
                        live.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Closes with 1008 and `reason`.
fn refuse(ws: &mut WebSocket<TcpStream>, reason: &'static str) {
    let _ = ws.close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: reason.into(),
    }));
    // Let the close frame go out and the client's answer come back (a
    // client that does not answer is given up on after a few polls).
    let _ = ws.get_mut().set_read_timeout(Some(POLL));
    for _ in 0..10 {
        if ws.read().is_err() {
            break;
        }
    }
}

/// Checks a login message: the client id it logs in as.
fn login(shared: &Shared, text: &str) -> Result<String, &'static str> {
    let v: Value = serde_json::from_str(text).map_err(|_| "login message is not JSON")?;
    let req = v.get("LoginReq").ok_or("LoginReq missing")?;
    if req.get("MsgCode").and_then(Value::as_u64) != Some(42) {
        return Err("MsgCode must be 42");
    }
    let client = req.get("ClientId").and_then(Value::as_str).unwrap_or("");
    let token = req.get("Token").and_then(Value::as_str).unwrap_or("");
    if client.is_empty() || token.is_empty() {
        return Err("ClientId and Token are required");
    }
    if v.get("UserType").and_then(Value::as_str) != Some("SELF") {
        return Err("UserType must be SELF");
    }
    if !shared.token_ok(token, client) {
        return Err("invalid or expired access token for this client id");
    }
    Ok(client.to_owned())
}

fn serve(shared: &Shared, stream: TcpStream) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(LOGIN_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(LOGIN_TIMEOUT)).is_err()
    {
        return;
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    let Ok(mut ws) = tungstenite::accept_with_config(stream, Some(config)) else {
        return;
    };
    let client_id = match ws.read() {
        Ok(Message::Text(t)) => match login(shared, t.as_str()) {
            Ok(c) => c,
            Err(reason) => return refuse(&mut ws, reason),
        },
        Ok(_) => return refuse(&mut ws, "the first message must be the login text"),
        Err(_) => return,
    };
    let (tx, rx) = crossbeam_channel::bounded::<String>(QUEUE);
    let id = shared.next_conn_id();
    lock(&shared.streams).push(StreamSub { id, client_id, tx });
    let _ = ws.get_mut().set_read_timeout(Some(POLL));
    'conn: while !shared.stopping() {
        match ws.read() {
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        while let Ok(text) = rx.try_recv() {
            if ws.send(Message::text(text)).is_err() {
                break 'conn;
            }
        }
    }
    lock(&shared.streams).retain(|s| s.id != id);
    let _ = ws.close(None);
    let _ = ws.flush();
}

/// DhanHQ's stream letter for a segment (`E` verified, others guessed).
fn segment_letter(s: Segment) -> &'static str {
    match s {
        Segment::NseEq | Segment::BseEq => "E",
        Segment::NseFno | Segment::BseFno => "D",
        Segment::NseCurrency | Segment::BseCurrency => "C",
        Segment::McxComm => "M",
        Segment::IdxI => "I",
    }
}

fn exchange(s: Segment) -> &'static str {
    match s {
        Segment::NseEq | Segment::NseFno | Segment::NseCurrency | Segment::IdxI => "NSE",
        Segment::BseEq | Segment::BseFno | Segment::BseCurrency => "BSE",
        Segment::McxComm => "MCX",
    }
}

/// The `order_alert` message for one snapshot of an order.
pub(crate) fn alert(o: &PaperOrder) -> Value {
    let m = meta(o.key);
    let time = |t| india_time(t).replace('T', " ");
    let reason = if o.reason.is_empty() {
        "CONFIRMED"
    } else {
        o.reason.as_str()
    };
    // Two halves: one `json!` of all the fields overflows the macro's
    // recursion limit.
    let mut data = json!({
            "Exchange": exchange(o.key.segment),
            "Segment": segment_letter(o.key.segment),
            "Source": "P",
            "SecurityId": o.key.security_id.to_string(),
            "ClientId": o.client_id,
            "ExchOrderNo": format!("SIM{}", o.order_id),
            "OrderNo": o.order_id.to_string(),
            "Product": o.product.code(),
            "TxnType": o.side.code(),
            "OrderType": o.order_type.code(),
            "Validity": o.validity.code(),
            "DiscQuantity": o.disclosed_quantity,
            "DiscQtyRem": if o.status.is_open() { o.disclosed_quantity } else { 0 },
            "RemainingQuantity": o.remaining(),
            "Quantity": o.quantity,
            "TradedQty": o.filled_qty,
            "Price": o.price,
            "TriggerPrice": o.trigger_price,
            "TradedPrice": o.last_fill_price,
            "AvgTradedPrice": o.avg_price,
            "AlgoOrdNo": "",
            "OffMktFlag": if o.after_market { "1" } else { "0" },
    });
    let rest = json!({
            "OrderDateTime": time(o.created),
            "ExchOrderTime": time(o.updated),
            "LastUpdatedTime": time(o.updated),
            "Remarks": o.correlation_id,
            "MktType": "NL",
            "ReasonDescription": reason,
            "LegNo": 1,
            "Instrument": m.instrument,
            "Symbol": m.symbol,
            "ProductName": o.product.name(),
            "Status": o.status.code(),
            "LotSize": m.lot,
            "StrikePrice": m.strike,
            "ExpiryDate": m.expiry.as_ref().map_or_else(
                || "0001-01-01 00:00:00".to_owned(),
                |d| format!("{d} 00:00:00"),
            ),
            "OptType": m.option.unwrap_or("XX"),
            "DisplayName": m.display_name,
            "Isin": "",
            "Series": m.series,
            "GoodTillDaysDate": time(o.created).get(..10).unwrap_or(""),
            "RefLtp": o.ref_ltp,
            "TickSize": m.tick_size,
            "AlgoId": "0",
            "Multiplier": 1,
            "CorrelationId": o.correlation_id,
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut data, rest) {
        a.extend(b);
    }
    json!({ "Type": "order_alert", "Data": data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InstrumentKey;
    use crate::sim::paper::{OrderSpec, OrderType, Paper, Product, Side, Validity};

    /// Which side an alert is.
    fn side_of(v: &Value) -> Option<Side> {
        match v["Data"]["TxnType"].as_str()? {
            "B" => Some(Side::Buy),
            "S" => Some(Side::Sell),
            _ => None,
        }
    }

    #[test]
    fn an_alert_has_dhans_fields_and_codes() {
        let mut p = Paper::new(1e6);
        let spec = OrderSpec {
            correlation_id: "abc".into(),
            side: Side::Sell,
            key: InstrumentKey::new(Segment::NseEq, 2885),
            product: Product::Cnc,
            order_type: OrderType::StopLossMarket,
            validity: Validity::Day,
            quantity: 3,
            disclosed_quantity: 0,
            price: 0.0,
            trigger_price: 90.0,
            after_market: false,
            bo_profit: 0.0,
            bo_stop_loss: 0.0,
        };
        let (_, u) = p.place("C1", &spec, 1, 100.0, 1_766_035_810).unwrap();
        let a = alert(&u[1]);
        assert_eq!(a["Type"], "order_alert");
        let d = &a["Data"];
        assert_eq!(side_of(&a), Some(Side::Sell));
        for (field, want) in [
            ("Exchange", "NSE"),
            ("Segment", "E"),
            ("Product", "C"),
            ("OrderType", "SLM"),
            ("Validity", "DAY"),
            ("Status", "Pending"),
            ("SecurityId", "2885"),
            ("ClientId", "C1"),
            ("CorrelationId", "abc"),
            ("LastUpdatedTime", "2025-12-18 11:00:10"),
            ("OptType", "XX"),
            ("ReasonDescription", "CONFIRMED"),
        ] {
            assert_eq!(d[field], want, "{field}");
        }
        assert_eq!(d["RemainingQuantity"], 3);
        assert_eq!(d["TradedQty"], 0);
    }
}
