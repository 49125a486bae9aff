//! The REST bodies: `/prices`, `/health`, `/stats`, `/metrics` and
//! `/api/v2/subscriptions/active`, rendered from the latest snapshot and the
//! threads' counters. Off the hot path: built per request, or once a second
//! for `/ws/prices`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::stats::{get, FanoutStats};
use crate::book::{BookStats, Snapshot};
use crate::domain::{InstrumentKey, Mode};
use crate::instrument::Master;
use crate::logging::civil_from_days;
use crate::metrics::Percentiles;
use crate::upstream::{UpstreamStats, DISCONNECT_REASONS, PACKET_KINDS};
use crate::wire::WireError;

pub use crate::instrument::watch::WatchItem;

/// Everything the REST bodies read.
#[derive(Debug)]
pub struct RestContext<'a> {
    /// The latest book snapshot.
    pub snapshot: &'a Snapshot,
    /// The configured watchlist.
    pub watchlist: &'a [WatchItem],
    /// Symbol names known for instruments.
    pub symbols: &'a HashMap<InstrumentKey, String>,
    /// Network-thread counters.
    pub upstream: &'a UpstreamStats,
    /// Book-thread counters.
    pub book: &'a BookStats,
    /// Fanout-thread counters.
    pub fanout: &'a FanoutStats,
    /// Network receive → book apply.
    pub receive_to_book: Percentiles,
    /// Network receive → client socket write.
    pub tick_to_wire: Percentiles,
    /// Upstream subscriptions: instrument, mode, client count.
    pub active: Vec<(InstrumentKey, Mode, usize)>,
    /// Time since start.
    pub uptime: Duration,
    /// Running against the built-in simulator.
    pub demo: bool,
}

