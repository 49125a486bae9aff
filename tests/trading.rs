//! Trading through the relay, end to end: the real engine (live mode)
//! against the built-in simulator's paper-trading broker over real sockets
//! on 127.0.0.1 — every call, fills on injected prices, the order stream on
//! `/ws`, the guards (nothing reaches the simulator), the kill switch and
//! cancel-all, DhanHQ's errors passed on, scopes, the audit log, a hanging
//! broker that does not stall prices, and no token anywhere.

mod common;
use common::{wait_for, Resp, TempDir, WsClient, READ_TIMEOUT};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dhan_relay::auth::keys::KeysFile;
use dhan_relay::auth::Scopes;
use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::sim::{OrderStatus, SimConfig, SimControl, Simulator};
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::upstream::Credentials;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use serde_json::{json, Value};

const CLIENT_ID: &str = "1100009999";
const TOKEN: &str = "tok-SECRET-4f9a1c7e";

fn reliance() -> InstrumentKey {
    InstrumentKey::new(Segment::NseEq, 2885)
}

fn sim() -> Simulator {
    Simulator::start(SimConfig {
        ticks_per_sec: 0,
        ..SimConfig::default()
    })
    .expect("simulator starts")
}

/// The engine in live mode against `sim`, trading on, the audit log in
/// `dir`; `extra` is added to the config file.
fn engine(sim: &Simulator, dir: &Path, extra: &str, keys: Option<PathBuf>) -> Engine {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        feed_url: Some(sim.feed_url()),
        rest_url: Some(sim.rest_url()),
        keys_file: keys,
        ..Flags::default()
    };
    let text = format!(
        "{extra}\n[trading]\nenabled = true\ntimeout_ms = 1000\naudit_log = {:?}\norder_stream_url = {:?}\n",
        audit_path(dir).display().to_string(),
        sim.order_update_url()
    );
    let config = RunConfig::build(
        &flags,
        Some((Path::new("relay.toml"), &text)),
        &CredentialSources::given(&Credentials::new(CLIENT_ID, TOKEN)),
    )
    .unwrap();
    let engine = Engine::start(config).expect("engine starts");
    let control = sim.control();
    wait_for("upstream up and the order stream logged in", || {
        !control.subscriptions().is_empty() && control.stats().order_streams == 1
    });
    engine
}

fn audit_path(dir: &Path) -> PathBuf {
    dir.join("audit.jsonl")
}

fn read_audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(audit_path(dir))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}

/// The audit log once it has `n` lines (its thread writes each record
/// just after the answer is queued).
fn audit_lines(dir: &Path, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} audit lines"), || read_audit(dir).len() >= n);
    read_audit(dir)
}

/// A price for RELIANCE, on the feed the relay and the paper broker see.
fn price(sim: &SimControl, ltp: f32) {
    sim.inject(&FeedMessage::Data(
        reliance(),
        FeedData::Ticker(Ticker {
            ltp,
            ltt: 1_764_750_000,
        }),
    ));
}

/// Sets RELIANCE's price and waits until the relay's book has it.
fn settle(sim: &SimControl, addr: SocketAddr, ltp: f32) {
    let mut ws = WsClient::connect(addr, "/ws");
    ws.subscribe(reliance(), "ticker");
    price(sim, ltp);
    ws.recv_where(|m| m["type"] == "ticker" && m["ltp"].as_f64() == Some(f64::from(ltp)));
    // The book publishes its snapshot (what the guards read) on a timer.
    std::thread::sleep(Duration::from_millis(150));
}

/// One request on a fresh connection; the answer's status and body.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Resp {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    Resp::parse(&raw)
}

fn place(addr: SocketAddr, order: Value) -> Resp {
    call(addr, "POST", "/api/orders", Some(order), None)
}

fn market(side: &str, quantity: u32) -> Value {
    json!({"symbol":"RELIANCE","side":side,"quantity":quantity,"orderType":"MARKET","productType":"CNC"})
}

fn limit(side: &str, quantity: u32, price: f64) -> Value {
    json!({"exchangeSegment":"NSE_EQ","securityId":"2885","side":side,"quantity":quantity,
           "orderType":"LIMIT","price":price,"productType":"CNC"})
}

