//! RFC 6238 time-based one-time passwords, as DhanHQ expects them.
//!
//! DhanHQ's `generateAccessToken` takes the 6-digit code an authenticator
//! app would show for the account's TOTP secret: HMAC-SHA1, 30-second
//! steps counted from the Unix epoch (T0 = 0), dynamic truncation (RFC 4226
//! §5.3). The secret is handed out as RFC 4648 base32, which
//! [`decode_secret`] reads the way authenticator apps do (any case, spaces
//! and `=` padding ignored).
//!
//! Time is passed in ([`code`] takes Unix seconds), so callers choose the
//! clock and tests are exact. The secret is a credential: no error message
//! here contains it, or any part of it.
#![forbid(unsafe_code)]

use ring::hmac;

/// Seconds per TOTP step (RFC 6238's X).
pub const STEP_SECS: u64 = 30;

/// Digits in a DhanHQ TOTP code.
pub const DIGITS: u32 = 6;

/// The 6-digit code for `secret` at `unix_secs`, zero-padded.
pub fn code(secret: &[u8], unix_secs: u64) -> String {
    code_at_step(secret, unix_secs / STEP_SECS)
}

/// The 6-digit code for `secret` at TOTP step `step` (Unix seconds / 30),
/// zero-padded: what a server checks the adjacent steps with.
pub fn code_at_step(secret: &[u8], step: u64) -> String {
    format!(
        "{:0width$}",
        hotp(secret, step, DIGITS),
        width = DIGITS as usize
    )
}

/// RFC 4226 HOTP with HMAC-SHA1, truncated to `digits` (at most 9) digits.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    // SHA-1 tags are 20 bytes: the offset (0..=15) plus 4 stays in range.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let word = [
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ];
    let binary = u32::from_be_bytes(word) & 0x7fff_ffff;
    binary % 10u32.pow(digits.min(9))
}

/// Decodes an RFC 4648 base32 TOTP secret: letters in any case, spaces and
/// `=` ignored wherever they are, trailing bits that do not fill a byte
/// dropped. An empty secret, or any other character, is an error whose
/// message names the position but never the secret.
pub fn decode_secret(base32: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(base32.len() * 5 / 8);
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut seen = 0usize;
    for (i, c) in base32.chars().enumerate() {
        let v = match c.to_ascii_uppercase() {
            ' ' | '=' => continue,
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => {
                return Err(format!(
                    "the TOTP secret is not base32: character {} is not A-Z or 2-7",
                    i + 1
                ))
            }
        };
        seen += 1;
        acc = (acc << 5 | v) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if seen == 0 {
        return Err("the TOTP secret is empty".to_owned());
    }
    if out.is_empty() {
        return Err("the TOTP secret is too short (under one byte)".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 seed.
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    const RFC_SECRET_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        for (t, expected) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            let eight = format!("{:08}", hotp(RFC_SECRET, t / STEP_SECS, 8));
            assert_eq!(eight, expected, "T = {t}");
            // Six digits are the same number modulo 10^6.
            assert_eq!(code(RFC_SECRET, t), expected[2..], "T = {t}");
        }
    }

    #[test]
    fn rfc4226_appendix_d_hotp_values() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(code_at_step(RFC_SECRET, counter as u64), *want);
        }
    }

    #[test]
    fn codes_change_per_step_and_are_zero_padded() {
        // Same step, same code; the code is always 6 ASCII digits.
        assert_eq!(code(RFC_SECRET, 60), code(RFC_SECRET, 89));
        assert_eq!(code(RFC_SECRET, 1_111_111_109), "081804");
        for t in (0..3_000).step_by(30) {
            let c = code(RFC_SECRET, t);
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn decodes_base32_secrets() {
        assert_eq!(decode_secret(RFC_SECRET_BASE32).unwrap(), RFC_SECRET);
        // Lowercase, spaces, padding: as authenticator apps show them.
        assert_eq!(
            decode_secret("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap(),
            RFC_SECRET
        );
        assert_eq!(decode_secret("MZXW6===").unwrap(), b"foo");
        assert_eq!(decode_secret("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(decode_secret("my").unwrap(), b"f");
    }

    #[test]
    fn bad_secrets_are_errors_without_the_secret() {
        let secret = "JBSWY3DPEHPK3PX1";
        let err = decode_secret(secret).unwrap_err();
        assert!(!err.contains(secret) && !err.contains("JBSW"), "{err}");
        assert!(err.contains("16"), "{err}");
        for bad in ["abc0", "ABC8", "ABC-DEF", "ABCé", "AB\tCD"] {
            let err = decode_secret(bad).unwrap_err();
            assert!(!err.contains(bad), "{err}");
        }
        assert!(decode_secret("").is_err());
        assert!(decode_secret("  ==  ").is_err());
        assert!(decode_secret("A").is_err());
    }
}
