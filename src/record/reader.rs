//! Reading a recording back: a `.dhr` file or its zstd-compressed
//! `.dhr.zst` (told apart by the first bytes, not the name), frame by frame.
//!
//! Iteration stops at the end of the file or at the first damage (a torn
//! tail after a crash, a flipped bit): everything before the damage is
//! returned, and [`Reader::damage`] says where and why it stopped. A file
//! whose header is not a v1 recording is refused at [`Reader::open`].
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

pub use super::format::Header;
use super::format::{self, HEADER_LEN, RECORD_HEADER_LEN, ZSTD_MAGIC};
use super::RecordedFrame;

/// Where and why reading stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the damaged record in the uncompressed byte stream (the
    /// end of the last whole record).
    pub offset: u64,
    /// Whole records read before it.
    pub frames_before: u64,
    /// What was wrong.
    pub reason: String,
}

/// A recording opened for reading; iterate it for its frames.
pub struct Reader {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    header: Header,
    /// Offset of the next record (uncompressed).
    offset: u64,
    frames: u64,
    damage: Option<Damage>,
    done: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("offset", &self.offset)
            .field("frames", &self.frames)
            .field("damage", &self.damage)
            .finish()
    }
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn named(path: &Path, e: impl std::fmt::Display, kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, format!("{}: {e}", path.display()))
}

impl Reader {
    /// Opens a recording (`.dhr` or `.dhr.zst`) and reads its header. Errors
    /// name the path: cannot open, not a recording, unsupported version.
    pub fn open(path: &Path) -> io::Result<Reader> {
        let file = File::open(path).map_err(|e| named(path, &e, e.kind()))?;
        Reader::from_read(path, file)
    }

    /// A recording read from any byte stream (`.dhr` bytes, or zstd of
    /// them); `path` only names it in errors and damage reports. For tests
    /// and the fuzz target; [`Reader::open`] is this over a file.
    pub fn from_read(path: &Path, input: impl Read + Send + 'static) -> io::Result<Reader> {
        let mut buffered = BufReader::with_capacity(256 * 1024, input);
        let mut sniff = [0u8; 4];
        let n = read_full(&mut buffered, &mut sniff).map_err(|e| named(path, &e, e.kind()))?;
        let head = io::Cursor::new(sniff[..n].to_vec());
        let mut input: Box<dyn Read + Send> = if n == 4 && sniff == ZSTD_MAGIC {
            let decoder = zstd::stream::read::Decoder::new(head.chain(buffered))
                .map_err(|e| named(path, &e, e.kind()))?;
            Box::new(decoder)
        } else {
            Box::new(head.chain(buffered))
        };
        let mut hb = [0u8; HEADER_LEN];
        let got = read_full(&mut input, &mut hb).map_err(|e| named(path, &e, e.kind()))?;
        if got < HEADER_LEN {
            return Err(named(
                path,
                format!("not a dhan-relay recording (only {got} bytes, a header is {HEADER_LEN})"),
                io::ErrorKind::InvalidData,
            ));
        }
        let header =
            format::decode_header(&hb).map_err(|e| named(path, e, io::ErrorKind::InvalidData))?;
        Ok(Reader {
            path: path.to_path_buf(),
            input,
            header,
            offset: HEADER_LEN as u64,
            frames: 0,
            damage: None,
            done: false,
        })
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Where reading stopped early, once iteration has hit damage.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// Offset (uncompressed) just past the last whole record read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whole records read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn damaged(&mut self, reason: String) {
        self.damage = Some(Damage {
            offset: self.offset,
            frames_before: self.frames,
            reason,
        });
        self.done = true;
    }

    /// Reads the next record's payload into `payload` (replacing its
    /// contents): its receive time, connection and feed, or `None` at the
    /// end or at damage. The allocation-free way through a long file.
    pub fn next_into(&mut self, payload: &mut Vec<u8>) -> Option<(u64, u8, super::FeedKind)> {
        if self.done {
            return None;
        }
        let mut hb = [0u8; RECORD_HEADER_LEN];
        let got = match read_full(&mut self.input, &mut hb) {
            Ok(n) => n,
            Err(e) => {
                self.damaged(format!("read error: {e}"));
                return None;
            }
        };
        if got == 0 {
            self.done = true;
            return None;
        }
        if got < RECORD_HEADER_LEN {
            self.damaged(format!(
                "torn record header ({got} of {RECORD_HEADER_LEN} bytes)"
            ));
            return None;
        }
        let head = match format::decode_record_header(&hb) {
            Ok(h) => h,
            Err(reason) => {
                self.damaged(reason);
                return None;
            }
        };
        let len = head.len as usize;
        payload.clear();
        payload.resize(len, 0);
        match read_full(&mut self.input, payload) {
            Ok(n) if n == len => {}
            Ok(n) => {
                self.damaged(format!("torn payload ({n} of {len} bytes)"));
                return None;
            }
            Err(e) => {
                self.damaged(format!("read error: {e}"));
                return None;
            }
        }
        let crc = format::record_crc(&hb, (payload, &[]));
        if crc != head.crc {
            self.damaged(format!(
                "CRC mismatch (stored {:08x}, computed {crc:08x})",
                head.crc
            ));
            return None;
        }
        self.offset += (RECORD_HEADER_LEN + len) as u64;
        self.frames += 1;
        Some((head.recv_unix_ns, head.conn, head.feed))
    }
}

