//! Per-key limits from the config file (`[limits.keys.NAME]`): parsed and
//! looked up here; enforced by the fanout.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::keys::valid_name;

/// Limits for one key; `None` keeps the relay-wide limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// WebSocket connections at once.
    pub connections: Option<usize>,
    /// Subscriptions per connection.
    pub subscriptions: Option<usize>,
    /// Client frames per second per connection.
    pub messages_per_sec: Option<u32>,
}

/// Limits by key name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyLimitsMap(BTreeMap<String, KeyLimits>);

impl KeyLimitsMap {
    /// Checks the table: key names as `dhan-relay keys add` takes them,
    /// every number at least 1. Errors name `limits.keys.NAME.FIELD`.
    pub fn new(map: BTreeMap<String, KeyLimits>) -> Result<KeyLimitsMap, String> {
        for (name, l) in &map {
            if !valid_name(name) {
                return Err(format!(
                    "limits.keys.{name}: not a key name (1-64 characters of A-Z, a-z, 0-9, '_', '.', '-')"
                ));
            }
            for (field, zero) in [
                ("connections", l.connections == Some(0)),
                ("subscriptions", l.subscriptions == Some(0)),
                ("messages_per_sec", l.messages_per_sec == Some(0)),
            ] {
                if zero {
                    return Err(format!("limits.keys.{name}.{field} must be at least 1"));
                }
            }
        }
        Ok(KeyLimitsMap(map))
    }

    /// The limits of the key named `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&KeyLimits> {
        self.0.get(name)
    }

    /// Whether no key has limits.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_looked_up_by_name() {
        let one = KeyLimits {
            connections: Some(2),
            ..KeyLimits::default()
        };
        let m = KeyLimitsMap::new([("bot".to_string(), one)].into()).unwrap();
        assert_eq!(m.get("bot"), Some(&one));
        assert_eq!(m.get("other"), None);
        let zero = KeyLimits {
            messages_per_sec: Some(0),
            ..KeyLimits::default()
        };
        let e = KeyLimitsMap::new([("bot".to_string(), zero)].into()).unwrap_err();
        assert_eq!(e, "limits.keys.bot.messages_per_sec must be at least 1");
        let e = KeyLimitsMap::new([("a b".to_string(), one)].into()).unwrap_err();
        assert!(e.contains("not a key name"), "{e}");
    }
}
