//! The loaded scrip master: rows in one flat table, strings in one arena,
//! and the indexes resolution and search need.
//!
//! Layout, chosen for load speed and search speed:
//! - rows are sorted once by a static rank (indices, equities, futures by
//!   expiry, options by expiry; NSE before BSE before MCX; shorter symbols
//!   first), so a row's index *is* its rank and every list of row ids is
//!   already in result order;
//! - the upper-cased trading symbol, custom symbol and name of every row are
//!   laid out in rank order in one byte string (the haystack, each field
//!   preceded by `\n`), which search scans with SIMD substring search
//!   (`memchr::memmem`) and stops as soon as it has enough;
//! - exact symbols (trading and custom) sit in an open-addressing table of
//!   row ids; instrument keys, underlyings and the company names of indices
//!   and equities in hash maps, so resolving a name (known or not) is a few
//!   hash look-ups and never a scan.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::csv;
use super::{feed_segment, Date, Exchange, Kind, OptionType};
use crate::domain::{InstrumentKey, SecurityId};

/// Bad rows reported by line, at most (all are counted).
pub const MAX_PROBLEMS: usize = 10;

/// Columns the loader reads; the first six are required. The last,
/// `REFERENCE_PRICE`, is not DhanHQ's: the embedded sample carries it (a
/// price level for the demo simulator to start from) and any file may.
const COLUMNS: [&str; 14] = [
    "SEM_EXM_EXCH_ID",
    "SEM_SEGMENT",
    "SEM_SMST_SECURITY_ID",
    "SEM_INSTRUMENT_NAME",
    "SEM_TRADING_SYMBOL",
    "SEM_EXPIRY_DATE",
    "SEM_LOT_UNITS",
    "SEM_CUSTOM_SYMBOL",
    "SEM_STRIKE_PRICE",
    "SEM_OPTION_TYPE",
    "SEM_TICK_SIZE",
    "SEM_SERIES",
    "SM_SYMBOL_NAME",
    "REFERENCE_PRICE",
];
const REQUIRED: usize = 6;
const EXCH: usize = 0;
const SEG: usize = 1;
const ID: usize = 2;
const INSTR: usize = 3;
const TS: usize = 4;
const EXPIRY: usize = 5;
const LOT: usize = 6;
const CUSTOM: usize = 7;
const STRIKE: usize = 8;
const OPT: usize = 9;
const TICK: usize = 10;
const SERIES: usize = 11;
const NAME: usize = 12;
const REFERENCE: usize = 13;

/// FxHash (rustc's hasher): fast for the short keys here; not DoS-resistant,
/// which is fine for a file we chose to load.
#[derive(Clone, Copy, Default)]
pub(crate) struct Fx(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_K);
    }
}

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ (rest.len() as u64) << 59);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// A full-avalanche hash of bytes, for the open-addressing table.
#[inline]
pub(crate) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = Fx::default();
    h.write(b);
    let mut z = h.finish() ^ b.len() as u64;
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// A string in the arena.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    pub(crate) key: InstrumentKey,
    pub(crate) expiry: Option<Date>,
    strike: f64,
    lot: f64,
    /// `REFERENCE_PRICE`, NaN without one (an `f32` fits in the row's
    /// padding; an `Option<f64>` would grow every row by 8 bytes).
    reference: f32,
    tick: Span,
    ts: Span,
    cs: Span,
    name: Span,
    series: Span,
    line: u32,
    under_len: u16,
    pub(crate) exchange: Exchange,
    pub(crate) kind: Kind,
    pub(crate) option: Option<OptionType>,
    instrument: u8,
}

/// A bad row: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowProblem {
    /// 1-based line in the file (the header is line 1).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// What loading found besides the instruments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Instruments loaded.
    pub rows: usize,
    /// Rows rejected (malformed, unknown exchange, duplicate, …).
    pub bad: usize,
    /// The first [`MAX_PROBLEMS`] bad rows.
    pub problems: Vec<RowProblem>,
    /// Well-formed rows of segments the Live Market Feed does not carry,
    /// skipped, by `EXCHANGE SEGMENT-LETTER` with counts.
    pub unsupported: Vec<(String, usize)>,
    /// Parse and index time.
    pub elapsed: Duration,
    /// That time by phase (`parse`, `sort`, `haystack`, …), for benchmarks.
    pub phases: Vec<(&'static str, Duration)>,
}

impl LoadReport {
    /// Rows skipped for their segment.
    pub fn unsupported_rows(&self) -> usize {
        self.unsupported.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} instruments in {:.0} ms",
            self.rows,
            self.elapsed.as_secs_f64() * 1e3
        )?;
        if self.bad > 0 {
            write!(f, "; {} bad rows skipped (", self.bad)?;
            for (i, p) in self.problems.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "line {}: {}", p.line, p.reason)?;
            }
            if self.bad > self.problems.len() {
                f.write_str("; …")?;
            }
            f.write_str(")")?;
        }
        if !self.unsupported.is_empty() {
            let list: Vec<String> = self
                .unsupported
                .iter()
                .map(|(s, n)| format!("{s} ×{n}"))
                .collect();
            write!(
                f,
                "; {} rows of segments the feed does not carry skipped ({})",
                self.unsupported_rows(),
                list.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Why a source is not a scrip master at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterError {
    /// No header line.
    Empty,
    /// The header lacks columns the relay needs.
    MissingColumns(Vec<&'static str>),
}

impl fmt::Display for MasterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterError::Empty => f.write_str("the file is empty: no header line"),
            MasterError::MissingColumns(c) => write!(
                f,
                "not a DhanHQ scrip master: the header lacks {}",
                c.join(", ")
            ),
        }
    }
}

