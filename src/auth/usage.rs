//! When each key was last used, for `dhan-relay keys list`.
//!
//! The running relay does not rewrite the keys file (that would race with
//! `dhan-relay keys add` from a shell): it keeps last-use times in memory
//! and writes them, at most once a minute and only when they changed, to a
//! small file beside it (`keys.toml.last-used`: `name = "RFC 3339 UTC"`
//! lines). `keys list` reads both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::keys::rfc3339_utc;

/// The last-use file that belongs to `keys_file`.
pub fn usage_file(keys_file: &Path) -> PathBuf {
    let mut name = keys_file.as_os_str().to_owned();
    name.push(".last-used");
    PathBuf::from(name)
}

/// Last uses by key name, as recorded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    last: BTreeMap<String, SystemTime>,
    dirty: bool,
}

impl Usage {
    /// `name` was used at `now`.
    pub fn record(&mut self, name: &str, now: SystemTime) {
        match self.last.get_mut(name) {
            Some(t) => {
                // Minute resolution is plenty and keeps writes rare.
                if now.duration_since(*t).is_ok_and(|d| d.as_secs() >= 60) {
                    *t = now;
                    self.dirty = true;
                }
            }
            None => {
                self.last.insert(name.to_string(), now);
                self.dirty = true;
            }
        }
    }

    /// The text to write, when something changed since the last call.
    pub fn take_changes(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let mut text =
            String::from("# written by the running dhan-relay: when each API key was last used\n");
        for (name, t) in &self.last {
            text.push_str(&format!("{} = \"{}\"\n", toml_key(name), rfc3339_utc(*t)));
        }
        Some(text)
    }
}

/// Names are `[A-Za-z0-9_.-]`: quoted when they hold a dot.
fn toml_key(name: &str) -> String {
    if name.contains('.') {
        format!("\"{name}\"")
    } else {
        name.to_string()
    }
}

/// Reads a last-use file: name → time as written. Missing or unreadable
/// means nothing is known.
pub fn read(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<BTreeMap<String, String>>(&t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn uses_are_kept_to_the_minute_and_round_trip_through_the_file() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let mut u = Usage::default();
        assert_eq!(u.take_changes(), None);
        u.record("bot", t0);
        u.record("ops.desk", t0);
        let text = u.take_changes().unwrap();
        assert_eq!(u.take_changes(), None, "written once");
        u.record("bot", t0 + Duration::from_secs(30));
        assert_eq!(u.take_changes(), None, "within the minute");
        u.record("bot", t0 + Duration::from_secs(61));
        assert!(u.take_changes().is_some());
        let d = super::super::keys::tests_dir("usage");
        let file = usage_file(&d.join("keys.toml"));
        assert!(file.ends_with("keys.toml.last-used"));
        std::fs::write(&file, text).unwrap();
        let read = read(&file);
        assert_eq!(read["bot"], "2026-05-28T20:26:40Z");
        assert_eq!(read["ops.desk"], "2026-05-28T20:26:40Z");
        assert!(super::read(&d.join("missing")).is_empty());
    }
}
