//! The network thread against the real simulator over real sockets on
//! 127.0.0.1: values, subscriptions, reconnects, dead sockets, auth
//! failures, sharding, bad packets, shutdown, name lookups off the thread,
//! and capacity.

mod common;
use common::wait_for;

use std::time::{Duration, Instant};

use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::sim::{SimConfig, SimControl, SimTls, Simulator};
use dhan_relay::tick::Tick;
use dhan_relay::upstream::{
    BackoffConfig, Command, Credentials, SlotState, SpawnError, Upstream, UpstreamConfig,
    UpstreamStats,
};
use dhan_relay::wire::feed::{DepthLevel, FeedData, FeedMessage, Full, Quote, Ticker};
use dhan_relay::wire::request::RequestCode;
use dhan_relay::wire::DisconnectReason;
use ringbuf::traits::{Consumer, Split};
use ringbuf::{HeapCons, HeapRb};

struct Rig {
    sim: Simulator,
    ctl: SimControl,
    up: Upstream,
    ticks: HeapCons<Tick>,
}

fn sim_config() -> SimConfig {
    SimConfig {
        ticks_per_sec: 0,
        ..SimConfig::default()
    }
}

fn quick_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(300),
        auth_failure: Duration::from_secs(60),
    }
}

fn rig_with(sim_cfg: SimConfig, tweak: impl FnOnce(&mut UpstreamConfig)) -> Rig {
    let sim = Simulator::start(sim_cfg).expect("simulator starts");
    let ctl = sim.control();
    let mut cfg = UpstreamConfig {
        feed_url: sim.feed_url(),
        credentials: Credentials::new("1100003626", "test-token-secret"),
        backoff: quick_backoff(),
        ..UpstreamConfig::default()
    };
    if let Some(pem) = sim.ca_pem() {
        let dir = std::env::temp_dir().join(format!("dhan-relay-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.pem", sim.addr().port()));
        std::fs::write(&path, pem).unwrap();
        cfg.extra_ca = dhan_relay::upstream::load_ca_file(&path).unwrap();
    }
    tweak(&mut cfg);
    let (prod, cons) = HeapRb::<Tick>::new(4096).split();
    let up = Upstream::spawn(cfg, prod, None).expect("upstream starts");
    Rig {
        sim,
        ctl,
        up,
        ticks: cons,
    }
}

fn rig() -> Rig {
    rig_with(sim_config(), |_| {})
}

fn nse(id: u32) -> InstrumentKey {
    InstrumentKey::new(Segment::NseEq, id)
}

impl Rig {
    fn subscribe(&self, keys: &[InstrumentKey], mode: Mode) {
        let items = keys.iter().map(|k| (*k, mode)).collect();
        assert!(self.up.control().send(Command::Subscribe(items)));
    }

    fn sim_holds(&self) -> Vec<(InstrumentKey, Mode)> {
        self.ctl
            .subscriptions()
            .into_iter()
            .flat_map(|c| c.instruments.into_iter())
            .collect()
    }

    fn wait_subscribed(&self, keys: &[InstrumentKey], mode: Mode) {
        wait_for("the simulator to hold the subscription", || {
            let held = self.sim_holds();
            keys.iter().all(|k| held.contains(&(*k, mode)))
        });
    }

    /// Data ticks (market status and prev close set aside) until `n` arrive.
    fn next_data(&mut self, n: usize) -> Vec<Tick> {
        let mut got = Vec::new();
        wait_for("ticks", || {
            while let Some(t) = self.ticks.try_pop() {
                if !matches!(t.data, FeedData::MarketStatus | FeedData::PrevClose(_)) {
                    got.push(t);
                }
            }
            got.len() >= n
        });
        got
    }

    fn stats(&self) -> std::sync::Arc<UpstreamStats> {
        self.up.stats()
    }
}

fn full_sample() -> Full {
    Full {
        quote: Quote {
            ltp: 1465.4,
            ltq: 10,
            ltt: 1_729_412_345,
            avg_price: 1460.05,
            volume: 1_000_000,
            total_sell_qty: 5,
            total_buy_qty: 6,
            open: 1450.0,
            close: 1440.5,
            high: 1470.0,
            low: 1449.95,
        },
        oi: 7,
        oi_day_high: 8,
        oi_day_low: 6,
        depth: std::array::from_fn(|i| DepthLevel {
            bid_qty: 100 + i as u32,
            ask_qty: 200 + i as u32,
            bid_orders: 1,
            ask_orders: 2,
            bid_price: 1465.35 - i as f32 * 0.05,
            ask_price: 1465.45 + i as f32 * 0.05,
        }),
    }
}

