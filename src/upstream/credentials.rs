//! DhanHQ credentials and the feed URL that carries them.
//!
//! DhanHQ puts the access token and client id in the WebSocket URL's query,
//! so the real URL is a secret. It is built in one place, handed only to the
//! WebSocket handshake, and everything that might print it goes through
//! [`Credentials::redact`] first. `Debug` never shows the values.

use std::fmt;

/// The client id and access token of one DhanHQ account.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    client_id: String,
    access_token: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { client_id: ***, access_token: *** }")
    }
}

/// What is printed in place of a secret.
pub const REDACTED: &str = "***";

impl Credentials {
    /// Wraps a client id and access token (either may be empty: DhanHQ, and
    /// the simulator, answer that with a disconnect packet).
    pub fn new(client_id: impl Into<String>, access_token: impl Into<String>) -> Self {
        Credentials {
            client_id: client_id.into(),
            access_token: access_token.into(),
        }
    }

    /// The client id. Secret: for request headers and the credentials file
    /// only.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The access token. Secret: for request headers and the credentials
    /// file only.
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The URL to open: `feed_url` plus DhanHQ's query. Secret.
    pub(crate) fn url(&self, feed_url: &str) -> String {
        format!(
            "{}?version=2&token={}&clientId={}&authType=2",
            with_path(feed_url),
            encode(&self.access_token),
            encode(&self.client_id)
        )
    }

    /// The 20-level depth feed's URL: as the SDK's `fulldepth.py` builds
    /// it, without `version`.
    pub(crate) fn depth_url(&self, depth_url: &str) -> String {
        format!(
            "{}?token={}&clientId={}&authType=2",
            with_path(depth_url),
            encode(&self.access_token),
            encode(&self.client_id)
        )
    }

    /// The same URL with the secrets replaced, for logs.
    pub fn redacted_url(feed_url: &str) -> String {
        format!(
            "{}?version=2&token={REDACTED}&clientId={REDACTED}&authType=2",
            with_path(feed_url)
        )
    }

    /// `text` with every occurrence of the token or the client id (raw or
    /// URL-encoded) replaced: for any message that might quote a request.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in [&self.access_token, &self.client_id] {
            if secret.is_empty() {
                continue;
            }
            let encoded = encode(secret);
            for s in [secret.as_str(), encoded.as_str()] {
                if out.contains(s) {
                    out = out.replace(s, REDACTED);
                }
            }
        }
        out
    }
}

/// `wss://host` → `wss://host/`; a URL that already has a path keeps it.
fn with_path(feed_url: &str) -> String {
    let url = feed_url.trim_end_matches('?');
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    if after_scheme.contains('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_dhan_query_and_the_redacted_one_has_no_secret() {
        let c = Credentials::new("1100003626", "eyJhbGc.iOiJ+IUzU/xMiJ9=");
        assert_eq!(
            c.url("wss://api-feed.dhan.co"),
            "wss://api-feed.dhan.co/?version=2&token=eyJhbGc.iOiJ%2BIUzU%2FxMiJ9%3D&clientId=1100003626&authType=2"
        );
        assert_eq!(
            c.url("ws://127.0.0.1:9000/feed"),
            "ws://127.0.0.1:9000/feed?version=2&token=eyJhbGc.iOiJ%2BIUzU%2FxMiJ9%3D&clientId=1100003626&authType=2"
        );
        let shown = Credentials::redacted_url("wss://api-feed.dhan.co");
        assert_eq!(
            shown,
            "wss://api-feed.dhan.co/?version=2&token=***&clientId=***&authType=2"
        );
    }

    #[test]
    fn redact_and_debug_hide_both_secrets() {
        let c = Credentials::new("1100003626", "tok+en");
        let msg = format!("failed {} with tok%2Ben and tok+en", c.url("ws://h"));
        let red = c.redact(&msg);
        for secret in ["1100003626", "tok+en", "tok%2Ben"] {
            assert!(!red.contains(secret), "{red}");
        }
        assert_eq!(red.matches(REDACTED).count(), 4, "{red}");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("1100003626") && !dbg.contains("tok+en"));
    }
}
