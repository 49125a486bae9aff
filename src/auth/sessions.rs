//! Browser sessions: `POST /api/session` with a key makes a random session
//! id (160 bits) that the browser keeps in the `drs` cookie. Kept in memory
//! only (a restart logs everyone out), looked up by the SHA-256 of the id.
//!
//! A session lasts [`SESSION_LIFETIME`] (12 hours) from login — fixed, not
//! sliding: the cookie's `Max-Age` says the same, and a stolen cookie is
//! not kept alive by use. A session stands for its key: when the key is
//! revoked the session stops working, and scope changes apply at once. At
//! most [`MAX_SESSIONS`] are kept; the oldest goes first.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use super::keys::{random_token, sha256, KeyId};
use crate::token::sources::Secret;

/// How long a session lasts from login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 10_000;
/// The cookie's name.
pub const COOKIE: &str = "drs";
/// Random bytes in a session id (160 bits).
pub const SESSION_BYTES: usize = 20;

struct Session {
    key: KeyId,
    expires: Instant,
    seq: u64,
}

/// The open sessions.
pub struct Sessions {
    by_hash: HashMap<[u8; 32], Session>,
    /// Login order (`seq` → hash): the oldest is evicted first.
    order: BTreeMap<u64, [u8; 32]>,
    next: u64,
    cap: usize,
    lifetime: Duration,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.by_hash.len())
            .field("cap", &self.cap)
            .finish()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(MAX_SESSIONS, SESSION_LIFETIME)
    }
}

impl Sessions {
    /// At most `cap` sessions, each lasting `lifetime`.
    pub fn new(cap: usize, lifetime: Duration) -> Sessions {
        Sessions {
            by_hash: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
            lifetime,
        }
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new session for the key `key`; returns its id (the cookie value).
    pub fn open(&mut self, key: KeyId, now: Instant) -> Result<Secret, String> {
        let id = random_token(SESSION_BYTES)?;
        let hash = sha256(id.as_bytes());
        while self.by_hash.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_hash.remove(&oldest);
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, hash);
        self.by_hash.insert(
            hash,
            Session {
                key,
                expires: now + self.lifetime,
                seq,
            },
        );
        Ok(Secret::new(id))
    }

    /// The key behind session `id`, unless it is unknown or expired (an
    /// expired one is dropped).
    pub fn get(&mut self, id: &str, now: Instant) -> Option<KeyId> {
        let hash = sha256(id.as_bytes());
        let s = self.by_hash.get(&hash)?;
        if now >= s.expires {
            self.remove_hash(&hash);
            return None;
        }
        Some(s.key)
    }

    /// Ends session `id` (logout); whether it existed.
    pub fn close(&mut self, id: &str) -> bool {
        self.remove_hash(&sha256(id.as_bytes()))
    }

    /// Ends every session of `key` (its key was revoked).
    pub fn close_key(&mut self, key: KeyId) {
        let gone: Vec<[u8; 32]> = self
            .by_hash
            .iter()
            .filter(|(_, s)| s.key == key)
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            self.remove_hash(&h);
        }
    }

    fn remove_hash(&mut self, hash: &[u8; 32]) -> bool {
        match self.by_hash.remove(hash) {
            Some(s) => {
                self.order.remove(&s.seq);
                true
            }
            None => false,
        }
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_close_and_are_capped() {
        let mut s = Sessions::new(3, Duration::from_secs(100));
        let k = KeyId([1; 32]);
        let t = Instant::now();
        let a = s.open(k, t).unwrap();
        assert_eq!(a.expose().len(), 32);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(s.get(a.expose(), t + Duration::from_secs(99)), Some(k));
        assert_eq!(
            s.get(a.expose(), t + Duration::from_secs(100)),
            None,
            "fixed lifetime"
        );
        assert!(s.is_empty(), "the expired one is dropped");

        let ids: Vec<_> = (0..4).map(|_| s.open(k, t).unwrap()).collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(ids[0].expose(), t), None, "the oldest was evicted");
        assert_eq!(s.get(ids[3].expose(), t), Some(k));
        assert!(s.close(ids[3].expose()));
        assert!(!s.close(ids[3].expose()));
        assert_eq!(s.get(ids[3].expose(), t), None);
        assert_eq!(s.get("made-up", t), None);

        let other = KeyId([2; 32]);
        let o = s.open(other, t).unwrap();
        s.close_key(k);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(o.expose(), t), Some(other));
        assert_eq!(s.order.len(), 1, "the order index follows");
    }
}
