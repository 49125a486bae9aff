//! The REST surface: the route table and its handlers, served by the front
//! door thread from published state (the book's snapshot, the fanout's
//! [`View`], every thread's counters), never on the fanout thread.
//!
//! `GET` and `HEAD` are served; `OPTIONS` answers CORS preflights. Large
//! answers are bounded: `/api/v2/subscriptions/active` pages (`offset`,
//! `limit`) and filters (`segment`, `state`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use super::assets;
use super::http::Response;
use super::stats::FanoutStats;
use super::topics::ActiveSub;
use crate::book::{BookStats, SharedSnapshot};
use crate::domain::{InstrumentKey, Segment};
use crate::instrument::date::{ist_iso, ist_timestamp};
use crate::instrument::watch::WatchItem;
use crate::instrument::{Calendar, Market, Master, SharedMaster, Venue, WallClock};
use crate::maintenance::MaintenanceStats;
use crate::metrics::{render_prometheus, Percentiles, Sample, SharedLatency};
use crate::percent::query_param;
use crate::token::KeeperHandle;
use crate::upstream::{UpstreamStats, DISCONNECT_REASONS, PACKET_KINDS};
use crate::wire::WireError;

/// What the fanout's union publishes for REST and the resolver: the
/// watchlist as it stands (it rolls) and the upstream subscriptions.
#[derive(Debug, Default)]
pub struct View {
    /// The configured watchlist, in order.
    pub watchlist: Vec<WatchItem>,
    /// Instruments held upstream or queued, sorted.
    pub active: Vec<ActiveSub>,
}

impl View {
    /// The watchlist entry named `symbol` (case-insensitive).
    pub fn watch_key(&self, symbol: &str) -> Option<InstrumentKey> {
        self.watchlist
            .iter()
            .find(|w| w.symbol.eq_ignore_ascii_case(symbol))
            .map(|w| w.key)
    }
}

/// The latest [`View`], readable from any thread without locking.
pub type SharedView = Arc<ArcSwap<View>>;

/// The upstream's state for clients and `/health`: a machine-readable
/// `state` and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStatus {
    /// `connected`, `connecting`, `reconnecting` or `down` (DhanHQ refused
    /// the credentials: retrying slowly until someone fixes them).
    pub state: &'static str,
    /// `active`, or why not.
    pub detail: String,
}

impl UpstreamStatus {
    /// Read from the network thread's counters (cheap: no snapshot).
    pub fn of(u: &UpstreamStats) -> UpstreamStatus {
        if u.connections_up() > 0 {
            return UpstreamStatus {
                state: "connected",
                detail: "active".into(),
            };
        }
        match (u.last_disconnect(), u.last_error()) {
            (Some(reason), _) if reason.is_auth_failure() => UpstreamStatus {
                state: "down",
                detail: format!("upstream down: {reason}"),
            },
            (_, Some(err)) => UpstreamStatus {
                state: "reconnecting",
                detail: format!("reconnecting: {err}"),
            },
            _ => UpstreamStatus {
                state: "connecting",
                detail: "connecting".into(),
            },
        }
    }

    /// Up.
    pub fn is_up(&self) -> bool {
        self.state == "connected"
    }
}

/// Everything the REST handlers read; owned by the front door thread.
#[derive(Debug)]
pub struct RestState {
    /// The book's latest snapshot.
    pub snapshot: SharedSnapshot,
    /// The fanout's latest view.
    pub view: SharedView,
    /// The instrument master (swapped daily).
    pub master: SharedMaster,
    /// Network-thread counters.
    pub upstream: Arc<UpstreamStats>,
    /// The 20-level depth connections' counters (their own slots).
    pub depth: Arc<UpstreamStats>,
    /// Book-thread counters.
    pub book: Arc<BookStats>,
    /// Fanout counters.
    pub fanout: Arc<FanoutStats>,
    /// Network receive → book apply.
    pub receive_to_book: SharedLatency,
    /// Network receive → client socket write.
    pub tick_to_wire: SharedLatency,
    /// Fanout-thread time per client message.
    pub client_message: SharedLatency,
    /// When the engine started.
    pub started: Instant,
    /// Running against the built-in simulator.
    pub demo: bool,
    /// The thread layout in use.
    pub threads: &'static str,
    /// Clients per fanout shard.
    pub shard_load: super::shard::Load,
    /// The token keeper: its status, and where admin calls go.
    pub token: KeeperHandle,
    /// The daily maintenance's counters and last run.
    pub maintenance: Arc<MaintenanceStats>,
    /// Market hours.
    pub calendar: Calendar,
    /// The calendar's clock.
    pub clock: WallClock,
    /// The listeners, with their certificates (kept current by the front
    /// door when it reloads them).
    pub listeners: Vec<ListenerStatus>,
    /// Started with `--insecure-no-auth` (said in `/health`).
    pub insecure_no_auth: bool,
    /// Trading: on or off, the kill switch, the audit log, counts.
    pub trading: crate::trading::stats::TradingMonitor,
    /// Option chains as the chain thread last published them.
    pub chains: crate::chain::service::SharedBoard,
    /// Their counters.
    pub chain_stats: Arc<crate::chain::service::ChainStats>,
    /// `--record`: the recorder's counters (`None`: not recording).
    pub record: Option<Arc<crate::record::RecordStats>>,
    /// Today's 1-minute bars and their counters.
    pub history: crate::history::HistoryHandle,
}

