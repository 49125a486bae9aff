//! Arbitrary message sequences, encoded back to back into one frame and
//! walked: the walk must yield exactly those messages, in order, with no
//! error, each packet's bytes being exactly what the encoder wrote for it.
//! Messages are compared by re-encoded bytes, so the check is bit-exact
//! (NaN payloads and -0.0 included).
#![no_main]

use dhan_relay::wire::{depth, feed, WireError};
use libfuzzer_sys::fuzz_target;

macro_rules! round_trip {
    ($module:ident, $messages:expr) => {{
        let messages = $messages;
        let mut frame = Vec::new();
        for m in messages {
            m.encode(&mut frame);
        }
        let mut walk = $module::packets(&frame);
        let mut pos = 0;
        for (i, m) in messages.iter().enumerate() {
            let p = match walk.next() {
                Some(Ok(p)) => p,
                other => panic!("message {i} of {}: {other:?}", messages.len()),
            };
            assert_eq!(p.bytes, &frame[pos..pos + m.wire_len()], "message {i}");
            pos += m.wire_len();
            let mut enc = Vec::new();
            p.message.encode(&mut enc);
            assert_eq!(enc, p.bytes, "message {i} decoded differently");
        }
        if messages.is_empty() {
            assert!(matches!(walk.next(), Some(Err(WireError::EmptyFrame))));
        }
        assert!(walk.next().is_none(), "more packets than messages");
    }};
}

fuzz_target!(
    |input: (Vec<feed::FeedMessage>, Vec<depth::DepthMessage>)| {
        round_trip!(feed, &input.0);
        round_trip!(depth, &input.1);
    }
);
