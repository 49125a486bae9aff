//! The simulator's paper trading end to end, over real sockets on
//! 127.0.0.1: DhanHQ's trading REST API with `ureq` (as the relay calls it)
//! and the order-update WebSocket with a blocking tungstenite client.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::sim::{OrderStatus, SimConfig, SimControl, Simulator};
use dhan_relay::wire::feed::{self, FeedData, FeedMessage, Ticker};
use dhan_relay::wire::request::{encode_subscription, RequestCode};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const CLIENT: &str = "1100001";
/// RELIANCE on NSE (in the embedded sample master, lot 1).
const RELIANCE: InstrumentKey = InstrumentKey::new(Segment::NseEq, 2885);
/// A NIFTY future in the sample master (lot 75).
const NIFTY_FUT: InstrumentKey = InstrumentKey::new(Segment::NseFno, 52000);

struct Env {
    sim: Simulator,
    ctl: SimControl,
    token: String,
    agent: ureq::Agent,
}

/// A strict simulator (only issued tokens) and a token for [`CLIENT`].
fn start(cfg: SimConfig) -> Env {
    let sim = Simulator::start(SimConfig {
        accept_any_token: false,
        ..cfg
    })
    .expect("simulator starts");
    let ctl = sim.control();
    let token = ctl.issue_token(CLIENT, Duration::from_secs(600));
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    Env {
        sim,
        ctl,
        token,
        agent,
    }
}

impl Env {
    /// One trading call as `client` with `token`: status and JSON body.
    fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
        client: &str,
    ) -> (u16, Value) {
        let url = format!("{}/v2/{path}", self.sim.rest_url());
        let resp = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("access-token", token)
                .header("client-id", client)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("access-token", token)
                .header("client-id", client)
                .call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("access-token", token)
                .header("client-id", client)
                .header("Content-Type", "application/json")
                .send(b.to_string()),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("access-token", token)
                .header("client-id", client)
                .header("Content-Type", "application/json")
                .send(b.to_string()),
            _ => unreachable!("{method}"),
        };
        let mut resp = resp.expect("the simulator answers");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("a body");
        (status, serde_json::from_str(&text).expect("a JSON body"))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, body, &self.token, CLIENT)
    }

    /// Places an order; asserts 200 and returns `(orderId, orderStatus)`.
    fn place(&self, body: Value) -> (String, String) {
        let (status, v) = self.call("POST", "orders", Some(body));
        assert_eq!(status, 200, "{v}");
        (
            v["orderId"].as_str().expect("orderId").to_owned(),
            v["orderStatus"].as_str().expect("orderStatus").to_owned(),
        )
    }

    /// Sends a ticker packet for `key` at `ltp` (the paper book's LTP).
    fn tick(&self, key: InstrumentKey, ltp: f32) {
        self.ctl.inject(&FeedMessage::Data(
            key,
            FeedData::Ticker(Ticker { ltp, ltt: 0 }),
        ));
    }

    /// A logged-in order-update stream.
    fn stream(&self, token: &str, client: &str) -> WebSocket<TcpStream> {
        let url = self.sim.order_update_url();
        let addr = url.trim_start_matches("ws://");
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut ws, _) = tungstenite::client(url.as_str(), tcp).expect("handshake");
        let login = json!({
            "LoginReq": { "MsgCode": 42, "ClientId": client, "Token": token },
            "UserType": "SELF"
        });
        let before = self.ctl.stats().order_streams;
        ws.send(Message::text(login.to_string()))
            .expect("login sent");
        // No login acknowledgement exists: wait until the simulator has
        // the stream (or, for a bad login, briefly).
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.ctl.stats().order_streams == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        ws
    }
}

/// An order body as the official SDK sends it.
fn order(
    side: &str,
    key: InstrumentKey,
    order_type: &str,
    qty: i64,
    price: f64,
    trigger: f64,
) -> Value {
    json!({
        "dhanClientId": CLIENT,
        "correlationId": format!("t-{side}-{order_type}-{qty}"),
        "transactionType": side,
        "exchangeSegment": key.segment.name(),
        "productType": "INTRADAY",
        "orderType": order_type,
        "validity": "DAY",
        "securityId": key.security_id.to_string(),
        "quantity": qty,
        "disclosedQuantity": 0,
        "price": price,
        "triggerPrice": trigger,
        "afterMarketOrder": false,
        "boProfitValue": 0,
        "boStopLossValue": 0,
    })
}