/// A listener as `/health` shows it.
#[derive(Debug, Clone)]
pub struct ListenerStatus {
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// Its certificate, for a TLS listener.
    pub tls: Option<crate::serve_tls::CertStatus>,
    /// Whether it asks for API keys.
    pub auth: bool,
}

impl ListenerStatus {
    /// `{"addr", "tls", "certificate": {"notAfter", "daysLeft", "serial",
    /// "file", "reloadError"}}`.
    fn json(&self, now: i64) -> Value {
        let Some(tls) = &self.tls else {
            return json!({"addr": self.addr.to_string(), "tls": false, "auth": self.auth});
        };
        let cert = match &tls.info {
            Some(i) => json!({
                "notAfter": i.not_after_iso(),
                "daysLeft": i.days_left(now),
                "serial": i.serial,
            }),
            None => json!({}),
        };
        let mut cert = cert;
        cert["file"] = json!(tls.file.display().to_string());
        cert["reloadError"] = json!(tls.reload_error);
        json!({"addr": self.addr.to_string(), "tls": true, "auth": self.auth, "certificate": cert})
    }
}

/// Rows of `/api/v2/subscriptions/active` when `limit` is not given, and
/// at most.
pub const DEFAULT_PAGE: usize = 1_000;
/// Largest `limit` for `/api/v2/subscriptions/active`.
pub const MAX_PAGE: usize = 10_000;
/// Results of `/api/instruments` when `limit` is not given.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;

const JSON: &str = "application/json";

impl RestState {
    /// The answer for `GET path?query`, `None` for an unknown path.
    pub fn route(&self, path: &str, query: &str) -> Option<Response> {
        if let Some((ctype, body)) = assets::get(path) {
            return Some(Response::new(200, ctype, body));
        }
        Some(match path {
            "/prices" => Response::new(200, JSON, self.prices()),
            "/health" => {
                let (code, body) = self.health();
                Response::new(code, JSON, body)
            }
            "/stats" => Response::new(200, JSON, self.stats()),
            "/metrics" => Response::new(200, "text/plain; version=0.0.4", self.metrics()),
            "/api/watchlist" => Response::new(200, JSON, self.watchlist()),
            "/api/instruments" => {
                let (code, body) = search(&self.master.load(), query);
                Response::new(code, JSON, body)
            }
            "/api/v2/subscriptions/active" => {
                let (code, body) = self.subscriptions(query);
                Response::new(code, JSON, body)
            }
            "/api" => Response::new(200, "text/plain; charset=utf-8", INDEX),
            "/api/history" => {
                let (code, body) = self.history(query);
                Response::new(code, JSON, body)
            }
            "/api/chains" => {
                Response::new(200, JSON, crate::chain::rest::list(&self.chains.load()))
            }
            p if p.starts_with("/api/chains/") => {
                let name = crate::percent::decode_component(&p["/api/chains/".len()..]);
                let (code, body) = crate::chain::rest::one(&self.chains.load(), &name, query);
                Response::new(code, JSON, body)
            }
            _ => return None,
        })
    }

    /// Open or closed, per venue, now.
    fn markets(&self, now: SystemTime) -> [(Venue, Market); 4] {
        Venue::ALL.map(|v| (v, self.calendar.venue(v, now)))
    }

    /// The seed's `status`, with the calendar: `active` while the upstream
    /// is up and a market the relay serves is open, `closed` while it is up
    /// and all of them are closed (last prices stay served), else why the
    /// upstream is not up.
    fn prices_status(&self, served: &[Segment], now: SystemTime) -> String {
        let up = UpstreamStatus::of(&self.upstream);
        if !up.is_up() {
            return up.detail;
        }
        let open = |seg: &Segment| self.calendar.market(*seg, now) == Market::Open;
        let any_open = if served.is_empty() {
            Segment::ALL.iter().any(open)
        } else {
            served.iter().any(open)
        };
        if any_open {
            up.detail
        } else {
            "closed".to_string()
        }
    }

