//! The API keys file and the key store built from it.
//!
//! The file (TOML, mode 0600, replaced atomically) holds one `[[key]]`
//! table per key with its `name`, the SHA-256 of the key (`sha256`, hex),
//! its `scopes`, when it was `created` (RFC 3339, UTC) and, once the relay
//! records it, `last_used`. The key itself is never stored: `dhan-relay keys
//! add` prints it once.
//!
//! A key is `drk_` and 32 lowercase base32 characters (160 random bits from
//! `ring`'s system generator).

use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use super::scope::{Scope, Scopes};
use crate::token::sources::{write_private, Secret};

/// The prefix of every key.
pub const KEY_PREFIX: &str = "drk_";
/// Random bytes in a key (160 bits).
pub const KEY_BYTES: usize = 20;
/// Longest key name.
pub const MAX_NAME: usize = 64;

/// Lowercase RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// `n` random bytes from the system generator, base32.
pub(crate) fn random_token(n: usize) -> Result<String, String> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(base32(&buf))
}

/// A new random key.
pub fn generate_key() -> Result<Secret, String> {
    Ok(Secret::new(format!(
        "{KEY_PREFIX}{}",
        random_token(KEY_BYTES)?
    )))
}

/// SHA-256 of `s`.
pub fn sha256(s: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, s);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// Whether `name` is a valid key name: 1–64 of `A-Z a-z 0-9 _ . -`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_name(name: &str) -> Result<(), String> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "key name '{}' is not 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// `t` as RFC 3339 UTC to the second: `2026-05-01T09:30:00Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    format!("{}Z", crate::instrument::date::CivilTime::at(t, 0))
}