impl RestContext<'_> {
    /// `active` while an upstream connection is up; otherwise why not.
    pub fn status(&self) -> String {
        if self.upstream.connections_up() > 0 {
            return "active".into();
        }
        match (self.upstream.last_disconnect(), self.upstream.last_error()) {
            (Some(reason), _) if reason.is_auth_failure() => format!("upstream down: {reason}"),
            (_, Some(err)) => format!("reconnecting: {err}"),
            _ => "connecting".into(),
        }
    }

    /// The seed-compatible prices object (PROTOCOL.md §3).
    pub fn prices(&self) -> String {
        let mut obj = Map::new();
        for item in self.watchlist {
            let ltp = self.snapshot.get(item.key).and_then(|s| s.ltp);
            obj.insert(item.symbol.clone(), price_value(ltp));
        }
        obj.insert(
            "timestamp".into(),
            Value::String(ist_timestamp(SystemTime::now())),
        );
        obj.insert("status".into(), Value::String(self.status()));
        let instruments: Vec<Value> = self
            .snapshot
            .instruments
            .iter()
            .filter(|s| s.ltp.is_some())
            .map(|s| {
                let mut v = json!({
                    "exchangeSegment": s.key.segment.name(),
                    "securityId": s.key.security_id.to_string(),
                    "ltp": price_value(s.ltp),
                    "ltt": s.ltt,
                });
                if let Some(symbol) = self.symbols.get(&s.key) {
                    v["symbol"] = Value::String(symbol.clone());
                }
                if let Some(p) = s.prev_close {
                    v["prevClose"] = price_value(Some(p.prev_close));
                }
                v
            })
            .collect();
        obj.insert("instruments".into(), Value::Array(instruments));
        Value::Object(obj).to_string()
    }

    /// `/health`: 200 while an upstream connection is up, else 503.
    pub fn health(&self) -> (u16, String) {
        let up = self.upstream.connections_up();
        let connections: Vec<Value> = self
            .upstream
            .slot_states()
            .iter()
            .enumerate()
            .filter(|(i, s)| *i == 0 || s.name() != "unused")
            .map(|(i, s)| json!({"slot": i, "state": s.name()}))
            .collect();
        let last = self
            .upstream
            .last_disconnect()
            .map(|r| json!({"code": r.code(), "name": r.name(), "hint": r.hint()}));
        let body = json!({
            "status": if up > 0 { "ok" } else { "down" },
            "detail": self.status(),
            "demo": self.demo,
            "uptimeSeconds": self.uptime.as_secs(),
            "upstream": {
                "connectionsUp": up,
                "connections": connections,
                "lastDisconnect": last,
                "lastError": self.upstream.last_error(),
            },
            "clients": get(&self.fanout.clients),
        });
        (if up > 0 { 200 } else { 503 }, body.to_string())
    }

    /// `/api/watchlist`: the configured watchlist, in order.
    pub fn watchlist(&self) -> String {
        let list: Vec<Value> = self
            .watchlist
            .iter()
            .map(|w| {
                json!({
                    "symbol": w.symbol,
                    "exchangeSegment": w.key.segment.name(),
                    "securityId": w.key.security_id.to_string(),
                })
            })
            .collect();
        json!({ "watchlist": list }).to_string()
    }

    /// `/api/v2/subscriptions/active`.
    pub fn subscriptions(&self) -> String {
        let list: Vec<Value> = self
            .active
            .iter()
            .map(|(key, mode, clients)| {
                json!({
                    "exchangeSegment": key.segment.name(),
                    "securityId": key.security_id.to_string(),
                    "symbol": self.symbols.get(key),
                    "mode": mode.name(),
                    "clients": clients,
                })
            })
            .collect();
        json!({ "count": list.len(), "subscriptions": list }).to_string()
    }

    fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let u = self.upstream;
        let f = self.fanout;
        vec![
            (
                "upstream_frames_total",
                "Binary frames received from DhanHQ",
                UpstreamStats::get(&u.frames),
            ),
            (
                "upstream_bytes_total",
                "Bytes of binary frames received",
                UpstreamStats::get(&u.bytes),
            ),
            (
                "upstream_connect_attempts_total",
                "Upstream connection attempts",
                UpstreamStats::get(&u.connect_attempts),
            ),
            (
                "upstream_connects_total",
                "Upstream WebSocket handshakes completed",
                UpstreamStats::get(&u.connects),
            ),
            (
                "upstream_disconnects_total",
                "Upstream connections lost",
                UpstreamStats::get(&u.disconnects),
            ),
            (
                "upstream_silent_drops_total",
                "Upstream sockets dropped for silence",
                UpstreamStats::get(&u.silent_drops),
            ),
            (
                "upstream_auth_failures_total",
                "Disconnects with 807, 808 or 809",
                UpstreamStats::get(&u.auth_failures),
            ),
            (
                "upstream_ring_full_waits_total",
                "Times the network thread waited on a full tick ring",
                UpstreamStats::get(&u.ring_full_waits),
            ),
            (
                "upstream_rejected_subscriptions_total",
                "Subscriptions refused: every connection full",
                UpstreamStats::get(&u.rejected_subscriptions),
            ),
            (
                "upstream_connections_up",
                "Upstream connections up now",
                u.connections_up() as u64,
            ),
            (
                "book_ticks_total",
                "Ticks applied by the book",
                get(&self.book.ticks),
            ),
            (
                "book_updates_total",
                "Updates forwarded to the fanout",
                get(&self.book.updates),
            ),
            (
                "book_ring_full_waits_total",
                "Times the book waited on a full update ring",
                get(&self.book.ring_full_waits),
            ),
            (
                "fanout_updates_total",
                "Updates taken from the book",
                get(&f.updates),
            ),
            (
                "fanout_clients",
                "WebSocket clients connected",
                get(&f.clients),
            ),
            (
                "fanout_subscriptions",
                "Client subscriptions held",
                get(&f.subscriptions),
            ),
            (
                "fanout_clients_total",
                "WebSocket clients accepted",
                get(&f.clients_total),
            ),
            (
                "fanout_clients_rejected_total",
                "Clients refused at the client limit",
                get(&f.clients_rejected),
            ),
            (
                "fanout_messages_total",
                "Messages queued to clients",
                get(&f.messages),
            ),
            (
                "fanout_bytes_total",
                "Payload bytes queued to clients",
                get(&f.bytes),
            ),
            (
                "fanout_conflated_total",
                "Messages replaced by newer ones for lagging clients",
                get(&f.conflated),
            ),
            (
                "fanout_slow_closes_total",
                "Clients closed for staying behind",
                get(&f.slow_closes),
            ),
            (
                "fanout_client_errors_total",
                "Error replies to bad client messages",
                get(&f.client_errors),
            ),
            (
                "fanout_protocol_closes_total",
                "Clients closed for protocol violations",
                get(&f.protocol_closes),
            ),
            (
                "http_requests_total",
                "Plain HTTP requests answered",
                get(&f.http_requests),
            ),
        ]
    }

    /// `/metrics` in Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in self.counters() {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP dhan_relay_{name} {help}\n# TYPE dhan_relay_{name} {kind}\ndhan_relay_{name} {value}");
        }
        out.push_str("# HELP dhan_relay_upstream_packets_total Packets decoded, by kind\n# TYPE dhan_relay_upstream_packets_total counter\n");
        for (i, kind) in PACKET_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "dhan_relay_upstream_packets_total{{kind=\"{kind}\"}} {}",
                UpstreamStats::get(&self.upstream.packets[i])
            );
        }
        out.push_str("# HELP dhan_relay_upstream_decode_errors_total Bad packets, by kind\n# TYPE dhan_relay_upstream_decode_errors_total counter\n");
        for (i, kind) in WireError::KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "dhan_relay_upstream_decode_errors_total{{kind=\"{kind}\"}} {}",
                UpstreamStats::get(&self.upstream.decode_errors[i])
            );
        }
        out.push_str("# HELP dhan_relay_upstream_disconnect_reasons_total DhanHQ disconnect packets, by reason\n# TYPE dhan_relay_upstream_disconnect_reasons_total counter\n");
        for (i, reason) in DISCONNECT_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "dhan_relay_upstream_disconnect_reasons_total{{reason=\"{}\"}} {}",
                reason.name(),
                UpstreamStats::get(&self.upstream.disconnect_reasons[i])
            );
        }
        for (name, help, p) in [
            (
                "receive_to_book_seconds",
                "Network receive to book apply",
                self.receive_to_book,
            ),
            (
                "tick_to_wire_seconds",
                "Network receive to client socket write",
                self.tick_to_wire,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP dhan_relay_{name} {help}\n# TYPE dhan_relay_{name} summary"
            );
            for (q, us) in [
                ("0.5", p.p50_us),
                ("0.9", p.p90_us),
                ("0.99", p.p99_us),
                ("0.999", p.p999_us),
                ("1", p.max_us),
            ] {
                let _ = writeln!(out, "dhan_relay_{name}{{quantile=\"{q}\"}} {}", us / 1e6);
            }
            let _ = writeln!(out, "dhan_relay_{name}_count {}", p.count);
        }
        out
    }

    /// `/stats`: latency percentiles and counters as JSON.
    pub fn stats(&self) -> String {
        let counters: Map<String, Value> = self
            .counters()
            .into_iter()
            .map(|(name, _, v)| (name.to_string(), Value::from(v)))
            .collect();
        json!({
            "uptimeSeconds": self.uptime.as_secs_f64(),
            "status": self.status(),
            "latency": {
                "receiveToBook": self.receive_to_book,
                "tickToWire": self.tick_to_wire,
            },
            "counters": counters,
        })
        .to_string()
    }
}

