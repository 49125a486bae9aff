//! The 20-level depth feed (docs/dhanhq-protocol.md, "20-level depth feed"):
//! decode and encode.
//!
//! A different header from the main feed: 12 bytes `<hBBiI>` = i16 packet
//! length (header included), response code (41 bid side, 51 ask side, 50
//! disconnect), segment code, security id, sequence number. A side packet then
//! carries 20 rows of `<dII>` (price f64, quantity, orders); a disconnect
//! carries a u16 reason. Frames may hold several packets back to back.
//!
//! The disconnect layout is this crate's: DhanHQ's SDK (`fulldepth.py`)
//! reads the reason from the header's last field (bytes 8..12) of a 12-byte
//! packet instead (the doc's "Where the sources disagree").

use super::codec::{Put, Reader};
use super::frame::{sealed, Format, Packets};
use super::{DisconnectReason, WireError};
use crate::domain::{InstrumentKey, SecurityId, Segment};

/// Depth response codes.
pub mod code {
    /// Twenty bid rows.
    pub const BID: u8 = 41;
    /// Twenty ask rows.
    pub const ASK: u8 = 51;
    /// Server disconnect with a reason.
    pub const DISCONNECT: u8 = 50;
}

/// Size of the depth packet header.
pub const HEADER_LEN: usize = 12;
/// Rows in one side packet.
pub const ROWS: usize = 20;
const ROW_LEN: usize = 16;
/// Length of a side packet.
pub const SIDE_LEN: usize = HEADER_LEN + ROWS * ROW_LEN;
/// Length of a disconnect packet.
pub const DISCONNECT_LEN: usize = HEADER_LEN + 2;

/// Which side of the book a packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Side {
    /// Code 41.
    Bid,
    /// Code 51.
    Ask,
}

/// One price level.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DepthRow {
    /// Price (f64 on this feed, unlike the main feed's f32).
    pub price: f64,
    /// Quantity at this price.
    pub quantity: u32,
    /// Number of orders at this price.
    pub orders: u32,
}

/// Twenty levels of one side of one instrument's book.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DepthBook {
    /// The instrument.
    pub key: InstrumentKey,
    /// Bid or ask.
    pub side: Side,
    /// The header's sequence number, as sent.
    pub sequence: u32,
    /// The levels, best first.
    pub rows: [DepthRow; ROWS],
}

/// One decoded depth packet's meaning.
// Boxing the book would allocate per packet; a 336-byte stack value is cheap.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DepthMessage {
    /// One side of one instrument's book.
    Book(DepthBook),
    /// The server is closing the connection.
    Disconnect(DisconnectReason),
}

/// A decoded depth packet: a view of its bytes in the frame, plus its fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DepthPacket<'a> {
    /// The packet's bytes, exactly its declared length, borrowed from the frame.
    pub bytes: &'a [u8],
    /// What the packet says.
    pub message: DepthMessage,
}

/// The 20-level depth packet format, for [`Packets`] and [`super::decode`].
#[derive(Clone, Copy, Debug)]
pub struct Depth;

/// Walks every packet in a depth-feed frame.
pub fn packets(frame: &[u8]) -> Packets<'_, Depth> {
    Packets::new(frame)
}

/// Decodes the depth packet at the start of `bytes`.
#[inline(always)]
pub fn decode(bytes: &[u8]) -> Result<DepthPacket<'_>, WireError> {
    super::frame::decode::<Depth>(bytes)
}

impl sealed::Sealed for Depth {}

impl Format for Depth {
    type Packet<'a> = DepthPacket<'a>;

    #[inline(always)]
    fn packet_len(rest: &[u8]) -> Result<usize, WireError> {
        let (true, Some(declared)) = (rest.len() >= HEADER_LEN, Reader::new(rest).i16()) else {
            return Err(WireError::Truncated {
                have: rest.len(),
                need: HEADER_LEN,
            });
        };
        if declared < HEADER_LEN as i16 {
            return Err(WireError::BadLength {
                declared: i32::from(declared),
            });
        }
        let declared = declared as usize;
        if declared > rest.len() {
            return Err(WireError::PastEnd {
                declared,
                remaining: rest.len(),
            });
        }
        Ok(declared)
    }

