//! A dotenv reader and a writer that changes one value in place.
//!
//! The format is the common one: `KEY=VALUE` per line, `#` comments, blank
//! lines, an optional `export ` prefix, and values optionally in single or
//! double quotes (double quotes understand `\"`, `\\` and `\n`). An unquoted
//! value ends at ` #`. Keys are case-sensitive.
//!
//! Errors name the line and the key, never the value: the file holds
//! secrets.

use std::collections::BTreeMap;

/// The pairs of a dotenv file, last assignment of a key winning.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let Some((key, value)) = parse_line(raw).map_err(|e| format!("line {}: {e}", n + 1))?
        else {
            continue;
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// One line: `None` for blanks and comments.
fn parse_line(raw: &str) -> Result<Option<(&str, String)>, String> {
    let line = raw.trim_start_matches('\u{feff}').trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
    let (key, rest) = line
        .split_once('=')
        .ok_or("expected KEY=VALUE (no '=' found)")?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err("the key must be letters, digits and underscores".into());
    }
    Ok(Some((
        key,
        value(rest.trim_start()).map_err(|e| format!("{key}: {e}"))?,
    )))
}

fn value(rest: &str) -> Result<String, String> {
    let mut chars = rest.chars();
    match chars.next() {
        Some(q @ ('"' | '\'')) => {
            let mut out = String::new();
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    _ if escaped => {
                        escaped = false;
                        out.push(match c {
                            'n' => '\n',
                            other => other,
                        });
                    }
                    '\\' if q == '"' => escaped = true,
                    c if c == q => {
                        let tail = chars.as_str().trim();
                        return if tail.is_empty() || tail.starts_with('#') {
                            Ok(out)
                        } else {
                            Err("text after the closing quote".into())
                        };
                    }
                    c => out.push(c),
                }
            }
            Err("the quoted value is not closed on its line".into())
        }
        _ => {
            let end = rest.find(" #").unwrap_or(rest.len());
            Ok(rest[..end].trim().to_string())
        }
    }
}

/// `text` with the values of `changes` replaced where their keys are
/// assigned (every assignment of the key), and appended where they are not.
/// Everything else — comments, order, other keys — is kept.
pub fn update(text: &str, changes: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len() + 128);
    let mut done = vec![false; changes.len()];
    for raw in text.lines() {
        let hit = parse_line(raw)
            .ok()
            .flatten()
            .and_then(|(key, _)| changes.iter().position(|(k, _)| *k == key));
        match hit {
            Some(i) => {
                done[i] = true;
                let (key, value) = changes[i];
                let export = if raw.trim_start().starts_with("export ") {
                    "export "
                } else {
                    ""
                };
                out.push_str(&format!("{export}{key}={}\n", quote(value)));
            }
            None => {
                out.push_str(raw);
                out.push('\n');
            }
        }
    }
    for (i, (key, value)) in changes.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{key}={}\n", quote(value)));
        }
    }
    out
}

/// A value as written back: bare when that reads back the same, else
/// double-quoted.
fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=:@".contains(&b));
    if plain {
        v.to_string()
    } else {
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_forms() {
        let text = "\u{feff}# DhanHQ\n\nDHAN_CLIENT_ID=1100003626\nexport DHAN_ACCESS_TOKEN = \"eyJ.a#b.c\"  # quoted\n\
                    SINGLE='it''s'\nA=plain value # comment\nB=\"x\\\"y\\\\z\\n\"\nEMPTY=\nHASH=a#b\n";
        // 'it''s' is not valid: a quote closes and text follows.
        assert!(parse(text).unwrap_err().starts_with("line 5: SINGLE:"));
        let text = text.replace("SINGLE='it''s'", "SINGLE='a \"b\" \\n'");
        let m = parse(&text).unwrap();
        assert_eq!(m["DHAN_CLIENT_ID"], "1100003626");
        assert_eq!(m["DHAN_ACCESS_TOKEN"], "eyJ.a#b.c");
        assert_eq!(m["SINGLE"], "a \"b\" \\n");
        assert_eq!(m["A"], "plain value");
        assert_eq!(m["B"], "x\"y\\z\n");
        assert_eq!(m["EMPTY"], "");
        assert_eq!(m["HASH"], "a#b");
    }

    #[test]
    fn errors_name_the_line_and_key_but_never_the_value() {
        for (text, want) in [
            ("OK=1\njust words\n", "line 2: expected KEY=VALUE"),
            (
                "TOKEN=\"secret-value\n",
                "line 1: TOKEN: the quoted value is not closed",
            ),
            ("bad key=secret-value\n", "line 1: the key must be"),
            (
                "T='secret-value' extra\n",
                "line 1: T: text after the closing quote",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{e}");
            assert!(!e.contains("secret-value"), "{e}");
        }
    }

    #[test]
    fn update_replaces_in_place_and_appends_the_rest() {
        let text =
            "# keep me\nexport DHAN_ACCESS_TOKEN=old\nDHAN_CLIENT_ID=1\nDHAN_ACCESS_TOKEN='old2'\n";
        let out = update(text, &[("DHAN_ACCESS_TOKEN", "new.tok"), ("NEW", "a b")]);
        assert_eq!(
            out,
            "# keep me\nexport DHAN_ACCESS_TOKEN=new.tok\nDHAN_CLIENT_ID=1\nDHAN_ACCESS_TOKEN=new.tok\nNEW=\"a b\"\n"
        );
        let m = parse(&out).unwrap();
        assert_eq!(m["DHAN_ACCESS_TOKEN"], "new.tok");
        assert_eq!(m["NEW"], "a b");
        for v in ["", "a\"b", "x\\y", "line\nbreak", "#hash", "x y"] {
            let round = parse(&update("", &[("K", v)])).unwrap();
            assert_eq!(round["K"], v, "{v:?}");
        }
    }
}
