//! A generated scrip master of any size with the real file's shape, for
//! benchmarks (the 290,000-row load and search figures) and tests that
//! need volume. Deterministic for a seed.
//!
//! Mix, roughly as in DhanHQ's file: a few hundred indices, equities on NSE
//! and BSE (~8%), stock and index futures (~3%), options (most of the file,
//! many strikes and weekly expiries), MCX commodities and currency
//! derivatives on both exchanges.

use std::fmt::Write as _;

use super::Date;

const HEADER: &str = "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_EXPIRY_CODE,SEM_TRADING_SYMBOL,SEM_LOT_UNITS,SEM_CUSTOM_SYMBOL,SEM_EXPIRY_DATE,SEM_STRIKE_PRICE,SEM_OPTION_TYPE,SEM_TICK_SIZE,SEM_EXPIRY_FLAG,SEM_EXCH_INSTRUMENT_TYPE,SEM_SERIES,SM_SYMBOL_NAME";

const MON: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

const SYLLABLES: [&str; 40] = [
    "ADANI", "BAJAJ", "TATA", "HIND", "BHARAT", "INDIA", "MAHA", "SHREE", "SUN", "JAI", "RAJ",
    "GUJ", "KOTAK", "ICICI", "HDFC", "AXIS", "LUPIN", "CIPLA", "WIPRO", "INFO", "TECH", "POWER",
    "STEEL", "CEMENT", "PHARMA", "AUTO", "FIN", "BANK", "CHEM", "TEX", "AGRO", "METAL", "OIL",
    "GAS", "PORT", "INFRA", "MOTOR", "LIFE", "GOLD", "JEWEL",
];

