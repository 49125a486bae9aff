//! Any UTF-8 text as one client WebSocket message, parsed with
//! `fanout::protocol::parse` (what the fanout thread calls on every text
//! frame), with the default per-message instrument limit and a small one.
//! Non-UTF-8 input is skipped: tungstenite rejects such a frame before the
//! parser sees it.
//!
//! Asserts, beyond "does not panic":
//! - an error is non-empty and short (client input is quoted back cut to 40
//!   characters, so a reply never echoes a large message), and the error
//!   reply built from it is JSON carrying the message unchanged;
//! - a subscribe or unsubscribe holds 1..=max instruments, every symbol
//!   non-empty and trimmed;
//! - an accepted message is a JSON object whose `type` names its kind.
#![no_main]

use dhan_relay::fanout::protocol::{
    error_message, parse, ClientMessage, InstrumentRef, MAX_FLUSH_INTERVAL_US,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Longest error accepted: the longest fixed text (~100 bytes) plus a quote
/// of 40 characters of at most 4 bytes each.
const MAX_ERROR_BYTES: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for max in [3, 1_000] {
        match parse(text, max) {
            Err(e) => {
                let e = e.to_string();
                assert!(!e.is_empty(), "empty error");
                assert!(e.len() < MAX_ERROR_BYTES, "{} bytes: {e}", e.len());
                let reply: Value = serde_json::from_str(&error_message(&e)).expect("reply is JSON");
                assert_eq!(reply["type"], "error");
                assert_eq!(reply["message"].as_str(), Some(e.as_str()));
            }
            Ok(message) => {
                let v: Value = serde_json::from_str(text).expect("accepted text is JSON");
                let kind = v["type"]
                    .as_str()
                    .expect("accepted message has a string type");
                let instruments = match &message {
                    ClientMessage::Subscribe { instruments, .. } => {
                        assert_eq!(kind, "subscribe");
                        instruments
                    }
                    ClientMessage::SubscribeDepth20 { instruments } => {
                        assert_eq!(kind, "subscribe");
                        assert_eq!(v["mode"], "depth20");
                        instruments
                    }
                    ClientMessage::Unsubscribe { instruments } => {
                        assert_eq!(kind, "unsubscribe");
                        instruments
                    }
                    ClientMessage::Ping => {
                        assert_eq!(kind, "ping");
                        continue;
                    }
                    ClientMessage::SubscribeOrders => {
                        assert_eq!(kind, "subscribe_orders");
                        continue;
                    }
                    ClientMessage::UnsubscribeOrders => {
                        assert_eq!(kind, "unsubscribe_orders");
                        continue;
                    }
                    ClientMessage::SubscribeChain {
                        underlying,
                        expiry,
                        strikes,
                    } => {
                        assert_eq!(kind, "subscribe_chain");
                        assert!(!underlying.is_empty() && underlying.trim() == underlying);
                        assert!(!expiry.is_empty() && expiry.len() <= 40);
                        assert!((1..=50).contains(strikes), "{strikes} strikes");
                        continue;
                    }
                    ClientMessage::UnsubscribeChain { chain } => {
                        assert_eq!(kind, "unsubscribe_chain");
                        assert!(!chain.is_empty() && chain.len() <= 64);
                        continue;
                    }
                    ClientMessage::Options { flush_interval_us } => {
                        assert_eq!(kind, "options");
                        assert!(*flush_interval_us <= MAX_FLUSH_INTERVAL_US);
                        assert_eq!(v["flushIntervalUs"], *flush_interval_us);
                        continue;
                    }
                };
                assert!(
                    (1..=max).contains(&instruments.len()),
                    "{} instruments, limit {max}",
                    instruments.len()
                );
                for i in instruments {
                    if let InstrumentRef::Symbol(s) = i {
                        assert!(!s.is_empty() && s.trim() == s, "symbol {s:?}");
                    }
                }
            }
        }
    }
});