    #[inline(always)]
    fn decode_exact(packet: &[u8]) -> Result<DepthPacket<'_>, WireError> {
        let len = packet.len();
        let truncated = WireError::Truncated {
            have: len,
            need: HEADER_LEN,
        };
        let mut r = Reader::new(packet);
        r.skip(2).ok_or(truncated)?; // length: already checked by `packet_len`
        let code = r.u8().ok_or(truncated)?;
        let segment = r.u8().ok_or(truncated)?;
        // The SDK reads an i32; ids are positive, so the same four bytes read
        // as u32 lose nothing and round-trip exactly.
        let security_id = r.u32().ok_or(truncated)?;
        let sequence = r.u32().ok_or(truncated)?;
        let too_short = |need| WireError::TooShort {
            code,
            declared: len,
            need,
        };

        let side = match code {
            code::DISCONNECT => {
                let reason = r.u16().ok_or(too_short(DISCONNECT_LEN))?;
                return Ok(DepthPacket {
                    bytes: packet,
                    message: DepthMessage::Disconnect(DisconnectReason::from_code(reason)),
                });
            }
            code::BID => Side::Bid,
            code::ASK => Side::Ask,
            other => return Err(WireError::UnknownCode(other)),
        };
        let segment =
            Segment::from_code(segment).map_err(|_| WireError::UnknownSegment(segment))?;
        if len < SIDE_LEN {
            return Err(too_short(SIDE_LEN));
        }
        let mut rows = [DepthRow::default(); ROWS];
        for row in &mut rows {
            *row = DepthRow {
                price: r.f64().ok_or(too_short(SIDE_LEN))?,
                quantity: r.u32().ok_or(too_short(SIDE_LEN))?,
                orders: r.u32().ok_or(too_short(SIDE_LEN))?,
            };
        }
        Ok(DepthPacket {
            bytes: packet,
            message: DepthMessage::Book(DepthBook {
                key: InstrumentKey {
                    segment,
                    security_id: SecurityId(security_id),
                },
                side,
                sequence,
                rows,
            }),
        })
    }
}

impl DepthMessage {
    /// The response code this message is sent with.
    pub const fn code(&self) -> u8 {
        match self {
            DepthMessage::Book(book) => match book.side {
                Side::Bid => code::BID,
                Side::Ask => code::ASK,
            },
            DepthMessage::Disconnect(_) => code::DISCONNECT,
        }
    }

    /// The packet's length on the wire, header included.
    pub const fn wire_len(&self) -> usize {
        match self {
            DepthMessage::Book(_) => SIDE_LEN,
            DepthMessage::Disconnect(_) => DISCONNECT_LEN,
        }
    }

    /// Appends this message as one packet, exactly as DhanHQ sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.wire_len());
        out.put_i16(self.wire_len() as i16);
        out.put_u8(self.code());
        match self {
            DepthMessage::Book(book) => {
                out.put_u8(book.key.segment.code());
                out.put_u32(book.key.security_id.0);
                out.put_u32(book.sequence);
                for row in &book.rows {
                    out.put_f64(row.price);
                    out.put_u32(row.quantity);
                    out.put_u32(row.orders);
                }
            }
            DepthMessage::Disconnect(reason) => {
                out.put_u8(0);
                out.put_u32(0);
                out.put_u32(0);
                out.put_u16(reason.code());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Packets built byte by byte from `<hBBiI>` + 20 × `<dII>`.
    use super::*;

    fn header(len: i16, code: u8, seg: u8, sid: i32, seq: u32) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.push(code);
        v.push(seg);
        v.extend_from_slice(&sid.to_le_bytes());
        v.extend_from_slice(&seq.to_le_bytes());
        v
    }

    fn side_packet(code: u8, sid: i32) -> Vec<u8> {
        let mut b = header(332, code, 1, sid, 77);
        for i in 0..20u32 {
            b.extend_from_slice(&(1465.4f64 - f64::from(i) * 0.05).to_le_bytes());
            b.extend_from_slice(&(1000 + i).to_le_bytes());
            b.extend_from_slice(&(i + 1).to_le_bytes());
        }
        b
    }

    #[test]
    fn bid_and_ask_packets_back_to_back() {
        let mut frame = side_packet(41, 2885);
        frame.extend(side_packet(51, 1333));
        let got: Vec<_> = packets(&frame).map(|p| p.unwrap()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].bytes, &frame[..332]);
        for (packet, (side, sid)) in got.iter().zip([(Side::Bid, 2885), (Side::Ask, 1333)]) {
            let DepthMessage::Book(book) = packet.message else {
                panic!("not a book")
            };
            assert_eq!(book.side, side);
            assert_eq!(book.key, InstrumentKey::new(Segment::NseEq, sid));
            assert_eq!(book.sequence, 77);
            for (i, row) in book.rows.iter().enumerate() {
                assert_eq!(row.price, 1465.4 - i as f64 * 0.05);
                assert_eq!(row.quantity, 1000 + i as u32);
                assert_eq!(row.orders, i as u32 + 1);
            }
        }
    }

