//! What a key may do: `read` (prices, the feed, stats), `trade` (orders,
//! positions, funds), `admin` (`/api/admin/*`). A scope grants only itself:
//! `admin` does not imply `read`.

use std::fmt;
use std::str::FromStr;

/// One scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Market data: `/prices`, `/ws`, `/stats`, …
    Read,
    /// Orders, positions, funds.
    Trade,
    /// `/api/admin/*`.
    Admin,
}

/// The valid scope names, for messages.
pub const SCOPE_NAMES: &str = "read, trade, admin";

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Trade, Scope::Admin];

    /// Its name in the keys file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trade => "trade",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Trade => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope '{}' (valid scopes: {SCOPE_NAMES})",
                    s.chars().take(40).collect::<String>()
                )
            })
    }
}

/// A set of scopes (a bit set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope: an anonymous caller.
    pub const NONE: Scopes = Scopes(0);
    /// Every scope: what a caller has when authentication is off.
    pub const ALL: Scopes = Scopes(7);

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set plus `scope`.
    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// `read,trade` (the command-line form) parsed; empty parts are skipped,
    /// an empty list is an error.
    pub fn parse_list(s: &str) -> Result<Scopes, String> {
        let mut set = Scopes::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            set = set.with(part.parse()?);
        }
        if set.is_empty() {
            return Err(format!("no scope given (valid scopes: {SCOPE_NAMES})"));
        }
        Ok(set)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Scopes {
        iter.into_iter().fold(Scopes::NONE, Scopes::with)
    }
}

impl fmt::Display for Scopes {
    /// `read,trade`; `-` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_print_and_grant_only_themselves() {
        let s = Scopes::parse_list("trade, read").unwrap();
        assert!(s.contains(Scope::Read) && s.contains(Scope::Trade));
        assert!(!s.contains(Scope::Admin));
        assert_eq!(s.to_string(), "read,trade");
        let admin = Scopes::parse_list("admin").unwrap();
        assert!(!admin.contains(Scope::Read), "admin does not imply read");
        assert_eq!(Scopes::ALL.to_string(), "read,trade,admin");
        assert_eq!(Scopes::NONE.to_string(), "-");
        assert_eq!(format!("{:?}", Scopes::ALL), "Scopes(read,trade,admin)");
        let e = Scopes::parse_list("read,write").unwrap_err();
        assert_eq!(
            e,
            "unknown scope 'write' (valid scopes: read, trade, admin)"
        );
        assert!(Scopes::parse_list(" , ").unwrap_err().contains("no scope"));
        assert_eq!(
            [Scope::Admin, Scope::Read].into_iter().collect::<Scopes>(),
            Scopes::parse_list("read,admin").unwrap()
        );
    }
}
