//! Reading a DhanHQ access token (a JWT) without verifying it.
// Placeholder until the full module lands.

/// The `exp` claim of a JWT.
pub fn expiry(token: &str) -> Option<u64> {
    let _ = token;
    None
}
