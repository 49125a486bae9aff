//! The simulator's access-token registry: the tokens it issued (to whom,
//! until when, revoked or not), the tokens it was told to refuse, and the
//! rule that decides a login.
//!
//! Pure: no I/O, no clock (every method that cares takes `now`, Unix
//! seconds), no logging. Tokens are secrets: `Debug` shows counts only.
//!
//! The rule ([`Registry::check`]), in order:
//!
//! 1. a token in the refused set ([`super::SimConfig::expired_tokens`],
//!    [`super::SimControl::expire_token`], a revoked token the simulator did
//!    not issue) → 807;
//! 2. an issued token: revoked (a newer one was issued to its client, or
//!    [`super::SimControl::revoke_token`]) or past its `exp` → 807; used
//!    with another client id → 808; otherwise accepted until its `exp`;
//! 3. a token in [`super::SimConfig::valid_tokens`], or — when
//!    `accept_any_token` is set — any other token: refused with 807 if it
//!    is a JWT whose own `exp` has passed, otherwise accepted (until that
//!    `exp`, if it has one);
//! 4. anything else (strict mode, unknown token) → 807.
//!
//! 807 ("access token expired") is the answer for every token the server
//! will not take, known or not: DhanHQ's REST side reports unknown and
//! expired tokens with one code as well (DH-901, "invalid or expired"), and
//! to a client both mean the same thing — get a new token. 809 stays for a
//! login without a token at all, 808 for a client id that does not match.
//!
//! Limits: at most [`MAX_ISSUED`] issued tokens are remembered (expired
//! ones are dropped by [`Registry::prune`]; past the cap the oldest revoked
//! ones go, which, in `accept_any_token` mode, makes them acceptable again
//! until their `exp`), and at most [`MAX_REFUSED`] refused ones (past that,
//! revoking a token the simulator did not issue is not remembered).

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::token::jwt;
use crate::wire::DisconnectReason;

/// Most issued tokens remembered at once.
pub(crate) const MAX_ISSUED: usize = 65_536;
/// Most refused (expired or revoked, not issued) tokens remembered.
pub(crate) const MAX_REFUSED: usize = 65_536;

/// One token the simulator issued.
struct Issued {
    client_id: String,
    exp: u64,
    revoked: bool,
    /// Issue order, to evict the oldest first.
    seq: u64,
}

/// The registry; see the module doc.
pub(crate) struct Registry {
    accept_any: bool,
    issued: HashMap<String, Issued>,
    /// Each client's one unrevoked issued token.
    current: HashMap<String, String>,
    refused: HashSet<String>,
    valid: HashSet<String>,
    next_seq: u64,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("accept_any", &self.accept_any)
            .field("issued", &self.issued.len())
            .field("refused", &self.refused.len())
            .field("valid", &self.valid.len())
            .finish()
    }
}

impl Registry {
    pub(crate) fn new(accept_any: bool, valid: &[String], refused: &[String]) -> Self {
        Registry {
            accept_any,
            issued: HashMap::new(),
            current: HashMap::new(),
            refused: refused.iter().take(MAX_REFUSED).cloned().collect(),
            valid: valid.iter().cloned().collect(),
            next_seq: 0,
        }
    }

    /// Decides a login with `token` (and, when given, `client_id`) at
    /// `now`: `Ok` with the Unix second the token stops being valid, if it
    /// has one, or the disconnect reason.
    pub(crate) fn check(
        &self,
        token: &str,
        client_id: Option<&str>,
        now: u64,
    ) -> Result<Option<u64>, DisconnectReason> {
        if self.refused.contains(token) {
            return Err(DisconnectReason::TokenExpired);
        }
        if let Some(issued) = self.issued.get(token) {
            if issued.revoked || issued.exp <= now {
                return Err(DisconnectReason::TokenExpired);
            }
            if client_id.is_some_and(|c| c != issued.client_id) {
                return Err(DisconnectReason::InvalidClientId);
            }
            return Ok(Some(issued.exp));
        }
        if !self.accept_any && !self.valid.contains(token) {
            return Err(DisconnectReason::TokenExpired);
        }
        match jwt::expiry(token) {
            Some(exp) if exp <= now => Err(DisconnectReason::TokenExpired),
            exp => Ok(exp),
        }
    }

