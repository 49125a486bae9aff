//! RFC 6238 time-based one-time passwords, as DhanHQ expects them.
// Placeholder until the full module lands.

/// Decodes base32.
pub fn decode_secret(base32: &str) -> Result<Vec<u8>, String> {
    Ok(base32.as_bytes().to_vec())
}

/// The code.
pub fn code(secret: &[u8], unix_secs: u64) -> String {
    let _ = (secret, unix_secs);
    String::new()
}
