//! Unattended operation end to end: the real engine (in process, or the
//! real binary where signals, the working directory, systemd's notify
//! socket or the process id matter) against the real simulator over
//! 127.0.0.1. A new token arrives through the credentials file, SIGHUP, the
//! admin call or renewal; the relay moves every upstream connection to it
//! without a restart, clients keep their subscriptions, and no secret shows
//! anywhere. Under systemd it says READY=1 and pings the watchdog.

mod common;
use common::{exchange, get_json, wait_for, wait_or, WsClient};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::sim::{SimConfig, SimControl, SimTotpAccount, Simulator};
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::request::RequestCode;
use serde_json::Value;

const RELIANCE: InstrumentKey = InstrumentKey::new(Segment::NseEq, 2885);

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dhan-relay-token-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_creds(path: &Path, token: &str) {
    std::fs::write(
        path,
        format!("# test\nDHAN_CLIENT_ID=1100003626\nDHAN_ACCESS_TOKEN={token}\n"),
    )
    .unwrap();
}

fn sim(rate: u32) -> Simulator {
    Simulator::start(SimConfig {
        ticks_per_sec: rate,
        ..SimConfig::default()
    })
    .expect("simulator starts")
}

/// The engine, in process, relaying `sim` with the credentials in `file`.
fn engine(sim: &Simulator, file: &Path, toml: &str) -> Engine {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        feed_url: Some(sim.feed_url()),
        env_file: Some(file.to_path_buf()),
        ..Flags::default()
    };
    let config = RunConfig::build(
        &flags,
        Some((Path::new("token-test.toml"), toml)),
        &CredentialSources::none(),
    )
    .expect("test config is valid");
    Engine::start(config).expect("engine starts")
}

/// Waits for one upstream connection holding the four default watchlist
/// instruments; returns its id.
fn wait_up(sim: &SimControl) -> Vec<u64> {
    wait_for("upstream up with the watchlist", || {
        let subs = sim.subscriptions();
        subs.len() == 1 && subs[0].instruments.len() == WATCHLIST
    });
    conn_ids(sim)
}

/// The default watchlist: NIFTY, SENSEX, RELIANCE, CRUDEOIL.
const WATCHLIST: usize = 4;

fn conn_ids(sim: &SimControl) -> Vec<u64> {
    sim.subscriptions().iter().map(|c| c.conn).collect()
}

/// One connection, not among `old`, holding `n` instruments.
fn replaced(sim: &SimControl, old: &[u64], n: usize) -> bool {
    let subs = sim.subscriptions();
    subs.len() == 1 && !old.contains(&subs[0].conn) && subs[0].instruments.len() == n
}

/// Each instrument the new connection holds was subscribed on it once.
fn subscribed_once(sim: &SimControl) {
    let conn = sim.subscriptions()[0].clone();
    let mut sent: Vec<InstrumentKey> = sim
        .requests()
        .into_iter()
        .filter(|q| q.conn == conn.conn && q.code != RequestCode::Disconnect)
        .flat_map(|q| q.instruments)
        .collect();
    sent.sort();
    let held: Vec<InstrumentKey> = conn.instruments.keys().copied().collect();
    assert_eq!(
        sent, held,
        "every instrument exactly once on the new connection"
    );
}

fn token_status(addr: SocketAddr) -> Value {
    get_json(addr, "/stats")["token"].clone()
}

/// Reads the client's ticker updates of `key` for `window`, returning when
/// each arrived and the status messages seen.
fn watch(
    client: &mut WsClient,
    key: InstrumentKey,
    window: Duration,
) -> (Vec<Instant>, Vec<Value>) {
    let end = Instant::now() + window;
    let (mut times, mut status) = (Vec::new(), Vec::new());
    while Instant::now() < end {
        let v = client.recv();
        match v["type"].as_str() {
            Some("ticker") if v["securityId"] == key.security_id.to_string() => {
                times.push(Instant::now())
            }
            Some("status") => status.push(v),
            _ => {}
        }
    }
    (times, status)
}

fn largest_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

