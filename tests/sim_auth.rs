//! The simulator's token lifecycle over real sockets on 127.0.0.1: issued
//! tokens, strict mode, expiry and revocation of open connections, and
//! DhanHQ's two token REST endpoints (RenewToken, generateAccessToken).
//! Every read has a timeout; every wait has a deadline.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{exchange, wait_for, Resp};
use dhan_relay::sim::{SimConfig, SimControl, SimTotpAccount, Simulator};
use dhan_relay::token::{jwt, totp};
use dhan_relay::wire::feed::{self, FeedData, FeedMessage};
use dhan_relay::wire::DisconnectReason;
use serde_json::Value;
use tungstenite::{Error as WsError, Message, WebSocket};

/// Upper bound for anything that should happen "soon".
const WAIT: Duration = Duration::from_secs(5);
/// Socket read timeout: how often a blocked read gives control back.
const TICK: Duration = Duration::from_millis(20);

/// RFC 6238's test secret, base32.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

type Client = WebSocket<TcpStream>;

fn start(cfg: SimConfig) -> (Simulator, SimControl) {
    let sim = Simulator::start(cfg).expect("simulator starts");
    let ctl = sim.control();
    (sim, ctl)
}

fn strict() -> SimConfig {
    SimConfig {
        accept_any_token: false,
        ..SimConfig::default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A WebSocket login, the way the relay makes it.
fn connect(sim: &Simulator, token: &str, client_id: &str) -> Client {
    let tcp = TcpStream::connect(sim.addr()).expect("tcp connect");
    tcp.set_read_timeout(Some(TICK)).unwrap();
    tcp.set_write_timeout(Some(WAIT)).unwrap();
    let url = format!(
        "{}/?version=2&token={token}&clientId={client_id}&authType=2",
        sim.feed_url()
    );
    let deadline = Instant::now() + WAIT;
    let mut attempt = tungstenite::client(url, tcp);
    loop {
        match attempt {
            Ok((ws, _)) => return ws,
            Err(tungstenite::HandshakeError::Interrupted(mid)) if Instant::now() < deadline => {
                attempt = mid.handshake();
            }
            Err(e) => panic!("handshake failed: {e}"),
        }
    }
}

/// What one read produced.
#[derive(Debug)]
enum Got {
    Binary(Vec<u8>),
    Close,
    Gone,
    Timeout,
}

/// The next binary frame or end of connection before `deadline`; pings and
/// other frames are skipped.
fn next_event(ws: &mut Client, deadline: Instant) -> Got {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => return Got::Binary(b.to_vec()),
            Ok(Message::Close(_)) => return Got::Close,
            Ok(_) => {}
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Got::Timeout;
                }
            }
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return Got::Close,
            Err(_) => return Got::Gone,
        }
    }
}

/// The next packet, which must arrive within `within`.
fn next_message(ws: &mut Client, within: Duration) -> FeedMessage {
    match next_event(ws, Instant::now() + within) {
        Got::Binary(frame) => {
            let packet = feed::decode(&frame).expect("simulator packets decode");
            assert_eq!(packet.bytes.len(), frame.len(), "one packet in the frame");
            packet.message
        }
        other => panic!("expected a packet, got {other:?}"),
    }
}

/// A login the simulator accepted: the market-status packet comes first.
fn expect_open(ws: &mut Client) {
    let m = next_message(ws, WAIT);
    assert!(
        matches!(m, FeedMessage::Data(_, FeedData::MarketStatus)),
        "expected market status, got {m:?}"
    );
}

/// The disconnect packet within `within`, then a close frame; its reason.
fn expect_disconnect(ws: &mut Client, within: Duration) -> DisconnectReason {
    let FeedMessage::Disconnect(reason) = next_message(ws, within) else {
        panic!("expected a disconnect packet")
    };
    match next_event(ws, Instant::now() + WAIT) {
        Got::Close => reason,
        other => panic!("expected a close frame after the disconnect packet, got {other:?}"),
    }
}