/// The next order alert's `Data`.
fn next_alert(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().expect("an alert within 5 s") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                assert_eq!(v["Type"], "order_alert", "{v}");
                return v["Data"].clone();
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn close_to(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-6)
}

#[test]
fn market_order_trades_moves_funds_and_streams_its_updates_in_order() {
    let env = start(SimConfig::default());
    let mut ws = env.stream(&env.token, CLIENT);
    // A stream of another client sees none of it.
    let other_token = env.ctl.issue_token("2200002", Duration::from_secs(600));
    let mut other = env.stream(&other_token, "2200002");

    let (status, funds) = env.call("GET", "fundlimit", None);
    assert_eq!(status, 200, "{funds}");
    assert_eq!(funds["dhanClientId"], CLIENT);
    assert!(close_to(&funds["sodLimit"], 1_000_000.0), "{funds}");
    assert!(close_to(&funds["availabelBalance"], 1_000_000.0), "{funds}");
    for f in [
        "collateralAmount",
        "receiveableAmount",
        "utilizedAmount",
        "blockedPayoutAmount",
        "withdrawableBalance",
    ] {
        assert!(funds[f].is_number(), "{f}: {funds}");
    }

    env.tick(RELIANCE, 1450.0);
    let (id, status) = env.place(order("BUY", RELIANCE, "MARKET", 10, 0.0, 0.0));
    assert_eq!(status, "TRADED");
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");

    for want in ["Transit", "Pending", "Traded"] {
        let a = next_alert(&mut ws);
        assert_eq!(a["Status"], want, "{a}");
        assert_eq!(a["OrderNo"], id.as_str());
        assert_eq!(
            (a["TxnType"].as_str(), a["Product"].as_str()),
            (Some("B"), Some("I"))
        );
        assert_eq!(
            (a["OrderType"].as_str(), a["SecurityId"].as_str()),
            (Some("MKT"), Some("2885"))
        );
    }

    let (status, book) = env.call("GET", "orders", None);
    assert_eq!(status, 200);
    let o = &book.as_array().expect("an array")[0];
    assert_eq!(o["orderStatus"], "TRADED", "{o}");
    assert_eq!(
        (o["filledQty"].as_u64(), o["remainingQuantity"].as_u64()),
        (Some(10), Some(0))
    );
    assert!(close_to(&o["averageTradedPrice"], 1450.0), "{o}");
    assert_eq!(o["tradingSymbol"], "RELIANCE");
    let (_, one) = env.call("GET", &format!("orders/{id}"), None);
    assert_eq!(one, *o);
    let (status, by_corr) = env.call("GET", "orders/external/t-BUY-MARKET-10", None);
    assert_eq!((status, &by_corr), (200, o));
    let (status, err) = env.call("GET", "orders/external/nope", None);
    assert_eq!((status, err["errorCode"].as_str()), (404, Some("DH-905")));

    env.tick(RELIANCE, 1460.0);
    let (_, pos) = env.call("GET", "positions", None);
    let p = &pos.as_array().expect("an array")[0];
    assert_eq!(
        (p["positionType"].as_str(), p["netQty"].as_i64()),
        (Some("LONG"), Some(10))
    );
    assert!(
        close_to(&p["buyAvg"], 1450.0) && close_to(&p["costPrice"], 1450.0),
        "{p}"
    );
    assert!(close_to(&p["unrealizedProfit"], 100.0), "{p}");
    let (_, funds) = env.call("GET", "fundlimit", None);
    assert!(close_to(&funds["utilizedAmount"], 14_500.0), "{funds}");
    assert!(close_to(&funds["availabelBalance"], 985_500.0), "{funds}");

    // Selling at 1460 closes it: +100 realised, the cost released.
    let (_, status) = env.place(order("SELL", RELIANCE, "MARKET", 10, 0.0, 0.0));
    assert_eq!(status, "TRADED");
    let (_, funds) = env.call("GET", "fundlimit", None);
    assert!(close_to(&funds["availabelBalance"], 1_000_100.0), "{funds}");
    let (_, pos) = env.call("GET", "positions", None);
    assert_eq!(pos[0]["positionType"], "CLOSED");
    assert!(close_to(&pos[0]["realizedProfit"], 100.0), "{pos}");

    other
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(other.read().is_err(), "another client's stream stays quiet");
}