impl std::error::Error for MasterError {}

/// Open addressing over row ids (`row * 2 + field`, field 0 = trading
/// symbol, 1 = custom symbol), keyed by the upper-cased string.
#[derive(Default)]
struct ExactTable {
    slots: Vec<u32>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;

/// The scrip master: every instrument the feed can carry, indexed.
pub struct Master {
    pub(crate) rows: Vec<Row>,
    text: String,
    pub(crate) hay: Vec<u8>,
    pub(crate) starts: Vec<u32>,
    /// `(segment << 32 | security id, row)`, sorted.
    by_key: Vec<(u64, u32)>,
    exact: ExactTable,
    pub(crate) by_under: FxMap<Box<str>, Vec<u32>>,
    /// Upper-cased company name → index and equity rows, in rank order.
    by_name: FxMap<Box<[u8]>, Vec<u32>>,
    pub(crate) grams: Grams,
    instruments: Vec<Box<str>>,
    report: LoadReport,
}

/// Which blocks of rows (in rank order, `block` rows each) contain which
/// character n-grams, so a search reads only the blocks that can match:
/// a 64-bit set of characters per block, a 4096-bit set of bigrams per
/// block, and for trigrams the ascending list of blocks holding each
/// (`offsets[t]..offsets[t + 1]` in one flat array). The field separator
/// `\n` is a character too, so "a field starts with AB" is the trigram
/// `\nAB`.
#[derive(Default)]
pub(crate) struct Grams {
    pub(crate) block: usize,
    nblocks: usize,
    chars: Vec<u64>,
    pairs: Vec<u64>,
    offsets: Vec<u32>,
    blocks: Vec<u16>,
}

/// Trigram ids: 6 bits per byte.
pub(crate) const GRAM_SPACE: usize = 1 << 18;

/// A byte's 6-bit class: letters and digits exactly, a few separators,
/// everything else folded (a fold only widens the candidate blocks).
pub(crate) const GRAM_CODE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'\n' => 0,
            c @ b'A'..=b'Z' => c - b'A' + 1,
            c @ b'a'..=b'z' => c - b'a' + 1,
            c @ b'0'..=b'9' => c - b'0' + 27,
            b' ' => 37,
            b'-' => 38,
            c => 39 + c % 24,
        };
        b += 1;
    }
    t
};

#[inline]
fn code(b: u8) -> usize {
    GRAM_CODE[b as usize] as usize
}

impl Grams {
    fn build(hay: &[u8], starts: &[u32], rows: usize) -> Grams {
        let block = rows.div_ceil(60_000).max(64);
        let nblocks = rows.div_ceil(block);
        // Each block's bytes plus the separator that follows it.
        let range = |b: usize| {
            let from = starts[b * block] as usize;
            let to = starts[((b + 1) * block).min(rows)] as usize;
            &hay[from..(to + 1).min(hay.len())]
        };
        let mut chars = vec![0u64; nblocks];
        let mut pairs = vec![0u64; nblocks * 64];
        let mut last = vec![u16::MAX; GRAM_SPACE];
        let mut offsets = vec![0u32; GRAM_SPACE + 1];
        // One pass over the bytes: each block's distinct trigrams, in order.
        let mut events: Vec<u32> = Vec::with_capacity(hay.len() / 8);
        let mut event_starts: Vec<usize> = Vec::with_capacity(nblocks + 1);
        for b in 0..nblocks {
            event_starts.push(events.len());
            let bytes = range(b);
            let tag = b as u16;
            let pair = &mut pairs[b * 64..(b + 1) * 64];
            let mut seen = 0u64;
            let mut id = 0usize;
            for (i, &x) in bytes.iter().enumerate() {
                let c = code(x);
                seen |= 1 << c;
                id = (id << 6 | c) & (GRAM_SPACE - 1);
                if i >= 1 {
                    let p = id & 0xFFF;
                    pair[p >> 6] |= 1 << (p & 63);
                }
                if i >= 2 && last[id] != tag {
                    last[id] = tag;
                    offsets[id + 1] += 1;
                    events.push(id as u32);
                }
            }
            chars[b] = seen;
        }
        event_starts.push(events.len());
        drop(last);
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut blocks = vec![0u16; offsets[GRAM_SPACE] as usize];
        let mut next: Vec<u32> = offsets[..GRAM_SPACE].to_vec();
        for b in 0..nblocks {
            for &id in &events[event_starts[b]..event_starts[b + 1]] {
                let at = &mut next[id as usize];
                blocks[*at as usize] = b as u16;
                *at += 1;
            }
        }
        Grams {
            block,
            nblocks,
            chars,
            pairs,
            offsets,
            blocks,
        }
    }

    fn heap_bytes(&self) -> usize {
        (self.chars.capacity() + self.pairs.capacity()) * 8
            + self.offsets.capacity() * 4
            + self.blocks.capacity() * 2
    }