/// Nothing arrives for `quiet` (the connection stays open).
fn expect_quiet(ws: &mut Client, quiet: Duration) {
    match next_event(ws, Instant::now() + quiet) {
        Got::Timeout => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// A connection that is refused with `reason` at login.
fn expect_refused(sim: &Simulator, token: &str, client_id: &str) -> DisconnectReason {
    let mut ws = connect(sim, token, client_id);
    expect_disconnect(&mut ws, WAIT)
}

fn rest_addr(sim: &Simulator) -> SocketAddr {
    let url = sim.rest_url();
    let hostport = url.strip_prefix("http://").expect("http:// REST URL");
    hostport.parse().expect("host:port")
}

/// A raw HTTP request to the REST port (`Connection: close`).
fn rest(sim: &Simulator, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
    let addr = rest_addr(sim);
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    exchange(addr, &req)
}

fn renew(sim: &Simulator, token: &str, client_id: &str) -> Resp {
    rest(
        sim,
        "GET",
        "/v2/RenewToken",
        &[("access-token", token), ("dhanClientId", client_id)],
    )
}

fn generate(sim: &Simulator, client_id: &str, pin: &str, code: &str) -> Resp {
    rest(
        sim,
        "POST",
        &format!("/app/generateAccessToken?dhanClientId={client_id}&pin={pin}&totp={code}"),
        &[],
    )
}

/// DhanHQ's error object, with the expected code.
fn assert_dhan_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = r.json();
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(body["errorType"].is_string() && body["errorMessage"].is_string());
}

/// `YYYY-MM-DDTHH:MM:SS`.
fn is_local_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// The fields both endpoints answer a new token with.
fn assert_token_answer(body: &Value, client_id: &str) -> String {
    assert_eq!(body["dhanClientId"], client_id, "{body}");
    assert!(body["dhanClientName"].is_string(), "{body}");
    assert!(body["dhanClientUcc"].is_string(), "{body}");
    assert!(body["givenPowerOfAttorney"].is_boolean(), "{body}");
    let expiry = body["expiryTime"].as_str().expect("expiryTime");
    assert!(is_local_timestamp(expiry), "{expiry}");
    let token = body["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned();
    // 24 h by default.
    let exp = jwt::expiry(&token).expect("a JWT with exp");
    let day = unix_now() + 24 * 3600;
    assert!(exp.abs_diff(day) <= 5, "exp {exp}, expected about {day}");
    token
}

#[test]
fn an_issued_token_is_accepted_for_its_client_only() {
    let (sim, ctl) = start(SimConfig::default());
    let token = ctl.issue_token("1100001", Duration::from_secs(3600));
    assert!(ctl.token_valid(&token));
    let exp = jwt::expiry(&token).expect("issued tokens are JWTs");
    assert!(exp.abs_diff(unix_now() + 3600) <= 2);
    assert_eq!(ctl.stats().tokens_issued, 1);

    let mut ws = connect(&sim, &token, "1100001");
    expect_open(&mut ws);
    assert_eq!(
        expect_refused(&sim, &token, "1100002"),
        DisconnectReason::InvalidClientId
    );
    // Without strict mode, any other token still works.
    let mut other = connect(&sim, "anything", "1100002");
    expect_open(&mut other);
    assert_eq!(ctl.stats().open, 2);
}

#[test]
fn strict_mode_refuses_unknown_tokens_with_807() {
    let (sim, ctl) = start(SimConfig {
        valid_tokens: vec!["configured".into()],
        ..strict()
    });
    assert!(!ctl.token_valid("unknown"));
    assert_eq!(
        expect_refused(&sim, "unknown", "1100001"),
        DisconnectReason::TokenExpired
    );
    assert!(ctl.token_valid("configured"));
    let mut ws = connect(&sim, "configured", "1100001");
    expect_open(&mut ws);
    let issued = ctl.issue_token("1100002", Duration::from_secs(60));
    let mut ws2 = connect(&sim, &issued, "1100002");
    expect_open(&mut ws2);
    // A JWT's own exp counts even when configured.
    let stale = jwt::unsigned("1100003", unix_now() - 1, unix_now() - 100);
    let (sim2, ctl2) = start(SimConfig {
        valid_tokens: vec![stale.clone()],
        ..strict()
    });
    assert!(!ctl2.token_valid(&stale));
    assert_eq!(
        expect_refused(&sim2, &stale, "1100003"),
        DisconnectReason::TokenExpired
    );
    assert_eq!(ctl.stats().auth_rejects, 1);
}

#[test]
fn an_expiring_token_disconnects_its_connection_and_is_refused_after() {
    let (sim, ctl) = start(strict());
    let issued_at = Instant::now();
    let token = ctl.issue_token("1100001", Duration::from_secs(2));
    let mut ws = connect(&sim, &token, "1100001");
    expect_open(&mut ws);
    // Valid for at least the lifetime, gone within a second or so after
    // its exp (whole seconds) has passed.
    assert_eq!(
        expect_disconnect(&mut ws, Duration::from_secs(5)),
        DisconnectReason::TokenExpired
    );
    let after = issued_at.elapsed();
    assert!(
        after >= Duration::from_millis(1_900) && after <= Duration::from_millis(4_500),
        "807 after {after:?}"
    );
    assert!(!ctl.token_valid(&token));
    assert_eq!(
        expect_refused(&sim, &token, "1100001"),
        DisconnectReason::TokenExpired
    );
    let stats = ctl.stats();
    assert_eq!(stats.token_disconnects, 1);
    wait_for("the expired connection to close", || ctl.stats().open == 0);
}

#[test]
fn revoking_a_token_disconnects_its_open_connections_only() {
    let (sim, ctl) = start(SimConfig::default());
    let mut a1 = connect(&sim, "token-a", "1100001");
    let mut a2 = connect(&sim, "token-a", "1100001");
    let mut b = connect(&sim, "token-b", "1100002");
    for ws in [&mut a1, &mut a2, &mut b] {
        expect_open(ws);
    }
    ctl.revoke_token("token-a");
    assert!(!ctl.token_valid("token-a"));
    for ws in [&mut a1, &mut a2] {
        assert_eq!(expect_disconnect(ws, WAIT), DisconnectReason::TokenExpired);
    }
    expect_quiet(&mut b, Duration::from_millis(300));
    assert_eq!(
        expect_refused(&sim, "token-a", "1100001"),
        DisconnectReason::TokenExpired
    );
    // Issuing a client a new token revokes its previous one, and that
    // one's connections.
    let first = ctl.issue_token("1100003", Duration::from_secs(600));
    let mut c = connect(&sim, &first, "1100003");
    expect_open(&mut c);
    let second = ctl.issue_token("1100003", Duration::from_secs(600));
    assert_eq!(
        expect_disconnect(&mut c, WAIT),
        DisconnectReason::TokenExpired
    );
    assert!(!ctl.token_valid(&first) && ctl.token_valid(&second));
    assert_eq!(ctl.stats().token_disconnects, 3);
    expect_quiet(&mut b, Duration::from_millis(100));
}

#[test]
fn renew_token_issues_a_new_token_and_revokes_the_old_at_once() {
    let (sim, ctl) = start(strict());
    assert!(sim.rest_url().starts_with("http://127.0.0.1:"));
    let old = ctl.issue_token("1100001", Duration::from_secs(600));
    let mut ws = connect(&sim, &old, "1100001");
    expect_open(&mut ws);

    // The way the relay calls it: ureq, GET, two headers.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(format!("{}/v2/RenewToken", sim.rest_url()))
        .header("access-token", &old)
        .header("dhanClientId", "1100001")
        .call()
        .expect("RenewToken answers");
    assert_eq!(resp.status(), 200);
    let body: Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).expect("JSON");
    let new = assert_token_answer(&body, "1100001");
    assert_eq!(body["token"], new.as_str(), "both names carry the token");
    assert_ne!(new, old);

    // The old token is gone at once, open connection included.
    assert_eq!(
        expect_disconnect(&mut ws, Duration::from_secs(2)),
        DisconnectReason::TokenExpired
    );
    assert!(!ctl.token_valid(&old) && ctl.token_valid(&new));
    assert_eq!(
        expect_refused(&sim, &old, "1100001"),
        DisconnectReason::TokenExpired
    );
    let mut fresh = connect(&sim, &new, "1100001");
    expect_open(&mut fresh);

    // The new one renews in turn.
    let again = renew(&sim, &new, "1100001");
    assert_eq!(again.status, 200, "{}", again.text());
    let newer = assert_token_answer(&again.json(), "1100001");
    assert_eq!(
        expect_disconnect(&mut fresh, Duration::from_secs(2)),
        DisconnectReason::TokenExpired
    );
    assert!(ctl.token_valid(&newer));
    let stats = ctl.stats();
    assert_eq!((stats.renewals, stats.tokens_issued), (2, 3));
    assert_eq!(stats.auth_refusals_rest, 0);
}

#[test]
fn renew_token_refuses_bad_tokens_with_dhan_errors() {
    let (sim, ctl) = start(strict());
    let token = ctl.issue_token("1100001", Duration::from_secs(600));

    let r = renew(&sim, "not-a-token-secret", "1100001");
    assert_dhan_error(&r, 401, "DH-901");
    assert_eq!(r.json()["errorType"], "Invalid_Authentication");
    assert!(!r.text().contains("not-a-token-secret"), "no echo");
    // Someone else's client id.
    assert_dhan_error(&renew(&sim, &token, "1100002"), 401, "DH-901");
    // Missing headers.
    assert_dhan_error(
        &rest(&sim, "GET", "/v2/RenewToken", &[("access-token", &token)]),
        400,
        "DH-905",
    );
    assert_dhan_error(&rest(&sim, "GET", "/v2/RenewToken", &[]), 400, "DH-905");
    // The token is untouched by failed renewals.
    assert!(ctl.token_valid(&token));
    // A token that was renewed cannot be renewed again.
    let renewed = renew(&sim, &token, "1100001");
    assert_eq!(renewed.status, 200);
    assert_dhan_error(&renew(&sim, &token, "1100001"), 401, "DH-901");
    // Wrong method.
    assert_eq!(
        rest(&sim, "POST", "/v2/RenewToken", &[("access-token", &token)]).status,
        405
    );
    let stats = ctl.stats();
    assert_eq!(stats.auth_refusals_rest, 5);
    assert_eq!(stats.renewals, 1);
}

#[test]
fn generate_access_token_with_pin_and_totp() {
    let (sim, ctl) = start(SimConfig {
        totp_accounts: vec![SimTotpAccount {
            client_id: "1100001".into(),
            pin: "246810".into(),
            secret_base32: SECRET.to_lowercase(),
        }],
        ..strict()
    });
    let secret = totp::decode_secret(SECRET).unwrap();
    let before = ctl.issue_token("1100001", Duration::from_secs(600));
    let mut ws = connect(&sim, &before, "1100001");
    expect_open(&mut ws);

    // Wrong TOTP: a code that matches no step the server accepts.
    let step = unix_now() / totp::STEP_SECS;
    let near: Vec<String> = (step - 2..=step + 2)
        .map(|s| totp::code_at_step(&secret, s))
        .collect();
    let wrong = (0..)
        .map(|n: u32| format!("{:06}", (n * 7_919) % 1_000_000))
        .find(|c| !near.contains(c))
        .unwrap();
    assert_dhan_error(&generate(&sim, "1100001", "246810", &wrong), 401, "DH-901");
    let good = totp::code(&secret, unix_now());
    assert_dhan_error(&generate(&sim, "1100001", "999999", &good), 401, "DH-901");
    assert_dhan_error(&generate(&sim, "1100009", "246810", &good), 401, "DH-901");
    assert_dhan_error(
        &rest(
            &sim,
            "POST",
            "/app/generateAccessToken?dhanClientId=1100001&pin=246810",
            &[],
        ),
        400,
        "DH-905",
    );
    // Refusals leave the current token alone.
    expect_quiet(&mut ws, Duration::from_millis(100));
    assert!(ctl.token_valid(&before));

    let r = generate(&sim, "1100001", "246810", &totp::code(&secret, unix_now()));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let token = assert_token_answer(&body, "1100001");
    for field in [
        "dhanClientId",
        "dhanClientName",
        "dhanClientUcc",
        "givenPowerOfAttorney",
        "accessToken",
        "expiryTime",
    ] {
        assert!(body.get(field).is_some(), "{field} in {body}");
    }
    // The new token works on the feed; the client's previous one is gone.
    let mut fresh = connect(&sim, &token, "1100001");
    expect_open(&mut fresh);
    assert_eq!(
        expect_disconnect(&mut ws, Duration::from_secs(2)),
        DisconnectReason::TokenExpired
    );
    assert_eq!(
        expect_refused(&sim, &before, "1100001"),
        DisconnectReason::TokenExpired
    );
    let stats = ctl.stats();
    assert_eq!(
        (
            stats.generations,
            stats.tokens_issued,
            stats.auth_refusals_rest
        ),
        (1, 2, 4)
    );
    // GET is not how it is called.
    assert_eq!(
        rest(&sim, "GET", "/app/generateAccessToken", &[]).status,
        405
    );
}

#[test]
fn unknown_paths_are_404_with_a_json_error() {
    let (sim, ctl) = start(SimConfig::default());
    for path in ["/", "/v2/nope", "/v2/RenewToken/extra", "/app"] {
        let r = rest(&sim, "GET", path, &[]);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["errorMessage"].is_string(), "{path}");
    }
    assert_eq!(ctl.stats().auth_refusals_rest, 0);
}