/// An order stream client (`subscribe_orders` acknowledged).
fn order_client(addr: SocketAddr) -> WsClient {
    let mut ws = WsClient::connect(addr, "/ws");
    ws.send(json!({"type":"subscribe_orders"}));
    let ack = ws.recv_type("subscribed");
    assert_eq!(ack["orders"], true, "{ack}");
    ws
}

/// The next order update for `order_id` with `status`.
fn update(ws: &mut WsClient, order_id: &str, status: &str) -> Value {
    ws.recv_where(|m| m["type"] == "order" && m["orderId"] == order_id && m["status"] == status)
}

#[test]
fn every_call_against_the_paper_broker() {
    let dir = TempDir::new("trading-calls");
    let sim = sim();
    let control = sim.control();
    let engine = engine(&sim, &dir.0, "", None);
    let addr = engine.addr();
    let mut seen = String::new();
    let mut orders = order_client(addr);
    settle(&control, addr, 1400.0);

    let status = call(addr, "GET", "/api/trading", None, None).json();
    assert_eq!(status["enabled"], true, "{status}");
    assert_eq!(status["allowed"], true, "{status}");
    assert_eq!(status["paper"], false, "live mode against a broker");

    let funds = call(addr, "GET", "/api/funds", None, None);
    assert_eq!(funds.status, 200, "{}", funds.text());
    seen += &funds.text();
    let before = funds.json()["availableBalance"].as_f64().unwrap();
    assert!(funds.json().get("availabelBalance").is_none());

    // MARKET: filled at the last price.
    let r = place(addr, market("BUY", 10));
    seen += &r.text();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["orderId"].as_str().unwrap().to_string();
    assert!(r.json()["correlationId"]
        .as_str()
        .unwrap()
        .starts_with("dr-"));
    let traded = update(&mut orders, &id, "TRADED");
    assert_eq!(traded["side"], "BUY");
    assert_eq!(traded["symbol"], "RELIANCE");
    assert_eq!(traded["averagePrice"], 1400.0);
    assert_eq!(traded["filledQty"], 10);

    let positions = call(addr, "GET", "/api/positions", None, None);
    seen += &positions.text();
    let p = &positions.json()["positions"][0];
    assert_eq!(p["netQty"], 10, "{p}");
    assert_eq!(p["symbol"], "RELIANCE");
    let after = call(addr, "GET", "/api/funds", None, None).json()["availableBalance"]
        .as_f64()
        .unwrap();
    assert!(
        (before - after - 14_000.0).abs() < 0.01,
        "{before} → {after}"
    );

    // LIMIT: rests, fills when the price crosses.
    let r = place(addr, limit("BUY", 5, 1380.0));
    assert_eq!(r.status, 200, "{}", r.text());
    let limit_id = r.json()["orderId"].as_str().unwrap().to_string();
    assert_eq!(r.json()["orderStatus"], "PENDING");
    price(&control, 1379.0);
    let filled = update(&mut orders, &limit_id, "TRADED");
    assert_eq!(filled["orderType"], "LIMIT");
    assert!(filled["averagePrice"].as_f64().unwrap() <= 1380.0);
    settle(&control, addr, 1400.0);

    // Modify, then cancel.
    let r = place(addr, limit("SELL", 5, 1420.0));
    assert_eq!(r.status, 200, "{}", r.text());
    let sell_id = r.json()["orderId"].as_str().unwrap().to_string();
    let m = call(
        addr,
        "PUT",
        &format!("/api/orders/{sell_id}"),
        Some(json!({"quantity":5,"orderType":"LIMIT","price":1410.0})),
        None,
    );
    assert_eq!(m.status, 200, "{}", m.text());
    let c = call(
        addr,
        "DELETE",
        &format!("/api/orders/{sell_id}"),
        None,
        None,
    );
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.json()["orderStatus"], "CANCELLED");
    update(&mut orders, &sell_id, "CANCELLED");
    let again = call(
        addr,
        "DELETE",
        &format!("/api/orders/{sell_id}"),
        None,
        None,
    );
    assert_eq!(
        again.status,
        400,
        "a final order cannot be cancelled: {}",
        again.text()
    );
    assert!(again.json()["errorCode"].is_string(), "{}", again.text());

    // One correlation id, one order: a repeat is 409 and not sent.
    let mut once = market("SELL", 10);
    once["correlationId"] = json!("bot-once-1");
    assert_eq!(place(addr, once.clone()).status, 200);
    let sent = control.trading_requests();
    let again = place(addr, once);
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(again.text().contains("bot-once-1"), "{}", again.text());
    assert_eq!(control.trading_requests(), sent, "the repeat never left");

    let book = call(addr, "GET", "/api/orders", None, None);
    seen += &book.text();
    let list = book.json()["orders"].as_array().unwrap().clone();
    assert_eq!(list.len(), 4, "{}", book.text());
    assert!(list
        .iter()
        .all(|o| o["symbol"] == "RELIANCE" && o.get("dhanClientId").is_none()));

    // One audit line per order call, each with its outcome.
    let lines = audit_lines(&dir.0, 8);
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["place", "place", "place", "modify", "cancel", "cancel", "place", "place"],
        "{lines:?}"
    );
    assert_eq!(lines[7]["outcome"], "refused");
    assert_eq!(lines[0]["outcome"], "sent");
    assert_eq!(lines[0]["answer"]["orderId"], id.as_str());
    assert_eq!(lines[5]["outcome"], "rejected");
    let audit = std::fs::read_to_string(audit_path(&dir.0)).unwrap();
    for text in [&seen, &audit] {
        assert!(!text.contains(TOKEN) && !text.contains(CLIENT_ID), "{text}");
    }
    let health = common::get_json(addr, "/health");
    assert_eq!(
        health["trading"]["orderStream"]["connected"], true,
        "{health}"
    );
    assert_eq!(health["trading"]["orders"]["sent"], 6, "{health}");
    engine.shutdown();
}