    /// Records `token`, valid for `client_id` until `exp`, as that client's
    /// one valid issued token; returns the client's previously issued
    /// tokens, now revoked.
    pub(crate) fn issue(
        &mut self,
        client_id: &str,
        token: &str,
        exp: u64,
        now: u64,
    ) -> Vec<String> {
        let mut revoked = Vec::new();
        if let Some(old) = self.current.insert(client_id.to_owned(), token.to_owned()) {
            if let Some(issued) = self.issued.get_mut(&old) {
                issued.revoked = true;
                revoked.push(old);
            }
        }
        if self.issued.len() >= MAX_ISSUED {
            self.prune(now);
        }
        if self.issued.len() >= MAX_ISSUED {
            self.evict_oldest();
        }
        self.next_seq += 1;
        self.issued.insert(
            token.to_owned(),
            Issued {
                client_id: client_id.to_owned(),
                exp,
                revoked: false,
                seq: self.next_seq,
            },
        );
        revoked
    }

    /// Drops the oldest revoked issued token (or, if none is revoked, the
    /// oldest of all) to make room.
    fn evict_oldest(&mut self) {
        let oldest = |revoked_only: bool| {
            self.issued
                .iter()
                .filter(|(_, i)| i.revoked || !revoked_only)
                .min_by_key(|(_, i)| i.seq)
                .map(|(t, _)| t.clone())
        };
        if let Some(t) = oldest(true).or_else(|| oldest(false)) {
            if let Some(gone) = self.issued.remove(&t) {
                if self.current.get(&gone.client_id) == Some(&t) {
                    self.current.remove(&gone.client_id);
                }
            }
        }
    }

    /// From now on `token` is refused; an issued token is marked revoked.
    pub(crate) fn revoke(&mut self, token: &str) {
        match self.issued.get_mut(token) {
            Some(issued) => {
                issued.revoked = true;
                if self.current.get(&issued.client_id).map(String::as_str) == Some(token) {
                    self.current.remove(&issued.client_id);
                }
            }
            None => self.refuse(token),
        }
    }

    /// Adds `token` to the refused set (bounded by [`MAX_REFUSED`]).
    pub(crate) fn refuse(&mut self, token: &str) {
        if self.refused.len() < MAX_REFUSED {
            self.refused.insert(token.to_owned());
        }
    }

    /// Forgets issued tokens whose `exp` has passed: they are refused all
    /// the same, as unknown tokens (strict) or by their JWT `exp`.
    pub(crate) fn prune(&mut self, now: u64) {
        self.issued.retain(|_, i| i.exp > now);
        let issued = &self.issued;
        self.current.retain(|_, t| issued.contains_key(t));
    }

