//! Reads the few fields the tool needs from the relay's JSON messages
//! (docs/dhanhq-protocol.md, "The relay's client protocol") without building
//! a JSON tree.
//!
//! A price update is `{"type":"ticker","exchangeSegment":"NSE_EQ",
//! "securityId":"1000001","ltp":17.0,"ltt":12345,...}` (`quote` and `full`
//! carry the same four fields). The scanner finds each `"name":` key and
//! reads the value after it, tolerating spaces after the colon and any key
//! order; it is strict about the values (a security id must be a decimal
//! string, an LTP a JSON number) and reports anything else as
//! [`Message::Malformed`], which the tool counts. The tests check it against
//! `serde_json` on the relay's own renderer output.

/// What one relay message is, as far as the tool cares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Message<'a> {
    /// A price update (`ticker`, `quote` or `full`).
    Price {
        /// `exchangeSegment` as sent.
        segment: &'a [u8],
        /// `securityId`.
        security_id: u32,
        /// `ltp`.
        ltp: f64,
        /// `ltt`.
        ltt: u64,
    },
    /// `{"type":"pong"}`: every request before the ping has been handled.
    Pong,
    /// `{"type":"error","message":…}`: the message text, raw.
    Error(&'a [u8]),
    /// Another type (`status`, …).
    Other,
    /// Not the relay's JSON shape.
    Malformed,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let hay = hay.get(from..)?;
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        // Jump to the next candidate first byte, then compare.
        match hay[i..hay.len() + 1 - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            Some(off) => i += off,
            None => return None,
        }
        if &hay[i..i + needle.len()] == needle {
            return Some(from + i);
        }
        i += 1;
    }
    None
}

/// The bytes right after `"name":` (spaces skipped), searching from `from`
/// and then from the start; with the index where the value begins.
fn value<'a>(msg: &'a [u8], name: &[u8], from: usize) -> Option<(&'a [u8], usize)> {
    let at = find(msg, name, from).or_else(|| find(msg, name, 0))?;
    let mut v = at + name.len();
    while msg.get(v) == Some(&b' ') {
        v += 1;
    }
    Some((&msg[v..], v))
}

/// A JSON string value's contents (no escapes expected in these fields).
fn string(v: &[u8]) -> Option<&[u8]> {
    let rest = v.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let s = &rest[..end];
    (!s.contains(&b'\\')).then_some(s)
}

/// A JSON number's text.
fn number(v: &[u8]) -> Option<&[u8]> {
    let end = v
        .iter()
        .position(|&b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(v.len());
    (end > 0).then_some(&v[..end])
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Classifies one text message.
pub fn scan(msg: &[u8]) -> Message<'_> {
    let Some((v, at)) = value(msg, b"\"type\":", 0) else {
        return Message::Malformed;
    };
    let Some(kind) = string(v) else {
        return Message::Malformed;
    };
    match kind {
        b"ticker" | b"quote" | b"full" => price(msg, at).unwrap_or(Message::Malformed),
        b"pong" => Message::Pong,
        b"error" => match value(msg, b"\"message\":", at) {
            Some((v, _)) => Message::Error(string(v).unwrap_or(v)),
            None => Message::Error(b""),
        },
        _ => Message::Other,
    }
}

fn price(msg: &[u8], from: usize) -> Option<Message<'_>> {
    let (v, at) = value(msg, b"\"exchangeSegment\":", from)?;
    let segment = string(v)?;
    let (v, at) = value(msg, b"\"securityId\":", at)?;
    let security_id = u32::try_from(parse_u64(string(v)?)?).ok()?;
    let (v, at) = value(msg, b"\"ltp\":", at)?;
    let ltp: f64 = std::str::from_utf8(number(v)?).ok()?.parse().ok()?;
    let (v, _) = value(msg, b"\"ltt\":", at)?;
    let ltt = parse_u64(number(v)?)?;
    Some(Message::Price {
        segment,
        security_id,
        ltp,
        ltt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhan_relay::book::{InstrumentState, Update, UpdateKind};
    use dhan_relay::domain::{InstrumentKey, Mode, Segment};
    use dhan_relay::fanout::render::Renderer;
    use dhan_relay::wire::feed::Quote;

    #[test]
    fn reads_what_the_relay_renders_and_agrees_with_serde() {
        let mut r = Renderer::new();
        for (ltp, ltt, mode, symbol) in [
            (17.0f32, 4_000_000_001u32, Mode::Ticker, None),
            (16_777_215.0, 1, Mode::Quote, Some("SYM\"BOL")),
            (1.0, 0, Mode::Full, None),
        ] {
            let mut state = InstrumentState::new(InstrumentKey::new(Segment::NseEq, 1_000_123));
            state.ltp = Some(ltp);
            state.ltt = ltt;
            state.seq = 9;
            state.quote = Some(Quote {
                ltp,
                ltt,
                ..Quote::default()
            });
            let update = Update {
                kind: UpdateKind::Quote,
                state,
            };
            let text = r.update(&update, mode, symbol).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
            let Message::Price {
                segment,
                security_id,
                ltp: got,
                ltt: got_ltt,
            } = scan(&text)
            else {
                panic!("not a price: {text:?}")
            };
            assert_eq!(segment, v["exchangeSegment"].as_str().unwrap().as_bytes());
            assert_eq!(security_id.to_string(), v["securityId"].as_str().unwrap());
            assert_eq!(got, v["ltp"].as_f64().unwrap());
            assert_eq!(got as f32, ltp);
            assert_eq!(got_ltt, v["ltt"].as_u64().unwrap());
        }
    }

    #[test]
    fn other_types_and_shapes() {
        assert_eq!(scan(br#"{"type":"pong"}"#), Message::Pong);
        assert_eq!(
            scan(br#"{"type": "error", "message": "nope"}"#),
            Message::Error(b"nope")
        );
        assert_eq!(
            scan(br#"{"type":"status","message":"Connected to price feed"}"#),
            Message::Other
        );
        assert_eq!(scan(b"[]"), Message::Malformed);
        assert_eq!(
            scan(br#"{"type":"ticker","exchangeSegment":"NSE_EQ","securityId":"x1","ltp":1,"ltt":2}"#),
            Message::Malformed
        );
        assert_eq!(
            scan(br#"{"ltt":2,"ltp": 3.5e1,"securityId":"7","exchangeSegment":"NSE_EQ","type":"ticker"}"#),
            Message::Price {
                segment: b"NSE_EQ",
                security_id: 7,
                ltp: 35.0,
                ltt: 2
            }
        );
    }
}
