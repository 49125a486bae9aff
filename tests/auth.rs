//! Access control end to end, on the real engine over loopback: each way
//! of presenting a key, 401/403/429, `/health` without a key, sessions,
//! revocation closing an open WebSocket with 4403, per-key limits, a
//! listener without keys next to one with, and the refusal to start with
//! access control on and no key (before anything is bound).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{exchange, find, wait_for, Resp, TempDir, WsClient, READ_TIMEOUT};
use dhan_relay::auth::keys::KeysFile;
use dhan_relay::auth::Scopes;
use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::{Engine, StartError};
use dhan_relay::token::sources::CredentialSources;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;

const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);

/// Adds `name` with `scopes` to the keys file; the key.
fn add_key(file: &Path, name: &str, scopes: &str) -> String {
    let mut keys = KeysFile::load(file).unwrap();
    let key = keys
        .add(name, Scopes::parse_list(scopes).unwrap(), SystemTime::now())
        .unwrap();
    keys.save(file).unwrap();
    key.expose().to_string()
}

fn revoke_key(file: &Path, name: &str) {
    let mut keys = KeysFile::load(file).unwrap();
    keys.revoke(name).unwrap();
    keys.save(file).unwrap();
}

/// The engine in demo mode with `config_text` (plus `keys_file`).
fn start(dir: &Path, config_text: &str, listen: &[&str]) -> Result<Engine, StartError> {
    let keys_file = dir.join("keys.toml");
    let flags = Flags {
        listen: listen.iter().map(|s| s.to_string()).collect(),
        demo_rate: Some(50),
        keys_file: Some(keys_file),
        ..Flags::default()
    };
    let mut c = RunConfig::build(
        &flags,
        Some((Path::new("relay.toml"), config_text)),
        &CredentialSources::none(),
    )
    .unwrap();
    c.fanout.unsubscribe_grace = Duration::from_millis(200);
    Engine::start(c)
}

/// `method path` with extra header lines, on a fresh connection.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> Resp {
    exchange(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}\r\n")
}

/// A WebSocket upgrade to `path` with extra headers: the client, or the
/// HTTP refusal.
fn ws(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<WsClient, Resp> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}{path}"))
            .unwrap();
    for (n, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, tungstenite::http::HeaderValue::from_str(v).unwrap());
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(WsClient(ws)),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            let status = r.status().as_u16();
            let body = r.body().clone().unwrap_or_default();
            let mut head = format!("HTTP/1.1 {status} x\r\n");
            for (n, v) in r.headers() {
                head.push_str(&format!("{n}: {}\r\n", v.to_str().unwrap_or("")));
            }
            Err(Resp { status, head, body })
        }
        Err(e) => panic!("handshake on {path}: {e}"),
    }
}

