//! Any bytes as the start of an HTTP request on the public listener, read
//! with `fanout::http::parse_head` (the function the fanout thread calls on
//! every connection's buffered bytes until it says `Done` or `Bad`).
//!
//! Asserts, beyond "does not panic":
//! - `Done(head)`: `0 < head.len <= data.len()`, and the head's own bytes
//!   (`data[..head.len]`) parse to the same head;
//! - `Bad(status, why)`: status 400 or 431, a non-empty reason;
//! - `Partial` only below `MAX_HEAD_BYTES`;
//! - bytes arriving in two pieces: a prefix shorter than `head.len` is never
//!   `Done`; a prefix that is `Done` gives the same head as the whole input
//!   (more bytes after a complete head change nothing); a prefix rejected as
//!   malformed (400) stays rejected with the same answer.
#![no_main]

use dhan_relay::fanout::http::{parse_head, Parsed, MAX_HEAD_BYTES};
use libfuzzer_sys::fuzz_target;

fn check_alone(data: &[u8], parsed: &Parsed) {
    match parsed {
        Parsed::Done(head) => {
            assert!(
                head.len > 0 && head.len <= data.len(),
                "head.len {}",
                head.len
            );
            assert_eq!(&parse_head(&data[..head.len]), parsed, "the head alone");
        }
        Parsed::Bad(status, why) => {
            assert!(matches!(status, 400 | 431), "status {status}");
            assert!(!why.is_empty());
        }
        Parsed::Partial => assert!(data.len() < MAX_HEAD_BYTES, "partial at {}", data.len()),
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = parse_head(data);
    check_alone(data, &whole);

    // Two pieces: the first `cut` bytes arrive, then the rest. Cut in the
    // middle and at a point the input chooses (its first byte).
    let cuts = [
        data.len() / 2,
        usize::from(data.first().copied().unwrap_or(0)),
    ];
    for cut in cuts.into_iter().filter(|&c| c < data.len()) {
        let prefix = parse_head(&data[..cut]);
        check_alone(&data[..cut], &prefix);
        match &prefix {
            Parsed::Done(_) => assert_eq!(prefix, whole, "more bytes changed a complete head"),
            Parsed::Bad(400, _) => assert_eq!(prefix, whole, "more bytes un-broke a request"),
            Parsed::Bad(..) | Parsed::Partial => {}
        }
        if let Parsed::Done(head) = &whole {
            assert!(
                cut >= head.len || !matches!(prefix, Parsed::Done(_)),
                "Done for {cut} bytes of a {}-byte head",
                head.len
            );
        }
    }
});