fn values_arrive_exactly(mut r: Rig) {
    let key = nse(2885);
    r.subscribe(&[key], Mode::Full);
    r.wait_subscribed(&[key], Mode::Full);
    let sent = [
        FeedData::Ticker(Ticker {
            ltp: 1465.4,
            ltt: 1_729_412_345,
        }),
        FeedData::Quote(full_sample().quote),
        FeedData::Full(full_sample()),
    ];
    for data in sent {
        r.ctl.inject(&FeedMessage::Data(key, data));
    }
    let got = r.next_data(3);
    let got: Vec<_> = got.iter().map(|t| (t.key, t.data)).collect();
    assert_eq!(got, sent.map(|d| (key, d)).to_vec());
}

#[test]
fn ticks_arrive_with_the_values_sent_over_ws() {
    values_arrive_exactly(rig());
}

#[test]
fn ticks_arrive_with_the_values_sent_over_wss() {
    let r = rig_with(
        SimConfig {
            tls: SimTls::SelfSigned,
            ..sim_config()
        },
        |_| {},
    );
    assert!(r.sim.feed_url().starts_with("wss://"));
    values_arrive_exactly(r);
}

#[test]
fn wss_without_the_ca_is_refused_and_retried() {
    let r = rig_with(
        SimConfig {
            tls: SimTls::SelfSigned,
            ..sim_config()
        },
        |cfg| cfg.extra_ca.clear(),
    );
    let stats = r.stats();
    wait_for("two failed attempts", || stats.connect_attempts.get() >= 2);
    assert_eq!(stats.connects.get(), 0);
    let err = stats.last_error().unwrap();
    assert!(
        err.contains("handshake") || err.contains("certificate"),
        "{err}"
    );
}

#[test]
fn subscribe_mode_change_and_unsubscribe_reach_the_simulator() {
    let r = rig();
    let (a, b) = (nse(1), nse(2));
    r.subscribe(&[a, b], Mode::Ticker);
    r.wait_subscribed(&[a, b], Mode::Ticker);
    r.subscribe(&[a], Mode::Full);
    r.wait_subscribed(&[a], Mode::Full);
    assert!(r.sim_holds().contains(&(b, Mode::Ticker)));
    assert!(r.up.control().send(Command::Unsubscribe(vec![b])));
    wait_for("b to be unsubscribed", || {
        r.sim_holds() == vec![(a, Mode::Full)]
    });
    let codes: Vec<_> = r.ctl.requests().iter().map(|q| q.code).collect();
    assert_eq!(
        codes,
        vec![
            RequestCode::SubscribeTicker,
            RequestCode::UnsubscribeTicker,
            RequestCode::SubscribeFull,
            RequestCode::UnsubscribeTicker,
        ]
    );
}

