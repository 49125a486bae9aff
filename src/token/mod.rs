//! The DhanHQ access token's life: where it comes from, when it expires,
//! how it is renewed and rotated without a restart.

pub mod jwt;
pub mod totp;