    /// Blocks that may contain `needle` (ascending); `None` without an
    /// index.
    pub(crate) fn candidates(&self, needle: &[u8]) -> Option<Vec<u16>> {
        if self.nblocks == 0 {
            return None;
        }
        match needle {
            [] => None,
            [a] => {
                let bit = 1u64 << code(*a);
                Some(
                    (0..self.nblocks)
                        .filter(|&b| self.chars[b] & bit != 0)
                        .map(|b| b as u16)
                        .collect(),
                )
            }
            [a, b] => {
                let p = code(*a) << 6 | code(*b);
                let (word, bit) = (p >> 6, 1u64 << (p & 63));
                Some(
                    (0..self.nblocks)
                        .filter(|&k| self.pairs[k * 64 + word] & bit != 0)
                        .map(|k| k as u16)
                        .collect(),
                )
            }
            _ => {
                let mut ids: Vec<usize> = needle
                    .windows(3)
                    .map(|w| code(w[0]) << 12 | code(w[1]) << 6 | code(w[2]))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                let mut lists: Vec<&[u16]> = ids
                    .iter()
                    .map(|&id| {
                        &self.blocks[self.offsets[id] as usize..self.offsets[id + 1] as usize]
                    })
                    .collect();
                lists.sort_unstable_by_key(|l| l.len());
                let (first, rest) = lists.split_first()?;
                if rest.is_empty() || first.len() < 64 {
                    return Some(
                        first
                            .iter()
                            .copied()
                            .filter(|b| rest.iter().all(|l| l.binary_search(b).is_ok()))
                            .collect(),
                    );
                }
                // Long lists: intersect as bit sets over blocks.
                let words = self.nblocks.div_ceil(64);
                let set = |list: &[u16]| {
                    let mut bits = vec![0u64; words];
                    for &b in list {
                        bits[b as usize >> 6] |= 1 << (b & 63);
                    }
                    bits
                };
                let mut acc = set(first);
                for l in rest {
                    for (a, b) in acc.iter_mut().zip(set(l)) {
                        *a &= b;
                    }
                }
                let mut out = Vec::new();
                for (w, &word) in acc.iter().enumerate() {
                    let mut word = word;
                    while word != 0 {
                        out.push((w * 64 + word.trailing_zeros() as usize) as u16);
                        word &= word - 1;
                    }
                }
                Some(out)
            }
        }
    }
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("instruments", &self.rows.len())
            .field("bad_rows", &self.report.bad)
            .finish()
    }
}

impl Default for Master {
    fn default() -> Self {
        Master::empty()
    }
}

/// Upper-cases ASCII, appending to `out`.
fn push_upper(out: &mut Vec<u8>, s: &[u8]) {
    let at = out.len();
    out.extend_from_slice(s);
    out[at..].make_ascii_uppercase();
}

/// Length of the underlying at the start of an upper-cased trading symbol:
/// `CRUDEOIL-18DEC2026-FUT` → `CRUDEOIL`, `BAJAJ-AUTO-NOV2026-1500-CE` →
/// `BAJAJ-AUTO`, a cash symbol → all of it.
fn underlying_len(ts: &[u8], kind: Kind) -> usize {
    let cut = |s: &[u8], n: usize| -> Option<usize> {
        let mut end = s.len();
        for _ in 0..n {
            end = memchr::memrchr(b'-', &s[..end])?;
        }
        Some(end)
    };
    match kind {
        Kind::Future if ts.ends_with(b"-FUT") => cut(ts, 2),
        Kind::Option if ts.ends_with(b"-CE") || ts.ends_with(b"-PE") => cut(ts, 3),
        Kind::Future | Kind::Option => memchr::memchr(b'-', ts),
        _ => None,
    }
    .filter(|&n| n > 0)
    .unwrap_or(ts.len())
}

struct Problems<'r> {
    report: &'r mut LoadReport,
}

impl Problems<'_> {
    fn bad(&mut self, line: usize, reason: impl FnOnce() -> String) {
        self.report.bad += 1;
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(RowProblem {
                line,
                reason: reason(),
            });
        }
    }
}

fn key_bits(k: InstrumentKey) -> u64 {
    u64::from(k.segment.code()) << 32 | u64::from(k.security_id.0)
}

/// `75`, `75.0`, `100.00000`: whole numbers without the float parser.
fn fast_number(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || int.len() > 12 || !frac.bytes().all(|b| b == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for b in int.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v as f64)
}

