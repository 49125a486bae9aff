//! Finding the credential in a request, first found wins:
//! `Authorization: Bearer KEY`, then the `key` query parameter
//! (percent-decoded: browsers cannot set headers on a WebSocket), then the
//! session cookie `drs=ID`.

use std::fmt;

use super::sessions::COOKIE;
use crate::percent::query_param;
use crate::token::sources::Secret;

/// Where a credential came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Authentication is off: nothing was asked for.
    Off,
    /// No credential (a public path).
    Anonymous,
    /// `Authorization: Bearer`.
    Bearer,
    /// `?key=`.
    Query,
    /// The `drs` session cookie.
    Cookie,
}

/// A credential as presented (never shown by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct Presented {
    /// Where it was.
    pub via: Via,
    /// The key (bearer, query) or the session id (cookie).
    pub value: Secret,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Presented({:?}, ***)", self.via)
    }
}

/// The credential in `headers` (name, raw value) and `query` (without `?`).
/// An `Authorization` header with another scheme, an empty value, a
/// malformed cookie header are passed over.
pub fn extract(headers: &[(&str, &[u8])], query: &str) -> Option<Presented> {
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    };
    let bearer = values("authorization").find_map(|v| {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        let token = rest.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    });
    if let Some(token) = bearer {
        return Some(Presented {
            via: Via::Bearer,
            value: Secret::new(token),
        });
    }
    if let Some(key) = query_param(query, "key").filter(|k| !k.is_empty()) {
        return Some(Presented {
            via: Via::Query,
            value: Secret::new(key),
        });
    }
    let cookie = values("cookie").find_map(|v| {
        v.split(';').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = value.trim().trim_matches('"');
            (name.trim() == COOKIE && !value.is_empty()).then_some(value)
        })
    });
    cookie.map(|id| Presented {
        via: Via::Cookie,
        value: Secret::new(id),
    })
}

/// The header pairs of an `httparse` request, for [`extract`].
pub fn header_pairs<'h>(headers: &'h [httparse::Header<'h>]) -> Vec<(&'h str, &'h [u8])> {
    headers.iter().map(|h| (h.name, h.value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(headers: &[(&str, &[u8])], query: &str) -> Option<(Via, String)> {
        extract(headers, query).map(|p| (p.via, p.value.expose().to_string()))
    }

    #[test]
    fn bearer_then_query_then_cookie() {
        let auth: (&str, &[u8]) = ("Authorization", b"Bearer drk_a");
        let cookie: (&str, &[u8]) = ("Cookie", b"theme=dark; drs=sess1; x=y");
        assert_eq!(
            got(&[cookie, auth], "key=drk_b"),
            Some((Via::Bearer, "drk_a".into()))
        );
        assert_eq!(
            got(&[cookie], "a=1&key=drk%5Fb"),
            Some((Via::Query, "drk_b".into()))
        );
        assert_eq!(got(&[cookie], "a=1"), Some((Via::Cookie, "sess1".into())));
        assert_eq!(got(&[], ""), None);
    }

    #[test]
    fn odd_headers_are_passed_over() {
        let h = |n: &'static str, v: &'static str| (n, v.as_bytes());
        assert_eq!(
            got(&[h("authorization", "bearer   drk_x  ")], ""),
            Some((Via::Bearer, "drk_x".into())),
            "scheme and header names are case-insensitive"
        );
        assert_eq!(got(&[h("Authorization", "Basic dTpw")], ""), None);
        assert_eq!(got(&[h("Authorization", "Bearer")], ""), None);
        assert_eq!(got(&[h("Authorization", "Bearer ")], "key="), None);
        assert_eq!(
            got(&[h("Authorization", "Basic dTpw")], "key=k"),
            Some((Via::Query, "k".into()))
        );
        assert_eq!(got(&[h("Cookie", "drsx=1; adrs=2")], ""), None);
        assert_eq!(got(&[h("Cookie", "drs=")], ""), None);
        assert_eq!(
            got(&[h("Cookie", "a=1"), h("Cookie", "drs=\"s2\"")], ""),
            Some((Via::Cookie, "s2".into()))
        );
        assert_eq!(
            got(&[("Authorization", b"Bearer \xff")], "key=k"),
            Some((Via::Query, "k".into())),
            "not UTF-8"
        );
        let p = extract(&[h("Authorization", "Bearer drk_secret")], "").unwrap();
        assert!(!format!("{p:?}").contains("drk_secret"));
    }

    #[test]
    fn httparse_headers_work_too() {
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(b"GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer drk_h\r\n\r\n")
            .unwrap();
        let pairs = header_pairs(req.headers);
        assert_eq!(got(&pairs, ""), Some((Via::Bearer, "drk_h".into())));
    }
}