#[test]
fn guards_refuse_before_anything_leaves_the_box() {
    let dir = TempDir::new("trading-guards");
    let sim = sim();
    let control = sim.control();
    let engine = engine(&sim, &dir.0, "", None);
    let addr = engine.addr();
    settle(&control, addr, 1400.0);
    let before = control.trading_requests();
    for (order, status, guard) in [
        (market("BUY", 6_000), 422, Some("max_quantity")),
        (market("BUY", 200), 422, Some("max_order_value")),
        (limit("BUY", 1, 1300.0), 422, Some("price_band_pct")),
        (limit("BUY", 1, 1399.97), 422, Some("tick_size")),
        (
            json!({"symbol":"NIFTY","side":"BUY","quantity":1,"orderType":"MARKET","productType":"CNC"}),
            422,
            Some("segments"),
        ),
        (
            json!({"exchangeSegment":"NSE_FNO","securityId":"52002","side":"BUY","quantity":80,
                   "orderType":"MARKET","productType":"MARGIN"}),
            422,
            Some("lot_size"),
        ),
        (
            json!({"symbol":"RELIANCE","side":"BUY","quantity":1,"orderType":"MARKET","productType":"MTF"}),
            422,
            Some("products"),
        ),
        (
            json!({"symbol":"NOSUCHNAME","side":"BUY","quantity":1,"orderType":"MARKET","productType":"CNC"}),
            400,
            None,
        ),
        (
            json!({"symbol":"RELIANCE","side":"BUY","orderType":"MARKET","productType":"CNC"}),
            400,
            None,
        ),
    ] {
        let r = place(addr, order.clone());
        assert_eq!(r.status, status, "{order}: {}", r.text());
        assert_eq!(r.json()["guard"].as_str(), guard, "{order}: {}", r.text());
        assert!(!r.json()["error"].as_str().unwrap().is_empty());
    }
    let bad = call(addr, "POST", "/api/orders", None, None);
    assert_eq!(bad.status, 400, "an empty body: {}", bad.text());
    assert_eq!(
        control.trading_requests(),
        before,
        "the simulator saw nothing"
    );
    let lines = audit_lines(&dir.0, 10);
    assert_eq!(lines.len(), 10, "one line per refused request: {lines:?}");
    assert!(lines
        .iter()
        .all(|l| l["outcome"] == "refused" && l["status"] != 200));
    assert_eq!(lines[0]["request"]["quantity"], 6_000);
    engine.shutdown();
}

