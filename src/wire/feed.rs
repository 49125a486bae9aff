//! Live Market Feed v2 response packets: decode and encode.
//!
//! Layouts are the ones DhanHQ's official SDK reads (docs/dhanhq-protocol.md,
//! "Response header" and "Response packets"), all little-endian, each packet
//! opening with an 8-byte header `<BHBI>` = response code, packet length
//! (header included), segment code, security id.
//!
//! Each packet body is described once, by a [`Layout`] implementation that
//! both reads and writes it, so the decoder and the encoder cannot drift
//! apart. A packet longer than its code needs is accepted and the tail
//! ignored (room for DhanHQ to append fields); a shorter one is an error.

use super::codec::{Put, Reader};
use super::frame::{sealed, Format, Packets};
use super::{DisconnectReason, WireError};
use crate::domain::{InstrumentKey, SecurityId, Segment};

/// Feed response codes (the first header byte).
pub mod code {
    /// Ticker: LTP and LTT.
    pub const TICKER: u8 = 2;
    /// Quote: ticker plus quantities, volume and OHLC.
    pub const QUOTE: u8 = 4;
    /// Open interest.
    pub const OI: u8 = 5;
    /// Previous close and previous open interest.
    pub const PREV_CLOSE: u8 = 6;
    /// Market status (header only).
    pub const MARKET_STATUS: u8 = 7;
    /// Full: quote plus OI and 5-level depth.
    pub const FULL: u8 = 8;
    /// Server disconnect with a reason code.
    pub const DISCONNECT: u8 = 50;
}

/// Size of the packet header.
pub const HEADER_LEN: usize = 8;

/// Last traded price and time (code 2, 16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Ticker {
    /// Last traded price.
    pub ltp: f32,
    /// Last trade time, epoch seconds.
    pub ltt: u32,
}

/// Quote fields (code 4, 50 bytes). Also the first part of [`Full`].
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Quote {
    /// Last traded price.
    pub ltp: f32,
    /// Last traded quantity.
    pub ltq: u16,
    /// Last trade time, epoch seconds.
    pub ltt: u32,
    /// Average traded price.
    pub avg_price: f32,
    /// Volume traded today.
    pub volume: u32,
    /// Total quantity on the sell side.
    pub total_sell_qty: u32,
    /// Total quantity on the buy side.
    pub total_buy_qty: u32,
    /// Day open.
    pub open: f32,
    /// Day close (previous session's close until the market closes).
    pub close: f32,
    /// Day high.
    pub high: f32,
    /// Day low.
    pub low: f32,
}

/// Open interest (code 5, 12 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Oi {
    /// Open interest.
    pub oi: u32,
}

/// Previous session's close (code 6, 16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PrevClose {
    /// Previous close price.
    pub prev_close: f32,
    /// Previous open interest.
    pub prev_oi: u32,
}

/// One of the five depth levels in a [`Full`] packet (20 bytes, `<IIHHff>`).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DepthLevel {
    /// Quantity bid at this level.
    pub bid_qty: u32,
    /// Quantity offered at this level.
    pub ask_qty: u32,
    /// Number of bid orders.
    pub bid_orders: u16,
    /// Number of ask orders.
    pub ask_orders: u16,
    /// Bid price.
    pub bid_price: f32,
    /// Ask price.
    pub ask_price: f32,
}

/// Full packet (code 8, 162 bytes): quote, OI and 5-level depth.
///
/// On the wire the OI fields sit between total buy quantity and open; the
/// struct groups them by meaning instead and [`Layout`] keeps the wire order.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Full {
    /// The quote fields.
    pub quote: Quote,
    /// Open interest.
    pub oi: u32,
    /// Highest open interest today.
    pub oi_day_high: u32,
    /// Lowest open interest today.
    pub oi_day_low: u32,
    /// Five depth levels, best first.
    pub depth: [DepthLevel; 5],
}

/// What one instrument packet says.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FeedData {
    /// Code 2.
    Ticker(Ticker),
    /// Code 4.
    Quote(Quote),
    /// Code 5.
    Oi(Oi),
    /// Code 6.
    PrevClose(PrevClose),
    /// Code 7: the header alone.
    MarketStatus,
    /// Code 8.
    Full(Full),
}

/// One decoded feed packet's meaning.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FeedMessage {
    /// Data about one instrument.
    Data(InstrumentKey, FeedData),
    /// The server is closing the connection (code 50). The header's segment
    /// and security id carry no meaning here and are not checked.
    Disconnect(DisconnectReason),
}

