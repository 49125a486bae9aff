//! What `/health` and the expiry warning need from a certificate — its
//! serial and validity — read from the DER with a small walker instead of a
//! full X.509 parser (none is a dependency, and these three fields sit at
//! fixed places in `TBSCertificate`, RFC 5280 §4.1).

use crate::instrument::date::{days_from_civil, CivilTime};

/// The fields of a certificate the relay reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number, hex, as in `openssl x509 -serial` (upper case).
    pub serial: String,
    /// `notBefore`, seconds since the epoch (UTC).
    pub not_before: i64,
    /// `notAfter`, seconds since the epoch (UTC).
    pub not_after: i64,
}

impl CertInfo {
    /// `notAfter` as ISO 8601 UTC, `2030-01-01T00:00:00Z`.
    pub fn not_after_iso(&self) -> String {
        format!("{}Z", CivilTime::from_epoch(self.not_after, 0))
    }

    /// Whole days from `now` (unix seconds) to `notAfter`; negative once
    /// expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// One DER element: tag, contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Serial and validity of a DER certificate; `None` if it is not one.
pub fn cert_info(der: &[u8]) -> Option<CertInfo> {
    const SEQUENCE: u8 = 0x30;
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // version [0] EXPLICIT, absent for v1.
    let (mut tag, mut field, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        (tag, field, rest) = tlv(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    let serial: String = field.iter().map(|b| format!("{b:02X}")).collect();
    let (_signature, _, rest) = tlv(rest)?;
    let (_issuer, _, rest) = tlv(rest)?;
    let (tag, validity, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (t1, before, rest) = tlv(validity)?;
    let (t2, after, _) = tlv(rest)?;
    // A positive INTEGER may carry a leading zero byte: not part of the value.
    let serial = match serial.trim_start_matches("00") {
        "" => "0".to_string(),
        s => s.to_string(),
    };
    Some(CertInfo {
        serial,
        not_before: asn1_time(t1, before)?,
        not_after: asn1_time(t2, after)?,
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17; years 50–99 are 19xx) or
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18) to unix seconds.
fn asn1_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: u64, not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        p.not_before = rcgen::date_time_ymd(2024, 2, 29);
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_serial_and_validity_from_rcgen_certificates() {
        // 2049 is a UTCTime, 2050 a GeneralizedTime (RFC 5280 §4.1.2.5).
        for (y, expect) in [
            (2049, "2049-12-31T00:00:00Z"),
            (2050, "2050-12-31T00:00:00Z"),
        ] {
            let info = cert_info(&cert(0x1234_5678, (y, 12, 31))).unwrap();
            assert_eq!(info.serial, "12345678");
            assert_eq!(info.not_after_iso(), expect);
            assert_eq!(info.not_before, 1_709_164_800, "2024-02-29T00:00:00Z");
        }
        let info = cert_info(&cert(7, (2030, 1, 1))).unwrap();
        assert_eq!(info.days_left(info.not_after - 86_400 * 3 - 5), 3);
        assert_eq!(info.days_left(info.not_after + 1), -1);
    }

    #[test]
    fn times_and_garbage() {
        assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(asn1_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(asn1_time(0x18, b"19700102000000Z"), Some(86_400));
        assert_eq!(asn1_time(0x17, b"7001010000Z"), None);
        assert_eq!(asn1_time(0x17, b"701301000000Z"), None);
        assert_eq!(asn1_time(0x18, b"1970010200000+"), None);
        assert_eq!(cert_info(b""), None);
        assert_eq!(cert_info(&[0x30, 0x82, 0xff]), None);
        let der = cert(1, (2030, 1, 1));
        for cut in [1, 10, 100, der.len() / 2] {
            assert_eq!(cert_info(&der[..cut]), None, "cut at {cut}");
        }
    }
}
