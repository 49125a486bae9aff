//! Decoding errors: small, `Copy`, and carrying only static context, so the
//! network thread can count and log them without allocating.

use std::fmt;

/// Why bytes from DhanHQ could not be decoded.
///
/// Errors about one packet ([`WireError::UnknownCode`],
/// [`WireError::TooShort`], [`WireError::UnknownSegment`]) leave the frame
/// walker able to continue with the next packet; errors about the framing
/// itself ([`WireError::Truncated`], [`WireError::BadLength`],
/// [`WireError::PastEnd`]) end the walk, since the length field can no longer
/// be trusted to find the next packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// A binary frame with no bytes at all.
    EmptyFrame,
    /// Fewer bytes remain than a packet header needs.
    Truncated {
        /// Bytes remaining.
        have: usize,
        /// Bytes a header needs.
        need: usize,
    },
    /// The declared length is smaller than the header itself (or negative),
    /// so it cannot be used to step to the next packet.
    BadLength {
        /// The length field as read.
        declared: i32,
    },
    /// The declared length runs past the end of the frame.
    PastEnd {
        /// The length field as read.
        declared: usize,
        /// Bytes remaining in the frame from this packet's start.
        remaining: usize,
    },
    /// A response code this decoder does not know.
    UnknownCode(u8),
    /// The declared length is shorter than this response code requires.
    TooShort {
        /// The response code.
        code: u8,
        /// The length field as read.
        declared: usize,
        /// The length the code requires.
        need: usize,
    },
    /// An exchange segment code DhanHQ does not define.
    UnknownSegment(u8),
}

impl WireError {
    /// Every kind, in the order of [`WireError::kind_index`]; for counters.
    pub const KINDS: [&'static str; 7] = [
        "empty_frame",
        "truncated",
        "bad_length",
        "past_end",
        "unknown_code",
        "too_short",
        "unknown_segment",
    ];

    /// A dense index into [`WireError::KINDS`], so counters can be a plain
    /// array instead of a map.
    pub const fn kind_index(&self) -> usize {
        match self {
            WireError::EmptyFrame => 0,
            WireError::Truncated { .. } => 1,
            WireError::BadLength { .. } => 2,
            WireError::PastEnd { .. } => 3,
            WireError::UnknownCode(_) => 4,
            WireError::TooShort { .. } => 5,
            WireError::UnknownSegment(_) => 6,
        }
    }

    /// A stable snake_case name for metrics labels.
    pub const fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// Whether the frame walker can go on to the next packet after this error.
    pub const fn is_recoverable(&self) -> bool {
        matches!(
            self,
            WireError::UnknownCode(_) | WireError::TooShort { .. } | WireError::UnknownSegment(_)
        )
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::EmptyFrame => f.write_str("empty binary frame"),
            WireError::Truncated { have, need } => {
                write!(
                    f,
                    "truncated packet: {have} bytes left, header needs {need}"
                )
            }
            WireError::BadLength { declared } => {
                write!(
                    f,
                    "declared packet length {declared} is smaller than the header"
                )
            }
            WireError::PastEnd {
                declared,
                remaining,
            } => write!(
                f,
                "declared packet length {declared} runs past the frame ({remaining} bytes left)"
            ),
            WireError::UnknownCode(code) => write!(f, "unknown response code {code}"),
            WireError::TooShort {
                code,
                declared,
                need,
            } => write!(
                f,
                "response code {code} needs {need} bytes but its length field says {declared}"
            ),
            WireError::UnknownSegment(code) => write!(f, "unknown exchange segment code {code}"),
        }
    }
}

impl std::error::Error for WireError {}
