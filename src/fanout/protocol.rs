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
    /// `"mode": "depth20"`: 20-level depth (NSE_EQ, NSE_FNO), plus full
    /// mode on the main feed.
    SubscribeDepth20 {
        /// The instruments.
        instruments: Vec<InstrumentRef>,
    },
    /// Stop these instruments.
    Unsubscribe {
        /// The instruments.
        instruments: Vec<InstrumentRef>,
    },
    /// `{"type":"ping"}`: answered with `{"type":"pong"}`.
    Ping,
    /// `{"type":"subscribe_chain","underlying":"NIFTY","expiry":"nearest","strikes":10}`.
    SubscribeChain {
        /// The underlying's name.
        underlying: String,
        /// `nearest` (default), `next`, `monthly` or `YYYY-MM-DD`.
        expiry: String,
        /// Strikes each side of ATM (default 10).
        strikes: usize,
    },
    /// `{"type":"unsubscribe_chain","chain":"NIFTY:2026-12-08"}`.
    UnsubscribeChain {
        /// The chain's id, as `subscribed` gave it.
        chain: String,
    },
    /// `{"type":"subscribe_orders"}`: this account's order updates (needs
    /// trading on and a client that may trade).
    SubscribeOrders,
    /// `{"type":"unsubscribe_orders"}`.
    UnsubscribeOrders,
    /// `{"type":"options","flushIntervalUs":2000}`: write to this client at
    /// most once per interval (fewer, larger writes; 0, the default: as
    /// soon as anything is queued).
    Options {
        /// Microseconds, at most [`MAX_FLUSH_INTERVAL_US`].
        flush_interval_us: u32,
    },
}

/// Longest flush interval a client may ask for (100 ms): beyond it a
/// client would rather poll REST.
pub const MAX_FLUSH_INTERVAL_US: u32 = 100_000;

/// Longest piece of client input quoted back in an error.
const QUOTE_MAX: usize = 40;

/// Client input quoted back in an error: cut to [`QUOTE_MAX`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    fn of(v: &Value) -> Quoted {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut short: String = text.chars().take(QUOTE_MAX).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        Quoted(short)
    }

    fn str(s: &str) -> Quoted {
        Quoted::of(&Value::String(s.to_string()))
    }
}

impl std::fmt::Display for Quoted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'", self.0)
    }
}

