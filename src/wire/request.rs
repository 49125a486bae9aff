//! Requests to DhanHQ: JSON text frames (docs/dhanhq-protocol.md, "Requests"
//! and "20-level depth feed").
//!
//! Encoding is written by hand rather than through a serializer: the shape is
//! fixed, the field order is DhanHQ's own, and the relay sends these only on
//! subscription changes, never per tick. [`parse`] is the other direction,
//! for the simulator (and tests): it reads what a DhanHQ server would accept
//! and reports anything else as a typed [`ParseError`].

use std::fmt::{self, Write as _};

use serde::Deserialize;

use crate::domain::{BadSecurityId, InstrumentKey, Mode, Segment};

/// A request's `RequestCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestCode {
    /// 12: close the connection.
    Disconnect,
    /// 15.
    SubscribeTicker,
    /// 16.
    UnsubscribeTicker,
    /// 17.
    SubscribeQuote,
    /// 18.
    UnsubscribeQuote,
    /// 21.
    SubscribeFull,
    /// 22.
    UnsubscribeFull,
    /// 23: 20-level depth feed only.
    SubscribeDepth,
    /// 24 (what DhanHQ's SDK 2.3.0 sends, `fulldepth.py`: `request_code +
    /// 1`); 25, the docs' annexure code, is read as this too.
    UnsubscribeDepth,
}

/// Most instruments in one message on the main feed.
pub const MAX_PER_MESSAGE: usize = 100;
/// Most instruments in one message on the 20-level depth feed.
pub const MAX_PER_DEPTH_MESSAGE: usize = 50;
/// The disconnect request, sent before closing on shutdown.
pub const DISCONNECT: &str = r#"{"RequestCode":12}"#;

impl RequestCode {
    /// The subscribe code for a mode.
    pub const fn subscribe(mode: Mode) -> Self {
        match mode {
            Mode::Ticker => RequestCode::SubscribeTicker,
            Mode::Quote => RequestCode::SubscribeQuote,
            Mode::Full => RequestCode::SubscribeFull,
        }
    }

    /// The unsubscribe code for a mode.
    pub const fn unsubscribe(mode: Mode) -> Self {
        match mode {
            Mode::Ticker => RequestCode::UnsubscribeTicker,
            Mode::Quote => RequestCode::UnsubscribeQuote,
            Mode::Full => RequestCode::UnsubscribeFull,
        }
    }

    /// The numeric code.
    pub const fn code(self) -> u8 {
        match self {
            RequestCode::Disconnect => 12,
            RequestCode::SubscribeTicker => 15,
            RequestCode::UnsubscribeTicker => 16,
            RequestCode::SubscribeQuote => 17,
            RequestCode::UnsubscribeQuote => 18,
            RequestCode::SubscribeFull => 21,
            RequestCode::UnsubscribeFull => 22,
            RequestCode::SubscribeDepth => 23,
            RequestCode::UnsubscribeDepth => 24,
        }
    }

    /// The code for a number, if DhanHQ defines it.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            12 => RequestCode::Disconnect,
            15 => RequestCode::SubscribeTicker,
            16 => RequestCode::UnsubscribeTicker,
            17 => RequestCode::SubscribeQuote,
            18 => RequestCode::UnsubscribeQuote,
            21 => RequestCode::SubscribeFull,
            22 => RequestCode::UnsubscribeFull,
            23 => RequestCode::SubscribeDepth,
            // The sources disagree (docs/dhanhq-protocol.md): accept both.
            24 | 25 => RequestCode::UnsubscribeDepth,
            _ => return None,
        })
    }

    /// The mode and direction (`true` = subscribe) of a main-feed code.
    pub const fn mode_change(self) -> Option<(Mode, bool)> {
        Some(match self {
            RequestCode::SubscribeTicker => (Mode::Ticker, true),
            RequestCode::UnsubscribeTicker => (Mode::Ticker, false),
            RequestCode::SubscribeQuote => (Mode::Quote, true),
            RequestCode::UnsubscribeQuote => (Mode::Quote, false),
            RequestCode::SubscribeFull => (Mode::Full, true),
            RequestCode::UnsubscribeFull => (Mode::Full, false),
            RequestCode::Disconnect
            | RequestCode::SubscribeDepth
            | RequestCode::UnsubscribeDepth => return None,
        })
    }

    /// How many instruments DhanHQ takes in one message with this code.
    pub const fn batch_limit(self) -> usize {
        match self {
            RequestCode::SubscribeDepth | RequestCode::UnsubscribeDepth => MAX_PER_DEPTH_MESSAGE,
            _ => MAX_PER_MESSAGE,
        }
    }
}