/// A decoded feed packet: a view of its bytes in the frame, plus its fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeedPacket<'a> {
    /// The packet's bytes, exactly its declared length, borrowed from the frame.
    pub bytes: &'a [u8],
    /// What the packet says.
    pub message: FeedMessage,
}

/// The Live Market Feed v2 packet format, for [`Packets`] and
/// [`super::decode`].
#[derive(Clone, Copy, Debug)]
pub struct Feed;

/// Walks every packet in a Live Market Feed frame.
pub fn packets(frame: &[u8]) -> Packets<'_, Feed> {
    Packets::new(frame)
}

/// Decodes the feed packet at the start of `bytes`.
#[inline(always)]
pub fn decode(bytes: &[u8]) -> Result<FeedPacket<'_>, WireError> {
    super::frame::decode::<Feed>(bytes)
}

impl sealed::Sealed for Feed {}

impl Format for Feed {
    type Packet<'a> = FeedPacket<'a>;

    #[inline(always)]
    fn packet_len(rest: &[u8]) -> Result<usize, WireError> {
        let mut r = Reader::new(rest);
        let (true, Some(_code), Some(declared)) = (rest.len() >= HEADER_LEN, r.u8(), r.u16())
        else {
            return Err(WireError::Truncated {
                have: rest.len(),
                need: HEADER_LEN,
            });
        };
        let declared = usize::from(declared);
        if declared < HEADER_LEN {
            return Err(WireError::BadLength {
                declared: declared as i32,
            });
        }
        if declared > rest.len() {
            return Err(WireError::PastEnd {
                declared,
                remaining: rest.len(),
            });
        }
        Ok(declared)
    }

    #[inline(always)]
    fn decode_exact(packet: &[u8]) -> Result<FeedPacket<'_>, WireError> {
        let mut r = Reader::new(packet);
        let truncated = WireError::Truncated {
            have: packet.len(),
            need: HEADER_LEN,
        };
        let code = r.u8().ok_or(truncated)?;
        r.skip(2).ok_or(truncated)?; // length: already checked by `packet_len`
        let segment = r.u8().ok_or(truncated)?;
        let security_id = r.u32().ok_or(truncated)?;

        if code == code::DISCONNECT {
            let reason = read_body::<u16>(code, packet.len(), &mut r)?;
            return Ok(FeedPacket {
                bytes: packet,
                message: FeedMessage::Disconnect(DisconnectReason::from_code(reason)),
            });
        }
        // Check the code before the segment: an unknown packet kind is the
        // more useful report, whatever its segment byte holds.
        if !matches!(
            code,
            code::TICKER
                | code::QUOTE
                | code::OI
                | code::PREV_CLOSE
                | code::MARKET_STATUS
                | code::FULL
        ) {
            return Err(WireError::UnknownCode(code));
        }
        let segment =
            Segment::from_code(segment).map_err(|_| WireError::UnknownSegment(segment))?;
        let key = InstrumentKey {
            segment,
            security_id: SecurityId(security_id),
        };
        let len = packet.len();
        let data = match code {
            code::TICKER => FeedData::Ticker(read_body(code, len, &mut r)?),
            code::QUOTE => FeedData::Quote(read_body(code, len, &mut r)?),
            code::OI => FeedData::Oi(read_body(code, len, &mut r)?),
            code::PREV_CLOSE => FeedData::PrevClose(read_body(code, len, &mut r)?),
            code::FULL => FeedData::Full(read_body(code, len, &mut r)?),
            _ => FeedData::MarketStatus,
        };
        Ok(FeedPacket {
            bytes: packet,
            message: FeedMessage::Data(key, data),
        })
    }
}

/// Reads a body of type `T` after checking the declared length covers it.
#[inline(always)]
fn read_body<T: Layout>(code: u8, declared: usize, r: &mut Reader<'_>) -> Result<T, WireError> {
    let too_short = WireError::TooShort {
        code,
        declared,
        need: HEADER_LEN + T::BODY_LEN,
    };
    if declared < HEADER_LEN + T::BODY_LEN {
        return Err(too_short);
    }
    T::read(r).ok_or(too_short)
}

/// A fixed-size body after the header: its size, how to read and write it.
pub(crate) trait Layout: Sized {
    /// Body bytes after the 8-byte header.
    const BODY_LEN: usize;
    fn read(r: &mut Reader<'_>) -> Option<Self>;
    fn write(&self, out: &mut Vec<u8>);
}

impl Layout for u16 {
    const BODY_LEN: usize = 2;
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.u16()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_u16(*self);
    }
}

