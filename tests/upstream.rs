//! The network thread against the real simulator over real sockets on
//! 127.0.0.1: values, subscriptions, reconnects, dead sockets, auth
//! failures, sharding, bad packets and shutdown.

mod common;
use common::wait_for;

use std::time::{Duration, Instant};

use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::sim::{SimConfig, SimControl, SimTls, Simulator};
use dhan_relay::tick::Tick;
use dhan_relay::upstream::{
    BackoffConfig, Command, Credentials, SlotState, Upstream, UpstreamConfig, UpstreamStats,
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
    wait_for("two failed attempts", || {
        UpstreamStats::get(&stats.connect_attempts) >= 2
    });
    assert_eq!(UpstreamStats::get(&stats.connects), 0);
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
    assert!(UpstreamStats::get(&r.stats().disconnects) >= 1);
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
        UpstreamStats::get(&stats.silent_drops) >= 1
    });
    r.ctl.set_stalled(false);
    wait_for("a fresh connection", || {
        UpstreamStats::get(&stats.connects) >= 2 && stats.connections_up() == 1
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
    let attempts = UpstreamStats::get(&stats.connect_attempts);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        UpstreamStats::get(&stats.connect_attempts),
        attempts,
        "no retry within the auth backoff"
    );
    assert_eq!(stats.slot_states()[0], SlotState::AuthFailed);
    assert_eq!(UpstreamStats::get(&stats.auth_failures), 1);
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
    assert!(UpstreamStats::get(&up.stats().ring_full_waits) > 0);
    up.shutdown();
}

mod secrets {
    //! Every log line the network thread writes, checked for the secrets.
    use super::*;
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

    #[test]
    fn credentials_never_reach_a_log_line_or_an_error() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
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
        let lines = LINES.lock().unwrap().clone();
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