#[test]
fn keys_by_header_query_and_cookie_scopes_health_and_the_wrong_key_limit() {
    let dir = TempDir::new("auth-ways");
    let keys = dir.0.join("keys.toml");
    let reader = add_key(&keys, "reader", "read");
    let trader = add_key(&keys, "trader", "trade");
    let admin = add_key(&keys, "ops", "read,admin");
    let engine = start(&dir.0, "auth = \"on\"\n", &["127.0.0.1:0"]).unwrap();
    let addr = engine.addr();

    // No key: 401 with how to authenticate.
    let r = request(addr, "GET", "/prices", "", "");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("WWW-Authenticate").as_deref(),
        Some("Bearer realm=\"dhan-relay\"")
    );
    assert!(r.json()["how"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    // The dashboard's files need none; /health says only the status.
    assert_eq!(request(addr, "GET", "/", "", "").status, 200);
    let h = request(addr, "GET", "/health", "", "").json();
    assert_eq!(h.as_object().unwrap().len(), 1, "{h}");
    assert!(h["status"] == "ok" || h["status"] == "down", "{h}");
    // Bearer on REST.
    let r = request(addr, "GET", "/prices", &bearer(&reader), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let h = request(addr, "GET", "/health", &bearer(&reader), "").json();
    assert!(
        h["upstream"].is_object() && h["listeners"][0]["auth"] == true,
        "{h}"
    );
    // A key without the scope: 403 naming it.
    let r = request(addr, "GET", "/prices", &bearer(&trader), "");
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"].as_str().unwrap().contains("'read'"),
        "{}",
        r.text()
    );
    let creds = r#"{"clientId":"c","accessToken":"t"}"#;
    let r = request(
        addr,
        "POST",
        "/api/admin/credentials",
        &bearer(&reader),
        creds,
    );
    assert_eq!(r.status, 403, "read is not admin: {}", r.text());
    let r = request(
        addr,
        "POST",
        "/api/admin/credentials",
        &bearer(&admin),
        "{}",
    );
    assert_eq!(
        r.status,
        400,
        "admin gets through to validation: {}",
        r.text()
    );

    // WebSocket: refused before the upgrade without a key, with a wrong
    // one; served with Bearer and with ?key=.
    let refused = ws(addr, "/ws", &[]).err().expect("401 before the upgrade");
    assert_eq!(refused.status, 401);
    let mut by_header = ws(
        addr,
        "/ws",
        &[("Authorization", &format!("Bearer {reader}"))],
    )
    .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert_eq!(by_header.recv_type("status")["type"], "status");
    let encoded = reader.replace('_', "%5F");
    let mut by_query = ws(addr, &format!("/ws?key={encoded}"), &[])
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    by_query.subscribe(NIFTY, "ticker");
    by_query.recv_where(|v| v["type"] == "ticker" && v["securityId"] == "13");
    let forbidden = ws(
        addr,
        "/ws",
        &[("Authorization", &format!("Bearer {trader}"))],
    )
    .err()
    .expect("403 without read");
    assert_eq!(forbidden.status, 403);

    // A session: the key once, then the cookie (REST and WebSocket).
    let r = request(
        addr,
        "POST",
        "/api/session",
        "Content-Type: application/json\r\n",
        &json!({ "key": reader }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set_cookie = r.header("Set-Cookie").unwrap();
    assert!(
        set_cookie.starts_with("drs=")
            && set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && !set_cookie.contains("Secure"),
        "{set_cookie}"
    );
    assert!(!r.text().contains(&reader), "the key is not echoed");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let s = request(
        addr,
        "GET",
        "/api/session",
        &format!("Cookie: {cookie}\r\n"),
        "",
    )
    .json();
    assert_eq!(
        s,
        json!({"auth": true, "authenticated": true, "key": "reader"})
    );
    let r = request(addr, "GET", "/stats", &format!("Cookie: {cookie}\r\n"), "");
    assert_eq!(r.status, 200);
    let mut by_cookie = ws(addr, "/ws", &[("Cookie", &cookie)])
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    by_cookie.recv_type("status");
    let r = request(
        addr,
        "DELETE",
        "/api/session",
        &format!("Cookie: {cookie}\r\n"),
        "",
    );
    assert_eq!(r.status, 200);
    let r = request(addr, "GET", "/stats", &format!("Cookie: {cookie}\r\n"), "");
    assert_eq!(r.status, 401, "logged out");

    // Wrong keys: ten a minute, then 429 with Retry-After, the right key
    // included, for this address.
    for i in 0..10 {
        let r = request(
            addr,
            "GET",
            "/prices",
            &bearer(&format!("drk_wrong{i}")),
            "",
        );
        assert_eq!(r.status, 401, "attempt {i}");
        assert!(r.json()["error"].as_str().unwrap().contains("not valid"));
    }
    let r = request(addr, "GET", "/prices", &bearer("drk_wrong10"), "");
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        request(addr, "GET", "/prices", &bearer(&reader), "").status,
        429
    );
    engine.shutdown();
}

#[test]
fn a_revoked_key_closes_its_websockets_with_4403_and_limits_hold_per_key() {
    let dir = TempDir::new("auth-revoke");
    let keys = dir.0.join("keys.toml");
    let bot = add_key(&keys, "bot", "read");
    let other = add_key(&keys, "other", "read");
    let config = "auth = \"on\"\n[limits.keys.bot]\nconnections = 1\nsubscriptions = 2\n";
    let engine = start(&dir.0, config, &["127.0.0.1:0"]).unwrap();
    let addr = engine.addr();
    let auth = |k: &str| format!("Bearer {k}");
    let mut a = ws(addr, "/ws", &[("Authorization", &auth(&bot))])
        .ok()
        .unwrap();
    a.recv_type("status");
    // One connection for "bot": a second is refused (429), others are not.
    let second = ws(addr, "/ws", &[("Authorization", &auth(&bot))])
        .err()
        .unwrap();
    assert_eq!(second.status, 429);
    assert!(
        second.text().contains("limits.keys.bot.connections"),
        "{}",
        second.text()
    );
    let mut b = ws(addr, "/ws", &[("Authorization", &auth(&other))])
        .ok()
        .unwrap();
    b.recv_type("status");
    // Two subscriptions for "bot".
    a.subscribe_many(
        &[
            NIFTY,
            InstrumentKey::new(Segment::IdxI, 51),
            InstrumentKey::new(Segment::NseEq, 2885),
        ],
        "ticker",
    );
    let e = a.recv_type("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("subscription limit"),
        "{e}"
    );
    b.subscribe(NIFTY, "ticker");
    b.recv_where(|v| v["type"] == "ticker");

    // Revoked: its connection closes with 4403 within 5 s; the other stays.
    let revoked_at = Instant::now();
    revoke_key(&keys, "bot");
    let code = a.close_code();
    let took = revoked_at.elapsed();
    assert_eq!(code, Some(CloseCode::from(4403)));
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("revoked key's WebSocket closed with 4403 after {took:?}");
    b.recv_where(|v| v["type"] == "ticker");
    let r = request(addr, "GET", "/prices", &bearer(&bot), "");
    assert_eq!(r.status, 401, "revoked");
    // The connection count was given back: a new key named bot may connect.
    let bot2 = add_key(&keys, "bot", "read");
    // Not polled with the new key: each early try would count as a wrong
    // key. The file is re-read every second.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        request(addr, "GET", "/prices", &bearer(&bot2), "").status,
        200
    );
    assert!(ws(addr, "/ws", &[("Authorization", &auth(&bot2))]).is_ok());
    engine.shutdown();
}

#[test]
fn a_loopback_listener_without_keys_next_to_one_with_keys() {
    let dir = TempDir::new("auth-two");
    let keys = dir.0.join("keys.toml");
    let key = add_key(&keys, "phone", "read");
    let config = "auth = \"on\"\n\
                  [[listen]]\naddr = \"127.0.0.1:0\"\nauth = \"off\"\n\
                  [[listen]]\naddr = \"127.0.0.1:0\"\n";
    let engine = start(&dir.0, config, &[]).unwrap();
    let addrs = engine.listeners();
    let (open, keyed) = (addrs[0].0, addrs[1].0);
    assert_eq!(request(open, "GET", "/prices", "", "").status, 200);
    assert_eq!(request(keyed, "GET", "/prices", "", "").status, 401);
    assert_eq!(
        request(keyed, "GET", "/prices", &bearer(&key), "").status,
        200
    );
    let s: Value = request(open, "GET", "/api/session", "", "").json();
    assert_eq!(s["auth"], false);
    // Both listeners feed from one engine.
    let mut a = WsClient::connect(open, "/ws");
    let mut b = ws(keyed, "/ws", &[("Authorization", &format!("Bearer {key}"))])
        .ok()
        .unwrap();
    a.subscribe(NIFTY, "ticker");
    b.subscribe(NIFTY, "ticker");
    let ta = a.recv_where(|v| v["type"] == "ticker" && v["seq"].as_u64() > Some(2));
    let seq = ta["seq"].as_u64().unwrap();
    let tb = b.recv_where(|v| v["type"] == "ticker" && v["seq"].as_u64() == Some(seq));
    assert_eq!(ta["ltp"], tb["ltp"]);
    engine.shutdown();
}

#[test]
fn access_control_on_without_a_key_refuses_to_start_before_binding() {
    let dir = TempDir::new("auth-nokey");
    // A free port, released: the engine must not take it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let e = start(&dir.0, "auth = \"on\"\n", &[&listen]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StartError::Config(_)), "{msg}");
    assert!(
        msg.contains("dhan-relay keys add NAME --scopes read") && msg.contains("keys.toml"),
        "{msg}"
    );
    TcpListener::bind(&listen).expect("the port was never bound");
    // auto: a non-loopback address turns it on.
    let e = start(&dir.0, "", &["0.0.0.0:0"]).unwrap_err().to_string();
    assert!(e.contains("keys add"), "{e}");
    // ... and auth = "off" there needs --insecure-no-auth.
    let e = start(&dir.0, "auth = \"off\"\n", &["0.0.0.0:0"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--insecure-no-auth"), "{e}");
}

/// The binary: exit 2 with the command to run, and no key ever in its
/// output while it serves right and wrong keys.
#[test]
fn the_binary_exits_2_without_keys_and_never_prints_a_key() {
    let dir = TempDir::new("auth-bin");
    let bin = env!("CARGO_BIN_EXE_dhan-relay");
    let keys = dir.0.join("keys.toml");
    let cfg = dir.0.join("relay.toml");
    std::fs::write(&cfg, "auth = \"on\"\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--keys-file", keys.to_str().unwrap()])
        .env_remove("DHAN_CLIENT_ID")
        .env_remove("DHAN_ACCESS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dhan-relay keys add"), "{stderr}");

    let key = add_key(&keys, "cli", "read");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = dir.0.join("relay.log");
    let mut child = std::process::Command::new(bin)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ])
        .args([
            "--keys-file",
            keys.to_str().unwrap(),
            "--log-level",
            "debug",
        ])
        .env_remove("DHAN_CLIENT_ID")
        .env_remove("DHAN_ACCESS_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("the relay listening", || TcpStream::connect(addr).is_ok());
    assert_eq!(
        request(addr, "GET", "/prices", &bearer(&key), "").status,
        200
    );
    let wrong = "drk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        request(addr, "GET", "/prices", &bearer(wrong), "").status,
        401
    );
    let mut w = ws(addr, &format!("/ws?key={key}"), &[]).ok().unwrap();
    w.recv_type("status");
    // `/dhan` takes the key as DhanHQ's `token`: right and wrong.
    let dhan = |token: &str| {
        let path = format!("/dhan?version=2&token={token}&clientId=1&authType=2");
        let mut c = ws(addr, &path, &[]).ok().unwrap();
        match c.0.read().unwrap() {
            tungstenite::Message::Binary(b) => b[0],
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(dhan(&key), 7, "market status");
    assert_eq!(dhan(wrong), 50, "disconnect (809)");
    let r = request(addr, "POST", "/api/session", &bearer(&key), "");
    let sid = r.header("Set-Cookie").unwrap();
    let sid = sid
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("drs=")
        .to_string();
    drop(w);
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: an orderly stop, which records when keys were last used.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let list = std::process::Command::new(bin)
        .args(["keys", "list", "--keys-file", keys.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&list.stdout);
    let row = table.lines().find(|l| l.starts_with("cli ")).unwrap();
    assert!(row.trim_end().ends_with('Z'), "last used recorded: {table}");
    let text = std::fs::read(&log).unwrap();
    for secret in [key.as_str(), wrong, sid.as_str()] {
        assert!(
            find(&text, secret.as_bytes()).is_none(),
            "a secret in the log"
        );
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("'cli'"), "the key's name is logged: {text}");
}