#[test]
fn a_dropped_connection_reconnects_and_resubscribes_once() {
    let mut r = rig();
    let keys: Vec<_> = (0..250).map(nse).collect();
    r.subscribe(&keys, Mode::Quote);
    r.wait_subscribed(&keys, Mode::Quote);
    let first_conn = r.ctl.subscriptions()[0].conn;
    let started = Instant::now();
    r.ctl.drop_connections();
    wait_for("a new connection holding everything", || {
        let subs = r.ctl.subscriptions();
        subs.len() == 1 && subs[0].conn != first_conn && subs[0].instruments.len() == 250
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    let new_conn = r.ctl.subscriptions()[0].conn;
    let resent: Vec<_> = r
        .ctl
        .requests()
        .into_iter()
        .filter(|q| q.conn == new_conn)
        .collect();
    assert_eq!(resent.len(), 3, "250 instruments in batches of 100");
    let mut ids: Vec<_> = resent.iter().flat_map(|q| q.instruments.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250, "each instrument exactly once");
    assert!(resent.iter().all(|q| q.code == RequestCode::SubscribeQuote));
    assert!(resent.iter().all(|q| q.instruments.len() <= 100));
    // And data flows again.
    r.ctl.inject(&FeedMessage::Data(
        keys[7],
        FeedData::Ticker(Ticker { ltp: 9.5, ltt: 1 }),
    ));
    let got = r.next_data(1);
    assert_eq!(got[0].key, keys[7]);
    assert!(r.stats().disconnects.get() >= 1);
}

/// The requests the simulator logged from connection `conn`.
fn requests_of(r: &Rig, conn: u64) -> Vec<dhan_relay::sim::LoggedRequest> {
    r.ctl
        .requests()
        .into_iter()
        .filter(|q| q.conn == conn)
        .collect()
}

/// Each of `keys` subscribed exactly once, in batches of at most 100.
fn each_once(requests: &[dhan_relay::sim::LoggedRequest], keys: &[InstrumentKey]) {
    let subs: Vec<_> = requests
        .iter()
        .filter(|q| q.code == RequestCode::SubscribeQuote)
        .collect();
    let mut ids: Vec<_> = subs.iter().flat_map(|q| q.instruments.clone()).collect();
    assert_eq!(ids.len(), keys.len(), "no instrument twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), keys.len(), "every instrument");
    assert!(subs.iter().all(|q| q.instruments.len() <= 100));
}

#[test]
fn new_credentials_replace_the_connection_before_closing_it() {
    let mut r = rig();
    let keys: Vec<_> = (0..250).map(nse).collect();
    r.subscribe(&keys, Mode::Quote);
    r.wait_subscribed(&keys, Mode::Quote);
    let old = r.ctl.subscriptions()[0].conn;
    assert!(r.up.control().send(Command::Credentials(Credentials::new(
        "1100003626",
        "rotated-token"
    ))));
    wait_for("one new connection holding everything", || {
        let subs = r.ctl.subscriptions();
        subs.len() == 1 && subs[0].conn != old && subs[0].instruments.len() == 250
    });
    let new = r.ctl.subscriptions()[0].conn;
    each_once(&requests_of(&r, new), &keys);
    // Make before break: the new connection was subscribed before the old
    // one said goodbye.
    let log = r.ctl.requests();
    let first_new = log.iter().position(|q| q.conn == new).unwrap();
    let goodbye = log
        .iter()
        .position(|q| q.conn == old && q.code == RequestCode::Disconnect)
        .expect("the old connection sends RequestCode 12");
    assert!(
        first_new < goodbye,
        "new subscribed at {first_new}, old closed at {goodbye}"
    );
    let stats = r.stats();
    wait_for("the rotation counted", || stats.rotations.get() == 1);
    assert_eq!(stats.slot_states()[0], SlotState::Up);
    assert_eq!(stats.connections_up(), 1, "the spare slot is free again");
    // The old token is not used again: refusing it changes nothing.
    r.ctl.expire_token("test-token-secret");
    r.ctl.drop_connections();
    wait_for("a reconnect on the new token", || {
        let subs = r.ctl.subscriptions();
        subs.len() == 1 && subs[0].conn != new && subs[0].instruments.len() == 250
    });
    assert_eq!(stats.auth_failures.get(), 0);
    r.ctl.inject(&FeedMessage::Data(
        keys[3],
        FeedData::Ticker(Ticker { ltp: 1.5, ltt: 1 }),
    ));
    assert_eq!(r.next_data(1)[0].key, keys[3]);
}

#[test]
fn with_no_free_slot_the_connection_is_replaced_in_place() {
    let r = rig_with(sim_config(), |cfg| cfg.max_connections = 1);
    let keys: Vec<_> = (0..150).map(nse).collect();
    r.subscribe(&keys, Mode::Quote);
    r.wait_subscribed(&keys, Mode::Quote);
    let old = r.ctl.subscriptions()[0].conn;
    assert!(r
        .up
        .control()
        .send(Command::Credentials(Credentials::new("1100003626", "t2"))));
    wait_for("the connection replaced", || {
        let subs = r.ctl.subscriptions();
        subs.len() == 1 && subs[0].conn != old && subs[0].instruments.len() == 150
    });
    each_once(&requests_of(&r, r.ctl.subscriptions()[0].conn), &keys);
    let stats = r.stats();
    wait_for("the rotation counted", || stats.rotations.get() == 1);
}

#[test]
fn new_credentials_after_an_807_connect_at_once() {
    let r = rig();
    let key = nse(9);
    r.subscribe(&[key], Mode::Quote);
    r.wait_subscribed(&[key], Mode::Quote);
    let stats = r.stats();
    r.ctl.expire_token("test-token-secret");
    r.ctl.drop_connections();
    wait_for("the 807", || {
        stats.slot_states()[0] == SlotState::AuthFailed
    });
    let started = Instant::now();
    assert!(r.up.control().send(Command::Credentials(Credentials::new(
        "1100003626",
        "fresh"
    ))));
    r.wait_subscribed(&[key], Mode::Quote);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not after the 60 s auth backoff: {:?}",
        started.elapsed()
    );
    wait_for("the rotation counted", || stats.rotations.get() == 1);
}

#[test]
fn a_stalled_socket_is_detected_and_replaced() {
    let r = rig_with(sim_config(), |cfg| {
        cfg.silence_timeout = Duration::from_millis(800)
    });
    let key = nse(5);
    r.subscribe(&[key], Mode::Ticker);
    r.wait_subscribed(&[key], Mode::Ticker);
    let stats = r.stats();
    r.ctl.set_stalled(true);
    wait_for("the silent socket to be dropped", || {
        stats.silent_drops.get() >= 1
    });
    r.ctl.set_stalled(false);
    wait_for("a fresh connection", || {
        stats.connects.get() >= 2 && stats.connections_up() == 1
    });
    r.wait_subscribed(&[key], Mode::Ticker);
}

#[test]
fn an_expired_token_backs_off_instead_of_looping() {
    let r = rig();
    let stats = r.stats();
    wait_for("first connection", || stats.connections_up() == 1);
    r.ctl.expire_token("test-token-secret");
    r.ctl.drop_connections();
    wait_for("the 807", || {
        stats.last_disconnect() == Some(DisconnectReason::TokenExpired)
    });
    let attempts = stats.connect_attempts.get();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        stats.connect_attempts.get(),
        attempts,
        "no retry within the auth backoff"
    );
    assert_eq!(stats.slot_states()[0], SlotState::AuthFailed);
    assert_eq!(stats.auth_failures.get(), 1);
    assert_eq!(
        UpstreamStats::get(&stats.disconnect_reasons[2]),
        1,
        "807 by name"
    );
    let err = stats.last_error().unwrap();
    assert!(
        err.contains("807") && err.contains("DHAN_ACCESS_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("test-token-secret"));
}

#[test]
fn six_thousand_instruments_use_two_connections() {
    let mut r = rig_with(sim_config(), |cfg| cfg.max_per_connection = 5000);
    let keys: Vec<_> = (0..6000)
        .map(|i| InstrumentKey::new(Segment::NseFno, i))
        .collect();
    r.subscribe(&keys, Mode::Ticker);
    wait_for("two connections holding 5000 + 1000", || {
        // 6,000 prev-close packets arrive: keep the ring drained.
        while r.ticks.try_pop().is_some() {}
        let mut sizes: Vec<_> = r
            .ctl
            .subscriptions()
            .iter()
            .map(|c| c.instruments.len())
            .collect();
        sizes.sort();
        sizes == vec![1000, 5000]
    });
    assert!(r.ctl.requests().iter().all(|q| q.instruments.len() <= 100));
    assert_eq!(r.stats().connections_up(), 2);
}

#[test]
fn malformed_packets_are_counted_and_good_ones_after_them_arrive() {
    let mut r = rig();
    let key = nse(77);
    r.subscribe(&[key], Mode::Ticker);
    r.wait_subscribed(&[key], Mode::Ticker);
    let mut frame = vec![99, 12, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]; // unknown code
    frame.extend_from_slice(&[4, 10, 0, 1, 77, 0, 0, 0, 0, 0]); // quote too short
    FeedMessage::Data(key, FeedData::Ticker(Ticker { ltp: 3.25, ltt: 4 })).encode(&mut frame);
    r.ctl.send_raw(frame);
    let got = r.next_data(1);
    assert_eq!(got[0].data, FeedData::Ticker(Ticker { ltp: 3.25, ltt: 4 }));
    let stats = r.stats();
    assert_eq!(
        UpstreamStats::get(&stats.decode_errors[4]),
        1,
        "unknown_code"
    );
    assert_eq!(UpstreamStats::get(&stats.decode_errors[5]), 1, "too_short");
    assert_eq!(
        stats.connections_up(),
        1,
        "bad packets do not cost the connection"
    );
}

#[test]
fn shutdown_sends_request_code_12() {
    let r = rig();
    let stats = r.stats();
    wait_for("connection", || stats.connections_up() == 1);
    let Rig { sim, ctl, up, .. } = r;
    up.shutdown();
    wait_for("the disconnect request", || {
        ctl.requests()
            .iter()
            .any(|q| q.code == RequestCode::Disconnect)
    });
    drop(sim);
}

#[test]
fn a_full_ring_waits_and_loses_nothing() {
    let sim = Simulator::start(sim_config()).unwrap();
    let ctl = sim.control();
    let (prod, mut cons) = HeapRb::<Tick>::new(8).split();
    let up = Upstream::spawn(
        UpstreamConfig {
            feed_url: sim.feed_url(),
            credentials: Credentials::new("c", "t"),
            ..UpstreamConfig::default()
        },
        prod,
        None,
    )
    .unwrap();
    let key = nse(42);
    up.control()
        .send(Command::Subscribe(vec![(key, Mode::Ticker)]));
    wait_for("subscription", || {
        ctl.subscriptions()
            .iter()
            .any(|c| c.instruments.contains_key(&key))
    });
    for i in 0..200u32 {
        ctl.inject(&FeedMessage::Data(
            key,
            FeedData::Ticker(Ticker {
                ltp: i as f32,
                ltt: i,
            }),
        ));
    }
    let mut got = Vec::new();
    wait_for("all 200 ticks through an 8-slot ring", || {
        // A slow consumer: a few at a time.
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..4 {
            if let Some(t) = cons.try_pop() {
                if let FeedData::Ticker(tk) = t.data {
                    got.push(tk.ltt);
                }
            }
        }
        got.len() >= 200
    });
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "in order, none lost");
    assert!(up.stats().ring_full_waits.get() > 0);
    up.shutdown();
}

mod logs {
    //! Every log line the relay would print, captured for assertions. One
    //! logger per process: every test that reads lines installs this one,
    //! and picks its own lines out by content (tests run in parallel).
    use std::sync::Mutex;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            // Exactly what the relay's own logger would print.
            if dhan_relay::logging::admits(record.metadata()) {
                LINES.lock().unwrap().push(record.args().to_string());
            }
        }
        fn flush(&self) {}
    }
    static CAPTURE: Capture = Capture;

    /// Starts capturing (again is harmless).
    pub fn install() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
    }

    /// The lines so far that contain `needle`.
    pub fn lines_with(needle: &str) -> Vec<String> {
        let lines = LINES.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Every line so far.
    pub fn all() -> Vec<String> {
        LINES.lock().unwrap().clone()
    }
}