    /// How many issued tokens are remembered.
    #[cfg(test)]
    fn issued_len(&self) -> usize {
        self.issued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DisconnectReason::{InvalidClientId, TokenExpired};

    const NOW: u64 = 1_700_000_000;

    fn jwt_until(exp: u64) -> String {
        jwt::unsigned("X", exp, NOW - 10)
    }

    #[test]
    fn accept_any_takes_unknown_tokens_but_not_expired_jwts() {
        let r = Registry::new(true, &[], &["old".into()]);
        assert_eq!(r.check("anything", Some("C"), NOW), Ok(None));
        assert_eq!(r.check("old", Some("C"), NOW), Err(TokenExpired));
        let live = jwt_until(NOW + 60);
        assert_eq!(r.check(&live, Some("C"), NOW), Ok(Some(NOW + 60)));
        assert_eq!(r.check(&jwt_until(NOW), Some("C"), NOW), Err(TokenExpired));
    }

    #[test]
    fn strict_takes_only_issued_or_configured_tokens() {
        let live = jwt_until(NOW + 60);
        let dead = jwt_until(NOW - 1);
        let mut r = Registry::new(false, &["cfg".into(), live.clone(), dead.clone()], &[]);
        assert_eq!(r.check("unknown", Some("C"), NOW), Err(TokenExpired));
        assert_eq!(r.check("cfg", Some("C"), NOW), Ok(None));
        assert_eq!(r.check(&live, None, NOW), Ok(Some(NOW + 60)));
        assert_eq!(r.check(&dead, None, NOW), Err(TokenExpired));
        r.revoke("cfg");
        assert_eq!(r.check("cfg", Some("C"), NOW), Err(TokenExpired));
    }

    #[test]
    fn issued_tokens_expire_belong_to_a_client_and_replace_each_other() {
        for accept_any in [true, false] {
            let mut r = Registry::new(accept_any, &[], &[]);
            let a = jwt::unsigned("C", NOW + 10, NOW);
            assert!(r.issue("C", &a, NOW + 10, NOW).is_empty());
            assert_eq!(r.check(&a, Some("C"), NOW), Ok(Some(NOW + 10)));
            assert_eq!(r.check(&a, None, NOW), Ok(Some(NOW + 10)));
            assert_eq!(r.check(&a, Some("D"), NOW), Err(InvalidClientId));
            assert_eq!(r.check(&a, Some("C"), NOW + 10), Err(TokenExpired));

            // Another client's token leaves C's alone.
            let d = jwt::unsigned("D", NOW + 10, NOW);
            assert!(r.issue("D", &d, NOW + 10, NOW).is_empty());
            // A second token for C revokes the first.
            let b = jwt::unsigned("C", NOW + 20, NOW);
            assert_eq!(r.issue("C", &b, NOW + 20, NOW), vec![a.clone()]);
            assert_eq!(r.check(&a, Some("C"), NOW), Err(TokenExpired));
            assert_eq!(r.check(&b, Some("C"), NOW), Ok(Some(NOW + 20)));
            assert_eq!(r.check(&d, Some("D"), NOW), Ok(Some(NOW + 10)));

            r.revoke(&b);
            assert_eq!(r.check(&b, Some("C"), NOW), Err(TokenExpired));

            // Pruned tokens stay refused: by exp (they are JWTs) or as
            // unknown.
            r.prune(NOW + 15);
            assert_eq!(r.issued_len(), 1); // b, revoked, exp NOW + 20
            assert_eq!(r.check(&a, Some("C"), NOW + 15), Err(TokenExpired));
            assert_eq!(r.check(&d, Some("D"), NOW + 15), Err(TokenExpired));
        }
    }

    #[test]
    fn the_registry_is_bounded() {
        let mut r = Registry::new(true, &[], &[]);
        for i in 0..MAX_ISSUED + 10 {
            r.issue(&format!("c{i}"), &format!("t{i}"), NOW + 100, NOW);
        }
        assert_eq!(r.issued_len(), MAX_ISSUED);
        // The oldest went first; the newest is there.
        assert_eq!(r.check("t0", Some("c0"), NOW), Ok(None)); // unknown again
        let last = MAX_ISSUED + 9;
        assert_eq!(
            r.check(&format!("t{last}"), Some("other"), NOW),
            Err(InvalidClientId)
        );
        for i in 0..MAX_REFUSED + 10 {
            r.refuse(&format!("r{i}"));
        }
        assert_eq!(r.refused.len(), MAX_REFUSED);
    }

    #[test]
    fn debug_shows_no_token() {
        let mut r = Registry::new(false, &["valid-secret".into()], &["old-secret".into()]);
        r.issue("C", "issued-secret", NOW + 1, NOW);
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