/// Results of `/api/instruments` when `limit` is not given.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;

/// A query-string value: `+` is a space, `%XX` a byte; invalid escapes are
/// kept as written, invalid UTF-8 replaced.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /api/instruments?q=relia&limit=20`: `{"query","count","results"}`,
/// or 400 with `{"error"}` for a missing or empty `q` or a bad `limit`
/// (default 20, at most 100).
pub fn search(master: &Master, query: &str) -> (u16, String) {
    let bad = |m: &str| (400, json!({ "error": m }).to_string());
    let q = query_param(query, "q").unwrap_or_default();
    if q.trim().is_empty() {
        return bad("missing query: give q, e.g. /api/instruments?q=relia&limit=20");
    }
    let limit = match query_param(query, "limit") {
        None => DEFAULT_SEARCH_LIMIT,
        Some(l) => match l.trim().parse::<usize>() {
            Ok(n) if n > 0 => n.min(crate::instrument::search::MAX_LIMIT),
            _ => return bad("limit must be a whole number from 1 to 100"),
        },
    };
    let results: Vec<Value> = master
        .search(&q, limit)
        .iter()
        .map(|i| i.to_json())
        .collect();
    (
        200,
        json!({ "query": q, "count": results.len(), "results": results }).to_string(),
    )
}

/// A price as JSON: the shortest round-trip decimal, or `null`.
fn price_value(p: Option<f32>) -> Value {
    let mut f = crate::price::PriceFormatter::new();
    p.and_then(|p| f.format(p).ok().and_then(|s| serde_json::from_str(s).ok()))
        .unwrap_or(Value::Null)
}

