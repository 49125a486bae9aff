//! Any bytes as one Live Market Feed frame, walked with `feed::packets`.
//!
//! Asserts, beyond "does not panic": the walk ends; every packet is the next
//! contiguous piece of the input (a skipped bad packet included); every good
//! packet is at least `wire_len()` long and re-encodes to its own bytes (bar
//! the length field and a disconnect's unused header fields) and back to the
//! same message, compared as bytes so NaN prices count as equal; nothing
//! follows a non-recoverable error; `decode` agrees with the walk's first item.
#![no_main]

use dhan_relay::wire::feed::{self, FeedMessage, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        feed::decode(data).map(|p| p.bytes),
        feed::packets(data)
            .next()
            .expect("one item at least")
            .map(|p| p.bytes)
    );

    let mut walk = feed::packets(data);
    let (mut pos, mut items) = (0, 0);
    while let Some(item) = walk.next() {
        items += 1;
        assert!(items <= data.len() / HEADER_LEN + 1, "walk does not end");
        match item {
            Ok(p) => {
                let here = data.get(pos..pos + p.bytes.len());
                assert!(
                    here.is_some_and(|s| std::ptr::eq(s, p.bytes)),
                    "not contiguous"
                );
                pos += p.bytes.len();
                assert!(p.bytes.len() >= p.message.wire_len());

                let mut enc = Vec::new();
                p.message.encode(&mut enc);
                assert_eq!(enc.len(), p.message.wire_len());
                // Same bytes as on the wire, except the length (1..3) and, for
                // a disconnect, the segment and security id it ignores (3..8).
                let same_from = match p.message {
                    FeedMessage::Disconnect(_) => 8,
                    FeedMessage::Data(..) => 3,
                };
                assert_eq!(enc[0], p.bytes[0]);
                assert_eq!(enc[same_from..], p.bytes[same_from..enc.len()]);

                let back = feed::decode(&enc).expect("re-encoded packet decodes");
                assert_eq!(back.bytes, &enc[..]);
                let mut again = Vec::new();
                back.message.encode(&mut again);
                assert_eq!(again, enc, "decode(encode(m)) != m");
            }
            Err(e) if e.is_recoverable() => {
                // A skipped packet still spans exactly its declared length.
                let declared = usize::from(u16::from_le_bytes([data[pos + 1], data[pos + 2]]));
                assert!(declared >= HEADER_LEN && pos + declared <= data.len());
                pos += declared;
            }
            Err(_) => {
                assert!(walk.next().is_none(), "item after a non-recoverable error");
                return;
            }
        }
    }
    assert_eq!(pos, data.len(), "walk ended before the frame did");
});