/// A subscription that cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// RequestCode 12 carries no instruments; send [`DISCONNECT`].
    NotASubscription,
    /// The 20-level depth feed serves NSE_EQ and NSE_FNO only.
    DepthSegment(InstrumentKey),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotASubscription => {
                f.write_str("RequestCode 12 is a disconnect, not a subscription")
            }
            RequestError::DepthSegment(key) => write!(
                f,
                "20-level depth covers NSE_EQ and NSE_FNO only, not {key}"
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// Encodes a subscription change as one or more JSON messages of at most
/// [`RequestCode::batch_limit`] instruments each, in the given order. An
/// empty list gives no messages.
pub fn encode_subscription(
    code: RequestCode,
    instruments: &[InstrumentKey],
) -> Result<Vec<String>, RequestError> {
    if code == RequestCode::Disconnect {
        return Err(RequestError::NotASubscription);
    }
    if matches!(
        code,
        RequestCode::SubscribeDepth | RequestCode::UnsubscribeDepth
    ) {
        if let Some(key) = instruments
            .iter()
            .find(|k| !matches!(k.segment, Segment::NseEq | Segment::NseFno))
        {
            return Err(RequestError::DepthSegment(*key));
        }
    }
    Ok(instruments
        .chunks(code.batch_limit())
        .map(|batch| encode_batch(code, batch))
        .collect())
}

fn encode_batch(code: RequestCode, batch: &[InstrumentKey]) -> String {
    // ~48 bytes per instrument entry.
    let mut s = String::with_capacity(64 + batch.len() * 48);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        r#"{{"RequestCode":{},"InstrumentCount":{},"InstrumentList":["#,
        code.code(),
        batch.len()
    );
    for (i, key) in batch.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"ExchangeSegment":"{}","SecurityId":"{}"}}"#,
            key.segment.name(),
            key.security_id
        );
    }
    s.push_str("]}");
    s
}

/// A request as a DhanHQ server reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub code: RequestCode,
    /// The instruments, in message order; empty for a disconnect.
    pub instruments: Vec<InstrumentKey>,
}

