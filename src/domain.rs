//! The vocabulary every thread shares: exchange segments, security ids,
//! instrument keys and subscription modes.
//!
//! These types are the only way an instrument travels inside the relay. Strings
//! (`"NSE_EQ"`, `"2885"`) and wire codes (`1`, `2885u32`) are converted at the
//! edges — the JSON side and the binary decoder — and rejected there with a
//! typed error, so nothing past the edge can hold an unknown segment.

use std::fmt;
use std::str::FromStr;

/// A DhanHQ exchange segment: its request name and its numeric wire code.
///
/// Code 6 is unused by DhanHQ; any code not listed here is an
/// [`UnknownSegment`] error, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum Segment {
    /// Indices (`IDX_I`, code 0).
    IdxI = 0,
    /// NSE cash equities (`NSE_EQ`, code 1).
    NseEq = 1,
    /// NSE futures and options (`NSE_FNO`, code 2).
    NseFno = 2,
    /// NSE currency derivatives (`NSE_CURRENCY`, code 3).
    NseCurrency = 3,
    /// BSE cash equities (`BSE_EQ`, code 4).
    BseEq = 4,
    /// MCX commodities (`MCX_COMM`, code 5).
    McxComm = 5,
    /// BSE currency derivatives (`BSE_CURRENCY`, code 7).
    BseCurrency = 7,
    /// BSE futures and options (`BSE_FNO`, code 8).
    BseFno = 8,
}

/// A segment code or name that DhanHQ does not define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownSegment;

impl fmt::Display for UnknownSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown exchange segment")
    }
}

impl std::error::Error for UnknownSegment {}

impl Segment {
    /// Every segment, in wire-code order.
    pub const ALL: [Segment; 8] = [
        Segment::IdxI,
        Segment::NseEq,
        Segment::NseFno,
        Segment::NseCurrency,
        Segment::BseEq,
        Segment::McxComm,
        Segment::BseCurrency,
        Segment::BseFno,
    ];

    /// The segment for a numeric wire code.
    pub const fn from_code(code: u8) -> Result<Segment, UnknownSegment> {
        Ok(match code {
            0 => Segment::IdxI,
            1 => Segment::NseEq,
            2 => Segment::NseFno,
            3 => Segment::NseCurrency,
            4 => Segment::BseEq,
            5 => Segment::McxComm,
            7 => Segment::BseCurrency,
            8 => Segment::BseFno,
            _ => return Err(UnknownSegment),
        })
    }

    /// The numeric code DhanHQ uses in binary responses.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The name DhanHQ uses in JSON requests (`"NSE_EQ"`).
    pub const fn name(self) -> &'static str {
        match self {
            Segment::IdxI => "IDX_I",
            Segment::NseEq => "NSE_EQ",
            Segment::NseFno => "NSE_FNO",
            Segment::NseCurrency => "NSE_CURRENCY",
            Segment::BseEq => "BSE_EQ",
            Segment::McxComm => "MCX_COMM",
            Segment::BseCurrency => "BSE_CURRENCY",
            Segment::BseFno => "BSE_FNO",
        }
    }
}

impl FromStr for Segment {
    type Err = UnknownSegment;

    /// Parses the exact DhanHQ name; names are case-sensitive on the wire, so
    /// `"nse_eq"` is rejected rather than guessed at.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Segment::ALL
            .into_iter()
            .find(|seg| seg.name() == s)
            .ok_or(UnknownSegment)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A DhanHQ security id: an unsigned number on the wire, a decimal string in
/// JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SecurityId(pub u32);

/// Why a string is not a security id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadSecurityId {
    /// The string is empty.
    Empty,
    /// The string has a character other than an ASCII digit.
    NotNumeric,
    /// The number does not fit the wire's 32 bits.
    TooLarge,
}

impl fmt::Display for BadSecurityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadSecurityId::Empty => "security id is empty",
            BadSecurityId::NotNumeric => "security id must be a decimal number",
            BadSecurityId::TooLarge => "security id does not fit in 32 bits",
        })
    }
}

impl std::error::Error for BadSecurityId {}

impl FromStr for SecurityId {
    type Err = BadSecurityId;

    /// Accepts only ASCII digits: no sign, no spaces, no hex. `u32::from_str`
    /// alone would accept a leading `+`, which DhanHQ would not.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(BadSecurityId::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadSecurityId::NotNumeric);
        }
        s.parse::<u32>()
            .map(SecurityId)
            .map_err(|_| BadSecurityId::TooLarge)
    }
}

