//! HTTPS and WSS on the relay's own listeners, end to end over 127.0.0.1:
//! a test CA made with rcgen, rustls clients, the built-in simulator
//! upstream.

mod common;
use common::tls::{https_get, peer_serial, TestCa, Wss, RELOAD_WAIT};
use common::{instrument, wait_for, wait_or, WsClient};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dhan_relay::config::{Flags, ListenSpec, RunConfig, TlsFiles};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use serde_json::{json, Value};

/// The engine in demo mode (no generated ticks) with the given listeners.
fn start(listen: Vec<ListenSpec>) -> (Engine, SimControl) {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(0),
        ..Flags::default()
    };
    let mut c = RunConfig::build(&flags, None, &CredentialSources::none()).unwrap();
    c.listen = listen;
    c.fanout.head_timeout = Duration::from_millis(700);
    let engine = Engine::start(c).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    (engine, sim)
}

fn tls_spec(files: &TlsFiles) -> ListenSpec {
    ListenSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(files.clone()),
        auth: None,
    }
}

fn key(i: u32) -> InstrumentKey {
    InstrumentKey::new(Segment::NseEq, i)
}

fn tick(sim: &SimControl, k: InstrumentKey, ltp: f32) {
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker { ltp, ltt: 1 }),
    ));
}

/// Subscribes `k` and waits until the relay has taken it (a ping sent
/// after it is answered in order).
fn subscribe(ws: &mut Wss, k: InstrumentKey) {
    ws.send(json!({"type": "subscribe", "mode": "ticker", "instruments": [instrument(k)]}));
    ws.send(json!({"type": "ping"}));
    ws.recv_type("pong");
}

