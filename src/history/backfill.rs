//! Bars from a recording: the same [`BarBuilder`] the book runs, over
//! recorded main-feed frames.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{Bar, BarBuilder};
use crate::domain::InstrumentKey;
use crate::instrument::date::civil_from_days;
use crate::record::{FeedKind, Reader, RecordedFrame};
use crate::wire::feed::{packets, FeedMessage};

/// Every bar of `keys` in `frames` (main-feed frames; depth frames and
/// undecodable packets are skipped), oldest first per instrument. The last
/// bar of each instrument is included even though no later minute closed
/// it: the caller keeps only bars before its first live minute.
pub fn bars_from_frames(
    frames: impl Iterator<Item = RecordedFrame>,
    keys: &HashSet<InstrumentKey>,
) -> HashMap<InstrumentKey, Vec<Bar>> {
    let mut builders: HashMap<InstrumentKey, BarBuilder> = HashMap::new();
    let mut out: HashMap<InstrumentKey, Vec<Bar>> = HashMap::new();
    for frame in frames.filter(|f| f.feed == FeedKind::Main) {
        for packet in packets(&frame.payload).flatten() {
            let FeedMessage::Data(key, data) = packet.message else {
                continue;
            };
            if !keys.contains(&key) {
                continue;
            }
            let outcome = builders.entry(key).or_default().apply(&data);
            if let Some(bar) = outcome.finished {
                out.entry(key).or_default().push(bar);
            }
        }
    }
    for (key, b) in builders {
        if let Some(bar) = b.forming() {
            out.entry(key).or_default().push(bar);
        }
    }
    out
}

/// India date `day` (days since 1970-01-01) as `YYYYMMDD`.
pub fn yyyymmdd(day: i64) -> u32 {
    let (y, m, d) = civil_from_days(day);
    (y as u32) * 10_000 + m * 100 + d
}

/// The frames recorded in `dir` on India day `day` (`YYYYMMDD`): none when
/// there is no file for that day; a file that cannot be opened is logged
/// and gives none; a damaged tail ends the frames where the damage starts.
pub fn recorded_frames(dir: &Path, day: u32) -> Box<dyn Iterator<Item = RecordedFrame>> {
    let Some(path) = crate::record::day_file(dir, day) else {
        return Box::new(std::iter::empty());
    };
    match Reader::open(&path) {
        Ok(reader) => Box::new(reader),
        Err(e) => {
            log::warn!("history: no backfill from {}: {e}", path.display());
            Box::new(std::iter::empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::wire::feed::{FeedData, Oi, Quote, Ticker};

    const T0: u32 = 1_796_269_500;

    fn frame(msgs: &[FeedMessage], feed: FeedKind) -> RecordedFrame {
        let mut payload = Vec::new();
        for m in msgs {
            m.encode(&mut payload);
        }
        RecordedFrame {
            recv_unix_ns: 0,
            conn: 0,
            feed,
            payload,
        }
    }

    fn quote(key: InstrumentKey, ltp: f32, ltt: u32, volume: u32) -> FeedMessage {
        FeedMessage::Data(
            key,
            FeedData::Quote(Quote {
                ltp,
                ltt,
                volume,
                ..Quote::default()
            }),
        )
    }

    #[test]
    fn bars_from_encoded_frames_match_the_builder() {
        let rel = InstrumentKey::new(Segment::NseEq, 2885);
        let nifty = InstrumentKey::new(Segment::IdxI, 13);
        let other = InstrumentKey::new(Segment::NseEq, 1);
        let frames = vec![
            frame(
                &[
                    quote(rel, 100.0, T0 + 1, 10),
                    FeedMessage::Data(
                        nifty,
                        FeedData::Ticker(Ticker {
                            ltp: 25_000.0,
                            ltt: T0 + 2,
                        }),
                    ),
                    quote(other, 5.0, T0 + 2, 1),
                ],
                FeedKind::Main,
            ),
            frame(&[quote(rel, 99.0, T0 + 30, 25)], FeedKind::Main),
            // Not the main feed: skipped.
            frame(&[quote(rel, 1.0, T0 + 31, 26)], FeedKind::Depth),
            frame(
                &[
                    FeedMessage::Data(rel, FeedData::Oi(Oi { oi: 4 })),
                    quote(rel, 101.0, T0 + 65, 40),
                    FeedMessage::Data(
                        nifty,
                        FeedData::Ticker(Ticker {
                            ltp: 25_010.0,
                            ltt: T0 + 61,
                        }),
                    ),
                ],
                FeedKind::Main,
            ),
        ];
        let keys: HashSet<InstrumentKey> = [rel, nifty].into_iter().collect();
        let bars = bars_from_frames(frames.into_iter(), &keys);
        assert_eq!(bars.len(), 2, "only the keys asked for");
        let r = &bars[&rel];
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].t, r[0].o, r[0].l, r[0].c, r[0].v, r[0].oi),
            (T0, 100.0, 99.0, 99.0, 15, 4)
        );
        assert_eq!((r[1].t, r[1].o, r[1].v), (T0 + 60, 101.0, 15));
        let n = &bars[&nifty];
        assert_eq!(
            n.iter().map(|b| (b.t, b.c, b.v)).collect::<Vec<_>>(),
            [(T0, 25_000.0, 0), (T0 + 60, 25_010.0, 0)]
        );
    }

    #[test]
    fn dates_as_yyyymmdd() {
        assert_eq!(yyyymmdd(super::super::ist_day(T0)), 20261203);
    }
}