/// India time (UTC+05:30, no DST), ISO 8601 with microseconds and no zone,
/// as the replaced backend printed it.
pub fn ist_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(19_800);
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::InstrumentState;
    use crate::domain::Segment;
    use crate::wire::feed::PrevClose;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            query_param("q=relia&limit=20", "q").as_deref(),
            Some("relia")
        );
        assert_eq!(
            query_param("limit=5&q=nifty+25000%20CE", "q").as_deref(),
            Some("nifty 25000 CE")
        );
        assert_eq!(query_param("q=M%26M", "q").as_deref(), Some("M&M"));
        assert_eq!(query_param("q=100%", "q").as_deref(), Some("100%"));
        assert_eq!(query_param("q=%zz", "q").as_deref(), Some("%zz"));
        assert_eq!(query_param("q", "q").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "q"), None);
    }

    #[test]
    fn instrument_search_bodies() {
        let m = Master::sample();
        let (code, body) = search(&m, "q=relia&limit=2");
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["query"], "relia");
        assert_eq!(v["count"], 2);
        assert_eq!(v["results"][0]["symbol"], "RELIANCE");
        assert_eq!(v["results"][1]["exchangeSegment"], "BSE_EQ");
        let (_, body) = search(&m, "q=zzzz");
        assert_eq!(body, r#"{"count":0,"query":"zzzz","results":[]}"#);
        for bad in [
            "",
            "q=",
            "q=+",
            "limit=3",
            "q=a&limit=0",
            "q=a&limit=-1",
            "q=a&limit=x",
        ] {
            let (code, body) = search(&m, bad);
            assert_eq!(code, 400, "{bad}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].is_string(), "{bad}");
        }
    }

    #[test]
    fn ist_timestamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_770_089_995_456_386);
        assert_eq!(ist_timestamp(t), "2026-02-03T09:09:55.456386");
    }

    #[test]
    fn prices_object_keeps_the_seed_shape() {
        let nifty = InstrumentKey::new(Segment::IdxI, 13);
        let rel = InstrumentKey::new(Segment::NseEq, 2885);
        let mut s = InstrumentState::new(nifty);
        s.ltp = Some(25760.85);
        s.ltt = 1;
        s.prev_close = Some(PrevClose {
            prev_close: 25700.0,
            prev_oi: 0,
        });
        let snapshot = Snapshot {
            taken_ns: 0,
            instruments: vec![s, InstrumentState::new(rel)],
        };
        let watchlist = vec![
            WatchItem {
                symbol: "NIFTY".into(),
                key: nifty,
            },
            WatchItem {
                symbol: "RELIANCE".into(),
                key: rel,
            },
        ];
        let symbols: HashMap<_, _> = watchlist
            .iter()
            .map(|w| (w.key, w.symbol.clone()))
            .collect();
        let (up, book, fan) = (
            UpstreamStats::default(),
            BookStats::default(),
            FanoutStats::default(),
        );
        let ctx = RestContext {
            snapshot: &snapshot,
            watchlist: &watchlist,
            symbols: &symbols,
            upstream: &up,
            book: &book,
            fanout: &fan,
            receive_to_book: Percentiles::default(),
            tick_to_wire: Percentiles::default(),
            active: vec![(nifty, Mode::Quote, 2)],
            uptime: Duration::from_secs(5),
            demo: true,
        };
        let v: Value = serde_json::from_str(&ctx.prices()).unwrap();
        assert_eq!(v["NIFTY"], json!(25760.85));
        assert_eq!(v["RELIANCE"], Value::Null, "no price yet");
        assert_eq!(v["status"], "connecting");
        assert_eq!(v["timestamp"].as_str().unwrap().len(), 26);
        assert_eq!(
            v["instruments"],
            json!([{"symbol": "NIFTY", "exchangeSegment": "IDX_I", "securityId": "13",
                    "ltp": 25760.85, "ltt": 1, "prevClose": 25700.0}])
        );
        let (code, health) = ctx.health();
        assert_eq!(code, 503);
        let h: Value = serde_json::from_str(&health).unwrap();
        assert_eq!(
            (h["status"].clone(), h["demo"].clone()),
            (json!("down"), json!(true))
        );
        let w: Value = serde_json::from_str(&ctx.watchlist()).unwrap();
        assert_eq!(
            w["watchlist"][1],
            json!({"symbol": "RELIANCE", "exchangeSegment": "NSE_EQ", "securityId": "2885"})
        );
        let subs: Value = serde_json::from_str(&ctx.subscriptions()).unwrap();
        assert_eq!(subs["subscriptions"][0]["mode"], "quote");
        assert_eq!(subs["subscriptions"][0]["clients"], 2);
        let metrics = ctx.metrics();
        assert!(metrics
            .contains("# TYPE dhan_relay_fanout_clients gauge\ndhan_relay_fanout_clients 0\n"));
        assert!(metrics.contains("dhan_relay_upstream_decode_errors_total{kind=\"too_short\"} 0"));
        assert!(metrics.contains("dhan_relay_tick_to_wire_seconds{quantile=\"0.99\"} 0"));
        assert!(metrics.contains(
            "dhan_relay_upstream_disconnect_reasons_total{reason=\"access_token_expired\"} 0"
        ));
        let stats: Value = serde_json::from_str(&ctx.stats()).unwrap();
        assert_eq!(stats["latency"]["tickToWire"]["count"], 0);
        assert_eq!(stats["counters"]["upstream_connects_total"], 0);
    }
}
