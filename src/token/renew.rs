//! DhanHQ's two token calls, blocking, for the keeper thread only.
//!
//! * `GET {rest_url}/v2/RenewToken` with headers `access-token` and
//!   `dhanClientId` (as the official SDK sends them): a fresh token for one
//!   generated on Dhan Web; DhanHQ invalidates the old one at once.
//! * `POST {auth_url}/app/generateAccessToken?dhanClientId=…&pin=…&totp=…`:
//!   a fresh token from the account PIN and a TOTP code.
//!
//! The answer's token field is reported as `accessToken` and as `token`;
//! both are accepted, at the top level or under `data`. Errors carry
//! DhanHQ's `errorCode` and `errorMessage` when it sent them, and pass
//! through [`redact`] so no token, PIN or TOTP code reaches a log — the
//! generation URL itself carries the PIN, so it is never printed.

use std::time::Duration;

use serde_json::Value;

use super::sources::Account;
use super::totp;
use crate::upstream::{Credentials, REDACTED};

/// Default DhanHQ REST base.
pub const DHAN_REST_URL: &str = "https://api.dhan.co";
/// Default DhanHQ auth base (token generation).
pub const DHAN_AUTH_URL: &str = "https://auth.dhan.co";

/// Time limit of one call.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// `GET /v2/RenewToken`: the renewed token.
pub fn renew(rest_url: &str, credentials: &Credentials) -> Result<String, String> {
    let url = format!("{}/v2/RenewToken", rest_url.trim_end_matches('/'));
    let secrets = [credentials.access_token(), credentials.client_id()];
    let request = agent(&url)
        .get(&url)
        .header("access-token", credentials.access_token())
        .header("dhanClientId", credentials.client_id())
        .header("client-id", credentials.client_id());
    let answer = request.call();
    token_of(answer, &secrets, "RenewToken")
}

/// `POST /app/generateAccessToken`: a token from PIN and TOTP at `unix_secs`.
pub fn generate(auth_url: &str, account: &Account, unix_secs: u64) -> Result<String, String> {
    let (pin, secret) = account
        .totp()
        .ok_or("DHAN_PIN and DHAN_TOTP_SECRET are not both set")?;
    let key = totp::decode_secret(secret.expose()).map_err(|e| format!("DHAN_TOTP_SECRET: {e}"))?;
    let code = totp::code(&key, unix_secs);
    let id = account.credentials.client_id();
    let base = format!("{}/app/generateAccessToken", auth_url.trim_end_matches('/'));
    let secrets = [pin.expose(), code.as_str(), secret.expose()];
    let answer = agent(&base)
        .post(&base)
        .query("dhanClientId", id)
        .query("pin", pin.expose())
        .query("totp", &code)
        .send_empty();
    token_of(answer, &secrets, "generateAccessToken")
}

pub(crate) fn agent(url: &str) -> ureq::Agent {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        // A redirect would carry the token headers elsewhere.
        .max_redirects(0)
        .user_agent(concat!("dhan-relay/", env!("CARGO_PKG_VERSION")));
    if loopback {
        // A proxy from the environment must not capture loopback.
        config = config.proxy(None);
    }
    ureq::Agent::new_with_config(config.build())
}

/// The token in a call's answer, or an error in words with no secret.
fn token_of(
    answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    secrets: &[&str],
    call: &str,
) -> Result<String, String> {
    let mut response = answer.map_err(|e| redact(&format!("{call}: {e}"), secrets))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(|e| redact(&format!("{call}: reading the answer: {e}"), secrets))?;
    let json: Option<Value> = serde_json::from_str(&body).ok();
    let token = json.as_ref().and_then(|v| {
        let data = v.get("data").unwrap_or(v);
        ["accessToken", "token"]
            .iter()
            .find_map(|k| data.get(*k).or_else(|| v.get(*k)))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    });
    match token {
        Some(t) if (200..300).contains(&status) => Ok(t),
        _ => {
            let field = |k: &str| {
                json.as_ref()
                    .and_then(|v| v.get(k).or_else(|| v.get("data").and_then(|d| d.get(k))))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let why = match (
                field("errorCode"),
                field("errorMessage").or(field("message")),
            ) {
                (Some(code), Some(msg)) => format!("{code} {msg}"),
                (None, Some(msg)) => msg,
                (Some(code), None) => code,
                (None, None) if (200..300).contains(&status) => "no token in the answer".into(),
                (None, None) => "no error text".into(),
            };
            Err(redact(
                &format!("{call} answered HTTP {status}: {why}"),
                secrets,
            ))
        }
    }
}

/// `text` with every secret (and any URL query, which may carry one) cut.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(*s, REDACTED);
    }
    // A URL's query string (`?pin=…`) never survives into a message.
    let mut from = 0;
    while let Some(q) = out[from..].find('?').map(|q| q + from) {
        let end = out[q..]
            .find(char::is_whitespace)
            .map_or(out.len(), |e| q + e);
        out.replace_range(q..end, "?…");
        from = q + "?…".len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_cuts_secrets_and_queries() {
        let t = redact(
            "POST http://h/app/generateAccessToken?dhanClientId=1&pin=4321&totp=123456 failed: 4321 tok.en",
            &["4321", "tok.en", "123456"],
        );
        assert_eq!(t, "POST http://h/app/generateAccessToken?… failed: *** ***");
        assert_eq!(redact("a?x=1 b? c?y", &[]), "a?… b?… c?…");
    }
}