impl fmt::Display for SecurityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One instrument: the pair DhanHQ uses everywhere to name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct InstrumentKey {
    /// The exchange segment.
    pub segment: Segment,
    /// The security id within that segment.
    pub security_id: SecurityId,
}

impl InstrumentKey {
    /// Builds a key from its parts.
    pub const fn new(segment: Segment, security_id: u32) -> Self {
        InstrumentKey {
            segment,
            security_id: SecurityId(security_id),
        }
    }
}

impl fmt::Display for InstrumentKey {
    /// `NSE_EQ:2885` — for logs and error messages only, never as a map key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.security_id)
    }
}

/// How much data a subscription asks for. Ordered: a higher mode includes
/// everything a lower one carries, so the upstream mode of an instrument is
/// the maximum over its subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Mode {
    /// Last traded price and time.
    #[default]
    Ticker,
    /// Ticker plus quantities, volume and OHLC.
    Quote,
    /// Quote plus open interest and 5-level depth.
    Full,
}

/// A mode name that is not `ticker`, `quote` or `full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownMode;

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown mode (expected ticker, quote or full)")
    }
}

impl std::error::Error for UnknownMode {}

impl Mode {
    /// Every mode, lowest first.
    pub const ALL: [Mode; 3] = [Mode::Ticker, Mode::Quote, Mode::Full];

    /// The lower-case name used by the client protocol.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Ticker => "ticker",
            Mode::Quote => "quote",
            Mode::Full => "full",
        }
    }
}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or(UnknownMode)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_codes_and_names_match_protocol_table() {
        let table = [
            ("IDX_I", 0),
            ("NSE_EQ", 1),
            ("NSE_FNO", 2),
            ("NSE_CURRENCY", 3),
            ("BSE_EQ", 4),
            ("MCX_COMM", 5),
            ("BSE_CURRENCY", 7),
            ("BSE_FNO", 8),
        ];
        for (name, code) in table {
            let by_code = Segment::from_code(code).unwrap();
            let by_name: Segment = name.parse().unwrap();
            assert_eq!(by_code, by_name);
            assert_eq!(by_code.name(), name);
            assert_eq!(by_code.code(), code);
            assert_eq!(by_code.to_string(), name);
        }
    }

    #[test]
    fn unknown_segments_are_errors() {
        assert_eq!(Segment::from_code(6), Err(UnknownSegment));
        for code in 9..=255u8 {
            assert_eq!(Segment::from_code(code), Err(UnknownSegment));
        }
        for name in ["", "nse_eq", "NSE", "XYZ", "NSE_EQ "] {
            assert_eq!(name.parse::<Segment>(), Err(UnknownSegment), "{name:?}");
        }
    }

    #[test]
    fn security_id_parsing_is_strict() {
        assert_eq!("2885".parse(), Ok(SecurityId(2885)));
        assert_eq!("0".parse(), Ok(SecurityId(0)));
        assert_eq!("4294967295".parse(), Ok(SecurityId(u32::MAX)));
        assert_eq!("".parse::<SecurityId>(), Err(BadSecurityId::Empty));
        for bad in ["+1", "-1", "12a", " 1", "1.0", "0x10"] {
            assert_eq!(
                bad.parse::<SecurityId>(),
                Err(BadSecurityId::NotNumeric),
                "{bad:?}"
            );
        }
        assert_eq!(
            "4294967296".parse::<SecurityId>(),
            Err(BadSecurityId::TooLarge)
        );
        assert_eq!(SecurityId(500325).to_string(), "500325");
    }

    #[test]
    fn instrument_key_displays_for_logs() {
        assert_eq!(
            InstrumentKey::new(Segment::NseEq, 2885).to_string(),
            "NSE_EQ:2885"
        );
    }

    #[test]
    fn modes_are_ordered_and_named() {
        assert!(Mode::Ticker < Mode::Quote && Mode::Quote < Mode::Full);
        assert_eq!(Mode::default(), Mode::Ticker);
        for m in Mode::ALL {
            assert_eq!(m.name().parse(), Ok(m));
        }
        assert_eq!("Ticker".parse::<Mode>(), Err(UnknownMode));
        assert_eq!("depth".parse::<Mode>(), Err(UnknownMode));
    }
}
