//! Trading through the relay: funds, orders, positions and the live order
//! stream, with the DhanHQ token kept on the box.
//!
//! Off by default (`[trading] enabled = false`): every trading call is
//! answered 403 with how to turn it on. When on, the relay's front door
//! hands each call to the broker threads ([`broker`]) over a channel and
//! answers when they do; the front door and the fanout never wait on
//! DhanHQ. Orders pass the guards ([`guard`]) before anything leaves the
//! box, at most [`ORDERS_PER_SEC`] go out per second, and each order
//! request and its outcome is one line in the audit log ([`audit`]).
//! Order updates from DhanHQ's order stream (`stream`) reach `/ws`
//! clients that sent `{"type":"subscribe_orders"}`.
//!
//! Who may trade: a key with the `trade` scope where access control is on;
//! loopback peers only where it is off. In demo mode the built-in
//! simulator is a paper-trading broker and trading is on.
//!
//! DhanHQ facts (paths, field names, value sets) are in
//! `docs/dhanhq-protocol.md`, "Trading", with their sources.

pub mod audit;
pub mod broker;
pub mod client;
pub mod guard;
pub mod order;
pub mod stats;
pub mod stream;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// DhanHQ's published order rate limit (orders per second); more are
/// answered 429 before they leave the box.
pub const ORDERS_PER_SEC: usize = 10;

/// DhanHQ's order-update WebSocket.
pub const DHAN_ORDER_STREAM_URL: &str = "wss://api-order-update.dhan.co";

/// `[trading]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct TradingConfig {
    /// Trading calls are served at all.
    pub enabled: bool,
    /// Paper trading against the built-in simulator (demo mode).
    pub paper: bool,
    /// DhanHQ's REST base (`rest_url`, as for token renewal).
    pub rest_url: String,
    /// The order-update WebSocket.
    pub order_stream_url: String,
    /// The guards.
    pub guards: Guards,
    /// The audit log (one JSON line per order request and outcome).
    pub audit_log: PathBuf,
    /// Time limit of one DhanHQ call.
    pub timeout: Duration,
}

/// Where the audit log goes by default: `$STATE_DIRECTORY` (systemd's
/// `StateDirectory=`, `/var/lib/dhan-relay` with the shipped unit), else
/// `$XDG_STATE_HOME/dhan-relay/`, else `$HOME/.local/state/dhan-relay/`,
/// else the working directory; `audit.jsonl` there, or
/// `paper-audit.jsonl` in demo mode.
pub fn default_audit_log(paper: bool) -> PathBuf {
    let name = if paper {
        "paper-audit.jsonl"
    } else {
        "audit.jsonl"
    };
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return dir.join(name);
    }
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".local").join("state"));
    match xdg.or(home) {
        Some(dir) => dir.join("dhan-relay").join(name),
        None => PathBuf::from(format!("dhan-relay-{name}")),
    }
}

/// Limits checked before an order leaves the box. `None` is "no limit".
#[derive(Clone, Debug, PartialEq)]
pub struct Guards {
    /// Largest order value (quantity × price, or × LTP for MARKET), rupees.
    pub max_order_value: Option<f64>,
    /// Largest quantity (units) in one order.
    pub max_quantity: Option<u32>,
    /// Exchange segments orders may go to.
    pub segments: Vec<String>,
    /// Product types orders may use.
    pub products: Vec<String>,
    /// A LIMIT (or STOP_LOSS) price must be within this many percent of
    /// the last traded price.
    pub price_band_pct: Option<f64>,
}

impl Default for Guards {
    fn default() -> Guards {
        Guards {
            max_order_value: Some(200_000.0),
            max_quantity: Some(5_000),
            segments: [
                "NSE_EQ",
                "BSE_EQ",
                "NSE_FNO",
                "BSE_FNO",
                "MCX_COMM",
                "NSE_CURRENCY",
            ]
            .map(String::from)
            .to_vec(),
            products: ["CNC", "INTRADAY", "MARGIN"].map(String::from).to_vec(),
            price_band_pct: Some(5.0),
        }
    }
}