mod secrets {
    //! Every log line the network thread writes, checked for the secrets.
    use super::*;

    #[test]
    fn credentials_never_reach_a_log_line_or_an_error() {
        logs::install();
        // A failed TLS handshake, a successful connect, an 807, a redacted text frame.
        let r = rig_with(
            SimConfig {
                tls: SimTls::SelfSigned,
                ..sim_config()
            },
            |_| {},
        );
        let stats = r.stats();
        wait_for("connection", || stats.connections_up() == 1);
        r.ctl.expire_token("test-token-secret");
        r.ctl.drop_connections();
        wait_for("807", || stats.last_disconnect().is_some());
        let bad_tls = rig_with(
            SimConfig {
                tls: SimTls::SelfSigned,
                ..sim_config()
            },
            |cfg| cfg.extra_ca.clear(),
        );
        wait_for("a failed handshake", || {
            bad_tls.stats().last_error().is_some()
        });
        let lines = logs::all();
        assert!(
            lines.iter().any(|l| l.contains("connected to")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.contains("807")), "{lines:?}");
        let errors = [stats.last_error(), bad_tls.stats().last_error()];
        for text in lines.iter().chain(errors.iter().flatten()) {
            assert!(
                !text.contains("test-token-secret") && !text.contains("1100003626"),
                "secret leaked: {text}"
            );
        }
    }
}

