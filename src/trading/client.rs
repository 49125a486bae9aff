//! DhanHQ's trading REST API, blocking, for the broker threads only.
//!
//! `{rest_url}/v2/…` with headers `access-token` and `client-id` (as the
//! official SDK's `dhan_http.py` sends them) and JSON bodies. The
//! credentials are read per call, so a rotated token is used at once.
//! Every call has the configured time limit; GETs are tried a second time
//! when no answer came (they change nothing); POST, PUT and DELETE never
//! are — the broker finds out what happened instead (`correlationId`).
//!
//! DhanHQ's errors carry `errorType`, `errorCode` (`DH-905`, …) and
//! `errorMessage`; they are passed on as they came. Nothing here ever
//! prints the token or the client id: transport errors go through
//! [`crate::token::renew::redact`].

use std::time::Duration;

use serde_json::Value;

use crate::token::renew::redact;
use crate::token::SharedCredentials;

/// Largest answer read (an order book of a busy day fits).
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// An HTTP method the broker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Reads.
    Get,
    /// Place.
    Post,
    /// Modify.
    Put,
    /// Cancel.
    Delete,
}

/// Why a call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// DhanHQ answered with an error.
    Refused {
        /// Its HTTP status.
        status: u16,
        /// `errorCode`, e.g. `DH-905`.
        code: Option<String>,
        /// `errorType`, e.g. `Input_Exception`.
        kind: Option<String>,
        /// `errorMessage` (or a description of the status).
        message: String,
    },
    /// No answer (could not connect, timed out, connection cut): whether a
    /// request that changes something took effect is unknown.
    NoAnswer(String),
    /// An answer that is not the JSON DhanHQ sends.
    BadAnswer(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused {
                status,
                code,
                message,
                ..
            } => match code {
                Some(code) => write!(f, "DhanHQ refused ({status} {code}): {message}"),
                None => write!(f, "DhanHQ refused ({status}): {message}"),
            },
            CallError::NoAnswer(why) => write!(f, "no answer from DhanHQ: {why}"),
            CallError::BadAnswer(why) => write!(f, "an answer DhanHQ should not send: {why}"),
        }
    }
}

/// A DhanHQ REST client.
pub struct DhanRest {
    base: String,
    agent: ureq::Agent,
    credentials: SharedCredentials,
}

impl std::fmt::Debug for DhanRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhanRest")
            .field("base", &self.base)
            .finish()
    }
}

impl DhanRest {
    /// A client of `{rest_url}/v2` with `timeout` per call.
    pub fn new(rest_url: &str, timeout: Duration, credentials: SharedCredentials) -> DhanRest {
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| rest_url.starts_with(p));
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            // A redirect would carry the access-token header to wherever
            // it points (ureq strips only Authorization and Cookie) and
            // turn a POST into a GET: none is followed.
            .max_redirects(0)
            .user_agent(concat!("dhan-relay/", env!("CARGO_PKG_VERSION")));
        if loopback {
            // A proxy from the environment must not capture loopback.
            config = config.proxy(None);
        }
        DhanRest {
            base: format!("{}/v2", rest_url.trim_end_matches('/')),
            agent: ureq::Agent::new_with_config(config.build()),
            credentials,
        }
    }

    /// The client id in use (for order bodies). Secret.
    pub fn client_id(&self) -> String {
        self.credentials.load().client_id().to_string()
    }

    /// `GET path`, tried twice when no answer came.
    pub fn get(&self, path: &str) -> Result<Value, CallError> {
        match self.call(Method::Get, path, None) {
            Err(CallError::NoAnswer(_)) => self.call(Method::Get, path, None),
            other => other,
        }
    }

    /// One call, never repeated. `path` starts with `/` (after `/v2`).
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let credentials = self.credentials.load_full();
        let secrets = [credentials.access_token(), credentials.client_id()];
        let url = format!("{}{path}", self.base);
        let token = credentials.access_token();
        let id = credentials.client_id();
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let answer = match method {
            Method::Get => self
                .agent
                .get(&url)
                .header("access-token", token)
                .header("client-id", id)
                .header("Accept", "application/json")
                .call(),
            Method::Delete => self
                .agent
                .delete(&url)
                .header("access-token", token)
                .header("client-id", id)
                .header("Accept", "application/json")
                .call(),
            Method::Post | Method::Put => {
                let request = if method == Method::Post {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                request
                    .header("access-token", token)
                    .header("client-id", id)
                    .header("Accept", "application/json")
                    .header("Content-Type", "application/json")
                    .send(bytes.as_bytes())
            }
        };
        let mut response =
            answer.map_err(|e| CallError::NoAnswer(redact(&e.to_string(), &secrets)))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| {
                CallError::NoAnswer(redact(&format!("reading the answer: {e}"), &secrets))
            })?;
        answer_of(status, &text).map_err(|e| match e {
            CallError::Refused {
                status,
                code,
                kind,
                message,
            } => CallError::Refused {
                status,
                code,
                kind,
                message: redact(&message, &secrets),
            },
            other => other,
        })
    }
}