/// Why a client message was not understood. Sent back as
/// `{"type":"error","message":…}`; the connection stays open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not JSON (serde's own words, with line and column).
    MalformedJson(String),
    /// JSON, but not an object.
    NotAnObject,
    /// No `type`.
    MissingType,
    /// `type` is not a string.
    TypeNotString(Quoted),
    /// `type` is not one we know.
    UnknownType(Quoted),
    /// `mode` is not a string.
    ModeNotString(Quoted),
    /// `mode` is not ticker, quote or full.
    UnknownMode(Quoted),
    /// No `instruments`.
    MissingInstruments,
    /// `instruments` is not a list.
    InstrumentsNotList(Quoted),
    /// `instruments` is empty.
    NoInstruments,
    /// More instruments than one message may carry.
    TooManyInstruments {
        /// How many were sent.
        sent: usize,
        /// The limit.
        limit: usize,
    },
    /// An instrument is not an object.
    InstrumentNotObject(Quoted),
    /// `symbol` is empty or not a string.
    BadSymbol(Quoted),
    /// An instrument has neither segment + id nor a symbol.
    MissingSegment,
    /// `exchangeSegment` is not a segment name.
    UnknownSegment(Quoted),
    /// An instrument has a segment but no `securityId`.
    MissingSecurityId,
    /// `securityId` is neither a string nor a number.
    SecurityIdNotNumeric(Quoted),
    /// `securityId` does not parse (the domain's reason).
    BadSecurityId(Quoted, String),
    /// A field is missing or of the wrong kind.
    BadField(&'static str, &'static str),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ProtocolError::*;
        match self {
            MalformedJson(e) => write!(f, "malformed JSON: {e}"),
            NotAnObject => f.write_str("a message must be a JSON object with a \"type\""),
            MissingType => f.write_str(
                "missing \"type\" (expected subscribe, unsubscribe, subscribe_orders, unsubscribe_orders or ping)",
            ),
            TypeNotString(q) => write!(f, "\"type\" must be a string, not {q}"),
            UnknownType(q) => write!(
                f,
                "unknown type {q} (expected subscribe, unsubscribe, subscribe_orders, unsubscribe_orders, subscribe_chain, unsubscribe_chain, options or ping)"
            ),
            ModeNotString(q) => write!(f, "\"mode\" must be a string, not {q}"),
            UnknownMode(q) => write!(
                f,
                "unknown mode {q} (expected ticker, quote, full or depth20)"
            ),
            MissingInstruments => f.write_str("missing \"instruments\""),
            InstrumentsNotList(q) => write!(f, "\"instruments\" must be a list, not {q}"),
            NoInstruments => f.write_str("\"instruments\" is empty"),
            TooManyInstruments { sent, limit } => write!(
                f,
                "too many instruments: {sent} in one message (limit {limit})"
            ),
            InstrumentNotObject(q) => write!(f, "an instrument must be an object, not {q}"),
            BadSymbol(q) => write!(f, "\"symbol\" must be a non-empty string, not {q}"),
            MissingSegment => f.write_str(
                "an instrument needs \"exchangeSegment\" and \"securityId\", or \"symbol\"",
            ),
            UnknownSegment(q) => write!(f, "unknown exchangeSegment {q}"),
            MissingSecurityId => f.write_str("an instrument needs \"securityId\""),
            SecurityIdNotNumeric(q) => write!(f, "securityId {q} is not numeric"),
            BadSecurityId(q, why) => write!(f, "securityId {q}: {why}"),
            BadField(field, want) => write!(f, "\"{field}\" must be {want}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parses one text message; `max_instruments` caps one message's list.
pub fn parse(text: &str, max_instruments: usize) -> Result<ClientMessage, ProtocolError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::MalformedJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(other) => return Err(ProtocolError::TypeNotString(Quoted::of(other))),
        None => return Err(ProtocolError::MissingType),
    };
    match kind {
        "subscribe" => {
            if obj.get("mode").and_then(Value::as_str) == Some("depth20") {
                return Ok(ClientMessage::SubscribeDepth20 {
                    instruments: instruments(&obj, max_instruments)?,
                });
            }
            let mode = match obj.get("mode") {
                None | Some(Value::Null) => Mode::Ticker,
                Some(Value::String(m)) => m
                    .parse()
                    .map_err(|_| ProtocolError::UnknownMode(Quoted::str(m)))?,
                Some(other) => return Err(ProtocolError::ModeNotString(Quoted::of(other))),
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
        "subscribe_orders" => Ok(ClientMessage::SubscribeOrders),
        "unsubscribe_orders" => Ok(ClientMessage::UnsubscribeOrders),
        "options" => match obj.get("flushIntervalUs").map(Value::as_u64) {
            Some(Some(us)) if us <= u64::from(MAX_FLUSH_INTERVAL_US) => {
                Ok(ClientMessage::Options {
                    flush_interval_us: us as u32,
                })
            }
            _ => Err(ProtocolError::BadField(
                "flushIntervalUs",
                "a whole number of microseconds from 0 to 100000",
            )),
        },
        "subscribe_chain" => {
            let text = |field: &'static str| match obj.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 40 => {
                    Ok(Some(s.trim().to_string()))
                }
                None | Some(Value::Null) => Ok(None),
                Some(_) => Err(ProtocolError::BadField(
                    field,
                    "a name (a string of up to 40 characters)",
                )),
            };
            let underlying = text("underlying")?.ok_or(ProtocolError::BadField(
                "underlying",
                "given (e.g. \"NIFTY\")",
            ))?;
            let expiry = text("expiry")?.unwrap_or_else(|| "nearest".into());
            let strikes =
                match obj.get("strikes") {
                    None | Some(Value::Null) => 10,
                    Some(v) => v.as_u64().filter(|n| (1..=50).contains(n)).ok_or(
                        ProtocolError::BadField("strikes", "a whole number from 1 to 50"),
                    )? as usize,
                };
            Ok(ClientMessage::SubscribeChain {
                underlying,
                expiry,
                strikes,
            })
        }
        "unsubscribe_chain" => match obj.get("chain") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 64 => {
                Ok(ClientMessage::UnsubscribeChain { chain: id.clone() })
            }
            _ => Err(ProtocolError::BadField(
                "chain",
                "the id subscribe_chain answered (e.g. \"NIFTY:2026-12-08\")",
            )),
        },
        other => Err(ProtocolError::UnknownType(Quoted::str(other))),
    }
}

