//! Allocation counts of the fanout to TLS subscribers, held to the same
//! standard as `hot_path_alloc.rs`: the simulator runs as a separate
//! process, and the client threads (rustls clients, which allocate per
//! record they decrypt) are left out of the count with a thread-local flag,
//! so what is counted is the engine's own.
//!
//! After the handshake the relay runs the TLS record layer itself
//! (`serve_tls::stream`: the traffic keys taken from rustls, `ring::aead`
//! sealing each flush in place in a buffer allocated at accept), so a TLS
//! subscriber costs no allocation per message, per flush or per byte: what
//! the window may allocate is exactly what the plain fanout test allows
//! (the renderer's message arena, book snapshots), however many messages
//! go to however many TLS clients.

mod common;
use common::tls::{TestCa, Wss};

use common::alloc::{allocations, counter, counters, exempt_this_thread, Counting, SimProcess};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use dhan_relay::config::{Flags, ListenSpec, RunConfig};
use dhan_relay::engine::Engine;
use dhan_relay::token::sources::CredentialSources;
use dhan_relay::upstream::Credentials;
use serde_json::json;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A WSS client that subscribes the watchlist and reads forever, on its
/// own (exempt) thread.
fn tls_client(addr: SocketAddr, ca: Arc<rustls::ClientConfig>, received: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        exempt_this_thread();
        let mut ws = Wss::connect(addr, &ca, "/ws");
        ws.send(json!({"type": "subscribe", "instruments": [
            {"symbol": "NIFTY"}, {"symbol": "SENSEX"}, {"symbol": "RELIANCE"}, {"symbol": "CRUDEOIL"}]}));
        let mut tls = ws.0.into_inner();
        tls.sock.set_read_timeout(None).unwrap();
        let mut buf = [0u8; 65536];
        while let Ok(n) = tls.read(&mut buf) {
            if n == 0 {
                break;
            }
            received.fetch_add(n as u64, Relaxed);
        }
    });
}

#[test]
fn tls_subscribers_allocate_nothing_per_message_flush_or_subscriber() {
    let ca = TestCa::new("tls-alloc");
    let files = ca.issue(1, 30);
    let sim = SimProcess::start(3000);
    let flags = Flags {
        listen: vec!["127.0.0.1:0".into()],
        feed_url: Some(sim.1.clone()),
        ..Flags::default()
    };
    let mut config = RunConfig::build(
        &flags,
        None,
        &CredentialSources::given(&Credentials::new("c", "t")),
    )
    .unwrap();
    config.listen.push(ListenSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(files),
        auth: None,
    });
    let engine = Engine::start(config).unwrap();
    let plain = engine.listeners()[0].0;
    let secure = engine.listeners()[1].0;

    let received = Arc::new(AtomicU64::new(0));
    const CLIENTS: u64 = 20;
    for _ in 0..CLIENTS {
        tls_client(secure, ca.client_config(), Arc::clone(&received));
    }
    // Warm up: handshakes, subscriptions, buffers at their working size.
    std::thread::sleep(Duration::from_millis(2500));
    let before = counters(plain);
    let a0 = allocations();
    std::thread::sleep(Duration::from_secs(3));
    let a1 = allocations();
    let after = counters(plain);
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    let (updates, messages) = (
        delta("fanout_updates_total"),
        delta("fanout_messages_total"),
    );
    let allocs = a1 - a0;
    assert!(updates >= 3000, "only {updates} updates");
    assert!(
        messages >= updates * (CLIENTS - 1),
        "{messages} messages for {updates} updates × {CLIENTS} clients"
    );
    // What the plain test allows — the renderer's arena (about one per 64
    // KiB of output, bounded by one per 10 updates), snapshots (at most 20
    // a second, two allocations each, over the 3-second window and its
    // edges) — and nothing per message, flush or TLS subscriber.
    let allowed = updates / 10 + 2 * 20 * 4 + 64;
    println!(
        "TLS fanout: {allocs} allocations for {updates} updates and {messages} messages to {CLIENTS} TLS clients (allowed {allowed}; {:.4} per message)",
        allocs as f64 / messages as f64
    );
    assert!(
        allocs <= allowed,
        "{allocs} allocations for {updates} updates to {CLIENTS} TLS subscribers ({messages} messages)"
    );
    assert!(received.load(Relaxed) > 0);
    engine.shutdown();
}
