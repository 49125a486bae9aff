//! Percent-decoding of URL query strings, in one place: the REST API's
//! `?q=..&limit=..` and the simulator's `?token=..&clientId=..` read their
//! parameters through [`query_param`].
//!
//! Rules (`application/x-www-form-urlencoded`, as browsers and most servers
//! apply them to a query): `+` is a space, `%XX` is the byte `XX`; an escape
//! that is not two hex digits is kept as written (lenient, never an error);
//! bytes that do not form UTF-8 after decoding become U+FFFD. A literal `+`
//! must be sent as `%2B` — which is what the relay's own upstream client does
//! for every byte outside RFC 3986's unreserved set.

/// One query-string component (a name or a value), decoded.
pub fn decode_component(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&h| hex(h)),
                b.get(i + 2).and_then(|&l| hex(l)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The value of the first `name=value` pair of `query` (the part after `?`)
/// whose decoded name is `name`, decoded; a bare `name` gives `""`.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k) == name).then(|| decode_component(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // From `fanout::rest`, where `query_param` lived first.
    #[test]
    fn query_strings_decode() {
        assert_eq!(
            query_param("q=relia&limit=20", "q").as_deref(),
            Some("relia")
        );
        assert_eq!(
            query_param("limit=5&q=nifty+25000%20CE", "q").as_deref(),
            Some("nifty 25000 CE")
        );
        assert_eq!(query_param("q=M%26M", "q").as_deref(), Some("M&M"));
        assert_eq!(query_param("q=100%", "q").as_deref(), Some("100%"));
        assert_eq!(query_param("q=%zz", "q").as_deref(), Some("%zz"));
        assert_eq!(query_param("q", "q").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "q"), None);
    }

    #[test]
    fn components_decode_by_query_string_rules() {
        let table = [
            ("", ""),
            ("abc", "abc"),
            ("a+b", "a b"),
            ("a%2Bb", "a+b"),
            ("a%20b%3d", "a b="),
            ("%41%62", "Ab"),
            // Invalid escapes stay as written, wherever they are.
            ("100%", "100%"),
            ("%", "%"),
            ("%4", "%4"),
            ("%zz%4", "%zz%4"),
            ("%4g", "%4g"),
            ("%%41", "%A"),
            // Multi-byte UTF-8, escaped or not.
            ("%E2%82%B9", "₹"),
            ("₹+5", "₹ 5"),
            // Bytes that are not UTF-8 are replaced, the rest kept.
            ("%ff", "\u{fffd}"),
            ("a%C3b", "a\u{fffd}b"),
            // A JWT (base64url and dots) passes through untouched.
            (
                "eyJhbGciOiJIUzUxMiJ9.eyJpc3MiOiJkaGFuIn0.s-ig_N",
                "eyJhbGciOiJIUzUxMiJ9.eyJpc3MiOiJkaGFuIn0.s-ig_N",
            ),
        ];
        for (input, want) in table {
            assert_eq!(decode_component(input), want, "{input:?}");
        }
    }

    #[test]
    fn names_are_decoded_and_the_first_match_wins() {
        assert_eq!(query_param("a%20b=1", "a b").as_deref(), Some("1"));
        assert_eq!(query_param("q=1&q=2", "q").as_deref(), Some("1"));
        assert_eq!(query_param("q=a=b", "q").as_deref(), Some("a=b"));
        assert_eq!(query_param("", "q"), None);
        assert_eq!(query_param("&&q=x&", "q").as_deref(), Some("x"));
        assert_eq!(query_param("Q=x", "q"), None, "names are case-sensitive");
    }
}