/// The TLS listener's certificate as `/health` shows it.
fn health_cert(engine: &Engine, ca: &TestCa) -> Value {
    let tls_addr = engine.listeners().iter().find(|l| l.1).unwrap().0;
    let h = https_get(tls_addr, &ca.client_config(), "/health").json();
    h["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["tls"] == true)
        .unwrap()["certificate"]
        .clone()
}

#[test]
fn https_rest_and_wss_ticks() {
    let ca = TestCa::new("tls-basic");
    let files = ca.issue(0x51, 90);
    let (engine, sim) = start(vec![tls_spec(&files)]);
    let addr = engine.addr();
    let config = ca.client_config();

    let health = https_get(addr, &config, "/health");
    assert!(
        health.status == 200 || health.status == 503,
        "{}",
        health.head
    );
    let h = health.json();
    let cert = &h["listeners"][0]["certificate"];
    assert_eq!(h["listeners"][0]["tls"], json!(true));
    assert_eq!(cert["serial"], json!("51"));
    assert!(cert["daysLeft"].as_i64().unwrap() >= 88, "{cert}");
    assert!(cert["notAfter"].as_str().unwrap().ends_with('Z'), "{cert}");
    assert_eq!(cert["reloadError"], Value::Null);

    let prices = https_get(addr, &config, "/prices");
    assert_eq!(prices.status, 200);
    assert!(prices.json().is_object());

    // The negotiated protocol is http/1.1 (ALPN).
    let tls = common::tls::connect(addr, &config);
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    let k = key(11);
    let mut ws = Wss::connect(addr, &config, "/ws");
    subscribe(&mut ws, k);
    wait_for("the upstream subscription", || {
        sim.subscriptions()
            .iter()
            .any(|c| c.instruments.iter().any(|(key, _)| *key == k))
    });
    for i in 0..20 {
        tick(&sim, k, 100.0 + i as f32);
        assert_eq!(ws.recv_type("ticker")["ltp"], json!(100.0 + i as f32));
    }
    engine.shutdown();
}

#[test]
fn a_certificate_swap_keeps_connections_and_new_handshakes_see_the_new_one() {
    let ca = TestCa::new("tls-swap");
    let files = ca.issue(1, 30);
    let (engine, sim) = start(vec![tls_spec(&files)]);
    let addr = engine.addr();
    let config = ca.client_config();
    let k = key(12);
    let mut ws = Wss::connect(addr, &config, "/ws");
    assert_eq!(ws.serial(), "01");
    subscribe(&mut ws, k);
    wait_for("the upstream subscription", || {
        sim.subscriptions()
            .iter()
            .any(|c| c.instruments.iter().any(|(key, _)| *key == k))
    });
    tick(&sim, k, 1.0);
    assert_eq!(ws.recv_type("ticker")["ltp"], json!(1.0));

    // New files from the same CA, noticed by the periodic check.
    ca.issue(2, 200);
    let t0 = Instant::now();
    while peer_serial(&common::tls::connect(addr, &config)) != "02" {
        assert!(
            t0.elapsed() < RELOAD_WAIT,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cert = health_cert(&engine, &ca);
    assert_eq!(cert["serial"], json!("02"));
    assert!(cert["daysLeft"].as_i64().unwrap() >= 198, "{cert}");
    // The connection made before the swap still gets every update.
    for i in 2..10 {
        tick(&sim, k, i as f32);
        assert_eq!(ws.recv_type("ticker")["ltp"], json!(i as f32));
    }
    assert_eq!(ws.serial(), "01", "it keeps its session");

    // A bad replacement: refused, the old certificate stays, and it says so.
    std::fs::write(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    engine
        .reload_tls()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait_or(
        "the reload error in /health",
        || health_cert(&engine, &ca)["reloadError"].is_string(),
        || health_cert(&engine, &ca).to_string(),
    );
    let cert = health_cert(&engine, &ca);
    assert_eq!(cert["serial"], json!("02"), "{cert}");
    assert!(
        cert["reloadError"].as_str().unwrap().contains("cert.pem"),
        "{cert}"
    );
    assert_eq!(peer_serial(&common::tls::connect(addr, &config)), "02");
    tick(&sim, k, 42.0);
    assert_eq!(ws.recv_type("ticker")["ltp"], json!(42.0));
    // SIGHUP after a good file: reloaded at once.
    ca.issue(3, 100);
    engine
        .reload_tls()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait_for("serial 03", || {
        peer_serial(&common::tls::connect(addr, &config)) == "03"
    });
    assert_eq!(health_cert(&engine, &ca)["reloadError"], Value::Null);
    engine.shutdown();
}

#[test]
fn plain_http_on_the_tls_port_is_answered_400_and_closed() {
    let ca = TestCa::new("tls-plain");
    let files = ca.issue(7, 30);
    let (engine, _sim) = start(vec![tls_spec(&files)]);
    let t0 = Instant::now();
    let mut s = TcpStream::connect(engine.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("closed, not hung");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("this port speaks TLS; use https://"), "{raw}");

    // A client that connects and says nothing is closed after the head
    // timeout, like a slow request head.
    let t0 = Instant::now();
    let mut idle = TcpStream::connect(engine.addr()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        t0.elapsed() >= Duration::from_millis(600) && t0.elapsed() < Duration::from_secs(3),
        "{:?}",
        t0.elapsed()
    );
    // A handshake started and abandoned: the same.
    let t0 = Instant::now();
    let mut half = TcpStream::connect(engine.addr()).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    while half.read(&mut buf).unwrap_or(0) > 0 {}
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    engine.shutdown();
}

#[test]
fn a_plain_and_a_tls_listener_share_one_engine() {
    let ca = TestCa::new("tls-two");
    let files = ca.issue(9, 30);
    let (engine, sim) = start(vec![
        ListenSpec::plain("127.0.0.1:0".parse().unwrap()),
        tls_spec(&files),
    ]);
    let ls = engine.listeners().to_vec();
    assert_eq!((ls[0].1, ls[1].1), (false, true));
    let k = key(13);
    let mut plain = WsClient::connect(ls[0].0, "/ws");
    let mut secure = Wss::connect(ls[1].0, &ca.client_config(), "/ws");
    plain.subscribe(k, "ticker");
    plain.send(json!({"type": "ping"}));
    plain.recv_type("pong");
    subscribe(&mut secure, k);
    wait_for("the upstream subscription", || {
        sim.subscriptions()
            .iter()
            .any(|c| c.instruments.iter().any(|(key, _)| *key == k))
    });
    let upstream_subscribes = sim
        .subscriptions()
        .iter()
        .flat_map(|c| c.instruments.clone())
        .filter(|(key, _)| *key == k)
        .count();
    assert_eq!(upstream_subscribes, 1, "one upstream subscription for both");
    for i in 0..10 {
        tick(&sim, k, 50.0 + i as f32);
        let a = plain.recv_type("ticker");
        let b = secure.recv_type("ticker");
        assert_eq!(a, b, "the same update on both listeners");
    }
    // /health on either lists both listeners.
    let h = common::get_json(ls[0].0, "/health");
    assert_eq!(h["listeners"].as_array().unwrap().len(), 2, "{h}");
    engine.shutdown();
}

#[test]
fn a_bad_certificate_at_start_is_a_clear_error_exit_2() {
    let ca = TestCa::new("tls-bad-start");
    let files = ca.files();
    std::fs::write(&files.cert, "not a certificate").unwrap();
    std::fs::write(&files.key, "not a key").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--demo-rate",
            "0",
            "--tls-cert",
        ])
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .env_remove("DHAN_CLIENT_ID")
        .env_remove("DHAN_ACCESS_TOKEN")
        .current_dir(&ca.dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cert.pem") && stderr.contains("no certificate"),
        "{stderr}"
    );
    // A key that does not belong to the certificate, too.
    let good = ca.issue(1, 30);
    let other = TestCa::new("tls-bad-start-2");
    let wrong = other.issue(2, 30);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--demo-rate",
            "0",
            "--tls-cert",
        ])
        .arg(&good.cert)
        .arg("--tls-key")
        .arg(&wrong.key)
        .current_dir(&ca.dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not match"), "{stderr}");
}