    /// The seed-compatible prices object (`docs/dhanhq-protocol.md`, the
    /// relay's REST side), with the calendar: `status` (see
    /// [`RestState::prices_status`]), `markets` per venue, and `market` on
    /// each instrument.
    pub fn prices(&self) -> String {
        let snapshot = self.snapshot.load();
        let view = self.view.load();
        let master = self.master.load();
        let now = self.clock.now();
        let mut obj = Map::new();
        for item in &view.watchlist {
            let ltp = snapshot.get(item.key).and_then(|s| s.ltp);
            obj.insert(item.symbol.clone(), price_value(ltp));
        }
        obj.insert(
            "timestamp".into(),
            Value::String(ist_timestamp(SystemTime::now())),
        );
        let served: Vec<Segment> = view.watchlist.iter().map(|w| w.key.segment).collect();
        obj.insert(
            "status".into(),
            Value::String(self.prices_status(&served, now)),
        );
        let markets: Map<String, Value> = self
            .markets(now)
            .into_iter()
            .map(|(v, m)| (v.name().to_string(), Value::from(m.name())))
            .collect();
        obj.insert("markets".into(), Value::Object(markets));
        let instruments: Vec<Value> = snapshot
            .instruments
            .iter()
            .filter(|s| s.ltp.is_some())
            .map(|s| {
                let mut v = json!({
                    "exchangeSegment": s.key.segment.name(),
                    "securityId": s.key.security_id.to_string(),
                    "ltp": price_value(s.ltp),
                    "ltt": s.ltt,
                    "market": self.calendar.market(s.key.segment, now).name(),
                });
                if let Some(symbol) = symbol_of(&view, &master, s.key) {
                    v["symbol"] = Value::String(symbol.to_string());
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

    /// `/stats`' calendar and maintenance: markets per venue, the last
    /// market-status packet per segment, the daily maintenance.
    fn day(&self) -> Value {
        let now = self.clock.now();
        let markets: Map<String, Value> = self
            .markets(now)
            .into_iter()
            .map(|(v, m)| (v.name().to_string(), Value::from(m.name())))
            .collect();
        let packets: Map<String, Value> = Segment::ALL
            .iter()
            .filter_map(|&seg| {
                let at = self.book.market_status_at(seg)?;
                Some((seg.name().to_string(), Value::String(ist_iso(at))))
            })
            .collect();
        let m = &self.maintenance;
        let last = m.last().map(|r| {
            json!({
                "at": ist_timestamp(r.at),
                "date": r.date.to_string(),
                "master": r.master,
                "masterSwapped": r.master_swapped,
                "instruments": r.instruments,
                "rolled": r.rolled,
                "expiredDropped": r.dropped,
                "removedFromBook": r.removed,
                "summary": r.summary,
            })
        });
        let next = (m.next_at() > 0).then(|| ist_iso(m.next_at()));
        json!({
            "markets": markets,
            "marketStatusPackets": packets,
            "maintenance": {"runs": m.runs.get(), "nextRunAt": next, "lastRun": last},
        })
    }

    /// `/health`'s status alone (what callers without a key see) and its
    /// HTTP code: `ok`, `degraded` (token trouble), `down` (503).
    pub fn health_status(&self) -> (u16, &'static str) {
        let up = UpstreamStatus::of(&self.upstream).is_up();
        let token = self.token.status();
        let now = crate::token::unix_now();
        let troubled = token.last_error.is_some()
            || matches!(token.state(now), "expired" | "refused")
            || self.trading.trouble().is_some()
            || self.record.as_ref().is_some_and(|r| !r.healthy());
        match (up, troubled) {
            (false, _) => (503, "down"),
            (true, true) => (200, "degraded"),
            (true, false) => (200, "ok"),
        }
    }

    /// `/health` with its details (for callers with the read scope, or
    /// any caller where access control is off): 200 while an upstream
    /// connection is up, else 503.
    pub fn health(&self) -> (u16, String) {
        let (code, overall) = self.health_status();
        let status = UpstreamStatus::of(&self.upstream);
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
        let f = &self.fanout;
        let token = self.token.status();
        let now = crate::token::unix_now();
        let mut body = json!({
            "status": overall,
            "state": status.state,
            "detail": status.detail,
            "demo": self.demo,
            "uptimeSeconds": self.started.elapsed().as_secs(),
            "upstream": {
                "connectionsUp": self.upstream.connections_up(),
                "connections": connections,
                "lastDisconnect": last,
                "lastError": self.upstream.last_error(),
                "capacity": {
                    "instruments": f.upstream_held.get(),
                    "limit": f.upstream_capacity.get(),
                    "queued": f.upstream_queued.get(),
                },
                "depth": self.depth_health(),
            },
            "clients": f.clients.get(),
            "token": token.json(now),
            "trading": self.trading.json(),
            "record": self.record_json(),
            "listeners": self
                .listeners
                .iter()
                .map(|l| l.json(now as i64))
                .collect::<Vec<_>>(),
        });
        if self.insecure_no_auth {
            body["insecureNoAuth"] = json!(true);
            body["warning"] =
                json!("started with --insecure-no-auth: access control is off on every listener");
        }
        (code, body.to_string())
    }

    /// The recorder for `/health` and `/stats`: `null` when not recording.
    fn record_json(&self) -> Value {
        let Some(r) = &self.record else {
            return Value::Null;
        };
        json!({
            "state": if r.error().is_some() { "stopped" } else { "recording" },
            "file": r.file().map(|f| f.display().to_string()),
            "frames": r.frames(),
            "bytes": r.bytes(),
            "lostFrames": r.lost(),
            "error": r.error(),
        })
    }

    /// The 20-level depth connections for `/health`: open only while a
    /// client holds `depth20` (or `/dhan/twentydepth`).
    fn depth_health(&self) -> Value {
        let connections: Vec<Value> = self
            .depth
            .slot_states()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name() != "unused")
            .map(|(i, s)| json!({"slot": i, "state": s.name()}))
            .collect();
        let last = self
            .depth
            .last_disconnect()
            .map(|r| json!({"code": r.code(), "name": r.name(), "hint": r.hint()}));
        json!({
            "connectionsUp": self.depth.connections_up(),
            "connections": connections,
            "lastDisconnect": last,
            "lastError": self.depth.last_error(),
        })
    }

    /// `/api/history?symbol=NIFTY&interval=1m` (or `exchangeSegment=…&
    /// securityId=…`): today's bars of one instrument the relay holds,
    /// oldest first, the forming one last with `"partial": true`. 400 for
    /// a missing instrument or a bad interval, 404 for an unknown symbol
    /// (with suggestions) or an instrument the relay does not hold.
    pub fn history(&self, query: &str) -> (u16, String) {
        let error = |code: u16, m: String| (code, json!({ "error": m }).to_string());
        let interval = query_param(query, "interval").unwrap_or_else(|| "1m".into());
        let Some(minutes) = crate::history::query::interval_minutes(&interval) else {
            return error(
                400,
                format!(
                    "interval must be one of 1m, 5m, 15m (got '{}')",
                    interval.chars().take(20).collect::<String>()
                ),
            );
        };
        let view = self.view.load();
        let master = self.master.load();
        let symbol = query_param(query, "symbol").filter(|s| !s.trim().is_empty());
        let key = match (
            symbol,
            query_param(query, "exchangeSegment"),
            query_param(query, "securityId"),
        ) {
            (Some(name), _, _) => match view.watch_key(name.trim()) {
                Some(k) => k,
                None => match master.resolve(name.trim(), self.clock.today()) {
                    Ok(i) => i.key(),
                    Err(e) => return error(404, e.to_string()),
                },
            },
            (None, Some(seg), Some(id)) => {
                let Ok(seg) = seg.trim().parse::<Segment>() else {
                    return error(
                        400,
                        format!(
                            "unknown exchangeSegment '{}'",
                            seg.chars().take(20).collect::<String>()
                        ),
                    );
                };
                let Ok(id) = id.trim().parse::<u32>() else {
                    return error(400, "securityId must be a decimal number".into());
                };
                InstrumentKey::new(seg, id)
            }
            _ => return error(
                400,
                "missing instrument: give symbol=NIFTY, or exchangeSegment=NSE_EQ&securityId=2885"
                    .into(),
            ),
        };
        let board = self.history.board.load();
        let snapshot = self.snapshot.load();
        let symbol = symbol_of(&view, &master, key);
        let held = view.active.iter().any(|a| a.key == key);
        if !held && board.get(key).is_none() && snapshot.get(key).is_none() {
            return error(
                404,
                format!(
                    "not subscribed: the relay holds no data for {} {}{}; subscribe it on /ws first",
                    key.segment.name(),
                    key.security_id,
                    symbol.map(|s| format!(" ({s})")).unwrap_or_default()
                ),
            );
        }
        let bars = crate::history::query::bars_of(&board, key, snapshot.forming(key));
        let bars = crate::history::query::aggregate(&bars, minutes);
        (
            200,
            crate::history::query::body(key, symbol, &interval, &bars),
        )
    }

    /// `/api/watchlist`: the watchlist, in order.
    pub fn watchlist(&self) -> String {
        let view = self.view.load();
        let list: Vec<Value> = view
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

    /// `/api/v2/subscriptions/active?offset=0&limit=1000&segment=NSE_FNO&state=queued`:
    /// one page of upstream subscriptions, `count` of all that match.
    pub fn subscriptions(&self, query: &str) -> (u16, String) {
        let bad = |m: String| (400, json!({ "error": m }).to_string());
        let number = |name: &str, default: usize, max: usize| match query_param(query, name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(format!("{name} must be a whole number from 0 to {max}")),
            },
        };
        let offset = match number("offset", 0, usize::MAX) {
            Ok(n) => n,
            Err(e) => return bad(e),
        };
        let limit = match number("limit", DEFAULT_PAGE, MAX_PAGE) {
            Ok(n) => n,
            Err(e) => return bad(e),
        };
        let segment = match query_param(query, "segment") {
            None => None,
            Some(s) => match s.parse::<Segment>() {
                Ok(seg) => Some(seg),
                Err(_) => return bad(format!("unknown segment '{s}'")),
            },
        };
        let queued = match query_param(query, "state").as_deref() {
            None => None,
            Some("active") => Some(false),
            Some("queued") => Some(true),
            Some(_) => return bad("state must be active or queued".into()),
        };
        let view = self.view.load();
        let master = self.master.load();
        let matching = view.active.iter().filter(|a| {
            segment.map_or(true, |s| a.key.segment == s) && queued.map_or(true, |q| a.queued == q)
        });
        let count = matching.clone().count();
        let list: Vec<Value> = matching
            .skip(offset)
            .take(limit)
            .map(|a| {
                json!({
                    "exchangeSegment": a.key.segment.name(),
                    "securityId": a.key.security_id.to_string(),
                    "symbol": symbol_of(&view, &master, a.key),
                    "mode": a.mode.name(),
                    "clients": a.clients,
                    "state": if a.queued { "queued" } else { "active" },
                })
            })
            .collect();
        let f = &self.fanout;
        let body = json!({
            "count": count,
            "offset": offset,
            "limit": limit,
            "returned": list.len(),
            "capacity": {
                "instruments": f.upstream_held.get(),
                "limit": f.upstream_capacity.get(),
                "queued": f.upstream_queued.get(),
            },
            "subscriptions": list,
        });
        (200, body.to_string())
    }

    /// Every counter of every thread, sampled now.
    fn counters(&self) -> Vec<Sample> {
        let mut v: Vec<Sample> = (self.upstream.counters().iter())
            .chain(self.book.counters().iter())
            .chain(self.fanout.all().iter())
            .chain(std::iter::once(&&self.maintenance.runs))
            .chain(self.trading.stats().counters().iter())
            .chain([&self.chain_stats.recentres, &self.chain_stats.renders].iter())
            .chain(self.history.stats.counters().iter())
            .map(|c| c.sample())
            .collect();
        v.push((
            "upstream_connections_up",
            "Upstream connections up now",
            self.upstream.connections_up() as u64,
        ));
        if let Some(r) = &self.record {
            v.push((
                "record_frames_total",
                "Upstream frames written to the recording",
                r.frames(),
            ));
            v.push((
                "record_bytes_total",
                "Bytes written to the recording",
                r.bytes(),
            ));
            v.push((
                "record_lost_frames_total",
                "Upstream frames the recorder could not keep (ring full or write failed)",
                r.lost(),
            ));
            v.push((
                "record_errors",
                "1 when the recorder stopped on a write error",
                u64::from(r.error().is_some()),
            ));
        }
        let token = self.token.status();
        v.push((
            "token_renewals_total",
            "DhanHQ access tokens renewed (RenewToken or TOTP generation)",
            token.renewals,
        ));
        v.push((
            "token_renew_failures_total",
            "Failed token renewal attempts",
            token.renew_failures,
        ));
        v
    }

    /// `/metrics` in Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let u = &self.upstream;
        render_prometheus(&mut out, &self.counters());
        labelled(
            &mut out,
            "upstream_packets_total",
            "Packets decoded, by kind",
            "kind",
            PACKET_KINDS
                .iter()
                .copied()
                .zip(u.packets.iter().map(UpstreamStats::get)),
        );
        labelled(
            &mut out,
            "upstream_decode_errors_total",
            "Bad packets, by kind",
            "kind",
            WireError::KINDS
                .iter()
                .copied()
                .zip(u.decode_errors.iter().map(UpstreamStats::get)),
        );
        labelled(
            &mut out,
            "upstream_disconnect_reasons_total",
            "DhanHQ disconnect packets, by reason",
            "reason",
            DISCONNECT_REASONS
                .iter()
                .map(|r| r.name())
                .zip(u.disconnect_reasons.iter().map(UpstreamStats::get)),
        );
        if let Some(left) = self.token.status().seconds_left(crate::token::unix_now()) {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "# HELP dhan_token_expiry_seconds Seconds until the DhanHQ access token expires\n\
                     # TYPE dhan_token_expiry_seconds gauge\ndhan_token_expiry_seconds {left}\n"
                ),
            );
        }
        for (name, help, p) in self.latencies() {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!("# HELP dhan_relay_{name} {help}\n# TYPE dhan_relay_{name} summary\n"),
            );
            for (q, us) in [
                ("0.5", p.p50_us),
                ("0.9", p.p90_us),
                ("0.99", p.p99_us),
                ("0.999", p.p999_us),
                ("1", p.max_us),
            ] {
                let _ = std::fmt::Write::write_fmt(
                    &mut out,
                    format_args!("dhan_relay_{name}{{quantile=\"{q}\"}} {}\n", us / 1e6),
                );
            }
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!("dhan_relay_{name}_count {}\n", p.count),
            );
        }
        out
    }

    fn latencies(&self) -> [(&'static str, &'static str, Percentiles); 3] {
        [
            (
                "receive_to_book_seconds",
                "Network receive to book apply",
                self.receive_to_book.percentiles(),
            ),
            (
                "tick_to_wire_seconds",
                "Network receive to client socket write",
                self.tick_to_wire.percentiles(),
            ),
            (
                "client_message_seconds",
                "Fanout-thread time per client message",
                self.client_message.percentiles(),
            ),
        ]
    }

    /// `/stats`: latency percentiles and counters as JSON.
    pub fn stats(&self) -> String {
        let counters: Map<String, Value> = self
            .counters()
            .into_iter()
            .map(|(name, _, v)| (name.to_string(), Value::from(v)))
            .collect();
        let [book, wire, message] = self.latencies();
        json!({
            "uptimeSeconds": self.started.elapsed().as_secs_f64(),
            "threads": self.threads,
            "fanoutShards": self.shard_load.counts(),
            "status": UpstreamStatus::of(&self.upstream).detail,
            "token": self.token.status().json(crate::token::unix_now()),
            "trading": self.trading.json(),
            "record": self.record_json(),
            "day": self.day(),
            "latency": {
                "receiveToBook": book.2,
                "tickToWire": wire.2,
                "clientMessage": message.2,
            },
            "counters": counters,
            "depth": {
                "connectionsUp": self.depth.connections_up(),
                "counters": self
                    .depth
                    .counters()
                    .iter()
                    .map(|c| (c.name.to_string(), Value::from(c.get())))
                    .collect::<Map<String, Value>>(),
            },
        })
        .to_string()
    }
}

