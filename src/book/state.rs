//! One instrument's latest state and how a tick changes it.

use crate::domain::InstrumentKey;
use crate::tick::Tick;
use crate::wire::feed::{DepthLevel, FeedData, PrevClose, Quote};

/// The open-interest and depth fields only full packets carry.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct FullExtras {
    /// Highest open interest today.
    pub oi_day_high: u32,
    /// Lowest open interest today.
    pub oi_day_low: u32,
    /// Five depth levels, best first.
    pub depth: [DepthLevel; 5],
}

/// Everything known about one instrument. `Copy`, so a snapshot is a
/// memcpy of the table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstrumentState {
    /// The instrument.
    pub key: InstrumentKey,
    /// Updates applied so far (OI and previous-close packets included).
    pub seq: u64,
    /// Last traded price, once one has arrived.
    pub ltp: Option<f32>,
    /// Last trade time, epoch seconds.
    pub ltt: u32,
    /// The latest quote fields (from a quote or full packet).
    pub quote: Option<Quote>,
    /// The latest full-only fields.
    pub full: Option<FullExtras>,
    /// Latest open interest (from an OI or full packet).
    pub oi: Option<u32>,
    /// Previous session's close and OI.
    pub prev_close: Option<PrevClose>,
    /// Receive stamp of the latest tick applied.
    pub recv_ns: u64,
}

/// What kind of change an update carries, for choosing its message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// LTP and LTT changed.
    Ticker,
    /// Quote fields changed.
    Quote,
    /// Quote, OI and depth changed.
    Full,
    /// Only open interest changed.
    Oi,
    /// Only the previous close changed.
    PrevClose,
}

impl InstrumentState {
    /// A state with nothing known yet.
    pub fn new(key: InstrumentKey) -> Self {
        InstrumentState {
            key,
            seq: 0,
            ltp: None,
            ltt: 0,
            quote: None,
            full: None,
            oi: None,
            prev_close: None,
            recv_ns: 0,
        }
    }

    /// Applies a tick; `None` for packets that change nothing a client sees
    /// (market status).
    pub fn apply(&mut self, tick: &Tick) -> Option<UpdateKind> {
        let kind = match tick.data {
            FeedData::Ticker(t) => {
                self.ltp = Some(t.ltp);
                self.ltt = t.ltt;
                UpdateKind::Ticker
            }
            FeedData::Quote(q) => {
                self.set_quote(q);
                UpdateKind::Quote
            }
            FeedData::Full(f) => {
                self.set_quote(f.quote);
                self.oi = Some(f.oi);
                self.full = Some(FullExtras {
                    oi_day_high: f.oi_day_high,
                    oi_day_low: f.oi_day_low,
                    depth: f.depth,
                });
                UpdateKind::Full
            }
            FeedData::Oi(o) => {
                self.oi = Some(o.oi);
                UpdateKind::Oi
            }
            FeedData::PrevClose(p) => {
                self.prev_close = Some(p);
                UpdateKind::PrevClose
            }
            FeedData::MarketStatus => return None,
        };
        self.seq += 1;
        self.recv_ns = tick.recv_ns;
        Some(kind)
    }

    fn set_quote(&mut self, q: Quote) {
        self.ltp = Some(q.ltp);
        self.ltt = q.ltt;
        self.quote = Some(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::wire::feed::{Full, Oi, Ticker};

    fn tick(data: FeedData, recv_ns: u64) -> Tick {
        Tick {
            key: InstrumentKey::new(Segment::NseEq, 1),
            data,
            recv_ns,
        }
    }

    #[test]
    fn each_packet_updates_its_fields_and_the_sequence() {
        let mut s = InstrumentState::new(InstrumentKey::new(Segment::NseEq, 1));
        assert_eq!(
            s.apply(&tick(
                FeedData::PrevClose(PrevClose {
                    prev_close: 99.5,
                    prev_oi: 3
                }),
                1
            )),
            Some(UpdateKind::PrevClose)
        );
        assert_eq!(s.ltp, None);
        assert_eq!(
            s.apply(&tick(
                FeedData::Ticker(Ticker {
                    ltp: 100.05,
                    ltt: 7
                }),
                2
            )),
            Some(UpdateKind::Ticker)
        );
        assert_eq!((s.ltp, s.ltt, s.seq, s.recv_ns), (Some(100.05), 7, 2, 2));
        let full = Full {
            quote: Quote {
                ltp: 101.0,
                ltt: 8,
                volume: 5,
                ..Quote::default()
            },
            oi: 40,
            oi_day_high: 50,
            oi_day_low: 30,
            ..Full::default()
        };
        assert_eq!(
            s.apply(&tick(FeedData::Full(full), 3)),
            Some(UpdateKind::Full)
        );
        assert_eq!((s.ltp, s.ltt, s.oi), (Some(101.0), 8, Some(40)));
        assert_eq!(s.quote.unwrap().volume, 5);
        assert_eq!(s.full.unwrap().oi_day_high, 50);
        assert_eq!(
            s.apply(&tick(FeedData::Oi(Oi { oi: 41 }), 4)),
            Some(UpdateKind::Oi)
        );
        assert_eq!(s.oi, Some(41));
        assert_eq!(s.apply(&tick(FeedData::MarketStatus, 5)), None);
        assert_eq!(s.seq, 4);
        assert_eq!(
            s.prev_close.unwrap().prev_close,
            99.5,
            "kept across updates"
        );
    }
}
