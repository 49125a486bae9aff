//! Fanout shards end to end: the real engine (`threads = "spread"`, two
//! fanout shards) against the built-in simulator over 127.0.0.1. Clients
//! spread over the shards at accept; their subscriptions still make one
//! union upstream, with one capacity and one queue.

mod common;
use common::{get_json, held, wait_for, WsClient};

use std::path::Path;

use dhan_relay::config::{Flags, RunConfig};
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::engine::Engine;
use dhan_relay::sim::SimControl;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use serde_json::{json, Value};

/// The engine with two fanout shards, `extra` added to its config file
/// (ending in the `[limits]` table, if it has one).
fn start(extra: &str) -> (Engine, SimControl) {
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        demo_rate: Some(0),
        ..Flags::default()
    };
    let limits = if extra.contains("[limits]") {
        ""
    } else {
        "[limits]"
    };
    let text = format!(
        "threads = \"spread\"\nfanout_threads = 2\n{extra}\n{limits}\nunsubscribe_grace_ms = 200\n"
    );
    let mut config = RunConfig::build(
        &flags,
        Some((Path::new("shards.toml"), &text)),
        &CredentialSources::none(),
    )
    .expect("test config is valid");
    config.chains.clear();
    let engine = Engine::start(config).expect("engine starts");
    let sim = engine.demo_simulator().expect("demo mode").control();
    wait_for("upstream up", || sim.subscriptions().len() == 1);
    (engine, sim)
}

fn key(i: u32) -> InstrumentKey {
    InstrumentKey::new(Segment::NseEq, i)
}

fn holding(sim: &SimControl, k: InstrumentKey) -> Vec<Mode> {
    held(sim)
        .into_iter()
        .filter(|(h, _)| *h == k)
        .map(|(_, m)| m)
        .collect()
}

fn tick(sim: &SimControl, k: InstrumentKey, ltp: f32) {
    sim.inject(&FeedMessage::Data(
        k,
        FeedData::Ticker(Ticker { ltp, ltt: 7 }),
    ));
}

fn active_row(addr: std::net::SocketAddr, k: InstrumentKey) -> Option<Value> {
    let v = get_json(addr, "/api/v2/subscriptions/active?segment=NSE_EQ");
    v["subscriptions"]
        .as_array()?
        .iter()
        .find(|r| r["securityId"] == k.security_id.to_string())
        .cloned()
}

fn connect(addr: std::net::SocketAddr) -> WsClient {
    let mut c = WsClient::connect(addr, "/ws");
    c.recv_type("status");
    c
}

#[test]
fn clients_on_two_shards_make_one_upstream_subscription_and_all_get_every_tick() {
    let (engine, sim) = start("");
    let addr = engine.addr();
    let stats = get_json(addr, "/stats");
    assert_eq!(stats["threads"], "spread");
    let mut clients: Vec<WsClient> = (0..4).map(|_| connect(addr)).collect();
    assert_eq!(
        get_json(addr, "/stats")["fanoutShards"],
        json!([2, 2]),
        "new clients go to the least loaded shard"
    );
    let k = key(4242);
    for (i, c) in clients.iter_mut().enumerate() {
        c.subscribe(k, if i == 3 { "quote" } else { "ticker" });
    }
    wait_for("one subscription in the highest mode", || {
        holding(&sim, k) == vec![Mode::Quote]
    });
    wait_for("the union counts clients, not shards", || {
        active_row(addr, k).is_some_and(|r| r["clients"] == 4)
    });
    for n in 1..=20 {
        tick(&sim, k, n as f32);
    }
    for c in &mut clients {
        // In order, none lost, on either shard.
        for n in 1..=20 {
            let m = c.recv_where(|m| {
                m["securityId"] == k.security_id.to_string() && m["ltp"].is_number()
            });
            assert_eq!(m["ltp"], json!(n as f64), "{m}");
        }
    }
    // The quote client (shard 1) goes: the mode drops back; the rest stay.
    drop(clients.pop());
    wait_for("the mode follows the shards' clients down", || {
        holding(&sim, k) == vec![Mode::Ticker]
    });
    // Everyone goes: one unsubscribe after the grace.
    clients.clear();
    wait_for("unsubscribed upstream once nobody holds it", || {
        holding(&sim, k).is_empty()
    });
    assert!(active_row(addr, k).is_none());
    engine.shutdown();
}

#[test]
fn a_slot_freed_on_one_shard_goes_to_the_instrument_queued_on_the_other() {
    let (engine, sim) =
        start("[limits]\nupstream_connections = 1\ninstruments_per_connection = 10");
    let addr = engine.addr();
    let watch = engine.watchlist().len();
    assert!(watch < 10, "the watchlist leaves room");
    wait_for("the watchlist counted against capacity", || {
        get_json(addr, "/health")["upstream"]["capacity"]["instruments"] == json!(watch)
    });
    let mut a = connect(addr);
    let mut b = connect(addr);
    assert_eq!(get_json(addr, "/stats")["fanoutShards"], json!([1, 1]));
    // Shard 0's client takes every free slot …
    let mine: Vec<InstrumentKey> = (0..(10 - watch) as u32).map(|i| key(9000 + i)).collect();
    a.subscribe_many(&mine, "ticker");
    wait_for("shard 0's instruments subscribed", || {
        let h = held(&sim);
        mine.iter().all(|k| h.contains(&(*k, Mode::Ticker)))
    });
    // … so shard 1's waits in the one queue.
    let waiting = key(9999);
    b.subscribe(waiting, "ticker");
    let e = b.recv_type("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("upstream capacity full"),
        "{e}"
    );
    assert!(holding(&sim, waiting).is_empty());
    // Shard 0's client lets one go: after the grace its slot goes to shard
    // 1's queued instrument, and shard 1's client is told.
    a.unsubscribe(&mine[..1]);
    let status = b.recv_type("status");
    let text = status["message"].as_str().unwrap();
    assert!(
        text.contains("capacity freed") && text.contains("9999"),
        "{status}"
    );
    wait_for("promoted upstream", || {
        holding(&sim, waiting) == vec![Mode::Ticker] && holding(&sim, mine[0]).is_empty()
    });
    tick(&sim, waiting, 12.5);
    let m = b.recv_where(|m| m["securityId"] == "9999" && m["ltp"].is_number());
    assert_eq!(m["ltp"], json!(12.5));
    engine.shutdown();
}