/// The symbol shown for `key`: its watchlist name, else the master's.
fn symbol_of<'a>(view: &'a View, master: &'a Master, key: InstrumentKey) -> Option<&'a str> {
    view.watchlist
        .iter()
        .find(|w| w.key == key)
        .map(|w| w.symbol.as_str())
        .or_else(|| master.get(key).map(|i| i.symbol()))
}

/// One labelled counter family in Prometheus text format.
fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = std::fmt::Write::write_fmt(
        out,
        format_args!("# HELP dhan_relay_{name} {help}\n# TYPE dhan_relay_{name} counter\n"),
    );
    for (l, v) in values {
        let _ = std::fmt::Write::write_fmt(
            out,
            format_args!("dhan_relay_{name}{{{label}=\"{l}\"}} {v}\n"),
        );
    }
}

const INDEX: &str = "dhan-relay\n\n\
     GET  /prices                        watchlist prices (JSON)\n\
     GET  /health                        upstream state, capacity and token; 503 while no upstream connection is up\n\
     GET  /stats                         latency percentiles, counters and token (JSON)\n\
     GET  /metrics                       Prometheus text\n\
     GET  /api/v2/subscriptions/active   upstream subscriptions (?offset=&limit=&segment=&state=active|queued)\n\
     GET  /api/watchlist                 the configured watchlist\n\
     GET  /api/instruments?q=relia&limit=20  instrument search (exact, prefix, substring)\n\
     WS   /ws (or /)                     subscribe/unsubscribe protocol (JSON)\n\
     WS   /ws/prices                     the /prices object every second\n\
     WS   /dhan?version=2&token=..       DhanHQ's Live Market Feed v2 (its JSON requests, its binary packets)\n\
     WS   /dhan/twentydepth?token=..     DhanHQ's 20-level depth feed (RequestCode 23/24, its binary depth packets)\n\
     POST /api/admin/credentials         {\"clientId\",\"accessToken\"}: new token, no restart (admin scope; loopback only without keys)\n\
     GET  /api/history?symbol=NIFTY&interval=1m  today's 1-minute bars (or 5m, 15m; or exchangeSegment=&securityId=)\n\
     GET  /api/chains                    option chains running (configured [[chains]] and clients' subscribe_chain)\n\
     GET  /api/chains/NIFTY?expiry=nearest  a chain: strikes around ATM, CE/PE prices, OI, IV and greeks\n\
     GET  /api/trading                   trading on or off, paper or live, the guards, whether you may trade\n\
     GET  /api/funds                     available balance, used margin, … (trade scope)\n\
     GET  /api/orders                    the day's orders (trade scope)\n\
     POST /api/orders                    {symbol | exchangeSegment+securityId, side, quantity, orderType, price, triggerPrice, productType, validity, correlationId}\n\
     PUT  /api/orders/{id}               {quantity, orderType, price, triggerPrice, validity}: modify an open order\n\
     DELETE /api/orders/{id}             cancel an open order\n\
     GET  /api/positions                 the day's positions with P&L (trade scope)\n\
     POST /api/admin/trading             {\"enabled\": false|true}: the kill switch (admin scope; loopback only without keys)\n\
     POST /api/admin/cancel-all          cancel every open order (admin scope; loopback only without keys)\n\
     GET  /api/session                   whether this listener asks for keys, and whether you are signed in\n\
     POST /api/session                   Authorization: Bearer KEY (or {\"key\"}): a session cookie for browsers\n\
     DELETE /api/session                 sign out\n\n\
     With access control on: Authorization: Bearer KEY, ?key=KEY on a WebSocket URL, or the session cookie.\n";

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
/// A price as JSON, in its shortest decimal form (`1444.65`, not the
/// f32's `1444.6500244140625`); `null` when there is none.
pub fn price_value(p: Option<f32>) -> Value {
    let mut f = crate::price::PriceFormatter::new();
    p.and_then(|p| f.format(p).ok().and_then(|s| serde_json::from_str(s).ok()))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{InstrumentState, Snapshot};
    use crate::domain::Mode;
    use crate::token::TokenStatus;
    use crate::wire::feed::PrevClose;

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

    fn key(seg: Segment, id: u32) -> InstrumentKey {
        InstrumentKey::new(seg, id)
    }

    fn state(active: Vec<ActiveSub>) -> RestState {
        let nifty = key(Segment::IdxI, 13);
        let rel = key(Segment::NseEq, 2885);
        let mut s = InstrumentState::new(nifty);
        s.ltp = Some(25760.85);
        s.ltt = 1;
        s.prev_close = Some(PrevClose {
            prev_close: 25700.0,
            prev_oi: 0,
        });
        let snapshot = Snapshot::from_states(0, vec![s, InstrumentState::new(rel)]);
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
        RestState {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            view: Arc::new(ArcSwap::from_pointee(View { watchlist, active })),
            master: Arc::new(ArcSwap::from_pointee(Master::sample())),
            upstream: Arc::default(),
            depth: Arc::default(),
            book: Arc::default(),
            fanout: Arc::default(),
            receive_to_book: SharedLatency::default(),
            tick_to_wire: SharedLatency::default(),
            client_message: SharedLatency::default(),
            started: Instant::now(),
            demo: true,
            threads: "compact",
            shard_load: super::super::shard::Load::new(1),
            token: KeeperHandle::detached(TokenStatus {
                source: "demo".into(),
                expires_at: Some(crate::token::unix_now() + 7200),
                ..TokenStatus::default()
            }),
            maintenance: Arc::default(),
            calendar: Calendar::default(),
            // A Thursday at 11:00 India time: every market is open.
            clock: WallClock::fixed(crate::instrument::date::ist_instant(
                crate::instrument::Date::from_ymd(2026, 12, 3).unwrap(),
                11,
                0,
            )),
            listeners: vec![ListenerStatus {
                addr: "127.0.0.1:8000".parse().unwrap(),
                tls: None,
                auth: false,
            }],
            insecure_no_auth: false,
            trading: crate::trading::broker::TradingDoor::off().monitor(),
            chains: Arc::default(),
            chain_stats: Arc::default(),
            record: None,
            history: Default::default(),
        }
    }

    #[test]
    fn bodies_keep_the_seed_shape() {
        let nifty = key(Segment::IdxI, 13);
        let rest = state(vec![ActiveSub {
            key: nifty,
            mode: Mode::Quote,
            clients: 2,
            queued: false,
        }]);
        let v: Value = serde_json::from_str(&rest.prices()).unwrap();
        assert_eq!(v["NIFTY"], json!(25760.85));
        assert_eq!(v["RELIANCE"], Value::Null, "no price yet");
        assert_eq!(v["status"], "connecting");
        assert_eq!(v["timestamp"].as_str().unwrap().len(), 26);
        assert_eq!(
            v["instruments"],
            json!([{"symbol": "NIFTY", "exchangeSegment": "IDX_I", "securityId": "13",
                    "ltp": 25760.85, "ltt": 1, "prevClose": 25700.0, "market": "open"}])
        );
        assert_eq!(v["markets"]["MCX"], "open");
        let (code, health) = rest.health();
        assert_eq!(code, 503);
        let h: Value = serde_json::from_str(&health).unwrap();
        assert_eq!(
            (h["status"].clone(), h["state"].clone(), h["demo"].clone()),
            (json!("down"), json!("connecting"), json!(true))
        );
        assert!(h["upstream"]["capacity"]["limit"].is_u64());
        let w: Value = serde_json::from_str(&rest.watchlist()).unwrap();
        assert_eq!(
            w["watchlist"][1],
            json!({"symbol": "RELIANCE", "exchangeSegment": "NSE_EQ", "securityId": "2885"})
        );
        let metrics = rest.metrics();
        assert!(metrics
            .contains("# TYPE dhan_relay_fanout_clients gauge\ndhan_relay_fanout_clients 0\n"));
        assert!(metrics.contains("dhan_relay_upstream_decode_errors_total{kind=\"too_short\"} 0"));
        assert!(metrics.contains("dhan_relay_tick_to_wire_seconds{quantile=\"0.99\"} 0"));
        assert!(metrics.contains("dhan_relay_client_message_seconds_count 0"));
        assert!(metrics.contains("# TYPE dhan_relay_upstream_capacity_instruments gauge"));
        assert!(metrics.contains(
            "dhan_relay_upstream_disconnect_reasons_total{reason=\"access_token_expired\"} 0"
        ));
        assert_eq!(
            metrics
                .matches("# TYPE dhan_relay_upstream_connections_up ")
                .count(),
            1
        );
        let stats: Value = serde_json::from_str(&rest.stats()).unwrap();
        assert_eq!(stats["latency"]["tickToWire"]["count"], 0);
        assert_eq!(stats["counters"]["upstream_connects_total"], 0);
        assert_eq!(stats["counters"]["book_ticks_total"], 0);
        assert!(rest.route("/nope", "").is_none());
        assert_eq!(rest.route("/", "").unwrap().status, 200, "the dashboard");
    }

    #[test]
    fn history_answers_bars_and_says_what_is_wrong() {
        use crate::history::{Bar, Board, Series};
        const T0: u32 = 1_796_269_500;
        let mut rest = state(Vec::new());
        let nifty = key(Segment::IdxI, 13);
        let series = Series::with_capacity(8);
        for i in 0..6u32 {
            series.push(Bar {
                t: T0 + i * 60,
                o: 100.0 + i as f32,
                h: 101.0 + i as f32,
                l: 99.0,
                c: 100.5,
                oi: 0,
                v: 0,
            });
        }
        rest.history = crate::history::HistoryHandle::default();
        rest.history.board.store(Arc::new(Board::new(
            Some(crate::history::ist_day(T0)),
            std::collections::HashMap::from([(nifty, Arc::new(series))]),
        )));
        let get = |q: &str| -> (u16, Value) {
            let (code, body) = rest.history(q);
            (code, serde_json::from_str(&body).unwrap())
        };
        let (code, v) = get("symbol=NIFTY&interval=1m");
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            (
                v["symbol"].clone(),
                v["exchangeSegment"].clone(),
                v["securityId"].clone(),
                v["interval"].clone()
            ),
            (json!("NIFTY"), json!("IDX_I"), json!("13"), json!("1m"))
        );
        assert_eq!(v["bars"].as_array().unwrap().len(), 6);
        assert_eq!(
            v["bars"][0],
            json!({"t": T0, "o": 100.0, "h": 101.0, "l": 99.0, "c": 100.5, "v": 0, "oi": 0})
        );
        let (_, v) = get("exchangeSegment=IDX_I&securityId=13&interval=5m");
        assert_eq!(v["bars"].as_array().unwrap().len(), 2);
        assert_eq!(v["bars"][0]["h"], json!(105.0));
        assert_eq!(v["bars"][1]["t"], json!(T0 + 300));
        let (code, v) = get("symbol=NIFTY&interval=1h");
        assert_eq!(code, 400);
        assert!(v["error"].as_str().unwrap().contains("1m, 5m, 15m"), "{v}");
        let (code, v) = get("interval=1m");
        assert_eq!(code, 400);
        assert!(v["error"].as_str().unwrap().contains("missing instrument"));
        let (code, v) = get("symbol=RELIANCX");
        assert_eq!(code, 404);
        assert!(
            v["error"].as_str().unwrap().contains("RELIANCE"),
            "suggested: {v}"
        );
        // Known to the master, not held by the relay.
        let (code, v) = get("exchangeSegment=NSE_EQ&securityId=1333");
        assert_eq!(code, 404);
        assert!(
            v["error"].as_str().unwrap().starts_with("not subscribed"),
            "{v}"
        );
        // In the book (watchlist) without bars yet: an empty list.
        let (code, v) = get("symbol=RELIANCE");
        assert_eq!((code, v["bars"].as_array().unwrap().len()), (200, 0));
        let (code, _) = get("exchangeSegment=NOPE&securityId=1");
        assert_eq!(code, 400);
        assert_eq!(
            rest.route("/api/history", "symbol=NIFTY").unwrap().status,
            200
        );
    }

    #[test]
    fn subscriptions_are_paged_and_filtered() {
        // Regression: 30,000 subscriptions came back as one 2.85 MB body.
        let active: Vec<ActiveSub> = (0..2_500u32)
            .map(|i| ActiveSub {
                key: key(
                    if i % 2 == 0 {
                        Segment::NseFno
                    } else {
                        Segment::NseEq
                    },
                    i,
                ),
                mode: Mode::Ticker,
                clients: 1,
                queued: i >= 2_400,
            })
            .collect();
        let rest = state(active);
        let page = |q: &str| -> Value {
            let (code, body) = rest.subscriptions(q);
            assert_eq!(code, 200, "{q}: {body}");
            serde_json::from_str(&body).unwrap()
        };
        let v = page("");
        assert_eq!(
            (v["count"].as_u64(), v["returned"].as_u64()),
            (Some(2_500), Some(1_000))
        );
        assert_eq!(v["limit"], 1_000);
        let v = page("offset=2400&limit=200");
        assert_eq!(v["returned"], 100);
        assert_eq!(v["subscriptions"][0]["state"], "queued");
        let v = page("segment=NSE_FNO&state=active");
        assert_eq!(v["count"], 1_200);
        assert!(v["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["exchangeSegment"] == "NSE_FNO" && s["state"] == "active"));
        assert_eq!(page("state=queued")["count"], 100);
        for bad in [
            "limit=10001",
            "limit=x",
            "offset=-1",
            "segment=XYZ",
            "state=maybe",
        ] {
            let (code, body) = rest.subscriptions(bad);
            assert_eq!(code, 400, "{bad}");
            assert!(body.contains("error"), "{bad}");
        }
    }
}