#[test]
fn a_rewritten_credentials_file_moves_the_upstream_to_the_new_token() {
    let d = dir("file");
    let file = d.join("credentials.env");
    write_creds(&file, "token-one");
    let sim = sim(400);
    let ctl = sim.control();
    let engine = engine(&sim, &file, "");
    let addr = engine.addr();
    wait_up(&ctl);
    let mut client = WsClient::connect(addr, "/ws");
    client.subscribe(RELIANCE, "ticker");
    client.recv_where(|v| v["type"] == "ticker");
    let held = WATCHLIST;
    let old = conn_ids(&ctl);
    assert_eq!(
        token_status(addr)["source"],
        format!("file {}", file.display())
    );

    // Watch the client around the change: a second before, three after.
    let watcher = std::thread::spawn(move || {
        let seen = watch(&mut client, RELIANCE, Duration::from_secs(4));
        (client, seen)
    });
    std::thread::sleep(Duration::from_secs(1));
    let changed = Instant::now();
    write_creds(&file, "token-two-longer");
    wait_or(
        "the relay on a new connection",
        || replaced(&ctl, &old, held),
        || format!("{:?}", ctl.subscriptions()),
    );
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    subscribed_once(&ctl);
    let (mut client, (times, status)) = watcher.join().unwrap();
    let gap = largest_gap(&times);
    eprintln!(
        "rotation by file: new connection in {took:?}; client-visible largest gap between \
         updates {gap:?} over {} updates",
        times.len()
    );
    assert!(gap < Duration::from_secs(1), "{gap:?}");
    assert!(
        status.iter().any(|s| s["message"]
            .as_str()
            .unwrap()
            .contains("new DhanHQ access token")),
        "{status:?}"
    );
    // The client's subscription survived: data still flows.
    client.recv_where(|v| v["type"] == "ticker" && v["securityId"] == "2885");
    // The old token is not used again: refusing it changes nothing.
    ctl.expire_token("token-one");
    let now = conn_ids(&ctl);
    ctl.drop_connections();
    wait_for("a reconnect on the new token", || {
        replaced(&ctl, &now, held)
    });
    let t = token_status(addr);
    assert_eq!(t["rotations"], 1, "{t}");
    assert_eq!(t["lastError"], Value::Null, "{t}");
}

