//! What `/health`, `/stats` and `/metrics` show about trading: on or off,
//! paper or live, the kill switch, the audit log's health, and counts of
//! order calls by outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::audit::AuditLog;
use super::TradingConfig;
use crate::metrics::Counter;

/// Counts of trading calls.
#[derive(Debug)]
pub struct TradingStats {
    /// Order calls DhanHQ accepted.
    pub sent: Counter,
    /// Order calls the relay did not send.
    pub refused: Counter,
    /// Order calls DhanHQ refused.
    pub rejected: Counter,
    /// Order calls with no answer.
    pub unknown: Counter,
    /// Funds, order book and positions calls.
    pub reads: Counter,
    /// Of those, the ones that failed.
    pub read_errors: Counter,
}

impl Default for TradingStats {
    fn default() -> TradingStats {
        TradingStats {
            sent: Counter::new("trading_orders_sent_total", "Order calls (place, modify, cancel) DhanHQ accepted"),
            refused: Counter::new(
                "trading_orders_refused_total",
                "Order calls the relay refused before sending (shape, guards, kill switch, rate, busy)",
            ),
            rejected: Counter::new("trading_orders_rejected_total", "Order calls DhanHQ refused"),
            unknown: Counter::new(
                "trading_orders_unknown_total",
                "Order calls DhanHQ did not answer (looked up by correlation id)",
            ),
            reads: Counter::new("trading_reads_total", "Funds, order book and positions calls"),
            read_errors: Counter::new("trading_read_errors_total", "Funds, order book and positions calls that failed"),
        }
    }
}

impl TradingStats {
    /// Counts an order call's outcome (`sent`, `refused`, `rejected`,
    /// `unknown`).
    pub fn order(&self, outcome: &str) {
        match outcome {
            "sent" => self.sent.inc(),
            "refused" => self.refused.inc(),
            "rejected" => self.rejected.inc(),
            _ => self.unknown.inc(),
        }
    }

    /// Every counter, for `/metrics`.
    pub fn counters(&self) -> [&Counter; 6] {
        [
            &self.sent,
            &self.refused,
            &self.rejected,
            &self.unknown,
            &self.reads,
            &self.read_errors,
        ]
    }
}

/// A read-only view for the REST side.
#[derive(Clone, Debug)]
pub struct TradingMonitor {
    pub(super) config: Arc<TradingConfig>,
    pub(super) live: Arc<AtomicBool>,
    pub(super) stats: Arc<TradingStats>,
    pub(super) audit: Option<AuditLog>,
    pub(super) stream: Option<Arc<super::stream::OrderStreamStats>>,
}

impl TradingMonitor {
    /// The counters.
    pub fn stats(&self) -> &TradingStats {
        &self.stats
    }

    /// What makes `/health` `degraded`: an audit log that cannot be
    /// written (orders are refused meanwhile).
    pub fn trouble(&self) -> Option<&'static str> {
        match &self.audit {
            Some(a) if !a.healthy() => Some("the audit log cannot be written: orders are refused"),
            _ => None,
        }
    }

    /// `trading` in `/health` and `/stats`.
    pub fn json(&self) -> Value {
        let s = &self.stats;
        json!({
            "enabled": self.config.enabled,
            "paper": self.config.paper,
            "killSwitch": self.config.enabled && !self.live.load(Ordering::Relaxed),
            "auditLog": match &self.audit {
                None => Value::Null,
                Some(a) => json!(if a.healthy() { "ok" } else { "failing" }),
            },
            "problem": self.trouble(),
            "orders": {
                "sent": s.sent.get(),
                "refused": s.refused.get(),
                "rejected": s.rejected.get(),
                "unknown": s.unknown.get(),
            },
            "orderStream": self.stream.as_ref().map(|st| st.json()),
            "reads": s.reads.get(),
            "readErrors": s.read_errors.get(),
        })
    }
}
