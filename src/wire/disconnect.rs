//! Server disconnect reasons (feed code 50, depth code 50), named so that logs,
//! `/health` and clients say what went wrong and what to fix.

use std::fmt;

/// Why DhanHQ closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// 805: more WebSocket connections than the account may hold.
    TooManyConnections,
    /// 806: the account has no Data APIs subscription.
    DataApiNotSubscribed,
    /// 807: the access token has expired.
    TokenExpired,
    /// 808: the client id is not valid.
    InvalidClientId,
    /// 809: authentication failed.
    AuthFailed,
    /// A code DhanHQ has not documented; kept as data, not an error.
    Other(u16),
}

impl DisconnectReason {
    /// The reason for a wire code.
    pub const fn from_code(code: u16) -> Self {
        match code {
            805 => DisconnectReason::TooManyConnections,
            806 => DisconnectReason::DataApiNotSubscribed,
            807 => DisconnectReason::TokenExpired,
            808 => DisconnectReason::InvalidClientId,
            809 => DisconnectReason::AuthFailed,
            other => DisconnectReason::Other(other),
        }
    }

    /// The wire code.
    pub const fn code(self) -> u16 {
        match self {
            DisconnectReason::TooManyConnections => 805,
            DisconnectReason::DataApiNotSubscribed => 806,
            DisconnectReason::TokenExpired => 807,
            DisconnectReason::InvalidClientId => 808,
            DisconnectReason::AuthFailed => 809,
            DisconnectReason::Other(code) => code,
        }
    }

    /// A stable snake_case name for metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            DisconnectReason::TooManyConnections => "too_many_connections",
            DisconnectReason::DataApiNotSubscribed => "data_api_not_subscribed",
            DisconnectReason::TokenExpired => "access_token_expired",
            DisconnectReason::InvalidClientId => "invalid_client_id",
            DisconnectReason::AuthFailed => "authentication_failed",
            DisconnectReason::Other(_) => "unknown",
        }
    }

    /// Whether retrying soon is pointless until a person fixes credentials:
    /// the network thread backs off to a long interval on these.
    pub const fn is_auth_failure(self) -> bool {
        matches!(
            self,
            DisconnectReason::TokenExpired
                | DisconnectReason::InvalidClientId
                | DisconnectReason::AuthFailed
        )
    }

    /// What a person should do about it.
    pub const fn hint(self) -> &'static str {
        match self {
            DisconnectReason::TooManyConnections => {
                "close other live-feed connections of this account (DhanHQ allows 5)"
            }
            DisconnectReason::DataApiNotSubscribed => {
                "enable the Data APIs subscription for this account on DhanHQ"
            }
            DisconnectReason::TokenExpired => {
                "generate a new access token and set DHAN_ACCESS_TOKEN"
            }
            DisconnectReason::InvalidClientId => "check DHAN_CLIENT_ID",
            DisconnectReason::AuthFailed => "check DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN",
            DisconnectReason::Other(_) => "see DhanHQ's documentation for this code",
        }
    }
}

impl fmt::Display for DisconnectReason {
    /// `807 access_token_expired: generate a new access token ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code(), self.name(), self.hint())
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for DisconnectReason {
    /// Through the wire code, so `Other(805)` (which the wire cannot carry)
    /// is never generated.
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(DisconnectReason::from_code(u.arbitrary()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_auth_failures_are_807_to_809() {
        for code in 0..=u16::MAX {
            let r = DisconnectReason::from_code(code);
            assert_eq!(r.code(), code);
            assert_eq!(r.is_auth_failure(), (807..=809).contains(&code));
        }
        assert_eq!(
            DisconnectReason::TokenExpired.to_string(),
            "807 access_token_expired: generate a new access token and set DHAN_ACCESS_TOKEN"
        );
    }
}
