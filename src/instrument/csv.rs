//! The little CSV the scrip master needs: one record per line (`\n` or
//! `\r\n`), fields separated by commas, optionally quoted with `"` and
//! `""` for a quote inside. A quoted field may not span lines: DhanHQ's
//! file has none, and a stray quote must cost one bad row, not the rest of
//! the file.
//!
//! Fields borrow the input; only a quoted field with an escaped quote is
//! copied.

use std::borrow::Cow;

/// Lines of `text` with their 1-based numbers, without the line ending.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut number = 0;
    std::iter::from_fn(move || {
        if pos >= bytes.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
        let mut line = &text[pos..end];
        if let Some(l) = line.strip_suffix('\r') {
            line = l;
        }
        pos = end + 1;
        number += 1;
        Some((number, line))
    })
}

/// Why a line is not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CsvError {
    /// A quoted field has no closing quote on its line.
    Unterminated,
    /// Something other than a comma follows a closing quote.
    AfterQuote,
}

impl CsvError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            CsvError::Unterminated => "a quoted field has no closing quote",
            CsvError::AfterQuote => "text after a closing quote",
        }
    }
}

/// Splits one line into `out` (cleared first).
pub(crate) fn split<'a>(line: &'a str, out: &mut Vec<Cow<'a, str>>) -> Result<(), CsvError> {
    out.clear();
    let bytes = line.as_bytes();
    if memchr::memchr(b'"', bytes).is_none() {
        let mut from = 0;
        for comma in memchr::memchr_iter(b',', bytes) {
            out.push(Cow::Borrowed(&line[from..comma]));
            from = comma + 1;
        }
        out.push(Cow::Borrowed(&line[from..]));
        return Ok(());
    }
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            // Quoted: up to a quote not followed by another quote.
            let mut value: Cow<'a, str> = Cow::Borrowed("");
            let mut s = quoted;
            loop {
                let Some(q) = s.find('"') else {
                    return Err(CsvError::Unterminated);
                };
                let piece = &s[..q];
                if s[q + 1..].starts_with('"') {
                    let v = value.to_mut();
                    v.push_str(piece);
                    v.push('"');
                    s = &s[q + 2..];
                } else {
                    match &mut value {
                        Cow::Borrowed("") => value = Cow::Borrowed(piece),
                        v => v.to_mut().push_str(piece),
                    }
                    s = &s[q + 1..];
                    break;
                }
            }
            out.push(value);
            match s.strip_prefix(',') {
                Some(next) => rest = next,
                None if s.is_empty() => return Ok(()),
                None => return Err(CsvError::AfterQuote),
            }
        } else {
            // Unquoted: up to the next comma (a quote inside is literal).
            match rest.find(',') {
                Some(c) => {
                    out.push(Cow::Borrowed(&rest[..c]));
                    rest = &rest[c + 1..];
                }
                None => {
                    out.push(Cow::Borrowed(rest));
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Result<Vec<String>, CsvError> {
        let mut out = Vec::new();
        split(line, &mut out)?;
        Ok(out.into_iter().map(Cow::into_owned).collect())
    }

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(fields("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(fields("").unwrap(), [""]);
        assert_eq!(
            fields(r#"x,"a, b","say ""hi""","",y"#).unwrap(),
            ["x", "a, b", r#"say "hi""#, "", "y"]
        );
        assert_eq!(fields(r#""last""#).unwrap(), ["last"]);
        assert_eq!(fields(r#"a,"b""#).unwrap(), ["a", "b"]);
        assert_eq!(fields(r#"a,5" pipe,b"#).unwrap(), ["a", r#"5" pipe"#, "b"]);
        assert_eq!(fields(r#"a,"open,b"#), Err(CsvError::Unterminated));
        assert_eq!(fields(r#""a"b,c"#), Err(CsvError::AfterQuote));
    }

    #[test]
    fn lines_strip_crlf_and_count() {
        let text = "h\r\na\n\r\nb";
        let got: Vec<_> = lines(text).collect();
        assert_eq!(got, [(1, "h"), (2, "a"), (3, ""), (4, "b")]);
    }
}