impl Iterator for Reader {
    type Item = RecordedFrame;

    fn next(&mut self) -> Option<RecordedFrame> {
        let mut payload = Vec::new();
        let (recv_unix_ns, conn, feed) = self.next_into(&mut payload)?;
        Some(RecordedFrame {
            recv_unix_ns,
            conn,
            feed,
            payload,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::format::{encode_header, record_crc, record_header, seal, VERSION};
    use super::super::FeedKind;
    use super::*;

    /// A file's bytes built by hand (independent of the writer thread).
    pub(crate) fn bytes_of(frames: &[RecordedFrame]) -> Vec<u8> {
        let mut out = encode_header(&Header {
            version: VERSION,
            created_unix_ns: 1,
            day: 20250310,
        })
        .to_vec();
        for f in frames {
            let mut h = record_header(f.payload.len() as u32, f.recv_unix_ns, f.conn, f.feed);
            let crc = record_crc(&h, (&f.payload, &[]));
            seal(&mut h, crc);
            out.extend_from_slice(&h);
            out.extend_from_slice(&f.payload);
        }
        out
    }

    fn frames() -> Vec<RecordedFrame> {
        (0..4u8)
            .map(|i| RecordedFrame {
                recv_unix_ns: 1_000 + u64::from(i),
                conn: i,
                feed: if i % 2 == 0 {
                    FeedKind::Main
                } else {
                    FeedKind::Depth
                },
                payload: vec![i; 10 + usize::from(i) * 7],
            })
            .collect()
    }

    #[test]
    fn torn_tail_at_every_offset_of_the_last_record() {
        let dir = tempdir("torn");
        let all = frames();
        let bytes = bytes_of(&all);
        let last_start = bytes_of(&all[..3]).len();
        let path = dir.join("t.dhr");
        for cut in last_start..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut r = Reader::open(&path).unwrap();
            let got: Vec<_> = r.by_ref().collect();
            assert_eq!(got, all[..3], "cut at {cut}");
            if cut == last_start {
                assert!(r.damage().is_none(), "a clean end at {cut}");
            } else {
                let d = r.damage().expect("damage");
                assert_eq!(d.offset, last_start as u64);
                assert_eq!(d.frames_before, 3);
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let r = Reader::open(&path).unwrap();
        assert_eq!(r.collect::<Vec<_>>(), all);
    }

    #[test]
    fn flipped_byte_is_crc_damage() {
        let dir = tempdir("flip");
        let all = frames();
        let mut bytes = bytes_of(&all);
        let second = bytes_of(&all[..1]).len();
        bytes[second + RECORD_HEADER_LEN + 3] ^= 0x10;
        let path = dir.join("f.dhr");
        std::fs::write(&path, &bytes).unwrap();
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.by_ref().count(), 1);
        let d = r.damage().unwrap();
        assert!(d.reason.contains("CRC"), "{d:?}");
        assert_eq!((d.offset, d.frames_before), (second as u64, 1));
    }

    #[test]
    fn refuses_what_is_not_a_recording() {
        let dir = tempdir("refuse");
        let path = dir.join("x.dhr");
        std::fs::write(&path, b"hello world, not a recording at all....").unwrap();
        let e = Reader::open(&path).unwrap_err();
        assert!(e.to_string().contains("x.dhr") && e.to_string().contains("magic"));
        let mut v2 = bytes_of(&[]);
        v2[8] = 2;
        std::fs::write(&path, &v2).unwrap();
        assert!(Reader::open(&path)
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        std::fs::write(&path, b"DHAN").unwrap();
        assert!(Reader::open(&path).is_err());
        assert!(Reader::open(&dir.join("missing.dhr"))
            .unwrap_err()
            .to_string()
            .contains("missing.dhr"));
    }

    #[test]
    fn reads_zstd_by_content_not_name() {
        let dir = tempdir("zst");
        let all = frames();
        let z = zstd::encode_all(&bytes_of(&all)[..], 3).unwrap();
        let path = dir.join("no-extension");
        std::fs::write(&path, z).unwrap();
        let r = Reader::open(&path).unwrap();
        assert_eq!(r.header().day, 20250310);
        assert_eq!(r.collect::<Vec<_>>(), all);
    }

    pub(crate) fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dhan-record-{name}-{}-{}",
            std::process::id(),
            crate::clock::now_ns()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