fn parse_number(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

impl Master {
    /// No instruments.
    pub fn empty() -> Master {
        Master {
            rows: Vec::new(),
            text: String::new(),
            hay: Vec::new(),
            starts: vec![0],
            by_key: Vec::new(),
            exact: ExactTable::default(),
            by_under: FxMap::default(),
            by_name: FxMap::default(),
            grams: Grams::default(),
            instruments: Vec::new(),
            report: LoadReport::default(),
        }
    }

    /// The small sample master embedded in the binary: the default
    /// watchlist, the main indices, equities, futures and options on both
    /// exchanges, MCX commodities, currencies; contracts around late 2026.
    /// Its extra `REFERENCE_PRICE` column holds approximate late-2025 price
    /// levels (NIFTY about 25,800, RELIANCE about 1,450, CRUDEOIL about
    /// 5,500, …) for the demo simulator only: not market data.
    pub fn sample() -> Master {
        Master::parse(include_bytes!("sample-master.csv")).expect("the embedded sample parses")
    }

    /// Parses a scrip master (CSV with a header naming the columns).
    pub fn parse(bytes: &[u8]) -> Result<Master, MasterError> {
        let started = Instant::now();
        let text: Cow<'_, str> = String::from_utf8_lossy(bytes);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut lines = csv::lines(text).filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(MasterError::Empty);
        };
        let mut fields: Vec<Cow<'_, str>> = Vec::with_capacity(32);
        let _ = csv::split(header, &mut fields);
        let width = fields.len();
        let mut col = [usize::MAX; COLUMNS.len()];
        for (i, name) in fields.iter().enumerate() {
            let name = name.trim();
            if let Some(c) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
                col[c] = i;
            }
        }
        let missing: Vec<&'static str> = (0..REQUIRED)
            .filter(|&c| col[c] == usize::MAX)
            .map(|c| COLUMNS[c])
            .collect();
        if !missing.is_empty() {
            return Err(MasterError::MissingColumns(missing));
        }

        let estimate = bytes.len() / 120 + 16;
        let mut report = LoadReport::default();
        let mut problems = Problems {
            report: &mut report,
        };
        let mut unsupported: Vec<(String, usize)> = Vec::new();
        let mut rows: Vec<Row> = Vec::with_capacity(estimate);
        let mut arena = String::with_capacity(bytes.len() / 2);
        let mut last_instrument = 0usize;
        let mut instruments: Vec<Box<str>> = Vec::new();

        for (line_no, line) in lines {
            if let Err(e) = csv::split(line, &mut fields) {
                problems.bad(line_no, || e.message().to_string());
                continue;
            }
            if fields.len() != width {
                let n = fields.len();
                problems.bad(line_no, || {
                    format!("{n} fields where the header has {width}")
                });
                continue;
            }
            let get = |c: usize| -> &str {
                match col[c] {
                    usize::MAX => "",
                    i => fields[i].trim(),
                }
            };
            let Some(exchange) = Exchange::parse(get(EXCH)) else {
                let e = get(EXCH).to_string();
                problems.bad(line_no, || format!("unknown exchange '{e}'"));
                continue;
            };
            let letter = get(SEG);
            let segment = match feed_segment(exchange, letter) {
                Ok(s) => s,
                Err(true) => {
                    let what = format!("{} {letter}", exchange.name());
                    match unsupported.iter_mut().find(|(w, _)| *w == what) {
                        Some((_, n)) => *n += 1,
                        None => unsupported.push((what, 1)),
                    }
                    continue;
                }
                Err(false) => {
                    let l = letter.to_string();
                    problems.bad(line_no, || {
                        format!("unknown segment '{l}' for {}", exchange.name())
                    });
                    continue;
                }
            };
            let id: SecurityId = match get(ID).parse() {
                Ok(id) => id,
                Err(e) => {
                    let s = get(ID).to_string();
                    problems.bad(line_no, || format!("security id '{s}': {e}"));
                    continue;
                }
            };
            let ts = get(TS);
            if ts.is_empty() {
                problems.bad(line_no, || "empty trading symbol".into());
                continue;
            }
            let expiry = match Date::parse_expiry(get(EXPIRY)) {
                Ok(e) => e,
                Err(e) => {
                    let s = get(EXPIRY).to_string();
                    problems.bad(line_no, || format!("expiry '{s}': {e}"));
                    continue;
                }
            };
            let instr = get(INSTR);
            let kind = Kind::of(instr);
            let number = |c: usize| -> Result<f64, String> {
                let s = get(c);
                fast_number(s)
                    .or_else(|| parse_number(s))
                    .ok_or_else(|| format!("{} '{s}' is not a number", COLUMNS[c]))
            };
            let lot = match get(LOT) {
                "" => Ok(1.0),
                _ => number(LOT),
            };
            // Only an option's strike means anything (futures carry -0.01).
            let strike = match get(STRIKE) {
                _ if kind != Kind::Option => Ok(0.0),
                "" => Ok(0.0),
                _ => number(STRIKE),
            };
            let reference = match get(REFERENCE) {
                "" => Ok(f32::NAN),
                _ => number(REFERENCE).and_then(|r| {
                    if r > 0.0 && (r as f32).is_finite() {
                        Ok(r as f32)
                    } else {
                        Err(format!("REFERENCE_PRICE '{r}' is not positive"))
                    }
                }),
            };
            let (lot, strike, reference) = match (lot, strike, reference) {
                (Ok(l), Ok(s), Ok(r)) => (l, s, r),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    problems.bad(line_no, || e);
                    continue;
                }
            };
            let key = InstrumentKey {
                segment,
                security_id: id,
            };
            let line32 = line_no as u32;
            // Rows come in runs of one instrument type: try the last first.
            let instrument = if instruments
                .get(last_instrument)
                .is_some_and(|i| **i == *instr)
            {
                last_instrument
            } else {
                match instruments.iter().position(|i| **i == *instr) {
                    Some(i) => i,
                    None if instruments.len() < 255 => {
                        instruments.push(instr.into());
                        instruments.len() - 1
                    }
                    None => 254,
                }
            };
            last_instrument = instrument;
            let instrument = instrument as u8;
            let mut put = |s: &str| {
                let start = arena.len() as u32;
                arena.push_str(s);
                Span {
                    start,
                    len: s.len() as u32,
                }
            };
            let ts = put(ts);
            let cs = put(get(CUSTOM));
            let name = put(get(NAME));
            let series = put(get(SERIES));
            let tick = put(get(TICK));
            rows.push(Row {
                key,
                expiry,
                strike,
                lot,
                reference,
                tick,
                ts,
                cs,
                name,
                series,
                line: line32,
                under_len: 0,
                exchange,
                kind,
                option: if kind == Kind::Option {
                    OptionType::parse(get(OPT))
                } else {
                    None
                },
                instrument,
            });
        }
        drop(fields);
        // Duplicate keys: the first row (lowest line) wins.
        let mut keys: Vec<(u64, u32)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (key_bits(r.key), i as u32))
            .collect();
        keys.sort_unstable();
        let mut dead = vec![false; rows.len()];
        let mut dups: Vec<RowProblem> = Vec::new();
        let mut dup_count = 0;
        for w in keys.windows(2) {
            if w[0].0 == w[1].0 {
                let (first, dup) = (&rows[w[0].1 as usize], &rows[w[1].1 as usize]);
                let first_line = rows[keys[keys.partition_point(|k| k.0 < w[0].0)].1 as usize].line;
                dead[w[1].1 as usize] = true;
                dup_count += 1;
                if dups.len() < MAX_PROBLEMS {
                    dups.push(RowProblem {
                        line: dup.line as usize,
                        reason: format!("duplicate {} (first on line {first_line})", first.key),
                    });
                }
            }
        }
        keys.dedup_by_key(|k| k.0);
        if dup_count > 0 {
            report.bad += dup_count;
            report.problems.extend(dups);
            report.problems.sort_by_key(|p| p.line);
            report.problems.truncate(MAX_PROBLEMS);
            let mut i = 0;
            rows.retain(|_| {
                i += 1;
                !dead[i - 1]
            });
            // Re-number the surviving rows in the key index.
            let mut new_index = vec![u32::MAX; dead.len()];
            let mut n = 0u32;
            for (old, d) in dead.iter().enumerate() {
                if !d {
                    new_index[old] = n;
                    n += 1;
                }
            }
            for k in keys.iter_mut() {
                k.1 = new_index[k.1 as usize];
            }
        }
        report.unsupported = unsupported;
        report.rows = rows.len();
        arena.shrink_to_fit();
        let mut master = Master {
            rows,
            text: arena,
            hay: Vec::new(),
            starts: Vec::new(),
            by_key: keys,
            exact: ExactTable::default(),
            by_under: FxMap::default(),
            by_name: FxMap::default(),
            grams: Grams::default(),
            instruments,
            report,
        };
        master.report.phases.push(("parse", started.elapsed()));
        master.index();
        master.report.elapsed = started.elapsed();
        Ok(master)
    }

    /// Sorts rows by rank and builds the haystack and indexes.
    fn index(&mut self) {
        let mut phases = Vec::new();
        let mut t = Instant::now();
        let mut lap = |name: &'static str, phases: &mut Vec<(&'static str, Duration)>| {
            phases.push((name, t.elapsed()));
            t = Instant::now();
        };
        let text = self.text.as_bytes();
        let span = |s: Span| &text[s.start as usize..(s.start + s.len) as usize];
        let rank = |r: &Row| -> u64 {
            let class = match r.kind {
                Kind::Index => 0u64,
                Kind::Equity => 1,
                Kind::Future => 2,
                Kind::Option => 3,
                Kind::Other => 4,
            };
            let expiry = r
                .expiry
                .map_or(0, |d| (d.days() as i64 + 1).clamp(1, 0xFF_FFFF) as u64);
            let exchange = r.exchange as u64;
            let series = u64::from(!matches!(span(r.series), b"EQ" | b"A" | b"NA" | b"X" | b""));
            let len = u64::from(r.ts.len.min(255));
            class << 60 | expiry << 36 | exchange << 34 | series << 33 | len << 25
        };
        // Integer keys decide almost every comparison; the full symbol only
        // breaks the remaining ties (a call and a put, say).
        let prefix8 = |r: &Row| {
            let mut w = [0u8; 8];
            for (d, b) in w.iter_mut().zip(span(r.ts)) {
                *d = b.to_ascii_uppercase();
            }
            u64::from_be_bytes(w)
        };
        let mut order: Vec<(u64, u64, u64, u32)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                // Strike, with a put just after the call at the same strike.
                let strike = r.strike.to_bits() & !1 | u64::from(r.option == Some(OptionType::Put));
                (rank(r), prefix8(r), strike, i as u32)
            })
            .collect();
        let rows = &self.rows;
        order.sort_unstable_by(|a, b| {
            (a.0, a.1, a.2)
                .cmp(&(b.0, b.1, b.2))
                .then_with(|| span(rows[a.3 as usize].ts).cmp(span(rows[b.3 as usize].ts)))
        });
        let mut sorted: Vec<Row> = order.iter().map(|o| rows[o.3 as usize]).collect();
        let mut new_of_old = vec![0u32; order.len()];
        for (new, o) in order.iter().enumerate() {
            new_of_old[o.3 as usize] = new as u32;
        }
        drop(order);
        lap("sort", &mut phases);

        let total: usize = sorted
            .iter()
            .map(|r| (r.ts.len + r.cs.len + r.name.len) as usize + 3)
            .sum();
        let mut hay = Vec::with_capacity(total);
        let mut starts = Vec::with_capacity(sorted.len() + 1);
        let mut exact_entries = 0usize;
        for r in sorted.iter_mut() {
            starts.push(hay.len() as u32);
            hay.push(b'\n');
            let ts_at = hay.len();
            push_upper(&mut hay, span(r.ts));
            r.under_len = underlying_len(&hay[ts_at..], r.kind).min(u16::MAX as usize) as u16;
            hay.push(b'\n');
            push_upper(&mut hay, span(r.cs));
            hay.push(b'\n');
            push_upper(&mut hay, span(r.name));
            exact_entries += 1 + usize::from(r.cs.len > 0);
        }
        starts.push(hay.len() as u32);
        // A final separator, so the last field ends like every other.
        hay.push(b'\n');
        self.rows = sorted;
        self.hay = hay;
        self.starts = starts;
        lap("haystack", &mut phases);

        // Keys → new row ids.
        for k in self.by_key.iter_mut() {
            k.1 = new_of_old[k.1 as usize];
        }

        // The three indexes read the haystack and rows only: built side by
        // side (start-up is when the relay has cores to spare).
        let this = &*self;
        let (exact, by_under, grams) = std::thread::scope(|scope| {
            let grams = scope.spawn(|| Grams::build(&this.hay, &this.starts, this.rows.len()));
            let exact = scope.spawn(|| this.build_exact(exact_entries));
            let by_under = this.build_underlyings();
            let by_name = this.build_names();
            (
                exact.join().expect("exact index"),
                (by_under, by_name),
                grams.join().expect("n-gram index"),
            )
        });
        self.exact = exact;
        (self.by_under, self.by_name) = by_under;
        self.grams = grams;
        lap("indexes", &mut phases);
        self.report.phases.extend(phases);
    }

    fn build_exact(&self, entries: usize) -> ExactTable {
        let cap = (entries * 3 / 2).next_power_of_two().max(16);
        let mut slots = vec![EMPTY; cap];
        let mask = cap - 1;
        for i in 0..self.rows.len() {
            for field in 0..2u32 {
                let s = self.field_upper(i as u32, field);
                if s.is_empty() {
                    continue;
                }
                let mut at = hash_bytes(s) as usize & mask;
                while slots[at] != EMPTY {
                    at = (at + 1) & mask;
                }
                slots[at] = (i as u32) << 1 | field;
            }
        }
        ExactTable { slots, mask }
    }

    fn build_underlyings(&self) -> FxMap<Box<str>, Vec<u32>> {
        let mut by_under: FxMap<Box<str>, Vec<u32>> = FxMap::default();
        for i in 0..self.rows.len() {
            let u = self.underlying_bytes(i as u32);
            let u = std::str::from_utf8(u).unwrap_or("");
            match by_under.get_mut(u) {
                Some(v) => v.push(i as u32),
                None => {
                    by_under.insert(u.into(), vec![i as u32]);
                }
            }
        }
        by_under
    }

    fn build_names(&self) -> FxMap<Box<[u8]>, Vec<u32>> {
        let mut by_name: FxMap<Box<[u8]>, Vec<u32>> = FxMap::default();
        for (i, r) in self.rows.iter().enumerate() {
            if !matches!(r.kind, Kind::Index | Kind::Equity) {
                continue;
            }
            let name = self.name_upper(i as u32);
            match by_name.get_mut(name) {
                Some(v) => v.push(i as u32),
                None => {
                    by_name.insert(name.into(), vec![i as u32]);
                }
            }
        }
        by_name
    }

    /// The rows of `under` of one kind (its futures, say), in rank order.
    /// An underlying's rows are in rank order, and rank sorts by kind first,
    /// so that is one slice found by two binary searches.
    pub(crate) fn contracts(&self, under: &str, kind: Kind) -> &[u32] {
        let rows = self.by_under.get(under).map_or(&[][..], |v| v.as_slice());
        let from = rows.partition_point(|&i| self.rows[i as usize].kind < kind);
        let to = rows.partition_point(|&i| self.rows[i as usize].kind <= kind);
        &rows[from..to]
    }

    /// The upper-cased `SM_SYMBOL_NAME` (the record's last field).
    pub(crate) fn name_upper(&self, row: u32) -> &[u8] {
        let r = &self.rows[row as usize];
        let end = self.starts[row as usize + 1] as usize;
        &self.hay[end - r.name.len as usize..end]
    }

    /// Index and equity rows whose upper-cased company name is exactly
    /// `name`, in rank order.
    pub(crate) fn named(&self, name: &[u8]) -> &[u32] {
        self.by_name.get(name).map_or(&[], |v| v.as_slice())
    }

    /// The upper-cased trading symbol (field 0) or custom symbol (field 1).
    fn field_upper(&self, row: u32, field: u32) -> &[u8] {
        let r = &self.rows[row as usize];
        let at = self.starts[row as usize] as usize + 1;
        let (at, len) = if field == 0 {
            (at, r.ts.len as usize)
        } else {
            (at + r.ts.len as usize + 1, r.cs.len as usize)
        };
        &self.hay[at..at + len]
    }

    pub(crate) fn underlying_bytes(&self, row: u32) -> &[u8] {
        let r = &self.rows[row as usize];
        let at = self.starts[row as usize] as usize + 1;
        &self.hay[at..at + r.under_len as usize]
    }

    /// Rows whose trading symbol (and, with `custom`, custom symbol) equals
    /// the upper-cased `q`, in rank order.
    pub(crate) fn exact(&self, q: &[u8], custom: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if self.exact.slots.is_empty() || q.is_empty() {
            return out;
        }
        let mask = self.exact.mask;
        let mut at = hash_bytes(q) as usize & mask;
        loop {
            let v = self.exact.slots[at];
            if v == EMPTY {
                break;
            }
            let (row, field) = (v >> 1, v & 1);
            if (field == 0 || custom) && self.field_upper(row, field) == q && !out.contains(&row) {
                out.push(row);
            }
            at = (at + 1) & mask;
        }
        out.sort_unstable();
        out
    }

    fn str(&self, s: Span) -> &str {
        &self.text[s.start as usize..(s.start + s.len) as usize]
    }

    /// Instruments loaded.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No instruments.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Approximate heap bytes held (rows, strings, indexes).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.rows.capacity() * size_of::<Row>()
            + self.text.capacity()
            + self.hay.capacity()
            + self.starts.capacity() * 4
            + self.by_key.capacity() * size_of::<(u64, u32)>()
            + self.exact.slots.capacity() * 4
            + list_map_bytes(self.by_under.iter().map(|(k, v)| (k.len(), v)))
            + list_map_bytes(self.by_name.iter().map(|(k, v)| (k.len(), v)))
            + self.grams.heap_bytes()
    }

    /// What loading found: counts, bad rows, skipped segments, time taken.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// The instrument with this key.
    pub fn get(&self, key: InstrumentKey) -> Option<Instrument<'_>> {
        let bits = key_bits(key);
        let at = self.by_key.partition_point(|k| k.0 < bits);
        self.by_key
            .get(at)
            .filter(|k| k.0 == bits)
            .map(|k| self.at(k.1))
    }

    /// The instrument at rank `i` (0 = first in search order).
    pub(crate) fn at(&self, i: u32) -> Instrument<'_> {
        Instrument {
            master: self,
            row: i,
        }
    }

    /// Every instrument's [`Instrument::reference_price`], for the ones
    /// that have one (the simulator's starting levels).
    pub fn reference_prices(&self) -> HashMap<InstrumentKey, f64> {
        self.iter()
            .filter_map(|i| Some((i.key(), i.reference_price()?)))
            .collect()
    }

    /// Every instrument, in rank order.
    pub fn iter(&self) -> impl Iterator<Item = Instrument<'_>> {
        (0..self.rows.len() as u32).map(|i| self.at(i))
    }
}

