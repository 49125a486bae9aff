//! Ranked search for the dashboard's search box: exact symbol first, then
//! prefix, then substring matches, across trading symbol, custom symbol and
//! name; within each tier, the master's static rank (indices, equities,
//! nearest futures, options).
//!
//! Cost: an exact look-up in a hash table, then at most one pass over the
//! haystack (about 60 bytes a row) with SIMD substring search that stops as
//! soon as the result list is full. Since the haystack is in rank order, the
//! first hits are the best ones: a common query ("NIFTY") stops after a few
//! kilobytes; only a query with few prefix matches reads the whole haystack.

use memchr::memmem::Finder;

use super::master::{Instrument, Master};

/// Largest `limit` honoured.
pub const MAX_LIMIT: usize = 100;

/// Upper-cases, trims, collapses runs of white space and drops control
/// characters (the haystack's separator is `\n`).
pub(crate) fn normalize(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for word in q.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            word.chars()
                .filter(|c| !c.is_control())
                .map(|c| c.to_ascii_uppercase()),
        );
    }
    out
}

impl Master {
    /// Up to `limit` (at most [`MAX_LIMIT`]) instruments matching `q`, best
    /// first.
    pub fn search(&self, q: &str, limit: usize) -> Vec<Instrument<'_>> {
        let limit = limit.min(MAX_LIMIT);
        let q = normalize(q);
        if q.is_empty() || limit == 0 || self.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<u32> = self.exact(q.as_bytes(), true);
        out.truncate(limit);
        if out.len() < limit {
            self.scan(q.as_bytes(), limit, &mut out);
        }
        out.into_iter().map(|i| self.at(i)).collect()
    }

    /// Byte ranges of the haystack that can hold `needle`: the candidate
    /// blocks (adjacent ones merged), or everything.
    pub(crate) fn ranges(&self, needle: &[u8]) -> Vec<(usize, usize)> {
        let n = self.rows.len();
        let Some(blocks) = self.grams.candidates(needle) else {
            return vec![(0, self.starts[n] as usize)];
        };
        let size = self.grams.block;
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(blocks.len());
        for b in blocks {
            let b = b as usize;
            let from = self.starts[b * size] as usize;
            let to = self.starts[((b + 1) * size).min(n)] as usize;
            match out.last_mut() {
                Some(last) if last.1 == from => last.1 = to,
                _ => out.push((from, to)),
            }
        }
        out
    }

    /// Appends rows with a field starting with `q`, then rows containing
    /// it elsewhere, each tier in rank order, until `out` holds `limit`.
    fn scan(&self, q: &[u8], limit: usize, out: &mut Vec<u32>) {
        let hay = &self.hay[..];
        let record = |pos: usize| (self.starts.partition_point(|&s| s as usize <= pos) - 1) as u32;
        let exact = out.len();
        let mut needle = Vec::with_capacity(q.len() + 1);
        needle.push(b'\n');
        needle.extend_from_slice(q);
        // Prefix tier: the separator before a field, then the query.
        let finder = Finder::new(&needle);
        let mut last = u32::MAX;
        for (from, to) in self.ranges(&needle) {
            for i in finder.find_iter(&hay[from..to]) {
                let row = record(from + i);
                if row == last || out[..exact].contains(&row) {
                    continue;
                }
                last = row;
                out.push(row);
                if out.len() == limit {
                    return;
                }
            }
        }
        // Substring tier: every prefix row is in `out` by now.
        let finder = Finder::new(q);
        let mut last = u32::MAX;
        for (from, to) in self.ranges(q) {
            for i in finder.find_iter(&hay[from..to]) {
                let row = record(from + i);
                if row == last {
                    continue;
                }
                last = row;
                if out.contains(&row) {
                    continue;
                }
                out.push(row);
                if out.len() == limit {
                    return;
                }
            }
        }
    }
}

/// The reference search: the same ranking by brute force, for the
/// differential test.
#[cfg(test)]
pub(crate) fn reference(m: &Master, q: &str, limit: usize) -> Vec<u32> {
    let q = normalize(q);
    if q.is_empty() {
        return Vec::new();
    }
    let mut tiers: [Vec<u32>; 3] = Default::default();
    for inst in m.iter() {
        let r = inst.rank() as usize;
        let record = &m.hay[m.starts[r] as usize + 1..m.starts[r + 1] as usize];
        assert!(!record.is_empty());
        let fields: Vec<String> = String::from_utf8_lossy(record)
            .split('\n')
            .map(str::to_string)
            .collect();
        let tier = if fields[..2].contains(&q) {
            0
        } else if fields.iter().any(|f| f.starts_with(&q)) {
            1
        } else if fields.iter().any(|f| f.contains(&q)) {
            2
        } else {
            continue;
        };
        tiers[tier].push(inst.rank());
    }
    tiers
        .concat()
        .into_iter()
        .take(limit.min(MAX_LIMIT))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_queries() {
        assert_eq!(normalize("  relia\tnce  ind "), "RELIA NCE IND");
        assert_eq!(normalize("a\u{7}b"), "AB");
        assert_eq!(normalize(" \n "), "");
    }

    #[test]
    fn ranks_exact_then_prefix_then_substring() {
        let m = Master::sample();
        let syms = |q: &str, n| -> Vec<String> {
            m.search(q, n)
                .iter()
                .map(|i| format!("{} {}", i.symbol(), i.key().segment))
                .collect()
        };
        assert_eq!(syms("relia", 2), ["RELIANCE NSE_EQ", "RELIANCE BSE_EQ"]);
        let nifty = syms("nifty", 5);
        assert_eq!(nifty[0], "NIFTY IDX_I", "{nifty:?}");
        assert_eq!(syms("crudeoil", 1), ["CRUDEOIL-19Oct2026-FUT MCX_COMM"]);
        // Substring only: "ANCE" is inside RELIANCE and FINANCE names.
        let inner = syms("IANCE", 3);
        assert!(inner[0].starts_with("RELIANCE"), "{inner:?}");
        assert!(m.search("zzzz", 20).is_empty());
        assert!(m.search("   ", 20).is_empty());
        assert_eq!(m.search("a", 500).len(), MAX_LIMIT);
    }

    #[test]
    fn agrees_with_the_brute_force_reference() {
        let m = Master::parse(super::super::synth::generate(8_000, 3).as_bytes()).unwrap();
        let queries = [
            "N",
            "NI",
            "NIFTY",
            "NIFTY-",
            "NIFTY 2",
            "BANK",
            "IFTY",
            "RELIANCE",
            "reli",
            "CE",
            "-CE",
            "FUT",
            "DEC",
            "2026",
            "CRUDE",
            "CRUDEOIL",
            "GOLDM",
            "LTD",
            "LIMITED",
            "AUTO",
            "X",
            "Q",
            "ZZZ",
            "TATA",
            "INFY",
            "SENSEX",
            "25000",
            "PUT",
            "CALL",
            "BSE",
            "&",
            "M&M",
            "INDUSTRIES",
            "BAJAJ-",
            "-",
            " ",
            "NIFTY 24 DEC",
            "USDINR",
        ];
        for q in queries {
            let all = reference(&m, q, MAX_LIMIT);
            for limit in [1, 5, 20, 100] {
                let got: Vec<u32> = m.search(q, limit).iter().map(|i| i.rank()).collect();
                assert_eq!(got, &all[..limit.min(all.len())], "{q:?} limit {limit}");
            }
        }
    }
}