#[test]
fn kill_switch_and_cancel_all() {
    let dir = TempDir::new("trading-kill");
    let sim = sim();
    let control = sim.control();
    let engine = engine(&sim, &dir.0, "", None);
    let addr = engine.addr();
    settle(&control, addr, 1400.0);
    let mut ids = Vec::new();
    for p in [1350.0, 1360.0] {
        let r = place(addr, limit("BUY", 1, p));
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.json()["orderId"].as_str().unwrap().to_string());
    }
    let off = call(
        addr,
        "POST",
        "/api/admin/trading",
        Some(json!({"enabled": false})),
        None,
    );
    assert_eq!(off.status, 200, "{}", off.text());
    // A restart (the watchdog's, say) keeps trading stopped.
    engine.shutdown();
    let engine = self::engine(&sim, &dir.0, "", None);
    let addr = engine.addr();
    settle(&control, addr, 1400.0);
    let refused = place(addr, market("BUY", 1));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("kill switch"));
    assert_eq!(
        call(addr, "GET", "/api/trading", None, None).json()["killSwitch"],
        true
    );

    // Cancels still work; cancel-all takes every open order.
    let all = call(addr, "POST", "/api/admin/cancel-all", None, None);
    assert_eq!(all.status, 200, "{}", all.text());
    let mut cancelled: Vec<String> = all.json()["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    cancelled.sort();
    ids.sort();
    assert_eq!(cancelled, ids);
    let open = control
        .paper_orders()
        .into_iter()
        .filter(|o| o.status == OrderStatus::Pending)
        .count();
    assert_eq!(open, 0);

    let on = call(
        addr,
        "POST",
        "/api/admin/trading",
        Some(json!({"enabled": true})),
        None,
    );
    assert_eq!(on.status, 200);
    assert_eq!(place(addr, market("BUY", 1)).status, 200);
    let actions: Vec<String> = audit_lines(&dir.0, 7)
        .iter()
        .map(|l| {
            format!(
                "{}:{}",
                l["action"].as_str().unwrap(),
                l["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "place:sent",
            "place:sent",
            "kill-switch:sent",
            "place:refused",
            "cancel-all:sent",
            "kill-switch:sent",
            "place:sent"
        ]
    );
    engine.shutdown();
}

#[test]
fn dhanhq_errors_come_back_with_their_code() {
    let dir = TempDir::new("trading-errors");
    let sim = sim();
    let control = sim.control();
    let engine = engine(&sim, &dir.0, "", None);
    let addr = engine.addr();
    settle(&control, addr, 1400.0);
    control.fail_next_order(400, "DH-906", "Order rejected: margin shortfall");
    let r = place(addr, market("BUY", 1));
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["errorCode"], "DH-906");
    assert_eq!(v["error"], "Order rejected: margin shortfall");
    let line = audit_lines(&dir.0, 1).pop().unwrap();
    assert_eq!(line["outcome"], "rejected");
    assert_eq!(line["answer"]["errorCode"], "DH-906");

    // A gateway error may hide a placed order: looked up, never resent.
    control.fail_next_order(503, "DH-908", "Internal server error");
    let sent = control.trading_requests();
    let r = place(addr, market("BUY", 1));
    assert_eq!(r.status, 504, "{}", r.text());
    let corr = r.json()["correlationId"].as_str().unwrap().to_string();
    assert!(r.text().contains("check GET /api/orders"), "{}", r.text());
    assert_eq!(
        control.trading_requests(),
        sent + 2,
        "the POST and one lookup"
    );
    assert!(control
        .paper_orders()
        .iter()
        .all(|o| o.correlation_id != corr));
    let line = audit_lines(&dir.0, 2).pop().unwrap();
    assert_eq!(line["outcome"], "unknown", "{line}");

    // Ticks are ₹0.05 (the master's SEM_TICK_SIZE is in paise): a price
    // on that grid but off a whole rupee goes through.
    let r = place(addr, limit("BUY", 1, 1399.95));
    assert_eq!(r.status, 200, "{}", r.text());
    engine.shutdown();
}

#[test]
fn scopes_decide_who_trades() {
    let dir = TempDir::new("trading-scopes");
    let keys_file = dir.0.join("keys.toml");
    let mut keys = KeysFile::load(&keys_file).unwrap();
    let mut add = |name: &str, scopes: &str| {
        keys.add(name, Scopes::parse_list(scopes).unwrap(), SystemTime::now())
            .unwrap()
            .expose()
            .to_string()
    };
    let reader = add("reader", "read");
    let trader = add("trader", "read,trade");
    let admin = add("admin", "admin");
    keys.save(&keys_file).unwrap();
    let sim = sim();
    let engine = engine(&sim, &dir.0, "auth = \"on\"", Some(keys_file));
    let addr = engine.addr();

    let r = call(addr, "GET", "/api/funds", None, Some(&reader));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("trade"), "{}", r.text());
    assert_eq!(
        call(
            addr,
            "POST",
            "/api/orders",
            Some(market("BUY", 1)),
            Some(&reader)
        )
        .status,
        403
    );
    let s = call(addr, "GET", "/api/trading", None, Some(&reader)).json();
    assert_eq!(
        (s["enabled"].clone(), s["allowed"].clone()),
        (json!(true), json!(false)),
        "{s}"
    );
    assert_eq!(
        call(addr, "GET", "/api/funds", None, Some(&trader)).status,
        200
    );
    assert_eq!(call(addr, "GET", "/api/funds", None, None).status, 401);
    let kill = Some(json!({"enabled": false}));
    assert_eq!(
        call(
            addr,
            "POST",
            "/api/admin/trading",
            kill.clone(),
            Some(&trader)
        )
        .status,
        403
    );
    assert_eq!(
        call(addr, "POST", "/api/admin/trading", kill, Some(&admin)).status,
        200
    );

    // The order stream needs the trade scope too.
    let mut ws = WsClient::connect(addr, &format!("/ws?key={reader}"));
    ws.send(json!({"type":"subscribe_orders"}));
    let e = ws.recv_type("error");
    assert!(e["message"].as_str().unwrap().contains("trade"), "{e}");
    let mut ws = WsClient::connect(addr, &format!("/ws?key={trader}"));
    ws.send(json!({"type":"subscribe_orders"}));
    ws.recv_type("subscribed");
    // The audit log names the key.
    let line = audit_lines(&dir.0, 1).pop().unwrap();
    assert_eq!(line["key"], "admin");
    assert_eq!(line["action"], "kill-switch");
    engine.shutdown();
}

