//! Any bytes as one 20-level depth frame, walked with `depth::packets`.
//!
//! The same assertions as `feed_frame`, for the depth header `<hBBiI>`: the
//! length is bytes 0..2 (i16), the code byte 2, and a disconnect ignores
//! segment, security id and sequence (3..12).
#![no_main]

use dhan_relay::wire::depth::{self, DepthMessage, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        depth::decode(data).map(|p| p.bytes),
        depth::packets(data)
            .next()
            .expect("one item at least")
            .map(|p| p.bytes)
    );

    let mut walk = depth::packets(data);
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
                let same_from = match p.message {
                    DepthMessage::Disconnect(_) => 12,
                    DepthMessage::Book(_) => 3,
                };
                assert_eq!(enc[2], p.bytes[2]);
                assert_eq!(enc[same_from..], p.bytes[same_from..enc.len()]);

                let back = depth::decode(&enc).expect("re-encoded packet decodes");
                assert_eq!(back.bytes, &enc[..]);
                let mut again = Vec::new();
                back.message.encode(&mut again);
                assert_eq!(again, enc, "decode(encode(m)) != m");
            }
            Err(e) if e.is_recoverable() => {
                let declared = i16::from_le_bytes([data[pos], data[pos + 1]]);
                let declared = usize::try_from(declared).expect("negative length skipped");
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