/// Heap bytes of a map from strings to row lists, given each key's length
/// and list (48: the entry and allocation overhead, roughly).
fn list_map_bytes<'a>(entries: impl Iterator<Item = (usize, &'a Vec<u32>)>) -> usize {
    entries.map(|(k, v)| k + v.capacity() * 4 + 48).sum()
}

/// One instrument of a [`Master`], borrowed.
#[derive(Clone, Copy)]
pub struct Instrument<'a> {
    master: &'a Master,
    row: u32,
}

impl PartialEq for Instrument<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.master, other.master) && self.row == other.row
    }
}

impl fmt::Debug for Instrument<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for Instrument<'_> {
    /// `RELIANCE (NSE_EQ 2885)`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.key();
        write!(f, "{} ({} {})", self.symbol(), k.segment, k.security_id)
    }
}

impl<'a> Instrument<'a> {
    fn r(&self) -> &'a Row {
        &self.master.rows[self.row as usize]
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn rank(&self) -> u32 {
        self.row
    }

    /// Segment and security id.
    pub fn key(&self) -> InstrumentKey {
        self.r().key
    }

    /// The exchange.
    pub fn exchange(&self) -> Exchange {
        self.r().exchange
    }

    /// Index, equity, future, option or other.
    pub fn kind(&self) -> Kind {
        self.r().kind
    }