    #[test]
    fn disconnect_packet() {
        let mut b = header(14, 50, 0, 0, 0);
        b.extend_from_slice(&807u16.to_le_bytes());
        assert_eq!(
            decode(&b).unwrap().message,
            DepthMessage::Disconnect(DisconnectReason::TokenExpired)
        );
    }

    #[test]
    fn each_error_kind() {
        assert_eq!(decode(&[]), Err(WireError::EmptyFrame));
        assert_eq!(
            decode(&[1]),
            Err(WireError::Truncated { have: 1, need: 12 })
        );
        assert_eq!(
            decode(&header(-5, 41, 1, 1, 0)),
            Err(WireError::BadLength { declared: -5 })
        );
        assert_eq!(
            decode(&header(11, 41, 1, 1, 0)),
            Err(WireError::BadLength { declared: 11 })
        );
        assert_eq!(
            decode(&header(332, 41, 1, 1, 0)),
            Err(WireError::PastEnd {
                declared: 332,
                remaining: 12
            })
        );
        assert_eq!(
            decode(&header(12, 42, 1, 1, 0)),
            Err(WireError::UnknownCode(42))
        );
        assert_eq!(
            decode(&header(12, 41, 9, 1, 0)),
            Err(WireError::UnknownSegment(9))
        );
        assert_eq!(
            decode(&header(12, 51, 1, 1, 0)),
            Err(WireError::TooShort {
                code: 51,
                declared: 12,
                need: 332
            })
        );
        assert_eq!(
            decode(&header(12, 50, 1, 1, 0)),
            Err(WireError::TooShort {
                code: 50,
                declared: 12,
                need: 14
            })
        );
    }

    #[test]
    fn a_bad_packet_does_not_hide_the_next() {
        let mut frame = header(16, 99, 1, 1, 0);
        frame.extend_from_slice(&[0; 4]);
        frame.extend(side_packet(41, 5));
        let got: Vec<_> = packets(&frame).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Err(WireError::UnknownCode(99)));
        assert!(got[1].is_ok());
    }

    #[test]
    fn round_trip_through_the_encoder() {
        let book = DepthBook {
            key: InstrumentKey::new(Segment::NseFno, 35_001),
            side: Side::Ask,
            sequence: 9,
            rows: std::array::from_fn(|i| DepthRow {
                price: 100.0 + i as f64,
                quantity: i as u32,
                orders: 1,
            }),
        };
        let messages = [
            DepthMessage::Book(book),
            DepthMessage::Book(DepthBook {
                side: Side::Bid,
                ..book
            }),
            DepthMessage::Disconnect(DisconnectReason::Other(4)),
        ];
        let mut frame = Vec::new();
        for m in &messages {
            m.encode(&mut frame);
        }
        let decoded: Vec<_> = packets(&frame).map(|p| p.unwrap().message).collect();
        assert_eq!(decoded, messages);
        // The encoder's bytes match the hand-built layout.
        let mut one = Vec::new();
        DepthMessage::Book(DepthBook {
            key: InstrumentKey::new(Segment::NseEq, 2885),
            side: Side::Bid,
            sequence: 77,
            rows: std::array::from_fn(|i| DepthRow {
                price: 1465.4 - i as f64 * 0.05,
                quantity: 1000 + i as u32,
                orders: i as u32 + 1,
            }),
        })
        .encode(&mut one);
        assert_eq!(one, side_packet(41, 2885));
    }
}
