//! Reading a DhanHQ access token (a JWT) without verifying it.
//!
//! A DhanHQ access token is a JWS in compact form: three base64url segments
//! (`header.payload.signature`) whose payload carries, among others, `exp`
//! (Unix seconds) and `dhanClientId`. The relay cannot check the signature
//! (the key is DhanHQ's) and need not: it only wants to know when the token
//! it was given stops working, to renew it in time. [`expiry`] reads that
//! and nothing else; anything that is not a well-formed token is `None`,
//! never a panic.
//!
//! [`unsigned`] builds a token of the same layout for the simulator: the
//! claims DhanHQ puts in, and a signature segment that is a digest over the
//! rest plus a per-process counter and the clock, so no two tokens are equal
//! even when issued for the same client in the same second. It proves
//! nothing and is not meant to.
//!
//! Pure functions: no I/O, no clock except the nonce in [`unsigned`].
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Longest payload segment [`expiry`] decodes; real ones are ~250 bytes.
const MAX_PAYLOAD: usize = 16 * 1024;

/// The `exp` claim (Unix seconds) of a JWT in compact form, read from its
/// payload segment (base64url, padding tolerated) without checking the
/// signature. `None` if `token` is not three dot-separated segments, the
/// payload is not base64url-encoded JSON, or `exp` is missing, negative or
/// not a number. A fractional `exp` (allowed by RFC 7519) is rounded down.
pub fn expiry(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_PAYLOAD {
        return None;
    }
    let bytes = base64url_decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.as_object()?.get("exp")?;
    exp.as_u64().or_else(|| {
        let f = exp.as_f64()?;
        // `as` saturates; the range check keeps the result meaningful.
        (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then_some(f as u64)
    })
}

/// DhanHQ's claims, in DhanHQ's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Claims<'a> {
    iss: &'static str,
    partner_id: &'static str,
    exp: u64,
    iat: u64,
    token_consumer_type: &'static str,
    webhook_url: &'static str,
    dhan_client_id: &'a str,
}

/// The header DhanHQ's tokens carry.
const HEADER: &str = r#"{"typ":"JWT","alg":"HS512"}"#;