    /// `SEM_INSTRUMENT_NAME` as in the file (`EQUITY`, `FUTCOM`, …).
    pub fn instrument(&self) -> &'a str {
        self.master
            .instruments
            .get(self.r().instrument as usize)
            .map_or("", |s| s)
    }

    /// The trading symbol (`RELIANCE`, `CRUDEOIL-18Dec2026-FUT`).
    pub fn symbol(&self) -> &'a str {
        self.master.str(self.r().ts)
    }

    /// The custom symbol (`Reliance Industries`, `CRUDEOIL DEC FUT`).
    pub fn custom_symbol(&self) -> &'a str {
        self.master.str(self.r().cs)
    }

    /// `SM_SYMBOL_NAME` (`RELIANCE INDUSTRIES LTD`), or the custom symbol
    /// when the file leaves it empty.
    pub fn name(&self) -> &'a str {
        let n = self.master.str(self.r().name);
        if n.is_empty() {
            self.custom_symbol()
        } else {
            n
        }
    }

    /// `SEM_SERIES`.
    pub fn series(&self) -> &'a str {
        self.master.str(self.r().series)
    }

    /// The upper-cased underlying (`CRUDEOIL` for its futures and options;
    /// the symbol itself for cash and indices).
    pub fn underlying(&self) -> &'a str {
        std::str::from_utf8(self.master.underlying_bytes(self.row)).unwrap_or("")
    }

    /// The expiry date of a derivative.
    pub fn expiry(&self) -> Option<Date> {
        self.r().expiry
    }

    /// An option's strike.
    pub fn strike(&self) -> Option<f64> {
        (self.r().kind == Kind::Option).then_some(self.r().strike)
    }

    /// An option's type.
    pub fn option_type(&self) -> Option<OptionType> {
        self.r().option
    }

    /// `SEM_LOT_UNITS`.
    pub fn lot_size(&self) -> f64 {
        self.r().lot
    }

    /// A price level to start a simulation from: the optional
    /// `REFERENCE_PRICE` column (not in DhanHQ's file; the embedded sample
    /// has one for every row, approximate late-2025 levels for demo only).
    pub fn reference_price(&self) -> Option<f64> {
        let r = self.r().reference;
        (!r.is_nan()).then_some(f64::from(r))
    }

    /// `SEM_TICK_SIZE` as in the file (0 when empty or not a number):
    /// DhanHQ writes it in paise (`5.0000` for a ₹0.05 step).
    pub fn tick_size(&self) -> f64 {
        parse_number(self.master.str(self.r().tick)).unwrap_or(0.0)
    }

    /// The price step in rupees ([`Instrument::tick_size`] / 100; 0 when
    /// unknown).
    pub fn tick_rupees(&self) -> f64 {
        self.tick_size() / 100.0
    }

    /// The line of the file it came from.
    pub fn line(&self) -> usize {
        self.r().line as usize
    }

    /// The search API's object: `symbol, name, exchangeSegment, securityId,
    /// instrument, expiry ("YYYY-MM-DD" or null), lotSize`.
    pub fn to_json(&self) -> Value {
        let lot = self.lot_size();
        let lot = if lot.fract() == 0.0 && lot.abs() < 1e15 {
            json!(lot as i64)
        } else {
            json!(lot)
        };
        let k = self.key();
        json!({
            "symbol": self.symbol(),
            "name": self.name(),
            "exchangeSegment": k.segment.name(),
            "securityId": k.security_id.to_string(),
            "instrument": self.instrument(),
            "expiry": self.expiry().map(|d| d.to_string()),
            "lotSize": lot,
            "tickSize": self.tick_rupees(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;

    #[test]
    fn underlyings() {
        let u = |ts: &str, k| {
            let up = ts.to_ascii_uppercase();
            up[..underlying_len(up.as_bytes(), k)].to_string()
        };
        assert_eq!(u("CRUDEOIL-18Dec2026-FUT", Kind::Future), "CRUDEOIL");
        assert_eq!(u("NIFTY-Dec2026-FUT", Kind::Future), "NIFTY");
        assert_eq!(u("BAJAJ-AUTO-Nov2026-FUT", Kind::Future), "BAJAJ-AUTO");
        assert_eq!(u("NIFTY-Nov2026-25000-CE", Kind::Option), "NIFTY");
        assert_eq!(u("USDINR-27Nov2026-84.25-PE", Kind::Option), "USDINR");
        assert_eq!(u("BAJAJ-AUTO", Kind::Equity), "BAJAJ-AUTO");
        assert_eq!(u("ODDFUT", Kind::Future), "ODDFUT");
    }

    #[test]
    fn the_sample_loads_clean() {
        let m = Master::sample();
        assert!(m.len() > 200, "{}", m.len());
        assert_eq!(m.report().bad, 0, "{}", m.report());
        let rel = m.get(InstrumentKey::new(Segment::NseEq, 2885)).unwrap();
        assert_eq!(rel.symbol(), "RELIANCE");
        assert_eq!(rel.name(), "RELIANCE INDUSTRIES LTD");
        assert_eq!(rel.kind(), Kind::Equity);
        assert_eq!(
            rel.to_json(),
            json!({"symbol":"RELIANCE","name":"RELIANCE INDUSTRIES LTD","exchangeSegment":"NSE_EQ",
                   "securityId":"2885","instrument":"EQUITY","expiry":null,"lotSize":1,"tickSize":0.05})
        );
        // Rank order: indices first.
        assert_eq!(m.iter().next().unwrap().kind(), Kind::Index);
        assert_eq!(m.exact(b"RELIANCE", false).len(), 2);
        assert_eq!(m.exact(b"RELIANCE INDUSTRIES", true).len(), 2);
        assert_eq!(m.exact(b"NOPE", true).len(), 0);
    }

    #[test]
    fn reference_prices_are_an_optional_column() {
        let m = Master::sample();
        let level = |seg, id| {
            m.get(InstrumentKey::new(seg, id))
                .and_then(|i| i.reference_price())
                .unwrap()
        };
        assert_eq!(level(Segment::IdxI, 13), 25_800.0);
        assert_eq!(level(Segment::IdxI, 51), 84_000.0);
        assert_eq!(level(Segment::NseEq, 2885), 1_450.0);
        assert!((5_400.0..5_700.0).contains(&level(Segment::McxComm, 472794)));
        assert!(m.iter().all(|i| i.reference_price().is_some()));
        assert_eq!(m.reference_prices().len(), m.len());
        // DhanHQ's file has no such column: none, and nothing else changes.
        let head = "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_TRADING_SYMBOL,SEM_EXPIRY_DATE";
        let plain =
            Master::parse(format!("{head}\nNSE,E,2885,EQUITY,RELIANCE,\n").as_bytes()).unwrap();
        assert_eq!(plain.iter().next().unwrap().reference_price(), None);
        assert!(plain.reference_prices().is_empty());
        // With it: empty is none, garbage and non-positive levels are bad rows.
        let text = format!(
            "{head},reference_price\nNSE,E,1,EQUITY,A,,100.5\nNSE,E,2,EQUITY,B,,\n\
             NSE,E,3,EQUITY,C,,abc\nNSE,E,4,EQUITY,D,,-1\nNSE,E,5,EQUITY,E,,1e300\n"
        );
        let m = Master::parse(text.as_bytes()).unwrap();
        let refs: Vec<(&str, Option<f64>)> = m
            .iter()
            .map(|i| (i.symbol(), i.reference_price()))
            .collect();
        assert_eq!(refs, [("A", Some(100.5)), ("B", None)]);
        let lines: Vec<usize> = m.report().problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 5, 6], "{}", m.report());
        assert!(
            std::mem::size_of::<Row>() <= 88,
            "the reference fits the padding"
        );
    }

    #[test]
    fn missing_columns_and_empty_files_are_errors() {
        assert_eq!(Master::parse(b"").unwrap_err(), MasterError::Empty);
        let e = Master::parse(b"SEM_EXM_EXCH_ID,SEM_SEGMENT\nNSE,E\n").unwrap_err();
        assert!(e.to_string().contains("SEM_SMST_SECURITY_ID"), "{e}");
        let html = Master::parse(b"<html><body>Access denied</body></html>").unwrap_err();
        assert!(matches!(html, MasterError::MissingColumns(_)));
    }
}