/// Where the keys file is by default: `$XDG_CONFIG_HOME/dhan-relay/keys.toml`,
/// else `$HOME/.config/dhan-relay/keys.toml`; `None` when neither is set
/// (XDG_CONFIG_HOME counts only when absolute, as the XDG spec says).
pub fn default_keys_file() -> Option<PathBuf> {
    default_keys_file_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_keys_file`] from given values of the two variables.
pub fn default_keys_file_from(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = match xdg {
        Some(x) => x,
        None => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("dhan-relay").join("keys.toml"))
}

/// The identity of a stored key: the SHA-256 of the key. Not secret (the
/// keys file holds it) but not printed in full either.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 32]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({}…)", hex(&self.0[..4]))
    }
}

/// One `[[key]]` of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's name (what logs show).
    pub name: String,
    /// SHA-256 of the key.
    pub id: KeyId,
    /// What it may do.
    pub scopes: Scopes,
    /// When it was made, RFC 3339 UTC.
    pub created: String,
    /// When the relay last saw it used, if recorded.
    pub last_used: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    sha256: String,
    scopes: Vec<String>,
    created: String,
    last_used: Option<String>,
}

/// The keys file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeysFile {
    /// The keys, in file order.
    pub keys: Vec<KeyEntry>,
}

/// TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl KeysFile {
    /// Parses and checks the file's text: valid unique names, 64 hex
    /// digits, known scopes. Errors name the entry, never a hash.
    pub fn parse(text: &str) -> Result<KeysFile, String> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let mut keys: Vec<KeyEntry> = Vec::with_capacity(raw.key.len());
        for (i, k) in raw.key.into_iter().enumerate() {
            let which = format!(
                "key #{} ('{}')",
                i + 1,
                k.name.chars().take(80).collect::<String>()
            );
            check_name(&k.name).map_err(|e| format!("{which}: {e}"))?;
            if keys.iter().any(|e| e.name == k.name) {
                return Err(format!("{which}: the name is used twice"));
            }
            let id = unhex(&k.sha256)
                .map(KeyId)
                .ok_or_else(|| format!("{which}: sha256 is not 64 hex digits"))?;
            let scopes = k
                .scopes
                .iter()
                .map(|s| s.parse::<Scope>())
                .collect::<Result<Scopes, String>>()
                .map_err(|e| format!("{which}: {e}"))?;
            keys.push(KeyEntry {
                name: k.name,
                id,
                scopes,
                created: k.created,
                last_used: k.last_used,
            });
        }
        Ok(KeysFile { keys })
    }

    /// Reads the file at `path`; a missing file is an empty set.
    pub fn load(path: &Path) -> Result<KeysFile, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                KeysFile::parse(&text).map_err(|e| format!("keys file {}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
            Err(e) => Err(format!("cannot read keys file {}: {e}", path.display())),
        }
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# dhan-relay API keys: managed by `dhan-relay keys add|list|revoke`.\n\
             # Only the SHA-256 of each key is stored; the key was shown once.\n",
        );
        for k in &self.keys {
            let scopes: Vec<String> = k.scopes.iter().map(|s| quote(s.as_str())).collect();
            out.push_str(&format!(
                "\n[[key]]\nname = {}\nsha256 = {}\nscopes = [{}]\ncreated = {}\n",
                quote(&k.name),
                quote(&hex(&k.id.0)),
                scopes.join(", "),
                quote(&k.created)
            ));
            if let Some(used) = &k.last_used {
                out.push_str(&format!("last_used = {}\n", quote(used)));
            }
        }
        out
    }

    /// Writes the file: its directory is created (mode 0700) when missing;
    /// the file is replaced atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
        }
        write_private(path, self.to_toml().as_bytes())
            .map_err(|e| format!("cannot write keys file {}: {e}", path.display()))
    }

    /// Adds a new key named `name` with `scopes`, made at `now`; returns the
    /// key, which exists nowhere else (show it once).
    pub fn add(&mut self, name: &str, scopes: Scopes, now: SystemTime) -> Result<Secret, String> {
        check_name(name)?;
        if scopes.is_empty() {
            return Err(format!(
                "no scope given (valid scopes: {})",
                super::scope::SCOPE_NAMES
            ));
        }
        if self.keys.iter().any(|k| k.name == name) {
            return Err(format!(
                "a key named '{name}' exists already: revoke it first or choose another name"
            ));
        }
        let key = generate_key()?;
        self.keys.push(KeyEntry {
            name: name.to_string(),
            id: KeyId(sha256(key.expose().as_bytes())),
            scopes,
            created: rfc3339_utc(now),
            last_used: None,
        });
        Ok(key)
    }

    /// Removes the key named `name`.
    pub fn revoke(&mut self, name: &str) -> Result<(), String> {
        let before = self.keys.len();
        self.keys.retain(|k| k.name != name);
        if self.keys.len() == before {
            return Err(format!(
                "no key named '{}'",
                name.chars().take(80).collect::<String>()
            ));
        }
        Ok(())
    }
}

/// Whether `a == b`, in time independent of where they differ: every byte
/// is folded in (ring's `verify_slices_are_equal` is deprecated for outside
/// use), and `black_box` keeps the compiler from short-cutting the fold.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// Who a verified key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// Its scopes.
    pub scopes: Scopes,
    /// Its identity (to re-check it later).
    pub id: KeyId,
}

#[cfg(test)]
thread_local! {
    /// Stored hashes compared by `verify` on this thread (tests check that
    /// every entry is touched).
    pub(crate) static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct Shared {
    keys: ArcSwap<KeysFile>,
    generation: AtomicU64,
}

/// The keys the relay accepts: a cheap handle, shared by the threads that
/// check requests and the one that reloads the file.
#[derive(Clone)]
pub struct KeyStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.shared.keys.load();
        f.debug_struct("KeyStore")
            .field(
                "keys",
                &keys.keys.iter().map(|k| &k.name).collect::<Vec<_>>(),
            )
            .field("generation", &self.generation())
            .finish()
    }
}

impl KeyStore {
    /// A store holding `keys`.
    pub fn new(keys: KeysFile) -> KeyStore {
        KeyStore {
            shared: Arc::new(Shared {
                keys: ArcSwap::from_pointee(keys),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// A store loaded from the file at `path` (missing: empty).
    pub fn load(path: &Path) -> Result<KeyStore, String> {
        Ok(KeyStore::new(KeysFile::load(path)?))
    }

    /// The key `presented` belongs to, if any: its SHA-256 is compared with
    /// every stored hash in constant time, all entries always compared.
    pub fn verify(&self, presented: &str) -> Option<KeyInfo> {
        let digest = sha256(presented.as_bytes());
        let keys = self.shared.keys.load();
        let mut found = None;
        for (i, k) in keys.keys.iter().enumerate() {
            #[cfg(test)]
            COMPARISONS.with(|c| c.set(c.get() + 1));
            let equal = constant_time_eq(&k.id.0, &digest);
            // No early exit: the time does not depend on which entry matched.
            found = if equal { Some(i) } else { found };
        }
        found.map(|i| info(&keys.keys[i]))
    }

    /// The key with identity `id`, if still there (a session or an open
    /// connection re-checks its key with this).
    pub fn by_id(&self, id: KeyId) -> Option<KeyInfo> {
        self.shared
            .keys
            .load()
            .keys
            .iter()
            .find(|k| k.id == id)
            .map(info)
    }

    /// Whether a key named `name` is still in the file.
    pub fn still_valid(&self, name: &str) -> bool {
        self.shared.keys.load().keys.iter().any(|k| k.name == name)
    }

    /// Bumped on every reload that changed the keys: holders of open
    /// connections re-check them (with [`KeyStore::by_id`] or
    /// [`KeyStore::still_valid`]) when it moves.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.shared.keys.load().keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key names, in file order.
    pub fn names(&self) -> Vec<String> {
        self.shared
            .keys
            .load()
            .keys
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }

    /// Replaces the keys; the generation moves (and `true` is returned)
    /// when a key was added, removed or changed scopes (not for
    /// `created`/`last_used` alone).
    pub fn replace(&self, keys: KeysFile) -> bool {
        let identity = |f: &KeysFile| -> Vec<(String, KeyId, Scopes)> {
            f.keys
                .iter()
                .map(|k| (k.name.clone(), k.id, k.scopes))
                .collect()
        };
        let changed = identity(&self.shared.keys.load()) != identity(&keys);
        self.shared.keys.store(Arc::new(keys));
        if changed {
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }
}

fn info(k: &KeyEntry) -> KeyInfo {
    KeyInfo {
        name: k.name.clone(),
        scopes: k.scopes,
        id: k.id,
    }
}

/// What identifies a version of the file: modification time, length and
/// inode (an atomic replace makes a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(Option<SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| Stamp(m.modified().ok(), m.len(), m.ino()))
}

/// Reloads a [`KeyStore`] from its file when the file changes: call
/// [`KeyWatch::tick`] every second (from any thread's tick) and
/// [`KeyWatch::reload`] on SIGHUP.
#[derive(Debug)]
pub struct KeyWatch {
    path: PathBuf,
    store: KeyStore,
    stamp: Option<Stamp>,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file is as it was (or parsed to the same keys).
    Unchanged,
    /// New keys are in force; the names now valid are listed.
    Changed {
        /// The key names now accepted.
        names: Vec<String>,
        /// The store's new generation.
        generation: u64,
    },
}

impl KeyWatch {
    /// Watches `path` for `store` (loaded from it already: the current
    /// version counts as seen).
    pub fn new(path: impl Into<PathBuf>, store: KeyStore) -> KeyWatch {
        let path = path.into();
        let stamp = stamp(&path);
        KeyWatch { path, store, stamp }
    }

    /// Loads the file at `path` into a new store and watches it (the stamp
    /// is taken before reading, so a change while loading is seen at the
    /// next tick). A missing file is an empty store; a bad one an error.
    pub fn open(path: impl Into<PathBuf>) -> Result<KeyWatch, String> {
        let path = path.into();
        let stamp = stamp(&path);
        let store = KeyStore::load(&path)?;
        Ok(KeyWatch { path, store, stamp })
    }

    /// The store it reloads (clone it for the threads that check keys).
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads when the file's modification time or length changed. A file
    /// that does not parse keeps the old keys and is an error (for the log:
    /// it names the file and the entry, never a key); it is retried when
    /// it changes again. A deleted file means no keys.
    pub fn tick(&mut self) -> Result<Reloaded, String> {
        let now = stamp(&self.path);
        if now == self.stamp {
            return Ok(Reloaded::Unchanged);
        }
        self.stamp = now;
        self.load()
    }

    /// Reloads now, changed or not (SIGHUP).
    pub fn reload(&mut self) -> Result<Reloaded, String> {
        self.stamp = stamp(&self.path);
        self.load()
    }

    fn load(&mut self) -> Result<Reloaded, String> {
        let keys = KeysFile::load(&self.path)?;
        let names = keys.keys.iter().map(|k| k.name.clone()).collect();
        Ok(if self.store.replace(keys) {
            Reloaded::Changed {
                names,
                generation: self.store.generation(),
            }
        } else {
            Reloaded::Unchanged
        })
    }
}

/// A fresh temporary directory for a test.
#[cfg(test)]
pub(crate) fn tests_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dhan-relay-keys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dhan-relay-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn read() -> Scopes {
        Scopes::NONE.with(Scope::Read)
    }

    #[test]
    fn base32_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn keys_are_random_prefixed_base32() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        let s = a.expose();
        assert!(s.starts_with("drk_") && s.len() == 4 + 32, "{}", s.len());
        assert!(s[4..]
            .bytes()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)));
        assert!(!format!("{a:?}").contains(&s[4..]));
    }

    #[test]
    fn names_and_defaults() {
        for good in ["a", "ci-bot_1.prod", &"x".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "a b", "ä", "a/b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(
            default_keys_file_from(Some("/x/cfg".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/cfg/dhan-relay/keys.toml"))
        );
        assert_eq!(
            default_keys_file_from(Some("relative".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.config/dhan-relay/keys.toml"))
        );
        assert_eq!(default_keys_file_from(None, None), None);
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000);
        assert_eq!(rfc3339_utc(t), "2026-05-28T20:26:40Z");
    }

    #[test]
    fn the_file_round_trips_and_holds_only_hashes() {
        let mut f = KeysFile::default();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000);
        let k1 = f.add("alice", read(), now).unwrap();
        let k2 = f
            .add("bot", Scopes::parse_list("read,trade").unwrap(), now)
            .unwrap();
        f.keys[1].last_used = Some("2026-05-29T00:00:00Z".into());
        let text = f.to_toml();
        assert!(!text.contains(k1.expose()) && !text.contains(&k2.expose()[4..]));
        assert!(text.contains("scopes = [\"read\", \"trade\"]"), "{text}");
        assert!(text.contains(&hex(&sha256(k1.expose().as_bytes()))));
        assert_eq!(KeysFile::parse(&text).unwrap(), f);

        let e = f.add("alice", read(), now).unwrap_err();
        assert!(e.contains("exists already"), "{e}");
        assert!(f
            .add("bad name", read(), now)
            .unwrap_err()
            .contains("not 1-64"));
        assert!(f
            .add("x", Scopes::NONE, now)
            .unwrap_err()
            .contains("no scope"));
        f.revoke("alice").unwrap();
        assert_eq!(f.revoke("alice").unwrap_err(), "no key named 'alice'");
        assert_eq!(f.keys.len(), 1);
    }

    #[test]
    fn bad_files_are_errors_naming_the_entry() {
        let h = "a".repeat(64);
        let entry = |name: &str, sha: &str, scopes: &str| {
            format!("[[key]]\nname = \"{name}\"\nsha256 = \"{sha}\"\nscopes = {scopes}\ncreated = \"2026-01-01T00:00:00Z\"\n")
        };
        for (text, want) in [
            (
                entry("a", "abc", "[\"read\"]"),
                "key #1 ('a'): sha256 is not 64 hex",
            ),
            (
                entry("a", &h, "[\"write\"]"),
                "unknown scope 'write' (valid scopes: read, trade, admin)",
            ),
            (entry("a b", &h, "[\"read\"]"), "not 1-64"),
            (
                format!("{}{}", entry("a", &h, "[]"), entry("a", &h, "[]")),
                "key #2 ('a'): the name is used twice",
            ),
            ("[[key]]\nname = \"a\"\n".into(), "missing field"),
            ("[[kye]]\n".into(), "unknown field"),
            ("not toml".into(), "expected"),
        ] {
            let e = KeysFile::parse(&text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(KeysFile::parse("").unwrap(), KeysFile::default());
    }

    #[test]
    fn saving_is_atomic_private_and_makes_a_private_directory() {
        let d = dir("save");
        let path = d.join("cfg/dhan-relay/keys.toml");
        let mut f = KeysFile::default();
        f.add("a", read(), SystemTime::now()).unwrap();
        f.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&d.join("cfg")), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        f.add("b", read(), SystemTime::now()).unwrap();
        f.save(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(KeysFile::load(&path).unwrap(), f);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keys.toml"], "no temporary file left");
        assert_eq!(
            KeysFile::load(&d.join("none.toml")).unwrap(),
            KeysFile::default()
        );
    }

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn verify_compares_every_entry_in_constant_time() {
        let mut f = KeysFile::default();
        let now = SystemTime::now();
        let a = f.add("a", read(), now).unwrap();
        for i in 0..5 {
            f.add(&format!("k{i}"), read(), now).unwrap();
        }
        let store = KeyStore::new(f);
        COMPARISONS.with(|c| c.set(0));
        let got = store.verify(a.expose()).unwrap();
        assert_eq!((got.name.as_str(), got.scopes), ("a", read()));
        assert_eq!(
            COMPARISONS.with(|c| c.get()),
            6,
            "the first entry matched; all were compared"
        );
        COMPARISONS.with(|c| c.set(0));
        assert_eq!(store.verify("drk_wrong"), None);
        assert_eq!(store.verify(""), None);
        assert_eq!(store.verify(&a.expose()[..10]), None);
        assert_eq!(COMPARISONS.with(|c| c.get()), 18);
        assert!(store.still_valid("a") && !store.still_valid("b"));
        assert_eq!(store.by_id(got.id).unwrap().name, "a");
        assert!(!format!("{store:?}").contains(&hex(&got.id.0)));
    }

    #[test]
    fn the_watch_reloads_on_change_and_keeps_the_old_set_on_a_bad_file() {
        let d = dir("watch");
        let path = d.join("keys.toml");
        let mut f = KeysFile::default();
        let a = f.add("a", read(), SystemTime::now()).unwrap();
        f.save(&path).unwrap();
        let mut watch = KeyWatch::open(&path).unwrap();
        let store = watch.store().clone();
        assert_eq!(watch.tick().unwrap(), Reloaded::Unchanged);
        assert_eq!(store.generation(), 0);

        let b = f.add("b", read(), SystemTime::now()).unwrap();
        f.save(&path).unwrap();
        assert_eq!(
            watch.tick().unwrap(),
            Reloaded::Changed {
                names: vec!["a".into(), "b".into()],
                generation: 1
            }
        );
        assert!(store.verify(b.expose()).is_some());

        // A broken file: the old keys stay, the error names no key.
        std::fs::write(&path, "[[key]]\nname = \"a\"\nsha256 = \"zz\"\n").unwrap();
        let e = watch.tick().unwrap_err();
        assert!(e.contains("keys.toml") && !e.contains(a.expose()), "{e}");
        assert!(store.verify(a.expose()).is_some() && store.verify(b.expose()).is_some());
        assert_eq!(store.generation(), 1);
        assert_eq!(
            watch.tick().unwrap(),
            Reloaded::Unchanged,
            "not retried until it changes"
        );

        // Revoked: gone at the next tick.
        f.revoke("a").unwrap();
        f.save(&path).unwrap();
        assert!(matches!(
            watch.tick().unwrap(),
            Reloaded::Changed { generation: 2, .. }
        ));
        assert!(store.verify(a.expose()).is_none() && !store.still_valid("a"));
        assert_eq!(
            watch.reload().unwrap(),
            Reloaded::Unchanged,
            "SIGHUP, same keys"
        );
        f.keys[0].last_used = Some("2026-06-01T00:00:00Z".into());
        f.save(&path).unwrap();
        assert_eq!(
            watch.tick().unwrap(),
            Reloaded::Unchanged,
            "last_used alone"
        );
        assert_eq!(store.generation(), 2);

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watch.tick().unwrap(), Reloaded::Changed { .. }));
        assert!(store.is_empty());
    }
}