fn instruments(obj: &Map<String, Value>, max: usize) -> Result<Vec<InstrumentRef>, ProtocolError> {
    let list = match obj.get("instruments") {
        Some(Value::Array(list)) => list,
        Some(other) => return Err(ProtocolError::InstrumentsNotList(Quoted::of(other))),
        None => return Err(ProtocolError::MissingInstruments),
    };
    if list.is_empty() {
        return Err(ProtocolError::NoInstruments);
    }
    if list.len() > max {
        return Err(ProtocolError::TooManyInstruments {
            sent: list.len(),
            limit: max,
        });
    }
    list.iter().map(instrument).collect()
}

/// One instrument as a client names it (also an order's instrument).
pub(crate) fn instrument(v: &Value) -> Result<InstrumentRef, ProtocolError> {
    let Value::Object(o) = v else {
        return Err(ProtocolError::InstrumentNotObject(Quoted::of(v)));
    };
    if let Some(symbol) = o.get("symbol") {
        return match symbol {
            Value::String(s) if !s.trim().is_empty() => {
                Ok(InstrumentRef::Symbol(s.trim().to_string()))
            }
            other => Err(ProtocolError::BadSymbol(Quoted::of(other))),
        };
    }
    let segment = match o.get("exchangeSegment") {
        Some(Value::String(s)) => s
            .parse::<Segment>()
            .map_err(|_| ProtocolError::UnknownSegment(Quoted::str(s)))?,
        Some(other) => return Err(ProtocolError::UnknownSegment(Quoted::of(other))),
        None => return Err(ProtocolError::MissingSegment),
    };
    let raw = match o.get("securityId") {
        Some(v @ Value::String(s)) => (s.parse::<SecurityId>(), v),
        Some(v @ Value::Number(n)) => (n.to_string().parse::<SecurityId>(), v),
        Some(other) => return Err(ProtocolError::SecurityIdNotNumeric(Quoted::of(other))),
        None => return Err(ProtocolError::MissingSecurityId),
    };
    let id = raw
        .0
        .map_err(|e| ProtocolError::BadSecurityId(Quoted::of(raw.1), e.to_string()))?;
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
        parse(text, 3).unwrap_err().to_string()
    }

    #[test]
    fn options_take_a_flush_interval_within_bounds() {
        assert_eq!(
            ok(r#"{"type":"options","flushIntervalUs":2000}"#),
            ClientMessage::Options {
                flush_interval_us: 2000
            }
        );
        assert_eq!(
            ok(r#"{"type":"options","flushIntervalUs":0}"#),
            ClientMessage::Options {
                flush_interval_us: 0
            }
        );
        for bad in [
            r#"{"type":"options"}"#,
            r#"{"type":"options","flushIntervalUs":100001}"#,
            r#"{"type":"options","flushIntervalUs":-1}"#,
            r#"{"type":"options","flushIntervalUs":"5"}"#,
        ] {
            assert!(err(bad).contains("flushIntervalUs"), "{bad}");
        }
    }

    #[test]
    fn chain_messages() {
        assert_eq!(
            ok(r#"{"type":"subscribe_chain","underlying":" NIFTY ","expiry":"next","strikes":5}"#),
            ClientMessage::SubscribeChain {
                underlying: "NIFTY".into(),
                expiry: "next".into(),
                strikes: 5
            }
        );
        assert_eq!(
            ok(r#"{"type":"subscribe_chain","underlying":"SENSEX"}"#),
            ClientMessage::SubscribeChain {
                underlying: "SENSEX".into(),
                expiry: "nearest".into(),
                strikes: 10
            }
        );
        assert_eq!(
            ok(r#"{"type":"unsubscribe_chain","chain":"NIFTY:2026-12-08"}"#),
            ClientMessage::UnsubscribeChain {
                chain: "NIFTY:2026-12-08".into()
            }
        );
        for (text, want) in [
            (
                r#"{"type":"subscribe_chain"}"#,
                "\"underlying\" must be given",
            ),
            (
                r#"{"type":"subscribe_chain","underlying":7}"#,
                "\"underlying\" must be a name",
            ),
            (
                r#"{"type":"subscribe_chain","underlying":"NIFTY","strikes":0}"#,
                "\"strikes\" must be",
            ),
            (
                r#"{"type":"subscribe_chain","underlying":"NIFTY","strikes":51}"#,
                "\"strikes\" must be",
            ),
            (r#"{"type":"unsubscribe_chain"}"#, "\"chain\" must be"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
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
        assert_eq!(
            ok(r#"{"type":"subscribe_orders"}"#),
            ClientMessage::SubscribeOrders
        );
        assert_eq!(
            ok(r#"{"type":"unsubscribe_orders","extra":1}"#),
            ClientMessage::UnsubscribeOrders
        );
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
        assert!(e.len() < 200, "{e}"); // 40 characters quoted + the fixed text
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