mod dns {
    //! Name lookups run off the network thread: a stuck one holds up only
    //! its own slot.
    use super::*;
    use dhan_relay::upstream::Resolver;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    /// Answers 127.0.0.1 for `feed.test`; while the gate is shut, a lookup
    /// hangs until the test opens it (or 20 s pass, so a failed test cannot
    /// leave a thread behind for ever).
    #[derive(Debug)]
    struct GatedDns {
        shut: AtomicBool,
        started: AtomicUsize,
        finished: AtomicUsize,
    }

    impl GatedDns {
        fn new(shut: bool) -> Arc<Self> {
            Arc::new(GatedDns {
                shut: AtomicBool::new(shut),
                started: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
            })
        }
        fn started(&self) -> usize {
            self.started.load(SeqCst)
        }
        fn finished(&self) -> usize {
            self.finished.load(SeqCst)
        }
    }

    impl Resolver for GatedDns {
        fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            self.started.fetch_add(1, SeqCst);
            let give_up = Instant::now() + Duration::from_secs(20);
            while self.shut.load(SeqCst) && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.finished.fetch_add(1, SeqCst);
            if host != "feed.test" {
                return Err(std::io::Error::other(format!(
                    "unexpected lookup of {host}"
                )));
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        }
    }

    /// Points the rig at the simulator by name, looked up through `dns`.
    fn by_name(cfg: &mut UpstreamConfig, dns: &Arc<GatedDns>) {
        let port = cfg.feed_url.rsplit(':').next().unwrap().to_string();
        cfg.feed_url = format!("ws://feed.test:{port}");
        cfg.resolver = dns.clone();
    }