const SUFFIXES: [&str; 6] = [
    "LTD",
    "LIMITED",
    "INDUSTRIES LTD",
    "CORP LTD",
    "INDIA LTD",
    "& CO LTD",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

struct Out {
    text: String,
    rows: usize,
    want: usize,
    id: u32,
}

impl Out {
    fn full(&self) -> bool {
        self.rows >= self.want
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        exch: &str,
        seg: &str,
        inst: &str,
        ts: &str,
        lot: u32,
        cs: &str,
        expiry: Option<(Date, &str)>,
        strike: Option<f64>,
        opt: &str,
        name: &str,
    ) {
        if self.full() {
            return;
        }
        self.id += 1;
        let exp = expiry.map_or(String::new(), |(d, t)| format!("{d} {t}"));
        let strike = strike.map_or("-0.01000".to_string(), |s| format!("{s:.5}"));
        let name = if name.contains(',') {
            format!("\"{name}\"")
        } else {
            name.to_string()
        };
        let series = match (inst, exch) {
            ("EQUITY", "NSE") => "EQ",
            ("EQUITY", _) => "A",
            ("INDEX", _) => "X",
            _ => "NA",
        };
        let _ = writeln!(
            self.text,
            "{exch},{seg},{},{inst},{},{ts},{lot}.0,{cs},{exp},{strike},{opt},5.0000,{},{inst},{series},{name}",
            self.id,
            if expiry.is_some() { "0" } else { "" },
            if expiry.is_some() { "M" } else { "NA" },
        );
        self.rows += 1;
    }
}

/// A master of `rows` data rows (plus the header) as CSV text.
pub fn generate(rows: usize, seed: u64) -> String {
    let mut rng = Rng(seed);
    let mut out = Out {
        text: String::with_capacity(rows * 130 + HEADER.len() + 1),
        rows: 0,
        want: rows,
        id: 100,
    };
    out.text.push_str(HEADER);
    out.text.push('\n');
    let base = Date::from_ymd(2026, 11, 22).expect("valid");
    let monthly: Vec<Date> = (0..3).map(|i| base.add_days(2 + 35 * i)).collect();
    let weekly: Vec<Date> = (0..8).map(|i| base.add_days(2 + 7 * i)).collect();

    // Indices.
    let indices = [
        "NIFTY",
        "BANKNIFTY",
        "FINNIFTY",
        "MIDCPNIFTY",
        "SENSEX",
        "BANKEX",
    ];
    for (i, idx) in indices.iter().enumerate() {
        let exch = if i < 4 { "NSE" } else { "BSE" };
        out.row(exch, "I", "INDEX", idx, 1, idx, None, None, "", idx);
    }
    for i in 0..(rows / 1000).max(4) {
        let name = format!("NIFTY {}{}", SYLLABLES[i % 40], i / 40);
        out.row("NSE", "I", "INDEX", &name, 1, &name, None, None, "", &name);
    }
    // Equities: unique symbols from syllables.
    let mut equities: Vec<(String, String)> = vec![(
        "RELIANCE".to_string(),
        "RELIANCE INDUSTRIES LTD".to_string(),
    )];
    let n_eq = rows * 4 / 100;
    while equities.len() < n_eq.max(8) {
        let a = SYLLABLES[rng.below(40)];
        let b = SYLLABLES[rng.below(40)];
        let sym = if rng.below(4) == 0 {
            format!("{a}{b}{}", rng.below(100))
        } else {
            format!("{a}{b}")
        };
        let suffix = SUFFIXES[rng.below(SUFFIXES.len())];
        let name = format!("{a} {b} {suffix}");
        let name = if rng.below(50) == 0 {
            format!("{name}, INDIA")
        } else {
            name
        };
        equities.push((sym, name));
    }
    equities.sort();
    equities.dedup_by(|a, b| a.0 == b.0);
    for (sym, name) in &equities {
        let cs = sym.to_ascii_lowercase();
        out.row("NSE", "E", "EQUITY", sym, 1, &cs, None, None, "", name);
        out.row("BSE", "E", "EQUITY", sym, 1, &cs, None, None, "", name);
    }
    // Commodities and currencies.
    for c in [
        "CRUDEOIL",
        "CRUDEOILM",
        "GOLD",
        "GOLDM",
        "SILVER",
        "SILVERM",
        "NATURALGAS",
        "COPPER",
        "ZINC",
        "LEAD",
        "ALUMINIUM",
        "NICKEL",
    ] {
        for e in 0..12 {
            let d = base.add_days(-3 + 30 * e);
            let (y, m, day) = d.ymd();
            let ts = format!("{c}-{day:02}{}{y}-FUT", MON[m as usize - 1]);
            let cs = format!("{c} {} FUT", MON[m as usize - 1].to_ascii_uppercase());
            out.row(
                "MCX",
                "M",
                "FUTCOM",
                &ts,
                100,
                &cs,
                Some((d, "23:30:00")),
                None,
                "XX",
                c,
            );
            for k in 0..10 {
                let strike = 5000.0 + 100.0 * f64::from(k);
                for o in ["CE", "PE"] {
                    let ts = format!("{c}-{day:02}{}{y}-{strike}-{o}", MON[m as usize - 1]);
                    let cs = format!(
                        "{c} {day:02} {} {strike} {}",
                        MON[m as usize - 1].to_ascii_uppercase(),
                        if o == "CE" { "CALL" } else { "PUT" }
                    );
                    out.row(
                        "MCX",
                        "M",
                        "OPTFUT",
                        &ts,
                        100,
                        &cs,
                        Some((d.add_days(-2), "23:30:00")),
                        Some(strike),
                        o,
                        c,
                    );
                }
            }
        }
    }
    for exch in ["NSE", "BSE"] {
        for c in ["USDINR", "EURINR", "GBPINR", "JPYINR"] {
            for d in &weekly {
                let (y, m, day) = d.ymd();
                let ts = format!("{c}-{day:02}{}{y}-FUT", MON[m as usize - 1]);
                let cs = format!("{c} {} FUT", MON[m as usize - 1].to_ascii_uppercase());
                out.row(
                    exch,
                    "C",
                    "FUTCUR",
                    &ts,
                    1,
                    &cs,
                    Some((*d, "12:30:00")),
                    None,
                    "XX",
                    c,
                );
            }
        }
    }
    // Futures and options until the file is full.
    let underlyings: Vec<(&str, &str, bool)> = indices
        .iter()
        .map(|i| {
            (
                *i,
                if i.starts_with("SENSEX") || i.starts_with("BANKEX") {
                    "BSE"
                } else {
                    "NSE"
                },
                true,
            )
        })
        .chain(
            equities
                .iter()
                .take(250)
                .map(|(s, _)| (s.as_str(), "NSE", false)),
        )
        .collect();
    for &(under, exch, index) in &underlyings {
        for d in &monthly {
            let (y, m, _) = d.ymd();
            let ts = format!("{under}-{}{y}-FUT", MON[m as usize - 1]);
            let cs = format!("{under} {} FUT", MON[m as usize - 1].to_ascii_uppercase());
            let inst = if index { "FUTIDX" } else { "FUTSTK" };
            out.row(
                exch,
                "D",
                inst,
                &ts,
                25,
                &cs,
                Some((*d, "14:30:00")),
                None,
                "XX",
                under,
            );
        }
    }
    let mut round = 0u32;
    while !out.full() {
        for &(under, exch, index) in &underlyings {
            if out.full() {
                break;
            }
            let expiries = if index { &weekly[..] } else { &monthly[..] };
            let atm = if index { 25_000.0 } else { 1_000.0 };
            let step = if index { 50.0 } else { 10.0 };
            for d in expiries {
                let (y, m, day) = d.ymd();
                for side in [-1.0, 1.0] {
                    let strike = atm + side * step * f64::from(round + u32::from(side > 0.0));
                    for o in ["CE", "PE"] {
                        let ts = format!("{under}-{}{y}-{strike}-{o}", MON[m as usize - 1]);
                        let cs = format!(
                            "{under} {day:02} {} {strike} {}",
                            MON[m as usize - 1].to_ascii_uppercase(),
                            if o == "CE" { "CALL" } else { "PUT" }
                        );
                        let inst = if index { "OPTIDX" } else { "OPTSTK" };
                        out.row(
                            exch,
                            "D",
                            inst,
                            &ts,
                            25,
                            &cs,
                            Some((*d, "14:30:00")),
                            Some(strike),
                            o,
                            under,
                        );
                    }
                }
            }
        }
        round += 1;
    }
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::Master;

    #[test]
    fn generates_exactly_the_rows_asked_for_and_they_all_load() {
        let text = generate(5_000, 1);
        assert_eq!(text.lines().count(), 5_001);
        let m = Master::parse(text.as_bytes()).unwrap();
        assert_eq!(m.len(), 5_000, "{}", m.report());
        assert_eq!(generate(5_000, 1), text, "deterministic");
    }
}