#[test]
fn limit_and_stop_loss_orders_fill_when_injected_ticks_cross() {
    let env = start(SimConfig::default());
    env.tick(RELIANCE, 1450.0);
    let (buy, status) = env.place(order("BUY", RELIANCE, "LIMIT", 2, 1440.0, 0.0));
    assert_eq!(status, "PENDING");
    let (sl, status) = env.place(order("SELL", RELIANCE, "STOP_LOSS", 2, 1425.0, 1430.0));
    assert_eq!(status, "PENDING");
    let status_of = |id: &str| env.call("GET", &format!("orders/{id}"), None).1;

    env.tick(RELIANCE, 1445.0);
    assert_eq!(status_of(&buy)["orderStatus"], "PENDING");
    env.tick(RELIANCE, 1439.5);
    let o = status_of(&buy);
    assert_eq!(o["orderStatus"], "TRADED");
    assert!(close_to(&o["averageTradedPrice"], 1439.5), "{o}");
    assert_eq!(status_of(&sl)["orderStatus"], "PENDING");

    // The stop triggers at 1429 and, as a SELL LIMIT at 1425, fills there.
    env.tick(RELIANCE, 1429.0);
    let o = status_of(&sl);
    assert_eq!(o["orderStatus"], "TRADED", "{o}");
    assert!(close_to(&o["averageTradedPrice"], 1429.0), "{o}");
    let (_, pos) = env.call("GET", "positions", None);
    assert!(close_to(&pos[0]["realizedProfit"], -21.0), "{pos}");
    assert_eq!(env.ctl.paper_orders().len(), 2);
}