impl Layout for Ticker {
    const BODY_LEN: usize = 8;
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Ticker {
            ltp: r.f32()?,
            ltt: r.u32()?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_f32(self.ltp);
        out.put_u32(self.ltt);
    }
}

impl Quote {
    /// The seven fields that open both the quote and the full packet.
    #[inline(always)]
    fn read_head(r: &mut Reader<'_>) -> Option<Self> {
        Some(Quote {
            ltp: r.f32()?,
            ltq: r.u16()?,
            ltt: r.u32()?,
            avg_price: r.f32()?,
            volume: r.u32()?,
            total_sell_qty: r.u32()?,
            total_buy_qty: r.u32()?,
            ..Quote::default()
        })
    }

    #[inline(always)]
    fn read_ohlc(&mut self, r: &mut Reader<'_>) -> Option<()> {
        self.open = r.f32()?;
        self.close = r.f32()?;
        self.high = r.f32()?;
        self.low = r.f32()?;
        Some(())
    }

    fn write_head(&self, out: &mut Vec<u8>) {
        out.put_f32(self.ltp);
        out.put_u16(self.ltq);
        out.put_u32(self.ltt);
        out.put_f32(self.avg_price);
        out.put_u32(self.volume);
        out.put_u32(self.total_sell_qty);
        out.put_u32(self.total_buy_qty);
    }

    fn write_ohlc(&self, out: &mut Vec<u8>) {
        out.put_f32(self.open);
        out.put_f32(self.close);
        out.put_f32(self.high);
        out.put_f32(self.low);
    }
}

impl Layout for Quote {
    const BODY_LEN: usize = 42;
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let mut q = Quote::read_head(r)?;
        q.read_ohlc(r)?;
        Some(q)
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.write_head(out);
        self.write_ohlc(out);
    }
}

impl Layout for Oi {
    const BODY_LEN: usize = 4;
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Oi { oi: r.u32()? })
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.oi);
    }
}

impl Layout for PrevClose {
    const BODY_LEN: usize = 8;
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(PrevClose {
            prev_close: r.f32()?,
            prev_oi: r.u32()?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_f32(self.prev_close);
        out.put_u32(self.prev_oi);
    }
}

impl Layout for DepthLevel {
    const BODY_LEN: usize = 20;
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(DepthLevel {
            bid_qty: r.u32()?,
            ask_qty: r.u32()?,
            bid_orders: r.u16()?,
            ask_orders: r.u16()?,
            bid_price: r.f32()?,
            ask_price: r.f32()?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.bid_qty);
        out.put_u32(self.ask_qty);
        out.put_u16(self.bid_orders);
        out.put_u16(self.ask_orders);
        out.put_f32(self.bid_price);
        out.put_f32(self.ask_price);
    }
}

impl Layout for Full {
    const BODY_LEN: usize = 154;
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let mut quote = Quote::read_head(r)?;
        let (oi, oi_day_high, oi_day_low) = (r.u32()?, r.u32()?, r.u32()?);
        quote.read_ohlc(r)?;
        let mut depth = [DepthLevel::default(); 5];
        for level in &mut depth {
            *level = DepthLevel::read(r)?;
        }
        Some(Full {
            quote,
            oi,
            oi_day_high,
            oi_day_low,
            depth,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.quote.write_head(out);
        out.put_u32(self.oi);
        out.put_u32(self.oi_day_high);
        out.put_u32(self.oi_day_low);
        self.quote.write_ohlc(out);
        for level in &self.depth {
            level.write(out);
        }
    }
}

impl FeedMessage {
    /// The response code this message is sent with.
    pub const fn code(&self) -> u8 {
        match self {
            FeedMessage::Data(_, data) => match data {
                FeedData::Ticker(_) => code::TICKER,
                FeedData::Quote(_) => code::QUOTE,
                FeedData::Oi(_) => code::OI,
                FeedData::PrevClose(_) => code::PREV_CLOSE,
                FeedData::MarketStatus => code::MARKET_STATUS,
                FeedData::Full(_) => code::FULL,
            },
            FeedMessage::Disconnect(_) => code::DISCONNECT,
        }
    }

