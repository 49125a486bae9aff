//! Admin calls: `POST /api/admin/credentials` hands the token keeper a new
//! client id and access token.
//!
//! On a listener that asks for API keys these need a key with the `admin`
//! scope (checked before we get here); on one that does not, they are
//! served to loopback peers only. Like every request, only to an allowed
//! Origin, so a web page cannot make a visitor's browser post one. The call is validated here
//! and queued for the keeper, which reconnects the upstream; the answer
//! comes at once (202) and never echoes a secret. A token the keeper cannot
//! use shows in `/health` like any other credentials problem.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::http::Response;
use crate::token::keeper::Request;
use crate::token::{jwt, unix_now, KeeperHandle};
use crate::upstream::Credentials;

/// Longest access token accepted (DhanHQ's are a few hundred bytes).
const MAX_TOKEN: usize = 4096;

/// The paths that take a request body.
pub fn takes_body(method: &str, path: &str) -> bool {
    method == "POST" && matches!(path, "/api/admin/credentials" | "/api/session")
}

/// `POST /api/admin/credentials` from `peer` with `body`; `keyed` says the
/// caller showed a key with the admin scope.
pub fn credentials(peer: IpAddr, keyed: bool, body: &[u8], keeper: &KeeperHandle) -> Response {
    if !keyed && !peer.is_loopback() {
        return Response::error(
            403,
            "admin calls without an API key are served to loopback clients only \
             (turn access control on and use a key with the admin scope)",
        );
    }
    let credentials = match parse(body) {
        Ok(c) => c,
        Err(why) => return Response::error(400, &why),
    };
    let expires = jwt::expiry(credentials.access_token());
    if let Some(exp) = expires.filter(|&e| e <= unix_now()) {
        return Response::error(
            400,
            &format!(
                "this access token expired at {}: generate a new one on Dhan Web",
                crate::instrument::date::ist_iso(exp)
            ),
        );
    }
    if !keeper.send(Request::Set(credentials)) {
        return Response::error(503, "the token keeper has stopped; restart the relay");
    }
    let body = json!({
        "status": "accepted",
        "message": "reconnecting upstream with the new access token; subscriptions are kept",
        "expiresAt": expires.map(crate::instrument::date::ist_iso),
    });
    Response::new(202, "application/json", body.to_string())
}

/// `{"clientId": "...", "accessToken": "..."}`, nothing else. Errors name
/// fields, never values.
fn parse(body: &[u8]) -> Result<Credentials, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body must be JSON {{\"clientId\": \"…\", \"accessToken\": \"…\"}} (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let obj = v
        .as_object()
        .ok_or("the body must be a JSON object with clientId and accessToken")?;
    if let Some(other) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "clientId" | "accessToken"))
    {
        let shown: String = other.chars().take(40).collect();
        return Err(format!(
            "unknown field '{shown}': only clientId and accessToken are accepted"
        ));
    }
    let field = |name: &str| -> Result<String, String> {
        let value = obj
            .get(name)
            .ok_or_else(|| format!("{name} is missing"))?
            .as_str()
            .ok_or_else(|| format!("{name} must be a string"))?
            .trim();
        if value.is_empty() {
            return Err(format!("{name} is empty"));
        }
        if value.len() > MAX_TOKEN || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{name} is not a DhanHQ value (too long, or has spaces or control characters)"
            ));
        }
        Ok(value.to_string())
    };
    Ok(Credentials::new(field("clientId")?, field("accessToken")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenStatus;

    fn answer(peer: &str, body: &str) -> (u16, String) {
        let keeper = KeeperHandle::detached(TokenStatus::default());
        let r = credentials(peer.parse().unwrap(), false, body.as_bytes(), &keeper);
        let text = String::from_utf8(r.to_bytes(false, false)).unwrap();
        (r.status, text)
    }

    #[test]
    fn bad_bodies_are_400_without_the_secret() {
        for (body, want) in [
            ("not json s3cret", "must be JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"clientId":"1"}"#, "accessToken is missing"),
            (
                r#"{"clientId":"1","accessToken":7}"#,
                "accessToken must be a string",
            ),
            (
                r#"{"clientId":"1","accessToken":" "}"#,
                "accessToken is empty",
            ),
            (
                r#"{"clientId":"1","accessToken":"s3 cret"}"#,
                "not a DhanHQ value",
            ),
            (
                r#"{"clientId":"1","accessToken":"s3cret","pin":"1"}"#,
                "unknown field 'pin'",
            ),
        ] {
            let (status, text) = answer("127.0.0.1", body);
            assert_eq!(status, 400, "{body}: {text}");
            assert!(text.contains(want), "{body}: {text}");
            assert!(
                !text.contains("s3cret") && !text.contains("s3 cret"),
                "{text}"
            );
        }
    }

    #[test]
    fn only_loopback_peers_and_a_live_keeper() {
        let body = r#"{"clientId":"1","accessToken":"tok"}"#;
        assert_eq!(answer("192.168.1.9", body).0, 403);
        // The detached keeper has no thread: 503, not a silent loss.
        assert_eq!(answer("::1", body).0, 503);
        let (tx, rx) = crossbeam_channel::unbounded();
        let keeper = KeeperHandle::with_channel(tx, TokenStatus::default());
        let r = credentials(
            "127.0.0.1".parse().unwrap(),
            false,
            body.as_bytes(),
            &keeper,
        );
        assert_eq!(r.status, 202);
        match rx.try_recv().unwrap() {
            Request::Set(c) => assert_eq!(c, Credentials::new("1", "tok")),
            other => panic!("{other:?}"),
        }
    }
}
