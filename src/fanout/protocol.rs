//! Client → relay messages (`docs/dhanhq-protocol.md`, the relay's client
//! protocol), parsed with a clear error for every way they can be wrong. Errors are sent back as
//! `{"type":"error","message":…}` and the connection stays open.

use serde_json::{Map, Value};

use crate::domain::{InstrumentKey, Mode, SecurityId, Segment};

/// An instrument as a client names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstrumentRef {
    /// `{"exchangeSegment": "NSE_EQ", "securityId": "2885"}`.
    Key(InstrumentKey),
    /// `{"symbol": "RELIANCE"}`.
    Symbol(String),
}

/// A parsed client message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Start (or change the mode of) these instruments.
    Subscribe {
        /// The instruments.
        instruments: Vec<InstrumentRef>,
        /// The mode (`ticker` when absent).
        mode: Mode,
    },
    /// Stop these instruments.
    Unsubscribe {
        /// The instruments.
        instruments: Vec<InstrumentRef>,
    },
    /// `{"type":"ping"}`: answered with `{"type":"pong"}`.
    Ping,
}

/// Longest piece of client input quoted back in an error.
const QUOTE_MAX: usize = 40;

fn quoted(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut short: String = text.chars().take(QUOTE_MAX).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("'{short}'")
}

/// Parses one text message; `max_instruments` caps one message's list.
pub fn parse(text: &str, max_instruments: usize) -> Result<ClientMessage, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("a message must be a JSON object with a \"type\"".into());
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(other) => return Err(format!("\"type\" must be a string, not {}", quoted(other))),
        None => return Err("missing \"type\" (expected subscribe or unsubscribe)".into()),
    };
    match kind {
        "subscribe" => {
            let mode = match obj.get("mode") {
                None | Some(Value::Null) => Mode::Ticker,
                Some(Value::String(m)) => m.parse().map_err(|_| {
                    format!(
                        "unknown mode {} (expected ticker, quote or full)",
                        quoted(&Value::String(m.clone()))
                    )
                })?,
                Some(other) => {
                    return Err(format!("\"mode\" must be a string, not {}", quoted(other)))
                }
            };
            Ok(ClientMessage::Subscribe {
                instruments: instruments(&obj, max_instruments)?,
                mode,
            })
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe {
            instruments: instruments(&obj, max_instruments)?,
        }),
        "ping" => Ok(ClientMessage::Ping),
        other => Err(format!(
            "unknown type {} (expected subscribe, unsubscribe or ping)",
            quoted(&Value::String(other.to_string()))
        )),
    }
}

fn instruments(obj: &Map<String, Value>, max: usize) -> Result<Vec<InstrumentRef>, String> {
    let list = match obj.get("instruments") {
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(format!(
                "\"instruments\" must be a list, not {}",
                quoted(other)
            ))
        }
        None => return Err("missing \"instruments\"".into()),
    };
    if list.is_empty() {
        return Err("\"instruments\" is empty".into());
    }
    if list.len() > max {
        return Err(format!(
            "too many instruments: {} in one message (limit {max})",
            list.len()
        ));
    }
    list.iter().map(instrument).collect()
}

fn instrument(v: &Value) -> Result<InstrumentRef, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "an instrument must be an object, not {}",
            quoted(v)
        ));
    };
    if let Some(symbol) = o.get("symbol") {
        return match symbol {
            Value::String(s) if !s.trim().is_empty() => {
                Ok(InstrumentRef::Symbol(s.trim().to_string()))
            }
            other => Err(format!(
                "\"symbol\" must be a non-empty string, not {}",
                quoted(other)
            )),
        };
    }
    let segment = match o.get("exchangeSegment") {
        Some(Value::String(s)) => s.parse::<Segment>().map_err(|_| {
            format!(
                "unknown exchangeSegment {}",
                quoted(&Value::String(s.clone()))
            )
        })?,
        Some(other) => return Err(format!("unknown exchangeSegment {}", quoted(other))),
        None => {
            return Err(
                "an instrument needs \"exchangeSegment\" and \"securityId\", or \"symbol\"".into(),
            )
        }
    };
    let id = match o.get("securityId") {
        Some(Value::String(s)) => s.parse::<SecurityId>(),
        Some(Value::Number(n)) => n.to_string().parse::<SecurityId>(),
        Some(other) => return Err(format!("securityId {} is not numeric", quoted(other))),
        None => return Err("an instrument needs \"securityId\"".into()),
    }
    .map_err(|e| {
        format!(
            "securityId {}: {e}",
            quoted(o.get("securityId").unwrap_or(&Value::Null))
        )
    })?;
    Ok(InstrumentRef::Key(InstrumentKey {
        segment,
        security_id: id,
    }))
}

/// `{"type":"error","message":…}`.
pub fn error_message(message: &str) -> String {
    serde_json::json!({"type": "error", "message": message}).to_string()
}