#[test]
fn a_broken_credentials_file_keeps_the_old_token_and_says_so() {
    let d = dir("broken");
    let file = d.join("credentials.env");
    write_creds(&file, "token-one");
    let sim = sim(100);
    let ctl = sim.control();
    let engine = engine(&sim, &file, "");
    let addr = engine.addr();
    wait_up(&ctl);
    let old = conn_ids(&ctl);
    for (broken, want) in [
        (
            "DHAN_CLIENT_ID=1100003626\n",
            "DHAN_ACCESS_TOKEN (or DHAN_AUTH_TOKEN) is missing",
        ),
        ("", "is empty"),
        ("DHAN_CLIENT_ID=1\nDHAN_ACCESS_TOKEN=\"unclosed\n", "line 2"),
    ] {
        std::fs::write(&file, broken).unwrap();
        wait_or(
            "the error in /health",
            || {
                let h = get_json(addr, "/health");
                h["token"]["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains(want))
                    && h["status"] == "degraded"
            },
            || get_json(addr, "/health").to_string(),
        );
        let h = get_json(addr, "/health").to_string();
        assert!(!h.contains("unclosed") && !h.contains("token-one"), "{h}");
    }
    std::fs::remove_file(&file).unwrap();
    wait_for("the missing file reported", || {
        token_status(addr)["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("No such file"))
    });
    assert_eq!(conn_ids(&ctl), old, "still on the old connection and token");
    write_creds(&file, "token-one");
    wait_for("the error cleared", || {
        token_status(addr)["lastError"].is_null()
    });
    assert_eq!(conn_ids(&ctl), old, "the same token: nothing to do");
    assert_eq!(get_json(addr, "/health")["status"], "ok");
}

#[test]
fn the_admin_call_rotates_and_is_persisted() {
    let d = dir("admin");
    let file = d.join("credentials.env");
    write_creds(&file, "token-one");
    let sim = sim(100);
    let ctl = sim.control();
    let engine = engine(&sim, &file, "");
    let addr = engine.addr();
    wait_up(&ctl);
    let held = WATCHLIST;
    let old = conn_ids(&ctl);
    let post = |body: &str| {
        exchange(
            addr,
            &format!(
                "POST /api/admin/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let bad = post(r#"{"clientId":"1100003626"}"#);
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("accessToken is missing"),
        "{}",
        bad.text()
    );
    let r = post(r#"{"clientId":"1100003626","accessToken":"admin-token"}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(!r.text().contains("admin-token"));
    wait_for("the relay on a new connection", || {
        replaced(&ctl, &old, held)
    });
    subscribed_once(&ctl);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# test\n"),
        "the file's other lines stay: {text}"
    );
    assert!(text.contains("DHAN_ACCESS_TOKEN=admin-token\n"), "{text}");
    assert_eq!(token_status(addr)["source"], "admin");
    // The write-back is not mistaken for a new token.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(token_status(addr)["rotations"], 1);
    // A body on a GET endpoint, or without a length, is refused.
    let r = exchange(
        addr,
        "POST /api/admin/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 411);
    let r = exchange(
        addr,
        "POST /prices HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(r.status, 413);
}

// ---------------------------------------------------------------------------
// The real binary: working directory, SIGHUP, the process id.

struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Relay {
    /// Starts `dhan-relay run` in `cwd` with `args`; waits for its address
    /// on the first stdout line.
    fn start(cwd: &Path, args: &[&str]) -> Relay {
        Relay::start_with(cwd, args, &[])
    }

    /// [`Relay::start`] with extra environment variables.
    fn start_with(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Relay {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
            .current_dir(cwd)
            .args(["run", "--listen", &listen, "--log-level", "info"])
            .args(args)
            .env_remove("DHAN_CLIENT_ID")
            .env_remove("DHAN_ACCESS_TOKEN")
            .env_remove("DHAN_AUTH_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let addr: SocketAddr = listen.parse().unwrap();
        wait_for("the relay listening", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Relay { child, addr }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0);
    }

    /// Stops it and returns what it logged.
    fn stop(self) -> String {
        self.signal(libc::SIGTERM);
        self.stop_wait()
    }

    /// Waits for it to end (already signalled) and returns what it logged.
    fn stop_wait(self) -> String {
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn a_dotenv_with_the_old_key_name_is_used_and_sighup_rereads_it() {
    let d = dir("dotenv");
    std::fs::write(
        d.join(".env"),
        "DHAN_CLIENT_ID=1100003626\nDHAN_AUTH_TOKEN=dotenv-token-a\n",
    )
    .unwrap();
    let sim = sim(100);
    let ctl = sim.control();
    let relay = Relay::start(&d, &["--feed-url", &sim.feed_url()]);
    let pid = relay.child.id();
    wait_up(&ctl);
    let t = token_status(relay.addr);
    assert!(t["source"].as_str().unwrap().starts_with(".env"), "{t}");
    let old = conn_ids(&ctl);
    let held = WATCHLIST;

    // Same length, same inode, same modification time: only SIGHUP can
    // tell the file changed.
    let path = d.join(".env");
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(b"DHAN_CLIENT_ID=1100003626\nDHAN_AUTH_TOKEN=dotenv-token-b\n")
            .unwrap();
        f.set_modified(modified).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(conn_ids(&ctl), old, "no change seen without the signal");
    relay.signal(libc::SIGHUP);
    wait_for("the relay on a new connection", || {
        replaced(&ctl, &old, held)
    });
    subscribed_once(&ctl);
    assert_eq!(relay.child.id(), pid);
    assert_eq!(token_status(relay.addr)["rotations"], 1);
    let log = relay.stop();
    assert!(log.contains(".env in the working directory"), "{log}");
    assert!(log.contains("SIGHUP"), "{log}");
    for secret in ["dotenv-token-a", "dotenv-token-b", "1100003626"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn check_config_validates_without_starting() {
    let d = dir("check");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
            .current_dir(&d)
            .arg("check-config")
            .args(args)
            .env_remove("DHAN_CLIENT_ID")
            .env_remove("DHAN_ACCESS_TOKEN")
            .env_remove("DHAN_AUTH_TOKEN")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("DEMO MODE"), "{text}");
    let creds = d.join("c.env");
    std::fs::write(
        &creds,
        "DHAN_CLIENT_ID=42\nDHAN_ACCESS_TOKEN=abc\nDHAN_AUTH_TOKEN=def\n",
    )
    .unwrap();
    let (code, text) = run(&["--env-file", creds.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("DHAN_ACCESS_TOKEN and DHAN_AUTH_TOKEN are both set and differ"));
    write_creds(&creds, "abc");
    let config = d.join("relay.toml");
    std::fs::write(
        &config,
        "[credentials]\nrenew = \"dhan\"\nrenew_before_secs = 600\n",
    )
    .unwrap();
    let (code, text) = run(&[
        "--env-file",
        creds.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("renewal: dhan") && text.contains("not a JWT"),
        "{text}"
    );
    assert!(
        !text.contains("abc") && !text.contains("1100003626"),
        "{text}"
    );
    std::fs::write(&config, "[credentials]\nrenew = \"totp\"\n").unwrap();
    let (code, text) = run(&[
        "--env-file",
        creds.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("needs DHAN_PIN and DHAN_TOTP_SECRET"),
        "{text}"
    );
}

#[test]
fn under_systemd_it_says_ready_pings_the_watchdog_and_says_stopping() {
    use std::os::unix::net::UnixDatagram;
    let d = dir("notify");
    let socket_path = d.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let relay = Relay::start_with(
        &d,
        &["--demo-rate", "50"],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("listening on {}", relay.addr)),
        "{ready}"
    );
    for _ in 0..2 {
        assert_eq!(next(), "WATCHDOG=1", "pings at half the 2 s interval");
    }
    relay.signal(libc::SIGTERM);
    let mut seen = Vec::new();
    loop {
        let m = next();
        if m.starts_with("STOPPING=1") {
            break;
        }
        seen.push(m);
        assert!(seen.len() < 5, "no STOPPING=1: {seen:?}");
    }
    let log = relay.stop_wait();
    assert!(log.contains("stopped"), "{log}");
}

// ---------------------------------------------------------------------------
// Renewal against the simulator's token endpoints.

/// A simulator that accepts only the tokens it issued, with one TOTP
/// account (PIN 4321).
fn strict_sim() -> Simulator {
    Simulator::start(SimConfig {
        ticks_per_sec: 100,
        accept_any_token: false,
        totp_accounts: vec![SimTotpAccount {
            client_id: CLIENT.into(),
            pin: PIN.into(),
            secret_base32: TOTP_SECRET.into(),
        }],
        ..SimConfig::default()
    })
    .expect("simulator starts")
}

const CLIENT: &str = "1100003626";
const PIN: &str = "4321";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";

fn read_token(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("DHAN_ACCESS_TOKEN="))
        .unwrap()
        .to_string()
}

#[test]
fn renew_dhan_replaces_the_token_before_it_expires() {
    let d = dir("renew-dhan");
    let sim = strict_sim();
    let ctl = sim.control();
    let first = ctl.issue_token(CLIENT, Duration::from_secs(60));
    let file = d.join("credentials.env");
    write_creds(&file, &first);
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        feed_url: Some(sim.feed_url()),
        env_file: Some(file.clone()),
        rest_url: Some(sim.rest_url()),
        ..Flags::default()
    };
    let toml = "[credentials]\nrenew = \"dhan\"\nrenew_before_secs = 55\n";
    let config = RunConfig::build(
        &flags,
        Some((Path::new("renew.toml"), toml)),
        &CredentialSources::none(),
    )
    .unwrap();
    let engine = Engine::start(config).unwrap();
    let addr = engine.addr();
    wait_up(&ctl);
    let t = token_status(addr);
    assert_eq!(t["state"], "expiring", "{t}");
    assert!(t["secondsLeft"].as_i64().unwrap() <= 61, "{t}");
    let held = WATCHLIST;
    let old = conn_ids(&ctl);
    // Due 5 s after the token was issued.
    let started = Instant::now();
    wait_or(
        "a renewed token in use",
        || token_status(addr)["renewals"] == 1 && replaced(&ctl, &old, held),
        || format!("{} {:?}", token_status(addr), ctl.subscriptions()),
    );
    eprintln!(
        "renewed and reconnected {:?} after start",
        started.elapsed()
    );
    let second = read_token(&file);
    assert_ne!(second, first, "the renewed token is written back");
    assert!(ctl.token_valid(&second) && !ctl.token_valid(&first));
    let t = token_status(addr);
    assert_eq!(t["source"], "renewal", "{t}");
    assert!(
        t["secondsLeft"].as_i64().unwrap() > 60,
        "a fresh lifetime: {t}"
    );
    assert!(t["nextRenewalAt"].is_string(), "{t}");
    let h = get_json(addr, "/health").to_string();
    assert!(!h.contains(&first) && !h.contains(&second));
}

#[test]
fn renew_totp_after_an_807_gets_a_new_token_within_seconds() {
    let d = dir("renew-totp");
    let sim = strict_sim();
    let ctl = sim.control();
    let first = ctl.issue_token(CLIENT, Duration::from_secs(3600));
    let file = d.join("credentials.env");
    std::fs::write(
        &file,
        format!(
            "DHAN_CLIENT_ID={CLIENT}\nDHAN_ACCESS_TOKEN={first}\nDHAN_PIN={PIN}\nDHAN_TOTP_SECRET={TOTP_SECRET}\n"
        ),
    )
    .unwrap();
    let config = d.join("relay.toml");
    std::fs::write(&config, "[credentials]\nrenew = \"totp\"\n").unwrap();
    let relay = Relay::start(
        &d,
        &[
            "--feed-url",
            &sim.feed_url(),
            "--env-file",
            file.to_str().unwrap(),
            "--auth-url",
            &sim.rest_url(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    wait_up(&ctl);
    let old = conn_ids(&ctl);
    let held = WATCHLIST;
    let refused = Instant::now();
    ctl.revoke_token(&first);
    wait_or(
        "a generated token in use",
        || replaced(&ctl, &old, held),
        || format!("{} {:?}", token_status(relay.addr), ctl.subscriptions()),
    );
    let took = refused.elapsed();
    eprintln!("807 → new token → resubscribed in {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let second = read_token(&file);
    assert_ne!(second, first);
    assert!(ctl.token_valid(&second));
    assert_eq!(token_status(relay.addr)["renewals"], 1);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!("DHAN_PIN={PIN}\n")),
        "the rest kept: {text}"
    );
    let log = relay.stop();
    assert!(log.contains("DhanHQ refused the access token"), "{log}");
    for secret in [PIN, TOTP_SECRET, &first, &second, CLIENT] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
}