/// Why a text frame is not a request DhanHQ would accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or not the request's shape (a field of the wrong type, a
    /// missing `RequestCode`). Line and column as serde_json reports them.
    BadJson {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A `RequestCode` DhanHQ does not define.
    UnknownRequestCode(i64),
    /// A subscription without `InstrumentCount` or `InstrumentList`.
    MissingField(&'static str),
    /// `InstrumentList[index].ExchangeSegment` is not a segment name.
    UnknownSegment {
        /// Position in `InstrumentList`.
        index: usize,
    },
    /// `InstrumentList[index].SecurityId` is not a decimal `u32` string.
    BadSecurityId {
        /// Position in `InstrumentList`.
        index: usize,
        /// What is wrong with it.
        reason: BadSecurityId,
    },
    /// `InstrumentCount` differs from the length of `InstrumentList`.
    CountMismatch {
        /// `InstrumentCount` as sent.
        declared: u64,
        /// Entries in `InstrumentList`.
        actual: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::BadJson { line, column } => {
                write!(f, "not a DhanHQ request (bad JSON at {line}:{column})")
            }
            ParseError::UnknownRequestCode(code) => write!(f, "unknown RequestCode {code}"),
            ParseError::MissingField(field) => write!(f, "subscription without {field}"),
            ParseError::UnknownSegment { index } => {
                write!(f, "InstrumentList[{index}]: unknown ExchangeSegment")
            }
            ParseError::BadSecurityId { index, reason } => {
                write!(f, "InstrumentList[{index}]: {reason}")
            }
            ParseError::CountMismatch { declared, actual } => write!(
                f,
                "InstrumentCount {declared} but InstrumentList has {actual} entries"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRequest<'a> {
    request_code: i64,
    instrument_count: Option<u64>,
    #[serde(borrow)]
    instrument_list: Option<Vec<RawInstrument<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInstrument<'a> {
    // `Cow` so an escaped string (`"NSE\u005fEQ"`) still parses.
    #[serde(borrow)]
    exchange_segment: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    security_id: std::borrow::Cow<'a, str>,
}

/// Parses a request text frame the way a DhanHQ server would read it.
///
/// Strict where DhanHQ's format is: `RequestCode` and `InstrumentCount` are
/// JSON integers, `SecurityId` a decimal string, segment names exact.
/// Subscription codes need both `InstrumentCount` and `InstrumentList`, and
/// they must agree; RequestCode 12 needs neither. Unknown fields are ignored.
/// The per-message instrument limit is not checked here: that is the server's
/// policy, not the format's.
pub fn parse(text: &str) -> Result<Request, ParseError> {
    let raw: RawRequest<'_> = serde_json::from_str(text).map_err(|e| ParseError::BadJson {
        line: e.line(),
        column: e.column(),
    })?;
    let code = u8::try_from(raw.request_code)
        .ok()
        .and_then(RequestCode::from_code)
        .ok_or(ParseError::UnknownRequestCode(raw.request_code))?;
    let list = match (code, raw.instrument_count, raw.instrument_list) {
        (RequestCode::Disconnect, _, list) => list.unwrap_or_default(),
        (_, None, _) => return Err(ParseError::MissingField("InstrumentCount")),
        (_, Some(_), None) => return Err(ParseError::MissingField("InstrumentList")),
        (_, Some(declared), Some(list)) => {
            if usize::try_from(declared).ok() != Some(list.len()) {
                return Err(ParseError::CountMismatch {
                    declared,
                    actual: list.len(),
                });
            }
            list
        }
    };
    let instruments = list
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let segment = item
                .exchange_segment
                .parse::<Segment>()
                .map_err(|_| ParseError::UnknownSegment { index })?;
            let security_id = item
                .security_id
                .parse()
                .map_err(|reason| ParseError::BadSecurityId { index, reason })?;
            Ok(InstrumentKey {
                segment,
                security_id,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Request { code, instruments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn keys(n: u32, segment: Segment) -> Vec<InstrumentKey> {
        (0..n)
            .map(|i| InstrumentKey::new(segment, 1000 + i))
            .collect()
    }

    #[test]
    fn matches_the_protocol_example() {
        let msgs = encode_subscription(
            RequestCode::SubscribeTicker,
            &[
                InstrumentKey::new(Segment::NseEq, 2885),
                InstrumentKey::new(Segment::IdxI, 13),
            ],
        )
        .unwrap();
        assert_eq!(msgs.len(), 1);
        let v: Value = serde_json::from_str(&msgs[0]).unwrap();
        assert_eq!(
            v,
            json!({"RequestCode": 15, "InstrumentCount": 2,
                   "InstrumentList": [{"ExchangeSegment": "NSE_EQ", "SecurityId": "2885"},
                                      {"ExchangeSegment": "IDX_I", "SecurityId": "13"}]})
        );
    }

    #[test]
    fn five_thousand_instruments_make_fifty_messages_of_one_hundred() {
        let all = keys(5000, Segment::NseFno);
        let msgs = encode_subscription(RequestCode::SubscribeFull, &all).unwrap();
        assert_eq!(msgs.len(), 50);
        let mut seen = Vec::new();
        for m in &msgs {
            let v: Value = serde_json::from_str(m).unwrap();
            assert_eq!(v["RequestCode"], 21);
            assert_eq!(v["InstrumentCount"], 100);
            let list = v["InstrumentList"].as_array().unwrap();
            assert_eq!(list.len(), 100);
            for item in list {
                assert_eq!(item["ExchangeSegment"], "NSE_FNO");
                seen.push(item["SecurityId"].as_str().unwrap().parse::<u32>().unwrap());
            }
        }
        assert_eq!(
            seen,
            (1000..6000).collect::<Vec<_>>(),
            "order and coverage kept"
        );
    }

    #[test]
    fn a_partial_last_batch() {
        let msgs =
            encode_subscription(RequestCode::UnsubscribeQuote, &keys(250, Segment::BseEq)).unwrap();
        let counts: Vec<_> = msgs
            .iter()
            .map(|m| serde_json::from_str::<Value>(m).unwrap()["InstrumentCount"].clone())
            .collect();
        assert_eq!(counts, vec![json!(100), json!(100), json!(50)]);
        assert!(encode_subscription(RequestCode::SubscribeQuote, &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn depth_batches_of_fifty_and_only_nse() {
        let msgs =
            encode_subscription(RequestCode::SubscribeDepth, &keys(120, Segment::NseEq)).unwrap();
        assert_eq!(msgs.len(), 3);
        let v: Value = serde_json::from_str(&msgs[0]).unwrap();
        assert_eq!(v["RequestCode"], 23);
        assert_eq!(v["InstrumentCount"], 50);
        let mcx = InstrumentKey::new(Segment::McxComm, 1);
        let mut mixed = keys(3, Segment::NseFno);
        mixed.push(mcx);
        assert_eq!(
            encode_subscription(RequestCode::SubscribeDepth, &mixed),
            Err(RequestError::DepthSegment(mcx))
        );
    }

    #[test]
    fn disconnect_is_its_own_message() {
        let v: Value = serde_json::from_str(DISCONNECT).unwrap();
        assert_eq!(v, json!({"RequestCode": 12}));
        assert_eq!(
            encode_subscription(RequestCode::Disconnect, &keys(1, Segment::NseEq)),
            Err(RequestError::NotASubscription)
        );
    }

    #[test]
    fn codes_by_mode() {
        for code in 0..=255u8 {
            if let Some(rc) = RequestCode::from_code(code) {
                if code == 25 {
                    // The docs' depth unsubscribe, read as the SDK's 24.
                    assert_eq!(rc, RequestCode::UnsubscribeDepth);
                    assert_eq!(rc.code(), 24);
                    continue;
                }
                assert_eq!(rc.code(), code);
                if let Some((mode, sub)) = rc.mode_change() {
                    let back = if sub {
                        RequestCode::subscribe(mode)
                    } else {
                        RequestCode::unsubscribe(mode)
                    };
                    assert_eq!(back, rc);
                }
            }
        }
        assert_eq!(RequestCode::subscribe(Mode::Quote).code(), 17);
        assert_eq!(RequestCode::unsubscribe(Mode::Full).code(), 22);
    }
    #[test]
    fn parse_round_trips_the_encoder() {
        let mixed = [
            InstrumentKey::new(Segment::NseEq, 2885),
            InstrumentKey::new(Segment::IdxI, 13),
            InstrumentKey::new(Segment::McxComm, 0),
            InstrumentKey::new(Segment::BseFno, u32::MAX),
        ];
        for code in (0..=255u8).filter_map(RequestCode::from_code) {
            if code == RequestCode::Disconnect {
                continue;
            }
            let instruments: Vec<_> = if matches!(
                code,
                RequestCode::SubscribeDepth | RequestCode::UnsubscribeDepth
            ) {
                keys(120, Segment::NseFno)
            } else {
                mixed
                    .iter()
                    .copied()
                    .chain(keys(150, Segment::NseEq))
                    .collect()
            };
            let msgs = encode_subscription(code, &instruments).unwrap();
            let mut back = Vec::new();
            for m in &msgs {
                let req = parse(m).unwrap();
                assert_eq!(req.code, code);
                assert!(req.instruments.len() <= code.batch_limit());
                back.extend(req.instruments);
            }
            assert_eq!(back, instruments, "{code:?}");
        }
        assert_eq!(
            parse(DISCONNECT),
            Ok(Request {
                code: RequestCode::Disconnect,
                instruments: vec![]
            })
        );
    }

    #[test]
    fn depth_unsubscribe_is_sent_as_24_and_read_as_24_or_25() {
        let msgs =
            encode_subscription(RequestCode::UnsubscribeDepth, &keys(1, Segment::NseEq)).unwrap();
        let v: Value = serde_json::from_str(&msgs[0]).unwrap();
        assert_eq!(v["RequestCode"], 24);
        for code in [24, 25] {
            let text = format!(
                r#"{{"RequestCode":{code},"InstrumentCount":1,"InstrumentList":[{{"ExchangeSegment":"NSE_EQ","SecurityId":"2885"}}]}}"#
            );
            assert_eq!(parse(&text).unwrap().code, RequestCode::UnsubscribeDepth);
        }
    }

    #[test]
    fn parse_accepts_the_protocol_example_with_spaces_and_escapes() {
        let text = r#"{"RequestCode": 15, "InstrumentCount": 2,
            "InstrumentList": [{"ExchangeSegment": "NSE_EQ", "SecurityId": "2885"},
                               {"ExchangeSegment": "IDX\u005fI",  "SecurityId": "13", "Extra": 1}]}"#;
        assert_eq!(
            parse(text),
            Ok(Request {
                code: RequestCode::SubscribeTicker,
                instruments: vec![
                    InstrumentKey::new(Segment::NseEq, 2885),
                    InstrumentKey::new(Segment::IdxI, 13)
                ]
            })
        );
    }

    #[test]
    fn parse_errors() {
        let one = |seg: &str, sid: &str| {
            format!(
                r#"{{"RequestCode":15,"InstrumentCount":1,"InstrumentList":[{{"ExchangeSegment":"{seg}","SecurityId":"{sid}"}}]}}"#
            )
        };
        assert!(matches!(parse("not json"), Err(ParseError::BadJson { .. })));
        assert!(matches!(parse("{}"), Err(ParseError::BadJson { .. })));
        assert!(matches!(
            parse(r#"{"RequestCode":"15"}"#),
            Err(ParseError::BadJson { .. })
        ));
        assert!(matches!(
            parse(
                r#"{"RequestCode":15,"InstrumentCount":1,"InstrumentList":[{"ExchangeSegment":"NSE_EQ","SecurityId":2885}]}"#
            ),
            Err(ParseError::BadJson { .. })
        ));
        assert_eq!(
            parse(r#"{"RequestCode":14}"#),
            Err(ParseError::UnknownRequestCode(14))
        );
        assert_eq!(
            parse(r#"{"RequestCode":271}"#),
            Err(ParseError::UnknownRequestCode(271))
        );
        assert_eq!(
            parse(r#"{"RequestCode":-1}"#),
            Err(ParseError::UnknownRequestCode(-1))
        );
        assert_eq!(
            parse(r#"{"RequestCode":15,"InstrumentList":[]}"#),
            Err(ParseError::MissingField("InstrumentCount"))
        );
        assert_eq!(
            parse(r#"{"RequestCode":15,"InstrumentCount":0}"#),
            Err(ParseError::MissingField("InstrumentList"))
        );
        assert_eq!(
            parse(&one("XYZ", "1")),
            Err(ParseError::UnknownSegment { index: 0 })
        );
        assert_eq!(
            parse(&one("nse_eq", "1")),
            Err(ParseError::UnknownSegment { index: 0 })
        );
        assert_eq!(
            parse(&one("NSE_EQ", "12a")),
            Err(ParseError::BadSecurityId {
                index: 0,
                reason: BadSecurityId::NotNumeric
            })
        );
        assert_eq!(
            parse(&one("NSE_EQ", "")),
            Err(ParseError::BadSecurityId {
                index: 0,
                reason: BadSecurityId::Empty
            })
        );
        assert_eq!(
            parse(&one("NSE_EQ", "4294967296")),
            Err(ParseError::BadSecurityId {
                index: 0,
                reason: BadSecurityId::TooLarge
            })
        );
        assert_eq!(
            parse(
                r#"{"RequestCode":17,"InstrumentCount":3,"InstrumentList":[{"ExchangeSegment":"NSE_EQ","SecurityId":"1"}]}"#
            ),
            Err(ParseError::CountMismatch {
                declared: 3,
                actual: 1
            })
        );
        // Every error has a sentence; none echoes the input.
        let e = parse(&one("NSE_EQ", "secret")).unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }
}