#[test]
fn bodies_are_bounded_and_a_huge_one_does_not_hold_the_rest_thread() {
    let (sim, ctl) = start(SimConfig::default());
    let addr = rest_addr(&sim);
    // A small body is read and ignored.
    let r = exchange(
        addr,
        &format!(
            "GET /v2/RenewToken HTTP/1.1\r\nHost: {addr}\r\naccess-token: t\r\ndhanClientId: 1\r\n\
             Content-Length: 2000\r\nConnection: close\r\n\r\n{}",
            "x".repeat(2000)
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A body declared far over the limit is never read...
    let mut hog = TcpStream::connect(addr).unwrap();
    hog.write_all(
        format!(
            "POST /app/generateAccessToken HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Length: 10000000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // ...and the thread goes on serving others at once.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(rest(&sim, "GET", "/nowhere", &[]).status, 404);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(ctl.stats().renewals, 1);
}

#[test]
fn secrets_stay_out_of_debug_output_and_errors() {
    let cfg = SimConfig {
        expired_tokens: vec!["expired-secret".into()],
        valid_tokens: vec!["valid-secret".into()],
        totp_accounts: vec![SimTotpAccount {
            client_id: "1100001".into(),
            pin: "pin-secret".into(),
            secret_base32: SECRET.into(),
        }],
        ..SimConfig::default()
    };
    let shown = format!("{cfg:?} {:?}", cfg.totp_accounts);
    assert!(
        !shown.contains("secret") && !shown.contains(SECRET),
        "{shown}"
    );
    let (sim, ctl) = start(cfg);
    let token = ctl.issue_token("1100001", Duration::from_secs(60));
    let mut ws = connect(&sim, &token, "1100001");
    expect_open(&mut ws);
    let shown = format!("{sim:?} {ctl:?}");
    assert!(!shown.contains(&token), "{shown}");

    // A TOTP secret that is not base32 stops the start, without the secret.
    let err = Simulator::start(SimConfig {
        totp_accounts: vec![SimTotpAccount {
            client_id: "1100002".into(),
            pin: "1".into(),
            secret_base32: "NOT-BASE32-SECRET".into(),
        }],
        ..SimConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains("1100002") && !msg.contains("SECRET"), "{msg}");
}
