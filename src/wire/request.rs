//! Requests to DhanHQ: JSON text frames (PROTOCOL.md §1 and §2).
//!
//! Written by hand rather than through a serializer: the shape is fixed, the
//! field order is DhanHQ's own, and the relay sends these only on
//! subscription changes, never per tick.

use std::fmt::{self, Write as _};

use crate::domain::{InstrumentKey, Mode, Segment};

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
            RequestCode::Disconnect | RequestCode::SubscribeDepth => return None,
        })
    }

    /// How many instruments DhanHQ takes in one message with this code.
    pub const fn batch_limit(self) -> usize {
        match self {
            RequestCode::SubscribeDepth => MAX_PER_DEPTH_MESSAGE,
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
    if code == RequestCode::SubscribeDepth {
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
}
