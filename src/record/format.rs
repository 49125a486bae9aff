//! The recording file format, v1: constants and the byte layouts of the
//! file header and the record header. No I/O here (style rule 1): the writer
//! and the reader both go through these functions, so they cannot drift.
//!
//! ```text
//! file header (32 B): magic "DHANREC\0" | version u16 | header len u16 |
//!                     flags u32 | created Unix ns u64 | day u32 YYYYMMDD |
//!                     reserved u32
//! record (20 B + payload): payload len u32 | CRC-32 u32 | recv Unix ns u64 |
//!                     conn u8 | feed u8 | reserved u16 | payload
//! ```
//!
//! All integers little-endian. The CRC (IEEE, as `crc32fast`) covers the 12
//! header bytes after it and the payload. `docs/recording.md` has the prose.
#![forbid(unsafe_code)]

use std::fmt;

use super::FeedKind;

/// The first eight bytes of every recording.
pub const MAGIC: [u8; 8] = *b"DHANREC\0";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Length of the file header.
pub const HEADER_LEN: usize = 32;
/// Length of a record's header (the bytes before its payload).
pub const RECORD_HEADER_LEN: usize = 20;
/// The largest payload a record may hold; a larger declared length is damage.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The first four bytes of a zstd frame (`.dhr.zst` files).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// A recording's file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version (1).
    pub version: u16,
    /// When the file was created: Unix time, nanoseconds.
    pub created_unix_ns: u64,
    /// The trading day (India time) as `YYYYMMDD`.
    pub day: u32,
}

/// Why a file header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The first eight bytes are not [`MAGIC`]: not a recording.
    BadMagic,
    /// A version this code cannot read.
    UnsupportedVersion(u16),
    /// A header length other than [`HEADER_LEN`].
    BadLength(u16),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::BadMagic => f.write_str("not a dhan-relay recording (bad magic)"),
            HeaderError::UnsupportedVersion(v) => write!(
                f,
                "recording format version {v} is not supported (this build reads {VERSION})"
            ),
            HeaderError::BadLength(n) => write!(f, "bad header length {n} (expected {HEADER_LEN})"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// The file header's bytes.
pub fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&h.version.to_le_bytes());
    b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    // 12..16 flags = 0
    b[16..24].copy_from_slice(&h.created_unix_ns.to_le_bytes());
    b[24..28].copy_from_slice(&h.day.to_le_bytes());
    // 28..32 reserved = 0
    b
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses a file header. Flags and reserved bytes are not checked (a later
/// version may set them and bump the version if old readers must refuse).
pub fn decode_header(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
    if b[0..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u16_at(b, 8);
    if version != VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let len = u16_at(b, 10);
    if usize::from(len) != HEADER_LEN {
        return Err(HeaderError::BadLength(len));
    }
    Ok(Header {
        version,
        created_unix_ns: u64_at(b, 16),
        day: u32_at(b, 24),
    })
}

/// A record header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHead {
    /// Payload length.
    pub len: u32,
    /// The stored CRC.
    pub crc: u32,
    /// Receive time, Unix ns.
    pub recv_unix_ns: u64,
    /// Connection slot.
    pub conn: u8,
    /// Feed.
    pub feed: FeedKind,
}

/// A record header with the CRC field zero (filled by [`seal`]).
pub fn record_header(
    len: u32,
    recv_unix_ns: u64,
    conn: u8,
    feed: FeedKind,
) -> [u8; RECORD_HEADER_LEN] {
    let mut b = [0u8; RECORD_HEADER_LEN];
    b[0..4].copy_from_slice(&len.to_le_bytes());
    b[8..16].copy_from_slice(&recv_unix_ns.to_le_bytes());
    b[16] = conn;
    b[17] = feed.code();
    b
}

/// The CRC of a record: over header bytes 8..20, then the payload (given
/// in up to two pieces, as a ring buffer holds it).
pub fn record_crc(header: &[u8; RECORD_HEADER_LEN], payload: (&[u8], &[u8])) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..]);
    h.update(payload.0);
    h.update(payload.1);
    h.finalize()
}

/// Stores the CRC in a record header.
pub fn seal(header: &mut [u8; RECORD_HEADER_LEN], crc: u32) {
    header[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Parses a record header; `Err` names the damage (absurd length, unknown
/// feed code).
pub fn decode_record_header(b: &[u8; RECORD_HEADER_LEN]) -> Result<RecordHead, String> {
    let len = u32_at(b, 0);
    if len as usize > MAX_PAYLOAD {
        return Err(format!(
            "payload length {len} above the maximum {MAX_PAYLOAD}"
        ));
    }
    let Some(feed) = FeedKind::from_code(b[17]) else {
        return Err(format!("unknown feed code {}", b[17]));
    };
    Ok(RecordHead {
        len,
        crc: u32_at(b, 4),
        recv_unix_ns: u64_at(b, 8),
        conn: b[16],
        feed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_refusals() {
        let h = Header {
            version: VERSION,
            created_unix_ns: 1_700_000_000_123_456_789,
            day: 20250310,
        };
        let mut b = encode_header(&h);
        assert_eq!(&b[..8], b"DHANREC\0");
        assert_eq!(decode_header(&b), Ok(h));
        b[8] = 2;
        assert_eq!(decode_header(&b), Err(HeaderError::UnsupportedVersion(2)));
        b[0] = b'X';
        assert_eq!(decode_header(&b), Err(HeaderError::BadMagic));
    }

    #[test]
    fn record_header_round_trip() {
        let mut b = record_header(5, 42, 3, FeedKind::Depth);
        let crc = record_crc(&b, (b"he", b"llo"));
        assert_eq!(crc, record_crc(&b, (b"hello", b"")));
        seal(&mut b, crc);
        let r = decode_record_header(&b).unwrap();
        assert_eq!(
            r,
            RecordHead {
                len: 5,
                crc,
                recv_unix_ns: 42,
                conn: 3,
                feed: FeedKind::Depth
            }
        );
        b[17] = 9;
        assert!(decode_record_header(&b)
            .unwrap_err()
            .contains("feed code 9"));
        b[17] = 0;
        b[0..4].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(decode_record_header(&b).is_err());
    }
}