    /// The packet's length on the wire, header included.
    pub const fn wire_len(&self) -> usize {
        HEADER_LEN
            + match self {
                FeedMessage::Data(_, data) => match data {
                    FeedData::Ticker(_) => Ticker::BODY_LEN,
                    FeedData::Quote(_) => Quote::BODY_LEN,
                    FeedData::Oi(_) => Oi::BODY_LEN,
                    FeedData::PrevClose(_) => PrevClose::BODY_LEN,
                    FeedData::MarketStatus => 0,
                    FeedData::Full(_) => Full::BODY_LEN,
                },
                FeedMessage::Disconnect(_) => u16::BODY_LEN,
            }
    }

    /// Appends this message as one packet, exactly as DhanHQ sends it. A
    /// disconnect is sent with segment and security id zero.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (segment, security_id) = match self {
            FeedMessage::Data(key, _) => (key.segment.code(), key.security_id.0),
            FeedMessage::Disconnect(_) => (0, 0),
        };
        out.reserve(self.wire_len());
        out.put_u8(self.code());
        out.put_u16(self.wire_len() as u16);
        out.put_u8(segment);
        out.put_u32(security_id);
        match self {
            FeedMessage::Data(_, data) => match data {
                FeedData::Ticker(t) => t.write(out),
                FeedData::Quote(q) => q.write(out),
                FeedData::Oi(o) => o.write(out),
                FeedData::PrevClose(p) => p.write(out),
                FeedData::MarketStatus => {}
                FeedData::Full(f) => f.write(out),
            },
            FeedMessage::Disconnect(reason) => reason.code().write(out),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Packets here are built byte by byte from the `struct` formats in
    //! docs/dhanhq-protocol.md ("Response packets"), independently of the
    //! encoder, then decoded.
    use super::*;
    use crate::wire::DisconnectReason;

    /// `<BHBI>` header.
    fn header(code: u8, len: u16, seg: u8, sid: u32) -> Vec<u8> {
        let mut v = vec![code];
        v.extend_from_slice(&len.to_le_bytes());
        v.push(seg);
        v.extend_from_slice(&sid.to_le_bytes());
        v
    }

    fn f(v: f32) -> [u8; 4] {
        v.to_le_bytes()
    }

    fn only(bytes: &[u8]) -> FeedMessage {
        let p = decode(bytes).expect("decodes");
        assert_eq!(p.bytes, bytes);
        p.message
    }

    #[test]
    fn ticker_bhbifi() {
        let mut b = header(2, 16, 1, 2885);
        b.extend_from_slice(&f(1465.4));
        b.extend_from_slice(&1_729_412_345u32.to_le_bytes());
        assert_eq!(b.len(), 16);
        assert_eq!(
            only(&b),
            FeedMessage::Data(
                InstrumentKey::new(Segment::NseEq, 2885),
                FeedData::Ticker(Ticker {
                    ltp: 1465.4,
                    ltt: 1_729_412_345
                })
            )
        );
    }

    fn quote_body() -> Vec<u8> {
        // <fHIfIII ffff> with OHLC at the end
        let mut b = Vec::new();
        b.extend_from_slice(&f(2500.5)); // ltp
        b.extend_from_slice(&75u16.to_le_bytes()); // ltq
        b.extend_from_slice(&1_700_000_001u32.to_le_bytes()); // ltt
        b.extend_from_slice(&f(2499.25)); // avg
        b.extend_from_slice(&123_456u32.to_le_bytes()); // volume
        b.extend_from_slice(&1_000u32.to_le_bytes()); // total sell
        b.extend_from_slice(&2_000u32.to_le_bytes()); // total buy
        b
    }

    fn ohlc() -> Vec<u8> {
        [2480.0f32, 2470.5, 2510.75, 2460.05]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn expected_quote() -> Quote {
        Quote {
            ltp: 2500.5,
            ltq: 75,
            ltt: 1_700_000_001,
            avg_price: 2499.25,
            volume: 123_456,
            total_sell_qty: 1_000,
            total_buy_qty: 2_000,
            open: 2480.0,
            close: 2470.5,
            high: 2510.75,
            low: 2460.05,
        }
    }

    #[test]
    fn quote_bhbifhifiiiffff() {
        let mut b = header(4, 50, 4, 500325);
        b.extend(quote_body());
        b.extend(ohlc());
        assert_eq!(b.len(), 50);
        assert_eq!(
            only(&b),
            FeedMessage::Data(
                InstrumentKey::new(Segment::BseEq, 500325),
                FeedData::Quote(expected_quote())
            )
        );
    }

    #[test]
    fn oi_and_prev_close_and_market_status() {
        let mut b = header(5, 12, 2, 35001);
        b.extend_from_slice(&9_876_543u32.to_le_bytes());
        assert_eq!(
            only(&b),
            FeedMessage::Data(
                InstrumentKey::new(Segment::NseFno, 35001),
                FeedData::Oi(Oi { oi: 9_876_543 })
            )
        );

        let mut b = header(6, 16, 0, 13);
        b.extend_from_slice(&f(25760.85));
        b.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            only(&b),
            FeedMessage::Data(
                InstrumentKey::new(Segment::IdxI, 13),
                FeedData::PrevClose(PrevClose {
                    prev_close: 25760.85,
                    prev_oi: 0
                })
            )
        );

        let b = header(7, 8, 5, 0);
        assert_eq!(
            only(&b),
            FeedMessage::Data(
                InstrumentKey::new(Segment::McxComm, 0),
                FeedData::MarketStatus
            )
        );
    }

    #[test]
    fn full_with_five_depth_levels() {
        let mut b = header(8, 162, 5, 430_000);
        b.extend(quote_body());
        b.extend_from_slice(&5_000u32.to_le_bytes()); // oi
        b.extend_from_slice(&6_000u32.to_le_bytes()); // oi day high
        b.extend_from_slice(&4_000u32.to_le_bytes()); // oi day low
        b.extend(ohlc());
        for i in 0..5u32 {
            // <IIHHff>
            b.extend_from_slice(&(100 + i).to_le_bytes());
            b.extend_from_slice(&(200 + i).to_le_bytes());
            b.extend_from_slice(&(10 + i as u16).to_le_bytes());
            b.extend_from_slice(&(20 + i as u16).to_le_bytes());
            b.extend_from_slice(&f(2500.0 - i as f32 * 0.05));
            b.extend_from_slice(&f(2500.5 + i as f32 * 0.05));
        }
        assert_eq!(b.len(), 162);
        let FeedMessage::Data(key, FeedData::Full(full)) = only(&b) else {
            panic!("not a full packet")
        };
        assert_eq!(key, InstrumentKey::new(Segment::McxComm, 430_000));
        assert_eq!(full.quote, expected_quote());
        assert_eq!(
            (full.oi, full.oi_day_high, full.oi_day_low),
            (5_000, 6_000, 4_000)
        );
        for (i, level) in full.depth.iter().enumerate() {
            let i32_ = i as u32;
            assert_eq!(
                *level,
                DepthLevel {
                    bid_qty: 100 + i32_,
                    ask_qty: 200 + i32_,
                    bid_orders: 10 + i as u16,
                    ask_orders: 20 + i as u16,
                    bid_price: 2500.0 - i as f32 * 0.05,
                    ask_price: 2500.5 + i as f32 * 0.05,
                }
            );
        }
    }

    #[test]
    fn disconnect_reasons_known_and_unknown() {
        for (code, reason) in [
            (805, DisconnectReason::TooManyConnections),
            (806, DisconnectReason::DataApiNotSubscribed),
            (807, DisconnectReason::TokenExpired),
            (808, DisconnectReason::InvalidClientId),
            (809, DisconnectReason::AuthFailed),
            (900, DisconnectReason::Other(900)),
        ] {
            // The segment byte of a disconnect is not checked: 99 is fine.
            let mut b = header(50, 10, 99, 0);
            b.extend_from_slice(&u16::to_le_bytes(code));
            assert_eq!(only(&b), FeedMessage::Disconnect(reason));
        }
    }

    #[test]
    fn longer_than_needed_is_accepted_and_the_tail_ignored() {
        let mut b = header(2, 20, 1, 7);
        b.extend_from_slice(&f(10.05));
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0xAA; 4]);
        assert_eq!(
            only(&b),
            FeedMessage::Data(
                InstrumentKey::new(Segment::NseEq, 7),
                FeedData::Ticker(Ticker { ltp: 10.05, ltt: 1 })
            )
        );
    }