/// A token shaped like DhanHQ's (`{"typ":"JWT","alg":"HS512"}` header;
/// `iss`, `partnerId`, `exp`, `iat`, `tokenConsumerType`, `webhookUrl`,
/// `dhanClientId` claims) but not signed by anyone: the third segment is a
/// SHA-512 digest over the first two, a per-process counter and the clock's
/// nanoseconds, so every call returns a different token. For the simulator
/// and tests.
pub fn unsigned(client_id: &str, exp: u64, iat: u64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let claims = Claims {
        iss: "dhan",
        partner_id: "",
        exp,
        iat,
        token_consumer_type: "SELF",
        webhook_url: "",
        dhan_client_id: client_id,
    };
    // Serializing plain strings and integers cannot fail.
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    let mut token = base64url_encode(HEADER.as_bytes());
    token.push('.');
    token.push_str(&base64url_encode(&payload));

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    ctx.update(token.as_bytes());
    ctx.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    ctx.update(&nanos.to_le_bytes());
    ctx.update(&std::process::id().to_le_bytes());
    let signature = ctx.finish();
    token.push('.');
    token.push_str(&base64url_encode(signature.as_ref()));
    token
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url (RFC 4648 §5) without padding.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// Decodes base64url (RFC 4648 §5); trailing `=` padding is tolerated.
/// `None` on a character outside the alphabet, a lone trailing character
/// (6 bits cannot make a byte) or non-zero leftover bits.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6 | u32::from(v)) & 0xff_ffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // 2 or 4 leftover bits are the encoder's zero fill; 6 is a lone
    // character, which no encoder writes.
    let leftover = acc & ((1 << bits) - 1);
    (bits < 6 && leftover == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token laid out as DhanHQ issues them (client id and signature
    /// made up): header and payload as seen in public examples.
    const DHAN_LIKE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.eyJpc3MiOiJkaGFuIiwicGFydG5lcklkIjoiIiwiZXhwIjoxNzY2MDM1ODEwLCJpYXQiOjE3NjU5NDk0MTAsInRva2VuQ29uc3VtZXJUeXBlIjoiU0VMRiIsIndlYmhvb2tVcmwiOiIiLCJkaGFuQ2xpZW50SWQiOiIxMDAwMDAwMDAxIn0.c2lnbmF0dXJlLW5vdC1yZWFs";

    fn token_with_payload(json: &str) -> String {
        format!(
            "{}.{}.sig",
            base64url_encode(HEADER.as_bytes()),
            base64url_encode(json.as_bytes())
        )
    }

    #[test]
    fn reads_exp_of_a_dhan_shaped_token() {
        assert_eq!(expiry(DHAN_LIKE), Some(1_766_035_810));
        let payload = DHAN_LIKE.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&base64url_decode(payload).unwrap()).unwrap();
        assert_eq!(claims["dhanClientId"], "1000000001");
        assert_eq!(claims["iat"], 1_765_949_410);
    }

    #[test]
    fn unsigned_round_trips_and_looks_like_dhan() {
        let t = unsigned("1000000001", 1_766_035_810, 1_765_949_410);
        assert_eq!(expiry(&t), Some(1_766_035_810));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        // Same header bytes as a real token.
        assert_eq!(parts[0], DHAN_LIKE.split('.').next().unwrap());
        // Same payload bytes as the real layout, for the same claims.
        assert_eq!(parts[1], DHAN_LIKE.split('.').nth(1).unwrap());
        // HS512-sized signature, base64url without padding.
        assert_eq!(base64url_decode(parts[2]).map(|s| s.len()), Some(64));
        assert!(t
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)));
        // Two tokens for the same claims differ.
        let u = unsigned("1000000001", 1_766_035_810, 1_765_949_410);
        assert_ne!(t, u);
        assert_eq!(expiry(&u), Some(1_766_035_810));
        // A client id that needs JSON escaping stays intact.
        let odd = unsigned("a\"b\\c", 5, 1);
        let payload = base64url_decode(odd.split('.').nth(1).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["dhanClientId"], "a\"b\\c");
        assert_eq!(expiry(&odd), Some(5));
    }

    #[test]
    fn padding_is_tolerated() {
        let json = r#"{"exp":1700000000}"#; // 18 bytes: one `=` when padded
        let padded = format!("h.{}=.s", base64url_encode(json.as_bytes()));
        assert_eq!(expiry(&padded), Some(1_700_000_000));
        let json = r#"{"exp":17000000}"#; // 16 bytes: two `=`
        let padded = format!("h.{}==.s", base64url_encode(json.as_bytes()));
        assert_eq!(expiry(&padded), Some(17_000_000));
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        // RFC 4648 §10, unpadded.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url_encode(plain.as_bytes()), coded);
            assert_eq!(base64url_decode(coded).as_deref(), Some(plain.as_bytes()));
        }
        // The URL-safe characters.
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode("-_8"), Some(vec![0xfb, 0xff]));
        // A lone character, standard-alphabet characters, stray bits.
        assert_eq!(base64url_decode("Zm9vY"), None);
        assert_eq!(base64url_decode("+/8"), None);
        assert_eq!(base64url_decode("Zh"), None);
        for n in 0..70u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64url_decode(&base64url_encode(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn garbage_is_none() {
        for t in [
            "",
            ".",
            "..",
            "onesegment",
            "two.segments",
            "a.b.c.d",
            "h.!!!.s",
            "h.Zm9vY.s",
        ] {
            assert_eq!(expiry(t), None, "{t:?}");
        }
        for json in [
            "{}",
            "null",
            "[1,2,3]",
            r#"{"exp":-1}"#,
            r#"{"exp":"123"}"#,
            r#"{"exp":null}"#,
            r#"{"exp":1.5e300}"#,
            r#"{"exp":true}"#,
            r#"{"iat":1700000000}"#,
            "not json",
            r#"{"exp":17"#,
        ] {
            assert_eq!(expiry(&token_with_payload(json)), None, "{json}");
        }
        assert_eq!(
            expiry(&token_with_payload(r#"{"exp":1700000000.9}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(expiry(&token_with_payload(r#"{"exp":0}"#)), Some(0));
        let huge = format!("h.{}.s", "A".repeat(MAX_PAYLOAD + 4));
        assert_eq!(expiry(&huge), None);
        // Multi-byte characters do not trip the decoder.
        assert_eq!(expiry("h.é.s"), None);
    }
}