    #[test]
    fn a_stuck_lookup_does_not_stall_a_connected_slot() {
        let dns = GatedDns::new(false);
        let mut r = rig_with(sim_config(), |cfg| {
            by_name(cfg, &dns);
            cfg.max_per_connection = 1;
        });
        let (a, b) = (nse(11), nse(12));
        r.subscribe(&[a], Mode::Ticker);
        r.wait_subscribed(&[a], Mode::Ticker);
        assert_eq!(dns.finished(), 1, "slot 0 found the feed by name");

        dns.shut.store(true, SeqCst);
        r.subscribe(&[b], Mode::Ticker); // needs slot 1, whose lookup hangs
        let stats = r.stats();
        wait_for("slot 1's lookup to hang", || {
            dns.started() == 2 && stats.slot_states()[1] == SlotState::Resolving
        });
        // Meanwhile slot 0's ticks arrive and commands are applied.
        r.ctl.inject(&FeedMessage::Data(
            a,
            FeedData::Ticker(Ticker { ltp: 1.5, ltt: 2 }),
        ));
        assert_eq!(r.next_data(1)[0].key, a);
        r.subscribe(&[a], Mode::Full);
        r.wait_subscribed(&[a], Mode::Full);
        assert_eq!(dns.finished(), 1, "all of that while the lookup hung");
        assert_eq!(stats.slot_states()[1], SlotState::Resolving);

        // The late answer still opens slot 1.
        dns.shut.store(false, SeqCst);
        r.wait_subscribed(&[b], Mode::Ticker);
        assert_eq!(stats.connections_up(), 2);
    }

    #[test]
    fn a_lookup_past_its_deadline_fails_the_attempt_and_is_not_doubled() {
        let dns = GatedDns::new(true);
        let r = rig_with(sim_config(), |cfg| {
            by_name(cfg, &dns);
            cfg.resolve_timeout = Duration::from_millis(200);
        });
        let stats = r.stats();
        wait_for("two timed-out attempts", || {
            stats.connect_attempts.get() >= 3
        });
        let err = stats.last_error().unwrap();
        assert_eq!(err, "DNS lookup of feed.test took longer than 200ms");
        assert_eq!(dns.started(), 1, "retries adopt the hung lookup");
        assert_eq!(stats.connects.get(), 0);

        // The thread still serves commands...
        r.subscribe(&[nse(3)], Mode::Ticker);
        wait_for("the command to be applied", || {
            stats.instruments_held.get() == 1
        });
        // ...and, once the resolver answers, connects with that answer.
        dns.shut.store(false, SeqCst);
        r.wait_subscribed(&[nse(3)], Mode::Ticker);
        assert_eq!(dns.started(), 1);
    }

    #[test]
    fn shutdown_is_prompt_while_a_lookup_hangs() {
        let dns = GatedDns::new(true);
        let r = rig_with(sim_config(), |cfg| by_name(cfg, &dns));
        let stats = r.stats();
        wait_for("the lookup to hang", || {
            dns.started() == 1 && stats.slot_states()[0] == SlotState::Resolving
        });
        let started = Instant::now();
        r.up.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        dns.shut.store(false, SeqCst);
    }

