//! Any bytes as a recording file (`docs/recording.md`), read through with
//! `record::Reader`: a damaged or hostile file must end in a damage report,
//! never a panic or a runaway read.
//!
//! Asserts, beyond "does not panic": the header is refused unless it is a
//! version-1 header; every frame read is a whole record (payload at most
//! `MAX_PAYLOAD`, offsets advancing by exactly its size, the count matching);
//! reading ends within the input; and damage, when reported, sits at the end
//! of the last whole record with the right count before it. Inputs starting
//! with the zstd magic are left out: that is the zstd library's decoder,
//! not this parser.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use dhan_relay::record::format::{HEADER_LEN, RECORD_HEADER_LEN, ZSTD_MAGIC};
use dhan_relay::record::{Reader, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(&ZSTD_MAGIC) {
        return;
    }
    let Ok(mut reader) = Reader::from_read(Path::new("fuzz.dhr"), Cursor::new(data.to_vec()))
    else {
        return;
    };
    assert!(data.len() >= HEADER_LEN, "a header from fewer bytes");
    assert_eq!(reader.header().version, 1);
    let mut offset = HEADER_LEN as u64;
    let mut frames = 0u64;
    let mut payload = Vec::new();
    while reader.next_into(&mut payload).is_some() {
        assert!(payload.len() <= MAX_PAYLOAD);
        offset += (RECORD_HEADER_LEN + payload.len()) as u64;
        frames += 1;
        assert_eq!(reader.offset(), offset);
        assert_eq!(reader.frames(), frames);
        assert!(offset <= data.len() as u64, "read past the input");
    }
    assert!(
        reader.next_into(&mut payload).is_none(),
        "read on after the end"
    );
    match reader.damage() {
        Some(d) => {
            assert_eq!(d.offset, offset);
            assert_eq!(d.frames_before, frames);
        }
        None => assert_eq!(offset, data.len() as u64, "stopped early without damage"),
    }
});
