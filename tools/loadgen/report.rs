//! The human table, the JSON document and the targets.

use serde_json::{json, Value};

use crate::cli::{Plan, Preset};
use crate::engine::counter;
use crate::run::{Mode, PhaseResult};

/// Latency percentiles in µs: p50, p90, p99, p99.9, max.
pub fn percentiles(r: &PhaseResult) -> Option<[f64; 5]> {
    let h = &r.latency;
    if h.is_empty() {
        return None;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Some([
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
    ])
}

/// Window messages delivered per second (span = window + drain).
pub fn msgs_per_sec(plan: &Plan, r: &PhaseResult) -> f64 {
    r.counts.delivered as f64 / plan.duration.as_secs_f64()
}

/// Engine CPU µs per delivered message.
pub fn cpu_us_per_msg(r: &PhaseResult) -> Option<f64> {
    let cpu = r.engine.as_ref()?.cpu_s?;
    (r.counts.delivered > 0).then(|| cpu * 1e6 / r.counts.delivered as f64)
}

fn stat_delta(r: &PhaseResult, name: &str) -> Option<u64> {
    let e = r.engine.as_ref()?;
    Some(counter(&e.stats_after, name)?.saturating_sub(counter(&e.stats_before, name)?))
}

fn tick_to_wire(r: &PhaseResult, q: &str) -> Option<f64> {
    r.engine
        .as_ref()?
        .stats_after
        .as_ref()?
        .get("latency")?
        .get("tickToWire")?
        .get(q)?
        .as_f64()
}

fn mb(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// One row per figure, one column per phase.
pub fn table(plan: &Plan, results: &[PhaseResult]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&PhaseResult) -> String| {
        rows.push((name.to_string(), results.iter().map(f).collect()));
    };
    row("clients ready / planned", &|r| {
        format!("{} / {}", r.counts.ready, r.counts.clients)
    });
    row("setup s", &|r| format!("{:.1}", r.setup_s));
    for (i, name) in ["p50", "p90", "p99", "p99.9", "max"].iter().enumerate() {
        row(&format!("latency {name} µs"), &|r| {
            percentiles(r).map_or("-".into(), |p| format!("{:.0}", p[i]))
        });
    }
    row("expected deliveries", &|r| r.counts.expected.to_string());
    row("delivered", &|r| r.counts.delivered.to_string());
    row("missing", &|r| r.counts.missing.to_string());
    row("  on clients keeping up", &|r| {
        r.counts.missing_keeping_up.to_string()
    });
    row("conflated (tool)", &|r| r.counts.conflated.to_string());
    row("conflated (engine /stats)", &|r| {
        stat_delta(r, "fanout_conflated_total").map_or("-".into(), |v| v.to_string())
    });
    row("undrained (still behind at stop)", &|r| {
        r.counts.undrained.to_string()
    });
    row("duplicated", &|r| r.counts.duplicated.to_string());
    row("out of order", &|r| r.counts.out_of_order.to_string());
    row(
        &format!("clients behind (≥{} ms)", plan.behind.as_millis()),
        &|r| r.counts.behind.to_string(),
    );
    row("clients closed by server", &|r| r.counts.closed.to_string());
    row("other anomalies", &|r| {
        let c = &r.counts;
        (c.foreign + c.unsolicited + c.unexpected + c.unstamped + c.malformed + c.errors)
            .to_string()
    });
    row("client messages/s", &|r| {
        format!("{:.0}", msgs_per_sec(plan, r))
    });
    row("engine CPU % (1 core = 100)", &|r| {
        opt(
            r.engine
                .as_ref()
                .and_then(|e| e.cpu_s)
                .map(|c| c * 100.0 / r.span_s),
            1,
        )
    });
    row("engine CPU µs / delivered msg", &|r| {
        opt(cpu_us_per_msg(r), 3)
    });
    row("engine threads CPU %", &|r| match &r.engine {
        Some(e) if !e.threads_cpu_s.is_empty() => e
            .threads_cpu_s
            .iter()
            .map(|(name, s)| {
                format!(
                    "{} {:.0}",
                    name.trim_start_matches("dhan-"),
                    s * 100.0 / r.span_s
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".into(),
    });
    row("engine RSS MB idle / ready / peak", &|r| match &r.engine {
        Some(e) => format!(
            "{} / {} / {}",
            mb(e.rss_idle),
            mb(e.rss_ready),
            mb(e.rss_peak)
        ),
        None => "-".into(),
    });
    row("engine RSS KB per client", &|r| match &r.engine {
        Some(e) => match (e.rss_idle, e.rss_ready) {
            (Some(a), Some(b)) if r.counts.ready > 0 => format!(
                "{:.1}",
                b.saturating_sub(a) as f64 / 1024.0 / r.counts.ready as f64
            ),
            _ => "-".into(),
        },
        None => "-".into(),
    });
    row("engine tick→wire p50 / p99 µs", &|r| match (
        tick_to_wire(r, "p50_us"),
        tick_to_wire(r, "p99_us"),
    ) {
        (Some(a), Some(b)) => format!("{a:.0} / {b:.0}"),
        _ => "-".into(),
    });
    row("engine slow-client closes", &|r| {
        stat_delta(r, "fanout_slow_closes_total").map_or("-".into(), |v| v.to_string())
    });
    row("exchange CPU %", &|r| {
        format!("{:.1}", r.exchange.cpu_s * 100.0 / r.span_s)
    });
    row("exchange CPU µs / delivered msg", &|r| {
        if r.counts.delivered == 0 {
            return "-".into();
        }
        format!("{:.3}", r.exchange.cpu_s * 1e6 / r.counts.delivered as f64)
    });
    row("exchange packets / frames", &|r| {
        format!("{} / {}", r.exchange.packets, r.exchange.frames)
    });
    row("exchange max lag ms / would-block", &|r| {
        format!(
            "{:.2} / {}",
            r.exchange.max_lag_ns as f64 / 1e6,
            r.exchange.would_block
        )
    });
    row("client threads CPU %", &|r| {
        format!("{:.1}", r.clients_cpu_s * 100.0 / r.span_s)
    });
    row("tool process CPU %", &|r| {
        format!("{:.1}", r.tool_cpu_s * 100.0 / r.span_s)
    });
    row("other processes CPU %", &|r| {
        opt(
            r.machine_cpu_s.map(|m| {
                let ours = r.tool_cpu_s + r.engine.as_ref().and_then(|e| e.cpu_s).unwrap_or(0.0);
                (m - ours).max(0.0) * 100.0 / r.span_s
            }),
            1,
        )
    });
    row("span s (window + drain)", &|r| {
        format!("{:.2} (drain {:.2})", r.span_s, r.drain_s)
    });

    let width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0)
        + 2;
    let col: Vec<usize> = (0..results.len())
        .map(|i| {
            rows.iter()
                .map(|(_, v)| v[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(10)
                + 3
        })
        .collect();
    let mut out = String::new();
    out.push_str(&format!("{:width$}", ""));
    for (r, w) in results.iter().zip(&col) {
        out.push_str(&format!("{:>w$}", r.mode.name()));
    }
    out.push('\n');
    for (name, values) in rows {
        let pad = width - name.chars().count();
        out.push_str(&name);
        out.push_str(&" ".repeat(pad));
        for (v, w) in values.iter().zip(&col) {
            out.push_str(&format!("{v:>w$}"));
        }
        out.push('\n');
    }
    for r in results {
        for w in &r.warnings {
            out.push_str(&format!("warning ({}): {w}\n", r.mode.name()));
        }
        for (why, n) in &r.endings {
            out.push_str(&format!("{} clients ended ({}): {why}\n", n, r.mode.name()));
        }
        if let Some(e) = &r.first_error {
            out.push_str(&format!(
                "first error from the server ({}): {e}\n",
                r.mode.name()
            ));
        }
        let c = &r.counts;
        let anomalies = [
            ("foreign", c.foreign),
            ("unsolicited", c.unsolicited),
            ("unexpected", c.unexpected),
            ("unstamped", c.unstamped),
            ("malformed", c.malformed),
            ("errors", c.errors),
        ];
        if anomalies.iter().any(|(_, n)| *n > 0) {
            let list: Vec<String> = anomalies
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            out.push_str(&format!(
                "anomalies ({}): {}\n",
                r.mode.name(),
                list.join(", ")
            ));
        }
        if let Some(log) = r.engine.as_ref().and_then(|e| e.log.as_ref()) {
            out.push_str(&format!("engine log: {log}\n"));
        }
    }
    out
}

/// One target of issue 7 and whether the run met it.
#[derive(Debug)]
pub struct Target {
    /// What is asked.
    pub what: String,
    /// What was measured.
    pub measured: String,
    /// Met?
    pub met: bool,
}

/// The targets for the preset, when the run has the preset's shape.
pub fn targets(plan: &Plan, results: &[PhaseResult]) -> Vec<Target> {
    let shape = match plan.preset {
        Preset::Fanout => (100, 20, 500),
        Preset::Wide => (1_000, 50, 2_000),
        Preset::Idle10k => (10_000, 1, 1_000),
        Preset::Burst => (100, 20, 500),
        Preset::Floor => return Vec::new(),
    };
    if (plan.clients, plan.subs, plan.instruments) != shape {
        return Vec::new();
    }
    let Some(engine) = results.iter().find(|r| r.mode == Mode::Engine) else {
        return Vec::new();
    };
    let floor = results.iter().find(|r| r.mode == Mode::Floor);
    let p99 = percentiles(engine).map(|p| p[2]);
    let mut t = Vec::new();
    let mut zero = |what: &str, n: u64| {
        t.push(Target {
            what: what.into(),
            measured: n.to_string(),
            met: n == 0,
        })
    };
    match plan.preset {
        Preset::Wide => zero(
            "zero missing for clients that keep up",
            engine.counts.missing_keeping_up,
        ),
        _ => zero("zero missing", engine.counts.missing),
    }
    let p99_below = |limit_ms: f64| Target {
        what: format!("p99 < {limit_ms} ms"),
        measured: opt(p99.map(|v| v / 1000.0), 3) + " ms",
        met: p99.is_some_and(|v| v < limit_ms * 1000.0),
    };
    match plan.preset {
        Preset::Fanout if plan.rate == 5_000 => {
            let floor_p99 = floor.and_then(percentiles).map(|p| p[2]);
            // Only comparable with a floor measured in the same run.
            if floor.is_some() {
                t.push(Target {
                    what: "p99 ≤ 1.5 × floor p99".into(),
                    measured: format!(
                        "{} µs vs 1.5 × {} µs = {} µs",
                        opt(p99, 0),
                        opt(floor_p99, 0),
                        opt(floor_p99.map(|f| f * 1.5), 0)
                    ),
                    met: matches!((p99, floor_p99), (Some(a), Some(b)) if a <= 1.5 * b),
                });
            }
            let cpu = cpu_us_per_msg(engine);
            t.push(Target {
                what: "engine CPU ≤ 1 µs per delivered message".into(),
                measured: opt(cpu, 3) + " µs",
                met: cpu.is_some_and(|c| c <= 1.0),
            });
        }
        Preset::Fanout | Preset::Wide => t.push(p99_below(5.0)),
        Preset::Idle10k => {
            t.push(Target {
                what: "10,000 clients held".into(),
                measured: format!(
                    "{} ready, {} closed",
                    engine.counts.ready, engine.counts.closed
                ),
                met: engine.counts.ready == 10_000 && engine.counts.closed == 0,
            });
            let rss = engine.engine.as_ref().and_then(|e| e.rss_peak);
            t.push(Target {
                what: "engine RSS < 200 MB".into(),
                measured: mb(rss) + " MB peak",
                met: rss.is_some_and(|r| r < 200 << 20),
            });
            t.push(p99_below(10.0));
        }
        Preset::Burst => t.push(Target {
            what: "conflation only on clients that fell behind (counted)".into(),
            measured: format!(
                "{} conflated on {} behind clients; engine says {}",
                engine.counts.conflated,
                engine.counts.behind,
                stat_delta(engine, "fanout_conflated_total").map_or("-".into(), |v| v.to_string())
            ),
            met: engine.counts.conflated == 0 || engine.counts.behind > 0,
        }),
        _ => {}
    }
    t
}

/// The targets as text.
pub fn targets_text(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        out.push_str(&format!(
            "{}  {:<48} {}\n",
            if t.met { "PASS" } else { "FAIL" },
            t.what,
            t.measured
        ));
    }
    out
}

/// One phase as JSON (an element of `runs`).
pub fn run_json(plan: &Plan, r: &PhaseResult) -> Value {
    let c = &r.counts;
    let lat = percentiles(r).map(|p| {
        json!({"count": r.latency.len(), "p50_us": p[0], "p90_us": p[1], "p99_us": p[2], "p999_us": p[3], "max_us": p[4]})
    });
    let engine = r.engine.as_ref().map(|e| {
        json!({
            "pid": e.pid,
            "cpu_s": e.cpu_s,
            "cpu_user_s": e.cpu_user_s,
            "threads_cpu_s": e.threads_cpu_s.iter().map(|(n, s)| json!({"thread": n, "cpu_s": s})).collect::<Vec<_>>(),
            "cpu_sched_s": e.cpu_sched_s,
            "cpu_percent": e.cpu_s.map(|c| c * 100.0 / r.span_s),
            "cpu_us_per_delivered_message": cpu_us_per_msg(r),
            "rss_idle_bytes": e.rss_idle,
            "rss_ready_bytes": e.rss_ready,
            "rss_peak_bytes": e.rss_peak,
            "stats_before": e.stats_before,
            "stats_after": e.stats_after,
            "conflated_total_delta": stat_delta(r, "fanout_conflated_total"),
            "log": e.log,
        })
    });
    json!({
        "mode": r.mode.name(),
        "latency": lat,
        "counts": {
            "clients": c.clients, "ready": c.ready, "failed": c.failed, "closed": c.closed,
            "behind": c.behind,
            "expected": c.expected, "delivered": c.delivered, "missing": c.missing,
            "missing_keeping_up": c.missing_keeping_up, "conflated": c.conflated,
            "undrained": c.undrained,
            "duplicated": c.duplicated, "out_of_order": c.out_of_order,
            "warmup_messages": c.warmup_messages, "foreign": c.foreign,
            "unsolicited": c.unsolicited, "unexpected": c.unexpected,
            "unstamped": c.unstamped, "malformed": c.malformed, "errors": c.errors,
            "other": c.other, "messages": c.messages, "bytes": c.bytes,
        },
        "client_messages_per_sec": msgs_per_sec(plan, r),
        "setup_s": r.setup_s,
        "span_s": r.span_s,
        "drain_s": r.drain_s,
        "machine_cpu_s": r.machine_cpu_s,
        "cpus_online": crate::sys::cpus_online(),
        "tool": {
            "process_cpu_s": r.tool_cpu_s,
            "client_threads_cpu_s": r.clients_cpu_s,
            "exchange_cpu_s": r.exchange.cpu_s,
        },
        "exchange": {
            "ticks": r.exchange.ticks, "packets": r.exchange.packets,
            "frames": r.exchange.frames, "would_block": r.exchange.would_block,
            "max_lag_ms": r.exchange.max_lag_ns as f64 / 1e6,
            "connections": r.exchange.conns, "refused": r.exchange.refused,
            "bad_requests": r.exchange.bad_requests,
        },
        "engine": engine,
        "endings": r.endings,
        "first_error": r.first_error,
        "warnings": r.warnings,
    })
}

/// The run's configuration as JSON.
pub fn config_json(plan: &Plan) -> Value {
    json!({
        "clients": plan.clients, "subs": plan.subs, "instruments": plan.instruments,
        "rate": plan.rate, "warmup_rate": plan.warmup_rate,
        "duration_s": plan.duration.as_secs_f64(), "warmup_s": plan.warmup.as_secs_f64(),
        "seed": plan.seed, "client_threads": plan.client_threads,
        "frame_us": plan.frame_period.as_micros() as u64,
        "behind_ms": plan.behind.as_millis() as u64,
        "pin_engine": plan.pin_engine, "pin_tool": plan.pin_tool,
        "engine_args": plan.engine_args,
        "client_queue_bytes": plan.client_queue_bytes,
        "slow_clients": plan.slow_clients,
        "slow_read_bytes": plan.slow_read_bytes,
        "slow_every_ms": plan.slow_every.as_millis() as u64,
        "quiet_below": plan.quiet_below,
        "compare_rounds": plan.compare,
    })
}

/// The whole run as JSON.
pub fn json(plan: &Plan, results: &[PhaseResult], targets: &[Target]) -> Value {
    let runs: Vec<Value> = results.iter().map(|r| run_json(plan, r)).collect();
    json!({
        "preset": plan.preset.name(),
        "protocol": plan.protocol.name(),
        "config": config_json(plan),
        "runs": runs,
        "targets": targets.iter().map(|t| json!({"what": t.what, "measured": t.measured, "met": t.met})).collect::<Vec<_>>(),
    })
}