/// The largest gap between successive arrivals.
fn largest_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[test]
fn a_hanging_broker_stalls_no_price_and_no_order_goes_twice() {
    let dir = TempDir::new("trading-hang");
    let sim = sim();
    let control = sim.control();
    let engine = engine(&sim, &dir.0, "", None);
    let addr = engine.addr();
    settle(&control, addr, 1400.0);
    let mut prices = WsClient::connect(addr, "/ws");
    prices.subscribe(reliance(), "ticker");
    prices.recv_type("ticker");

    // Ticks every 20 ms for 3 s while DhanHQ's REST side hangs for 2.5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (control, stop) = (control.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut p = 1400.0f32;
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                p += 0.05;
                price(&control, p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    control.set_rest_delay(Some(Duration::from_millis(2_500)));
    let calls = std::thread::spawn(move || {
        let t0 = Instant::now();
        let funds = call(addr, "GET", "/api/funds", None, None);
        let placed = place(
            addr,
            json!({"symbol":"RELIANCE","side":"BUY","quantity":1,"orderType":"MARKET",
                   "productType":"CNC","correlationId":"hang-1"}),
        );
        (funds.status, placed.status, placed.json(), t0.elapsed())
    });
    let mut arrivals = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2_800) {
        let m = prices.recv();
        if m["type"] == "ticker" {
            arrivals.push(Instant::now());
        }
    }
    let rest_time = {
        let t = Instant::now();
        let (status, _) = common::http_get(addr, "/prices");
        assert_eq!(status, 200);
        t.elapsed()
    };
    let (funds, placed, body, took) = calls.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
    control.set_rest_delay(None);
    assert_eq!(funds, 504, "GET /api/funds times out (tried twice)");
    assert_eq!(placed, 504, "{body}");
    assert_eq!(body["correlationId"], "hang-1", "{body}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(arrivals.len() > 50, "{} ticks", arrivals.len());
    let gap = largest_gap(&arrivals);
    println!(
        "while DhanHQ's REST side hung: {} ticks to a price client, largest gap {gap:?} (ticks every 20 ms); /prices answered in {rest_time:?}",
        arrivals.len()
    );
    assert!(
        gap < Duration::from_millis(500),
        "a price client waited {gap:?}"
    );
    assert!(
        rest_time < Duration::from_millis(500),
        "/prices took {rest_time:?}"
    );

    // The placement that got no answer was not sent again.
    wait_for("the held placement lands", || {
        control
            .paper_orders()
            .iter()
            .any(|o| o.correlation_id == "hang-1")
    });
    std::thread::sleep(Duration::from_millis(300));
    let copies = control
        .paper_orders()
        .iter()
        .filter(|o| o.correlation_id == "hang-1")
        .count();
    assert_eq!(copies, 1);
    let line = audit_lines(&dir.0, 1).pop().unwrap();
    assert_eq!(line["outcome"], "unknown", "{line}");
    engine.shutdown();
}

#[test]
fn the_token_never_appears_in_the_log_or_the_page() {
    let dir = TempDir::new("trading-log");
    let sim = sim();
    let control = sim.control();
    let config = dir.0.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[trading]\nenabled = true\naudit_log = {:?}\norder_stream_url = {:?}\n",
            audit_path(&dir.0).display().to_string(),
            sim.order_update_url()
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
        .current_dir(&dir.0)
        .args(["run", "--listen", &listen, "--log-level", "debug"])
        .args(["--config", config.to_str().unwrap()])
        .args(["--feed-url", &sim.feed_url(), "--rest-url", &sim.rest_url()])
        .env("DHAN_CLIENT_ID", CLIENT_ID)
        .env("DHAN_ACCESS_TOKEN", TOKEN)
        .env_remove("DHAN_AUTH_TOKEN")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let addr: SocketAddr = listen.parse().unwrap();
    wait_for("the relay listening", || TcpStream::connect(addr).is_ok());
    wait_for("upstream and order stream", || {
        !control.subscriptions().is_empty() && control.stats().order_streams == 1
    });
    settle(&control, addr, 1400.0);
    let mut seen = String::new();
    for path in [
        "/",
        "/app.js",
        "/api/trading",
        "/api/funds",
        "/api/orders",
        "/api/positions",
        "/health",
        "/stats",
        "/metrics",
    ] {
        seen += &call(addr, "GET", path, None, None).text();
    }
    seen += &place(addr, market("BUY", 1)).text();
    control.fail_next_order(
        401,
        "DH-901",
        "Client ID or user generated access token is invalid or expired.",
    );
    seen += &place(addr, market("BUY", 1)).text();
    seen += &call(addr, "DELETE", "/api/orders/999", None, None).text();
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("trading is ON"), "{log}");
    let audit = std::fs::read_to_string(audit_path(&dir.0)).unwrap();
    assert_eq!(audit.lines().count(), 3, "{audit}");
    for (what, text) in [("log", &log), ("responses", &seen), ("audit log", &audit)] {
        assert!(!text.contains(TOKEN), "the token is in the {what}");
        assert!(!text.contains(CLIENT_ID), "the client id is in the {what}");
    }
}

/// With two fanout shards, the lead takes the order stream and passes each
/// update on: a subscriber on either shard gets every one, once.
#[test]
fn order_updates_reach_subscribers_on_every_fanout_shard() {
    let dir = TempDir::new("trading-shards");
    let sim = sim();
    let control = sim.control();
    let engine = engine(
        &sim,
        &dir.0,
        "threads = \"spread\"\nfanout_threads = 2",
        None,
    );
    let addr = engine.addr();
    let mut first = order_client(addr);
    let mut second = order_client(addr);
    let shards = common::get_json(addr, "/stats")["fanoutShards"].clone();
    assert_eq!(shards, json!([1, 1]), "one client on each shard");
    settle(&control, addr, 1400.0);
    let r = place(addr, market("BUY", 3));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["orderId"].as_str().unwrap().to_string();
    for ws in [&mut first, &mut second] {
        let traded = update(ws, &id, "TRADED");
        assert_eq!(traded["filledQty"], 3, "{traded}");
    }
}