    #[test]
    fn ip_literal_hosts_never_reach_the_resolver() {
        let dns = GatedDns::new(true);
        let r = rig_with(sim_config(), |cfg| cfg.resolver = dns.clone());
        let stats = r.stats();
        wait_for("connection", || stats.connections_up() == 1);
        assert_eq!(dns.started(), 0);
    }
}

mod capacity {
    //! The account's capacity, what is held, and refusals past it.
    use super::*;

    fn fno(id: u32) -> InstrumentKey {
        InstrumentKey::new(Segment::NseFno, id)
    }

    #[test]
    fn capacity_and_held_instruments_are_readable() {
        let r = rig_with(sim_config(), |cfg| {
            cfg.max_connections = 2;
            cfg.max_per_connection = 3;
        });
        let stats = r.stats();
        assert_eq!(stats.instrument_capacity.get(), 6);
        let keys: Vec<_> = (0..4).map(nse).collect();
        r.subscribe(&keys, Mode::Ticker);
        wait_for("4 held", || stats.instruments_held.get() == 4);
        assert!(r.up.control().send(Command::Unsubscribe(vec![keys[0]])));
        wait_for("3 held", || stats.instruments_held.get() == 3);

        let clamped = rig_with(sim_config(), |cfg| cfg.max_connections = 9);
        assert_eq!(
            clamped.stats().instrument_capacity.get(),
            5 * 5000,
            "DhanHQ's 5 connections × 5,000"
        );
    }

    #[test]
    fn refusals_past_capacity_log_one_line_per_batch() {
        logs::install();
        let r = rig_with(sim_config(), |cfg| {
            cfg.max_connections = 1;
            cfg.max_per_connection = 3;
        });
        let stats = r.stats();
        let keys: Vec<_> = (6_025_000..6_025_010).map(fno).collect();
        r.subscribe(&keys, Mode::Ticker);
        wait_for("the refusal line", || {
            !logs::lines_with("first: NSE_FNO:6025003").is_empty()
        });
        let lines = logs::lines_with("NSE_FNO:6025");
        assert_eq!(lines.len(), 1, "one line for the batch: {lines:?}");
        assert!(
            lines[0].starts_with("upstream capacity full: 7 instruments refused"),
            "{}",
            lines[0]
        );
        assert_eq!(stats.rejected_subscriptions.get(), 7);
        assert_eq!(stats.instruments_held.get(), 3);
        r.wait_subscribed(&keys[..3], Mode::Ticker);

        // A second batch is a second event.
        r.subscribe(&[fno(6_025_100), fno(6_025_101)], Mode::Ticker);
        wait_for("the second line", || {
            logs::lines_with("NSE_FNO:6025").len() == 2
        });
        let second = logs::lines_with("first: NSE_FNO:6025100");
        assert_eq!(second.len(), 1);
        assert!(
            second[0].contains(": 2 instruments refused"),
            "{}",
            second[0]
        );
        assert_eq!(stats.rejected_subscriptions.get(), 9);
    }
}

#[test]
fn a_bad_feed_url_is_a_config_error_not_an_os_one() {
    let (prod, _cons) = HeapRb::<Tick>::new(8).split();
    let err = Upstream::spawn(
        UpstreamConfig {
            feed_url: "ftp://example.com".into(),
            ..UpstreamConfig::default()
        },
        prod,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, SpawnError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("wss:// or ws://"), "{err}");
}

/// A network thread with a spilling live book (as in the compact layout,
/// where the fanout shares its thread) whose fanout ring holds 16 updates.
struct SpillRig {
    _sim: Simulator,
    ctl: SimControl,
    up: Upstream,
    book: dhan_relay::book::BookThread,
    updates: HeapCons<dhan_relay::book::Update>,
    key: InstrumentKey,
}