    #[test]
    fn each_error_kind() {
        assert_eq!(decode(&[]), Err(WireError::EmptyFrame));
        assert_eq!(
            decode(&[2, 16]),
            Err(WireError::Truncated { have: 2, need: 8 })
        );
        assert_eq!(
            decode(&header(2, 7, 1, 1)),
            Err(WireError::BadLength { declared: 7 })
        );
        assert_eq!(
            decode(&header(2, 16, 1, 1)),
            Err(WireError::PastEnd {
                declared: 16,
                remaining: 8
            })
        );
        assert_eq!(decode(&header(3, 8, 1, 1)), Err(WireError::UnknownCode(3)));
        let mut short_quote = header(4, 16, 1, 1);
        short_quote.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&short_quote),
            Err(WireError::TooShort {
                code: 4,
                declared: 16,
                need: 50
            })
        );
        let mut bad_seg = header(2, 16, 6, 1);
        bad_seg.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&bad_seg), Err(WireError::UnknownSegment(6)));
        let short_disconnect = header(50, 8, 0, 0);
        assert_eq!(
            decode(&short_disconnect),
            Err(WireError::TooShort {
                code: 50,
                declared: 8,
                need: 10
            })
        );
    }

    #[test]
    fn walker_yields_every_packet_and_skips_bad_ones() {
        let key = InstrumentKey::new(Segment::NseEq, 1);
        let good = FeedMessage::Data(key, FeedData::Ticker(Ticker { ltp: 1.5, ltt: 2 }));
        let mut frame = Vec::new();
        good.encode(&mut frame);
        frame.extend(header(99, 12, 1, 1)); // unknown code, usable length
        frame.extend_from_slice(&[0; 4]);
        let mut bad_seg = header(2, 16, 200, 1);
        bad_seg.extend_from_slice(&[0; 8]);
        frame.extend(bad_seg);
        frame.extend(header(4, 8, 1, 1)); // quote too short
        good.encode(&mut frame);
        let got: Vec<_> = packets(&frame).map(|r| r.map(|p| p.message)).collect();
        assert_eq!(
            got,
            vec![
                Ok(good),
                Err(WireError::UnknownCode(99)),
                Err(WireError::UnknownSegment(200)),
                Err(WireError::TooShort {
                    code: 4,
                    declared: 8,
                    need: 50
                }),
                Ok(good),
            ]
        );
    }

    #[test]
    fn walker_stops_once_at_an_untrustworthy_length() {
        let key = InstrumentKey::new(Segment::NseEq, 1);
        let good = FeedMessage::Data(key, FeedData::Oi(Oi { oi: 3 }));
        let mut frame = Vec::new();
        good.encode(&mut frame);
        frame.extend(header(2, 0, 1, 1)); // zero length: would loop forever
        good.encode(&mut frame);
        let got: Vec<_> = packets(&frame).map(|r| r.map(|p| p.message)).collect();
        assert_eq!(
            got,
            vec![Ok(good), Err(WireError::BadLength { declared: 0 })]
        );

        let mut frame = Vec::new();
        good.encode(&mut frame);
        frame.extend_from_slice(&[2, 16, 0, 1, 5]); // a header cut short
        let got: Vec<_> = packets(&frame).map(|r| r.map(|p| p.message)).collect();
        assert_eq!(
            got,
            vec![Ok(good), Err(WireError::Truncated { have: 5, need: 8 })]
        );

        let got: Vec<_> = packets(&[]).collect();
        assert_eq!(got, vec![Err(WireError::EmptyFrame)]);
    }

    #[test]
    fn every_kind_round_trips_through_the_encoder() {
        let key = InstrumentKey::new(Segment::BseFno, 1_234_567);
        let full = Full {
            quote: expected_quote(),
            oi: 1,
            oi_day_high: 2,
            oi_day_low: 3,
            depth: [DepthLevel {
                bid_qty: 1,
                ask_qty: 2,
                bid_orders: 3,
                ask_orders: 4,
                bid_price: 5.05,
                ask_price: 5.1,
            }; 5],
        };
        let messages = [
            FeedMessage::Data(
                key,
                FeedData::Ticker(Ticker {
                    ltp: 83858.53,
                    ltt: 9,
                }),
            ),
            FeedMessage::Data(key, FeedData::Quote(expected_quote())),
            FeedMessage::Data(key, FeedData::Oi(Oi { oi: u32::MAX })),
            FeedMessage::Data(
                key,
                FeedData::PrevClose(PrevClose {
                    prev_close: 0.05,
                    prev_oi: 7,
                }),
            ),
            FeedMessage::Data(key, FeedData::MarketStatus),
            FeedMessage::Data(key, FeedData::Full(full)),
            FeedMessage::Disconnect(DisconnectReason::TokenExpired),
            FeedMessage::Disconnect(DisconnectReason::Other(1)),
        ];
        let mut frame = Vec::new();
        for m in &messages {
            let start = frame.len();
            m.encode(&mut frame);
            assert_eq!(frame.len() - start, m.wire_len());
            assert_eq!(frame[start], m.code());
        }
        let decoded: Vec<_> = packets(&frame).map(|p| p.unwrap().message).collect();
        assert_eq!(decoded, messages);
    }
}