#[test]
fn modify_and_cancel_open_orders_only() {
    let env = start(SimConfig::default());
    let mut ws = env.stream(&env.token, CLIENT);
    env.tick(RELIANCE, 1450.0);
    let (id, _) = env.place(order("BUY", RELIANCE, "LIMIT", 1, 1400.0, 0.0));
    let modify = json!({
        "dhanClientId": CLIENT, "orderId": id, "orderType": "LIMIT", "legName": "",
        "quantity": 3, "price": 1410.0, "disclosedQuantity": 0, "triggerPrice": 0,
        "validity": "DAY",
    });
    let (status, v) = env.call("PUT", &format!("orders/{id}"), Some(modify.clone()));
    assert_eq!(
        (status, v["orderStatus"].as_str()),
        (200, Some("PENDING")),
        "{v}"
    );
    let (_, o) = env.call("GET", &format!("orders/{id}"), None);
    assert_eq!(o["quantity"], 3);
    assert!(close_to(&o["price"], 1410.0));

    let (status, v) = env.call("DELETE", &format!("orders/{id}"), None);
    assert_eq!(
        (status, v["orderStatus"].as_str()),
        (200, Some("CANCELLED")),
        "{v}"
    );
    let statuses: Vec<String> = (0..4)
        .map(|_| next_alert(&mut ws)["Status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["Transit", "Pending", "Pending", "Cancelled"]);

    for (method, body) in [("DELETE", None), ("PUT", Some(modify))] {
        let (status, e) = env.call(method, &format!("orders/{id}"), body);
        assert_eq!(status, 400, "{method}: {e}");
        assert_eq!(
            (e["errorType"].as_str(), e["errorCode"].as_str()),
            (Some("Order_Error"), Some("DH-906"))
        );
    }
    let (status, e) = env.call("DELETE", "orders/999", None);
    assert_eq!(
        (status, e["errorCode"].as_str()),
        (404, Some("DH-905")),
        "{e}"
    );
}

#[test]
fn bad_orders_and_bad_credentials_are_refused_and_counted() {
    let env = start(SimConfig::default());
    env.tick(RELIANCE, 1450.0);
    let cases = [
        (order("BUY", RELIANCE, "MARKET", 0, 0.0, 0.0), "quantity"),
        (
            order("BUY", NIFTY_FUT, "MARKET", 70, 0.0, 0.0),
            "lot size 75",
        ),
        (order("BUY", RELIANCE, "LIMIT", 1, 0.0, 0.0), "price"),
        (
            order("BUY", RELIANCE, "STOP_LOSS_MARKET", 1, 0.0, 0.0),
            "triggerPrice",
        ),
        (
            order("HOLD", RELIANCE, "MARKET", 1, 0.0, 0.0),
            "transactionType",
        ),
        (
            order(
                "BUY",
                InstrumentKey::new(Segment::NseEq, 999_999),
                "MARKET",
                1,
                0.0,
                0.0,
            ),
            "no price",
        ),
    ];
    for (body, needle) in &cases {
        let (status, e) = env.call("POST", "orders", Some(body.clone()));
        assert_eq!(status, 400, "{e}");
        assert_eq!(
            (e["errorType"].as_str(), e["errorCode"].as_str()),
            (Some("Input_Exception"), Some("DH-905"))
        );
        assert!(
            e["errorMessage"].as_str().unwrap().contains(needle),
            "{needle}: {e}"
        );
    }
    // A whole number of lots is fine.
    let (_, status) = env.place(order("BUY", NIFTY_FUT, "MARKET", 150, 0.0, 0.0));
    assert_eq!(status, "TRADED");

    let other = env.ctl.issue_token("2200002", Duration::from_secs(600));
    for (token, client) in [("not-a-token", CLIENT), (other.as_str(), CLIENT), ("", "")] {
        let (status, e) = env.call_as("GET", "fundlimit", None, token, client);
        assert_eq!(status, 401, "{e}");
        assert_eq!(
            (e["errorType"].as_str(), e["errorCode"].as_str()),
            (Some("Invalid_Authentication"), Some("DH-901"))
        );
        assert!(!e.to_string().contains("not-a-token"));
    }
    // Every call above reached the simulator: 6 + 1 + 3 (+ none for the
    // injected ticks); RenewToken is not a trading call.
    assert_eq!(env.ctl.trading_requests(), 10);
    let renewed = env
        .agent
        .get(format!("{}/v2/RenewToken", env.sim.rest_url()))
        .header("access-token", &env.token)
        .header("dhanClientId", CLIENT)
        .call()
        .unwrap();
    assert_eq!(renewed.status(), 200);
    assert_eq!(env.ctl.trading_requests(), 10);
    assert_eq!(env.ctl.stats().trading_requests, 10);
}

#[test]
fn insufficient_funds_accepts_then_rejects() {
    let env = start(SimConfig {
        paper_balance: 10_000.0,
        ..SimConfig::default()
    });
    let mut ws = env.stream(&env.token, CLIENT);
    env.tick(RELIANCE, 1450.0);
    let (id, status) = env.place(order("BUY", RELIANCE, "MARKET", 10, 0.0, 0.0));
    assert_eq!(status, "REJECTED");
    let alerts: Vec<Value> = (0..3).map(|_| next_alert(&mut ws)).collect();
    assert_eq!(alerts[2]["Status"], "Rejected");
    assert!(alerts[2]["ReasonDescription"]
        .as_str()
        .unwrap()
        .contains("Insufficient funds"));
    let (_, o) = env.call("GET", &format!("orders/{id}"), None);
    assert_eq!(o["orderStatus"], "REJECTED");
    assert!(o["omsErrorDescription"]
        .as_str()
        .unwrap()
        .contains("Insufficient funds"));
    assert!(close_to(
        &env.call("GET", "fundlimit", None).1["availabelBalance"],
        10_000.0
    ));
    assert_eq!(env.ctl.paper_funds(CLIENT).available, 10_000.0);
}

#[test]
fn fail_next_order_answers_one_placement_with_the_error() {
    let env = start(SimConfig::default());
    env.tick(RELIANCE, 1450.0);
    env.ctl.fail_next_order(400, "DH-906", "simulated refusal");
    let (status, e) = env.call(
        "POST",
        "orders",
        Some(order("BUY", RELIANCE, "MARKET", 1, 0.0, 0.0)),
    );
    assert_eq!(status, 400);
    assert_eq!(
        e,
        json!({"errorType": "Order_Error", "errorCode": "DH-906", "errorMessage": "simulated refusal"})
    );
    assert!(env.ctl.paper_orders().is_empty());
    let (_, status) = env.place(order("BUY", RELIANCE, "MARKET", 1, 0.0, 0.0));
    assert_eq!(status, "TRADED");
    assert_eq!(env.ctl.paper_orders()[0].status, OrderStatus::Traded);
}

#[test]
fn a_rest_delay_holds_trading_answers_but_not_renewals() {
    let env = start(SimConfig::default());
    let renewer = env.ctl.issue_token("3300003", Duration::from_secs(600));
    env.ctl.set_rest_delay(Some(Duration::from_millis(1500)));
    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let t0 = Instant::now();
            let (status, _) = env.call("GET", "fundlimit", None);
            (status, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let renewed = env
            .agent
            .get(format!("{}/v2/RenewToken", env.sim.rest_url()))
            .header("access-token", &renewer)
            .header("dhanClientId", "3300003")
            .call()
            .unwrap();
        assert_eq!(renewed.status(), 200);
        assert!(
            t0.elapsed() < Duration::from_millis(700),
            "{:?}",
            t0.elapsed()
        );
        let (status, took) = slow.join().unwrap();
        assert_eq!(status, 200);
        assert!(took >= Duration::from_millis(1400), "{took:?}");
    });
    env.ctl.set_rest_delay(None);
    let t0 = Instant::now();
    assert_eq!(env.call("GET", "positions", None).0, 200);
    assert!(t0.elapsed() < Duration::from_millis(700));
}

#[test]
fn the_order_stream_refuses_a_bad_login_with_1008() {
    let env = start(SimConfig::default());
    let other = env.ctl.issue_token("2200002", Duration::from_secs(600));
    for (token, client) in [("bad-secret-token", CLIENT), (other.as_str(), CLIENT)] {
        let mut ws = env.stream(token, client);
        let frame = loop {
            match ws.read() {
                Ok(Message::Close(f)) => break f.expect("a close frame with a reason"),
                Ok(_) => {}
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        };
        assert_eq!(frame.code, CloseCode::Policy);
        assert!(!frame.reason.contains(token), "{}", frame.reason);
    }
}

#[test]
fn generated_ticks_are_the_price_orders_fill_at() {
    let env = start(SimConfig {
        ticks_per_sec: 8,
        ..SimConfig::default()
    });
    let tcp = TcpStream::connect(env.sim.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let url = format!(
        "{}/?version=2&token={}&clientId={CLIENT}&authType=2",
        env.sim.feed_url(),
        env.token
    );
    let (mut feed_ws, _) = tungstenite::client(url.as_str(), tcp).expect("feed handshake");
    for msg in encode_subscription(RequestCode::SubscribeTicker, &[RELIANCE]).unwrap() {
        feed_ws.send(Message::text(msg)).unwrap();
    }
    // The paper book's LTP is the one the feed just sent (a newer tick may
    // slip in between: it must match within a few packets).
    let mut matched = false;
    for _ in 0..20 {
        let Message::Binary(frame) = feed_ws.read().expect("a frame") else {
            continue;
        };
        let packet = feed::decode(&frame).expect("decodes");
        if let FeedMessage::Data(key, FeedData::Ticker(t)) = packet.message {
            assert_eq!(key, RELIANCE);
            let sent = (f64::from(t.ltp) * 100.0).round() / 100.0;
            if env.ctl.paper_ltp(RELIANCE) == Some(sent) {
                matched = true;
                break;
            }
        }
    }
    assert!(matched, "the paper LTP follows the generated ticks");
    let before = env.ctl.paper_ltp(RELIANCE).unwrap();
    let (id, status) = env.place(order("BUY", RELIANCE, "MARKET", 1, 0.0, 0.0));
    let after = env.ctl.paper_ltp(RELIANCE).unwrap();
    assert_eq!(status, "TRADED");
    let (_, o) = env.call("GET", &format!("orders/{id}"), None);
    assert!(
        close_to(&o["averageTradedPrice"], before) || close_to(&o["averageTradedPrice"], after),
        "{o} vs {before} / {after}"
    );
}
