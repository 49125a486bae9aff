//! The DhanHQ access token's life: where it comes from ([`sources`]), when
//! it expires ([`jwt`]), how it is renewed ([`renew`], [`totp`]) and how a
//! new one reaches the network thread without a restart ([`keeper`]).
//!
//! A DhanHQ token lives at most 24 hours and only one is valid at a time.
//! The keeper thread owns the current one: it re-reads the credentials
//! file when it changes and on SIGHUP, takes new credentials from the admin
//! endpoint, renews before expiry when asked to, and hands every new token
//! to the network thread, which reconnects with it (new connection first)
//! and resubscribes everything once. Its [`TokenStatus`] is what `/health`,
//! `/stats` and `/metrics` show: the expiry, never the token.

pub mod dotenv;
pub mod jwt;
pub mod keeper;
pub mod renew;
pub mod sources;
pub mod totp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{json, Value};

pub use keeper::{Keeper, KeeperHandle, SharedCredentials};
pub use renew::{DHAN_AUTH_URL, DHAN_REST_URL};
pub use sources::{Account, Origin, Secret};

/// Default lead time of a renewal before the token expires.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(1800);
/// Under this much time left the token is `expiring` (the dashboard's
/// banner shows).
pub const EXPIRING_WITHIN: u64 = 3600;

/// How the keeper renews the token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Renew {
    /// Never: a person (or a script) replaces the token.
    #[default]
    None,
    /// DhanHQ's RenewToken call, for tokens generated on Dhan Web.
    Dhan,
    /// A new token from `DHAN_PIN` and `DHAN_TOTP_SECRET`; also at once
    /// after DhanHQ refuses the token.
    Totp,
}

impl Renew {
    /// `none`, `dhan` or `totp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Renew::None => "none",
            Renew::Dhan => "dhan",
            Renew::Totp => "totp",
        }
    }
}

impl std::str::FromStr for Renew {
    type Err = String;
    fn from_str(s: &str) -> Result<Renew, String> {
        match s {
            "none" => Ok(Renew::None),
            "dhan" => Ok(Renew::Dhan),
            "totp" => Ok(Renew::Totp),
            other => Err(format!("'{other}' is not one of none, dhan, totp")),
        }
    }
}

/// The keeper's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenConfig {
    /// The configured credentials file (`--env-file`, `[credentials] file`).
    pub file: Option<PathBuf>,
    /// Renewal method.
    pub renew: Renew,
    /// How long before expiry to renew.
    pub renew_before: Duration,
    /// DhanHQ REST base (RenewToken).
    pub rest_url: String,
    /// DhanHQ auth base (generateAccessToken).
    pub auth_url: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            file: None,
            renew: Renew::None,
            renew_before: DEFAULT_RENEW_BEFORE,
            rest_url: DHAN_REST_URL.to_string(),
            auth_url: DHAN_AUTH_URL.to_string(),
        }
    }
}

/// What the relay shows about the token (never the token).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenStatus {
    /// Where the current token came from: `file …`, `.env (…)`,
    /// `environment`, `admin`, `renewal` or `demo`.
    pub source: String,
    /// Its `exp` (Unix seconds), when it is a readable JWT.
    pub expires_at: Option<u64>,
    /// Renewal method.
    pub renew: Renew,
    /// When the next renewal is due (Unix seconds).
    pub next_renewal_at: Option<u64>,
    /// Successful renewals since start.
    pub renewals: u64,
    /// Failed renewal attempts since start.
    pub renew_failures: u64,
    /// New tokens handed to the network thread since start (any source).
    pub rotations: u64,
    /// DhanHQ refuses the current token (a connection is in `auth_failed`).
    pub refused: bool,
    /// The last problem with the credentials file or a renewal, if it is
    /// not solved yet.
    pub last_error: Option<String>,
}

/// The status, published by the keeper for the other threads.
pub type SharedTokenStatus = Arc<ArcSwap<TokenStatus>>;

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenStatus {
    /// Seconds until expiry (negative once expired).
    pub fn seconds_left(&self, now: u64) -> Option<i64> {
        self.expires_at.map(|e| e as i64 - now as i64)
    }

    /// `refused`, `expired`, `expiring` (under an hour), `ok`, or `unknown`
    /// (no readable expiry).
    pub fn state(&self, now: u64) -> &'static str {
        match self.seconds_left(now) {
            _ if self.refused => "refused",
            Some(left) if left <= 0 => "expired",
            Some(left) if left < EXPIRING_WITHIN as i64 => "expiring",
            Some(_) => "ok",
            None => "unknown",
        }
    }

    /// The `token` object of `/health` and `/stats`.
    pub fn json(&self, now: u64) -> Value {
        let time = |t: Option<u64>| t.map(crate::instrument::date::ist_iso);
        json!({
            "source": self.source,
            "expiresAt": time(self.expires_at),
            "secondsLeft": self.seconds_left(now),
            "state": self.state(now),
            "renew": self.renew.as_str(),
            "nextRenewalAt": time(self.next_renewal_at),
            "renewals": self.renewals,
            "renewFailures": self.renew_failures,
            "rotations": self.rotations,
            "lastError": self.last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_json() {
        let mut s = TokenStatus {
            source: "file /x".into(),
            expires_at: Some(10_000),
            ..TokenStatus::default()
        };
        assert_eq!(s.state(1_000), "ok");
        assert_eq!(s.state(10_000 - 3_599), "expiring");
        assert_eq!(s.state(10_000), "expired");
        s.refused = true;
        assert_eq!(s.state(1_000), "refused");
        s.refused = false;
        let v = s.json(9_000);
        assert_eq!(v["secondsLeft"], 1_000);
        assert_eq!(v["state"], "expiring");
        assert_eq!(v["renew"], "none");
        assert!(v["expiresAt"].as_str().unwrap().contains("+05:30"), "{v}");
        s.expires_at = None;
        assert_eq!(s.state(1), "unknown");
        assert_eq!(s.json(1)["secondsLeft"], Value::Null);
        assert_eq!("totp".parse::<Renew>(), Ok(Renew::Totp));
        assert!("sometimes"
            .parse::<Renew>()
            .unwrap_err()
            .contains("none, dhan, totp"));
    }
}