fn spill_rig(backoff: BackoffConfig) -> SpillRig {
    use dhan_relay::book::{BookConfig, BookThread, Depth20, Outlet, Update};
    let sim = Simulator::start(sim_config()).expect("simulator starts");
    let ctl = sim.control();
    let (tick_tx, tick_rx) = HeapRb::<Tick>::new(1 << 16).split();
    let (update_tx, updates) = HeapRb::<Update>::new(16).split();
    let (depth_tx, _depth_rx) = HeapRb::<Depth20>::new(16).split();
    let mut book = BookThread::spawn(BookConfig::default(), tick_rx, None, None).unwrap();
    let live = book
        .live(vec![Outlet {
            updates: update_tx,
            depth: depth_tx,
            notify: Box::new(|| {}),
        }])
        .spill_when_full();
    let cfg = UpstreamConfig {
        feed_url: sim.feed_url(),
        credentials: Credentials::new("1100003626", "test-token-secret"),
        backoff,
        ..UpstreamConfig::default()
    };
    let up = Upstream::spawn_with_depth(cfg, tick_tx, None, book.thread(), None, Some(live))
        .expect("upstream starts");
    let key = nse(77);
    assert!(up
        .control()
        .send(Command::Subscribe(vec![(key, Mode::Ticker)])));
    wait_for("the simulator to hold the subscription", || {
        ctl.subscriptions()
            .iter()
            .any(|c| c.instruments.get(&key) == Some(&Mode::Ticker))
    });
    SpillRig {
        _sim: sim,
        ctl,
        up,
        book,
        updates,
        key,
    }
}

impl SpillRig {
    /// `frames` frames of 100 ticker packets each (LTT 1, 2, …), the last
    /// one followed, in the same frame, by `last`.
    fn send(&self, frames: u32, last: Option<FeedMessage>) {
        let mut n = 0u32;
        for f in 0..frames {
            let mut frame = Vec::new();
            for _ in 0..100 {
                n += 1;
                FeedMessage::Data(
                    self.key,
                    FeedData::Ticker(Ticker {
                        ltp: n as f32,
                        ltt: n,
                    }),
                )
                .encode(&mut frame);
            }
            if let (true, Some(m)) = (f + 1 == frames, &last) {
                m.encode(&mut frame);
            }
            self.ctl.send_raw(frame);
        }
    }

    /// Reads like a slow fanout (8 updates a millisecond at most) until
    /// `n` ticker updates came or 10 s passed; their LTTs.
    fn read_slowly(&mut self, n: usize) -> Vec<u32> {
        use dhan_relay::book::UpdateKind;
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while got.len() < n && Instant::now() < end {
            for _ in 0..8 {
                match self.updates.try_pop() {
                    Some(u) if u.state.key == self.key && u.kind == UpdateKind::Ticker => {
                        got.push(u.state.ltt)
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    fn stop(self) {
        self.up.shutdown();
        self.book.shutdown();
    }
}

/// With the fanout's ring full, updates spill in order and the network loop
/// reads no further frame until the ring has room again — none lost, none
/// reordered, however far a frame overshoots the ring.
#[test]
fn a_spilling_live_book_stops_reading_while_the_fanout_ring_is_full() {
    let mut r = spill_rig(quick_backoff());
    // 20 frames of 100 packets each: every frame is 6× the ring.
    r.send(20, None);
    let got = r.read_slowly(2000);
    assert_eq!(got.len(), 2000, "every update");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "in order");
    assert!(r.book.stats.ring_full_waits.get() > 0, "the ring did fill");
    r.stop();
}

/// A frame that spills and ends its connection (a disconnect packet after
/// the data): the spilled updates still go on at once, not at the next
/// frame after the reconnect (30 s away here), and the network thread does
/// not spin while the connection is down.
#[test]
fn a_frame_that_spills_and_ends_its_connection_still_delivers_and_nothing_spins() {
    let mut r = spill_rig(BackoffConfig {
        initial: Duration::from_secs(30),
        max: Duration::from_secs(30),
        auth_failure: Duration::from_secs(60),
    });
    r.send(
        3,
        Some(FeedMessage::Disconnect(DisconnectReason::Other(899))),
    );
    let got = r.read_slowly(300);
    assert_eq!(got.len(), 300, "every update before the disconnect");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "in order");
    wait_for("the connection to be down", || {
        r.up.stats().connections_up() == 0
    });
    let cpu = dhan_relay::affinity::thread_cpu_seconds;
    let before = cpu("dhan-net");
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu("dhan-net") - before;
    assert!(
        used < 0.5,
        "the network thread used {used:.2} s of CPU in 1 s while down"
    );
    r.stop();
}
