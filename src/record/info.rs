//! `dhan-relay record-info FILE`: what a recording holds, read end to end
//! (each payload decoded with the wire decoders), as a short report.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::reader::{Damage, Reader};
use super::FeedKind;
use crate::domain::InstrumentKey;
use crate::instrument::date::ist_timestamp;
use crate::wire::depth::{self, DepthMessage, Side};
use crate::wire::feed::{self, FeedData, FeedMessage};

/// A recording summed up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The file read.
    pub file: PathBuf,
    /// Its size on disk.
    pub file_bytes: u64,
    /// Format version.
    pub version: u16,
    /// The header's day, `YYYYMMDD`.
    pub day: u32,
    /// First and last frame receive times (Unix ns), if any frame.
    pub first_last: Option<(u64, u64)>,
    /// Frames from the main feed.
    pub frames_main: u64,
    /// Frames from the depth feed.
    pub frames_depth: u64,
    /// Payload bytes (the frames as DhanHQ sent them).
    pub payload_bytes: u64,
    /// Uncompressed stream length up to the last whole record.
    pub stream_bytes: u64,
    /// Packets by kind (`ticker`, `quote`, …, `bad` for undecodable).
    pub packets: BTreeMap<&'static str, u64>,
    /// Distinct instruments (segment and security id) seen.
    pub instruments: usize,
    /// The largest gap between consecutive frames: its length (ns) and the
    /// receive time (Unix ns) of the frame that ended it.
    pub largest_gap: Option<(u64, u64)>,
    /// Where reading stopped early, if it did.
    pub damage: Option<Damage>,
}

impl Info {
    /// Frames in all.
    pub fn frames(&self) -> u64 {
        self.frames_main + self.frames_depth
    }
}

fn feed_kind(m: &FeedMessage) -> (&'static str, Option<InstrumentKey>) {
    match m {
        FeedMessage::Data(key, data) => (
            match data {
                FeedData::Ticker(_) => "ticker",
                FeedData::Quote(_) => "quote",
                FeedData::Full(_) => "full",
                FeedData::Oi(_) => "oi",
                FeedData::PrevClose(_) => "prev_close",
                FeedData::MarketStatus => return ("market_status", None),
            },
            Some(*key),
        ),
        FeedMessage::Disconnect(_) => ("disconnect", None),
    }
}

/// Reads `path` to its end (or its damage) and sums it up. Errors: the file
/// cannot be opened or is not a recording.
pub fn info(path: &Path) -> io::Result<Info> {
    let mut r = Reader::open(path)?;
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
        .len();
    let mut out = Info {
        file: path.to_path_buf(),
        file_bytes,
        version: r.header().version,
        day: r.header().day,
        first_last: None,
        frames_main: 0,
        frames_depth: 0,
        payload_bytes: 0,
        stream_bytes: 0,
        packets: BTreeMap::new(),
        instruments: 0,
        largest_gap: None,
        damage: None,
    };
    let mut instruments = HashSet::new();
    let mut payload = Vec::new();
    let mut prev: Option<u64> = None;
    while let Some((t, _conn, feed)) = r.next_into(&mut payload) {
        out.payload_bytes += payload.len() as u64;
        out.first_last = Some(out.first_last.map_or((t, t), |(a, _)| (a, t)));
        if let Some(p) = prev {
            let gap = t.saturating_sub(p);
            if out.largest_gap.map_or(true, |(g, _)| gap > g) {
                out.largest_gap = Some((gap, t));
            }
        }
        prev = Some(t);
        let mut count = |name: &'static str, key: Option<InstrumentKey>| {
            *out.packets.entry(name).or_default() += 1;
            if let Some(k) = key {
                instruments.insert(k);
            }
        };
        match feed {
            FeedKind::Main => {
                out.frames_main += 1;
                for p in feed::packets(&payload) {
                    match p {
                        Ok(p) => {
                            let (name, key) = feed_kind(&p.message);
                            count(name, key);
                        }
                        Err(_) => count("bad", None),
                    }
                }
            }
            FeedKind::Depth => {
                out.frames_depth += 1;
                for p in depth::packets(&payload) {
                    match p.map(|p| p.message) {
                        Ok(DepthMessage::Book(b)) => count(
                            match b.side {
                                Side::Bid => "depth_bid",
                                Side::Ask => "depth_ask",
                            },
                            Some(b.key),
                        ),
                        Ok(DepthMessage::Disconnect(_)) => count("disconnect", None),
                        Err(_) => count("bad", None),
                    }
                }
            }
        }
    }
    out.stream_bytes = r.offset();
    out.instruments = instruments.len();
    out.damage = r.damage().cloned();
    Ok(out)
}

fn ist(unix_ns: u64) -> String {
    format!(
        "{} IST",
        ist_timestamp(UNIX_EPOCH + Duration::from_nanos(unix_ns))
    )
}

fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000 / 1_000_000;
    match s {
        0..=59 => format!("{s}.{frac:03} s"),
        60..=3599 => format!("{}m {:02}.{frac:03}s", s / 60, s % 60),
        _ => format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60),
    }
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file:        {}", self.file.display())?;
        writeln!(f, "format:      version {}", self.version)?;
        writeln!(
            f,
            "day:         {:04}-{:02}-{:02}",
            self.day / 10_000,
            self.day / 100 % 100,
            self.day % 100
        )?;
        match self.first_last {
            Some((a, b)) => {
                writeln!(f, "first frame: {}", ist(a))?;
                writeln!(f, "last frame:  {}", ist(b))?;
                writeln!(f, "duration:    {}", duration(b.saturating_sub(a)))?;
            }
            None => writeln!(f, "first frame: none (no frames)")?,
        }
        writeln!(
            f,
            "frames:      {} (main {}, depth {})",
            self.frames(),
            self.frames_main,
            self.frames_depth
        )?;
        writeln!(
            f,
            "bytes:       {} on disk, {} recorded ({} payload)",
            self.file_bytes, self.stream_bytes, self.payload_bytes
        )?;
        let total: u64 = self.packets.values().sum();
        write!(f, "packets:     {total}")?;
        for (i, (k, n)) in self.packets.iter().enumerate() {
            write!(f, "{}{k} {n}", if i == 0 { ": " } else { ", " })?;
        }
        writeln!(f)?;
        writeln!(f, "instruments: {}", self.instruments)?;
        match self.largest_gap {
            Some((gap, at)) => {
                writeln!(f, "largest gap: {}, ending at {}", duration(gap), ist(at))?
            }
            None => writeln!(f, "largest gap: none")?,
        }
        match &self.damage {
            None => writeln!(f, "damage:      none"),
            Some(d) => writeln!(
                f,
                "damage:      at offset {} after {} whole frames: {}",
                d.offset, d.frames_before, d.reason
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reader::tests::{bytes_of, tempdir};
    use super::super::RecordedFrame;
    use super::*;
    use crate::domain::Segment;
    use crate::wire::depth::{DepthBook, DepthRow};
    use crate::wire::feed::{Quote, Ticker};

    #[test]
    fn sums_up_a_file() {
        let a = InstrumentKey::new(Segment::ALL[1], 1333);
        let b = InstrumentKey::new(Segment::ALL[2], 42);
        let mut main = Vec::new();
        FeedMessage::Data(a, FeedData::Ticker(Ticker { ltp: 1.0, ltt: 1 })).encode(&mut main);
        FeedMessage::Data(b, FeedData::Quote(Quote::default())).encode(&mut main);
        FeedMessage::Data(a, FeedData::MarketStatus).encode(&mut main);
        let mut dep = Vec::new();
        DepthMessage::Book(DepthBook {
            key: b,
            side: Side::Ask,
            sequence: 1,
            rows: [DepthRow::default(); depth::ROWS],
        })
        .encode(&mut dep);
        let t0 = 1_741_578_300_000_000_000; // 2025-03-10 09:15:00 IST
        let frames = vec![
            RecordedFrame {
                recv_unix_ns: t0,
                conn: 0,
                feed: FeedKind::Main,
                payload: main,
            },
            RecordedFrame {
                recv_unix_ns: t0 + 2_500_000_000,
                conn: 0,
                feed: FeedKind::Depth,
                payload: dep,
            },
            RecordedFrame {
                recv_unix_ns: t0 + 3_000_000_000,
                conn: 1,
                feed: FeedKind::Main,
                payload: vec![2, 0, 1],
            },
        ];
        let mut bytes = bytes_of(&frames);
        bytes.extend_from_slice(&[1, 2, 3]); // a torn tail
        let dir = tempdir("info");
        let path = dir.join("2025-03-10.dhr");
        std::fs::write(&path, &bytes).unwrap();
        let i = info(&path).unwrap();
        assert_eq!((i.frames_main, i.frames_depth), (2, 1));
        assert_eq!(i.instruments, 2);
        let p: Vec<_> = i.packets.iter().map(|(k, n)| (*k, *n)).collect();
        assert_eq!(
            p,
            [
                ("bad", 1),
                ("depth_ask", 1),
                ("market_status", 1),
                ("quote", 1),
                ("ticker", 1)
            ]
        );
        assert_eq!(i.largest_gap, Some((2_500_000_000, t0 + 2_500_000_000)));
        assert_eq!(i.stream_bytes, bytes.len() as u64 - 3);
        let d = i.damage.as_ref().unwrap();
        assert_eq!(d.frames_before, 3);
        let text = i.to_string();
        assert!(
            text.contains("first frame: 2025-03-10T09:15:00.000000 IST"),
            "{text}"
        );
        assert!(text.contains("duration:    3.000 s"), "{text}");
        assert!(text.contains("damage:      at offset"), "{text}");
        assert!(text.contains("frames:      3 (main 2, depth 1)"), "{text}");
    }
}