/// `{"type":"status","state":…,"message":…}`: `state` is the upstream's
/// machine-readable state (`connected`, `connecting`, `reconnecting`,
/// `down`) when the message is about it.
pub fn status_message(state: Option<&str>, message: &str) -> String {
    match state {
        Some(state) => {
            serde_json::json!({"type": "status", "state": state, "message": message}).to_string()
        }
        None => serde_json::json!({"type": "status", "message": message}).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ClientMessage {
        parse(text, 100).unwrap()
    }

    fn err(text: &str) -> String {
        parse(text, 3).unwrap_err()
    }

    #[test]
    fn accepts_the_protocol_examples() {
        assert_eq!(
            ok(
                r#"{"type": "subscribe", "instruments": [{"exchangeSegment": "BSE_EQ", "securityId": "500325"}], "mode": "ticker"}"#
            ),
            ClientMessage::Subscribe {
                instruments: vec![InstrumentRef::Key(InstrumentKey::new(
                    Segment::BseEq,
                    500325
                ))],
                mode: Mode::Ticker
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"subscribe","instruments":[{"exchangeSegment":"NSE_EQ","securityId":2885},{"symbol":" NIFTY "}],"mode":"full"}"#
            ),
            ClientMessage::Subscribe {
                instruments: vec![
                    InstrumentRef::Key(InstrumentKey::new(Segment::NseEq, 2885)),
                    InstrumentRef::Symbol("NIFTY".into())
                ],
                mode: Mode::Full
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"subscribe","instruments":[{"exchangeSegment":"IDX_I","securityId":"13"}]}"#
            ),
            ClientMessage::Subscribe {
                instruments: vec![InstrumentRef::Key(InstrumentKey::new(Segment::IdxI, 13))],
                mode: Mode::Ticker
            },
            "mode defaults to ticker"
        );
        assert_eq!(
            ok(
                r#"{"type":"unsubscribe","instruments":[{"exchangeSegment":"BSE_EQ","securityId":"500325"}]}"#
            ),
            ClientMessage::Unsubscribe {
                instruments: vec![InstrumentRef::Key(InstrumentKey::new(
                    Segment::BseEq,
                    500325
                ))]
            }
        );
        assert_eq!(ok(r#"{"type":"ping"}"#), ClientMessage::Ping);
    }

    #[test]
    fn every_mistake_has_its_own_message() {
        let cases = [
            ("{not json", "malformed JSON"),
            ("[1,2]", "must be a JSON object"),
            (r#"{"instruments":[]}"#, "missing \"type\""),
            (r#"{"type":5}"#, "\"type\" must be a string"),
            (r#"{"type":"subscrbe"}"#, "unknown type 'subscrbe'"),
            (r#"{"type":"subscribe"}"#, "missing \"instruments\""),
            (r#"{"type":"subscribe","instruments":{}}"#, "must be a list"),
            (r#"{"type":"subscribe","instruments":[]}"#, "is empty"),
            (
                r#"{"type":"subscribe","instruments":[1]}"#,
                "must be an object",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"exchangeSegment":"XYZ","securityId":"1"}]}"#,
                "unknown exchangeSegment 'XYZ'",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"exchangeSegment":"NSE_EQ","securityId":"abc"}]}"#,
                "securityId 'abc': security id must be a decimal number",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"exchangeSegment":"NSE_EQ","securityId":-5}]}"#,
                "securityId '-5'",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"exchangeSegment":"NSE_EQ","securityId":true}]}"#,
                "is not numeric",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"exchangeSegment":"NSE_EQ"}]}"#,
                "needs \"securityId\"",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"securityId":"1"}]}"#,
                "needs \"exchangeSegment\"",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"symbol":""}]}"#,
                "non-empty string",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"symbol":"A"}],"mode":"depth"}"#,
                "unknown mode 'depth'",
            ),
            (
                r#"{"type":"subscribe","instruments":[{"symbol":"A"},{"symbol":"B"},{"symbol":"C"},{"symbol":"D"}]}"#,
                "too many instruments: 4 in one message (limit 3)",
            ),
        ];
        for (input, expected) in cases {
            let e = err(input);
            assert!(e.contains(expected), "{input} → {e}");
        }
    }

    #[test]
    fn long_input_is_cut_when_quoted_and_messages_are_json() {
        let long = "X".repeat(500);
        let e = err(&format!(r#"{{"type":"{long}"}}"#));
        assert!(e.len() < 120, "{e}");
        let v: Value = serde_json::from_str(&error_message("bad \"thing\"")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","message":"bad \"thing\""})
        );
        let v: Value = serde_json::from_str(&status_message(
            Some("connected"),
            "Connected to price feed",
        ))
        .unwrap();
        assert_eq!(
            (v["type"].as_str(), v["state"].as_str()),
            (Some("status"), Some("connected"))
        );
        let v: Value = serde_json::from_str(&status_message(None, "note")).unwrap();
        assert!(v.get("state").is_none());
    }
}