impl Default for TradingConfig {
    fn default() -> TradingConfig {
        TradingConfig {
            enabled: false,
            paper: false,
            rest_url: crate::token::DHAN_REST_URL.to_string(),
            order_stream_url: DHAN_ORDER_STREAM_URL.to_string(),
            guards: Guards::default(),
            audit_log: default_audit_log(false),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[trading]` as written in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradingTable {
    enabled: Option<bool>,
    max_order_value: Option<f64>,
    max_quantity: Option<u32>,
    segments: Option<Vec<String>>,
    products: Option<Vec<String>>,
    price_band_pct: Option<f64>,
    audit_log: Option<PathBuf>,
    timeout_ms: Option<u64>,
    order_stream_url: Option<String>,
}

/// Segments DhanHQ takes orders on.
const ORDER_SEGMENTS: [&str; 7] = [
    "NSE_EQ",
    "BSE_EQ",
    "NSE_FNO",
    "BSE_FNO",
    "MCX_COMM",
    "NSE_CURRENCY",
    "BSE_CURRENCY",
];

/// Product types the relay places (CO and BO need legs it does not carry).
const ORDER_PRODUCTS: [&str; 4] = ["CNC", "INTRADAY", "MARGIN", "MTF"];

impl TradingTable {
    /// The validated configuration; `rest_url` comes from the top level.
    /// In demo mode (`paper`) trading is on unless `enabled = false` is
    /// written. Errors name the key.
    pub fn into_config(self, rest_url: &str, paper: bool) -> Result<TradingConfig, String> {
        let d = TradingConfig::default();
        let mut guards = Guards::default();
        if let Some(v) = self.max_order_value {
            if !(v.is_finite() && v > 0.0) {
                return Err("trading.max_order_value must be a positive number of rupees".into());
            }
            guards.max_order_value = Some(v);
        }
        if let Some(q) = self.max_quantity {
            if q == 0 {
                return Err("trading.max_quantity must be at least 1".into());
            }
            guards.max_quantity = Some(q);
        }
        if let Some(p) = self.price_band_pct {
            if !(p.is_finite() && p > 0.0 && p <= 100.0) {
                return Err(
                    "trading.price_band_pct must be a percentage above 0 and at most 100".into(),
                );
            }
            guards.price_band_pct = Some(p);
        }
        if let Some(list) = self.segments {
            guards.segments = checked_list(list, &ORDER_SEGMENTS, "trading.segments")?;
        }
        if let Some(list) = self.products {
            guards.products = checked_list(list, &ORDER_PRODUCTS, "trading.products")?;
        }
        let timeout = match self.timeout_ms {
            Some(ms) if !(500..=60_000).contains(&ms) => {
                return Err("trading.timeout_ms must be between 500 and 60000".into())
            }
            Some(ms) => Duration::from_millis(ms),
            None => d.timeout,
        };
        let order_stream_url = self.order_stream_url.unwrap_or(d.order_stream_url);
        check_stream_url(&order_stream_url)?;
        Ok(TradingConfig {
            enabled: self.enabled.unwrap_or(paper),
            paper,
            rest_url: rest_url.to_string(),
            order_stream_url,
            guards,
            audit_log: self.audit_log.unwrap_or_else(|| default_audit_log(paper)),
            timeout,
        })
    }
}

/// The order stream's login carries the token: `wss://`, or `ws://` to
/// this machine only (tests, the simulator).
fn check_stream_url(url: &str) -> Result<(), String> {
    if url.starts_with("wss://") {
        return Ok(());
    }
    let loopback = [
        "ws://127.",
        "ws://localhost:",
        "ws://localhost/",
        "ws://[::1]",
    ]
    .iter()
    .any(|p| url.starts_with(p))
        || url == "ws://localhost";
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "trading.order_stream_url '{}' must be wss:// (its login carries the access token; ws:// only to this machine)",
            url.chars().take(60).collect::<String>()
        ))
    }
}

/// `list`, upper-cased, each one of `valid`, not empty.
fn checked_list(list: Vec<String>, valid: &[&str], key: &str) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!(
            "{key} is empty: leave it out for the default, or list at least one"
        ));
    }
    list.into_iter()
        .map(|s| {
            let up = s.trim().to_ascii_uppercase();
            if valid.contains(&up.as_str()) {
                Ok(up)
            } else {
                Err(format!(
                    "{key}: '{}' is not one of {}",
                    s.chars().take(30).collect::<String>(),
                    valid.join(", ")
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<TradingConfig, String> {
        toml::from_str::<TradingTable>(text)
            .map_err(|e| e.to_string())?
            .into_config("http://127.0.0.1:1", false)
    }

    #[test]
    fn off_by_default_with_guards() {
        let c = table("").unwrap();
        assert!(!c.enabled);
        assert_eq!(c.guards, Guards::default());
        assert_eq!(c.rest_url, "http://127.0.0.1:1");
        let demo = TradingTable::default().into_config("x", true).unwrap();
        assert!(demo.enabled && demo.paper);
        assert!(demo.audit_log.ends_with("paper-audit.jsonl"));
        let off: TradingTable = toml::from_str("enabled = false").unwrap();
        assert!(!off.into_config("x", true).unwrap().enabled);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, want) in [
            ("max_order_value = -1.0", "trading.max_order_value"),
            ("max_quantity = 0", "trading.max_quantity"),
            ("price_band_pct = 0.0", "trading.price_band_pct"),
            (
                "segments = [\"NSE_EQ\", \"LSE\"]",
                "trading.segments: 'LSE'",
            ),
            ("products = []", "trading.products is empty"),
            ("products = [\"BO\"]", "trading.products: 'BO'"),
            ("timeout_ms = 10", "trading.timeout_ms"),
            ("enable = true", "unknown field"),
            (
                "order_stream_url = \"ws://example.com\"",
                "trading.order_stream_url",
            ),
        ] {
            let e = table(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let c = table("enabled = true\nsegments = [\"nse_eq\"]\nmax_quantity = 10").unwrap();
        assert!(c.enabled);
        assert_eq!(c.guards.segments, vec!["NSE_EQ"]);
        assert_eq!(c.guards.max_quantity, Some(10));
    }
}