/// A success's JSON, or DhanHQ's error.
fn answer_of(status: u16, text: &str) -> Result<Value, CallError> {
    let json: Option<Value> = if text.trim().is_empty() {
        Some(Value::Null)
    } else {
        serde_json::from_str(text).ok()
    };
    if (200..300).contains(&status) {
        return json.ok_or_else(|| {
            CallError::BadAnswer(format!("HTTP {status} with a body that is not JSON"))
        });
    }
    let field = |k: &str| {
        json.as_ref()
            .and_then(|v| v.get(k).or_else(|| v.get("data").and_then(|d| d.get(k))))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Err(CallError::Refused {
        status,
        code: field("errorCode"),
        kind: field("errorType"),
        message: field("errorMessage")
            .or_else(|| field("message"))
            .unwrap_or_else(|| format!("HTTP {status} without an error message")),
    })
}

/// `GET /v2/fundlimit` as clients see it: DhanHQ's own spellings
/// (`availabelBalance`, `receiveableAmount`) in plain camelCase, numbers
/// as numbers, and no client id.
pub fn funds(v: &Value) -> Value {
    const FIELDS: [(&str, &[&str]); 7] = [
        (
            "availableBalance",
            &["availabelBalance", "availableBalance"],
        ),
        ("sodLimit", &["sodLimit"]),
        ("collateralAmount", &["collateralAmount"]),
        (
            "receivableAmount",
            &["receiveableAmount", "receivableAmount"],
        ),
        ("utilizedAmount", &["utilizedAmount"]),
        ("blockedPayoutAmount", &["blockedPayoutAmount"]),
        ("withdrawableBalance", &["withdrawableBalance"]),
    ];
    let data = v.get("data").filter(|d| d.is_object()).unwrap_or(v);
    let mut out = serde_json::Map::new();
    for (name, sources) in FIELDS {
        let value = sources.iter().find_map(|s| data.get(*s)).and_then(|x| {
            x.as_f64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        });
        out.insert(name.to_string(), value.map_or(Value::Null, Value::from));
    }
    Value::Object(out)
}

/// A list answer (`GET /v2/orders`, `/v2/positions`): DhanHQ sends an
/// array (some answers wrap it in `data`); the client id is taken out of
/// each entry.
pub fn list(v: Value) -> Vec<Value> {
    let items = match v {
        Value::Array(items) => items,
        Value::Object(mut o) => match o.remove("data") {
            Some(Value::Array(items)) => items,
            Some(one @ Value::Object(_)) => vec![one],
            _ if o.is_empty() => Vec::new(),
            _ => vec![Value::Object(o)],
        },
        _ => Vec::new(),
    };
    items.into_iter().map(without_client_id).collect()
}

/// `v` without `dhanClientId` (an account identifier clients do not need).
pub fn without_client_id(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.remove("dhanClientId");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_keep_dhanhqs_code_and_message() {
        let e = answer_of(
            400,
            r#"{"errorType":"Input_Exception","errorCode":"DH-905","errorMessage":"Invalid quantity"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            CallError::Refused {
                status: 400,
                code: Some("DH-905".into()),
                kind: Some("Input_Exception".into()),
                message: "Invalid quantity".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "DhanHQ refused (400 DH-905): Invalid quantity"
        );
        let e = answer_of(502, "<html>bad gateway</html>").unwrap_err();
        assert!(matches!(
            e,
            CallError::Refused {
                status: 502,
                code: None,
                ..
            }
        ));
        assert!(matches!(
            answer_of(200, "<html>"),
            Err(CallError::BadAnswer(_))
        ));
        assert_eq!(answer_of(200, "").unwrap(), Value::Null);
    }

    #[test]
    fn funds_get_clean_names() {
        let v = json!({"dhanClientId":"1000000132","availabelBalance":98440.0,"sodLimit":113642,
            "collateralAmount":0.0,"receiveableAmount":0.0,"utilizedAmount":15202.0,
            "blockedPayoutAmount":0.0,"withdrawableBalance":98310.0});
        let f = funds(&v);
        assert_eq!(f["availableBalance"], 98440.0);
        assert_eq!(f["receivableAmount"], 0.0);
        assert_eq!(f["sodLimit"], 113642.0);
        assert!(f.get("dhanClientId").is_none() && f.get("availabelBalance").is_none());
    }

    #[test]
    fn lists_lose_the_client_id() {
        let l = list(json!([{"orderId":"1","dhanClientId":"9"},{"orderId":"2"}]));
        assert_eq!(l, vec![json!({"orderId":"1"}), json!({"orderId":"2"})]);
        assert_eq!(list(json!({"data":[{"a":1}]})), vec![json!({"a":1})]);
        assert!(list(json!({})).is_empty());
    }
}
