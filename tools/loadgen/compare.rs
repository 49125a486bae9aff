//! `--compare N`: the floor and the engine measured alternately in one run —
//! floor, engine, floor, engine, … N rounds, each phase a full
//! [`run::run_phase`] (setup, warmup, window, drain; the engine started
//! afresh) — then the engine ÷ floor latency ratios per round, their median
//! over the rounds, and the quietest round.
//!
//! Why alternate: on a shared machine the other processes' load changes from
//! minute to minute; measuring the two paths in turn lets that noise hit both
//! alike, and a round's floor (the same clients on loopback, no relay) is its
//! noise gauge. The **quietest** round is the one whose floor p99 is lowest
//! (the earliest on a tie); the issue's targets are stated as "quietest of
//! three". The **median** ratio is over the rounds that have both figures.
//!
//! The engine's CPU per delivered message is split into user and kernel
//! time (`/proc/PID/stat` utime and stime; the kernel samples the split at
//! its tick, so it is rough over a short window, the sum is not). On
//! loopback the kernel part includes the clients' TCP receive work, done
//! inside the engine's `send`; the floor's exchange thread pays the same for
//! its sends, so its CPU per delivered message is printed beside it.

use serde_json::{json, Value};

use crate::cli::{Plan, Preset};
use crate::report;
use crate::run::{self, Mode, PhaseResult, Watchdog};

/// An exchange lag (ms) past which a floor is called saturated.
const SATURATED_LAG_MS: f64 = 10.0;

/// Column names of [`report::percentiles`].
const PCT_NAMES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// What the comparison keeps of one phase (the full phase goes to JSON).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseFigures {
    /// p50, p90, p99, p99.9, max in µs (None: nothing delivered).
    pub pct: Option<[f64; 5]>,
    /// Window messages delivered.
    pub delivered: u64,
    /// Expected deliveries.
    pub expected: u64,
    /// Missing (not explained by conflation).
    pub missing: u64,
    /// Conflated (the client was behind).
    pub conflated: u64,
    /// Engine user CPU µs per delivered message.
    pub engine_user_us: Option<f64>,
    /// Engine kernel CPU µs per delivered message.
    pub engine_kernel_us: Option<f64>,
    /// The exchange thread's CPU µs per delivered message.
    pub exchange_us: Option<f64>,
    /// The exchange's worst lag behind its schedule, ms (a floor that lags
    /// is saturated: the machine, not the path, sets its latency).
    pub exchange_lag_ms: f64,
    /// Other processes' CPU over the phase, % of one core.
    pub others_pct: Option<f64>,
    /// Setup warnings, the clients' endings and the server's first error.
    pub notes: Vec<String>,
}

impl PhaseFigures {
    /// The figures of a measured phase.
    pub fn of(r: &PhaseResult) -> PhaseFigures {
        let per_msg =
            |s: f64| (r.counts.delivered > 0).then(|| s * 1e6 / r.counts.delivered as f64);
        let (user, kernel) = match r.engine.as_ref() {
            Some(e) => match (e.cpu_s, e.cpu_user_s) {
                (Some(all), Some(user)) => (per_msg(user), per_msg((all - user).max(0.0))),
                _ => (None, None),
            },
            None => (None, None),
        };
        let mut notes = r.warnings.clone();
        notes.extend(
            r.endings
                .iter()
                .map(|(why, n)| format!("{n} clients ended: {why}")),
        );
        if let Some(e) = &r.first_error {
            notes.push(format!("first error from the server: {e}"));
        }
        PhaseFigures {
            pct: report::percentiles(r),
            delivered: r.counts.delivered,
            expected: r.counts.expected,
            missing: r.counts.missing,
            conflated: r.counts.conflated,
            engine_user_us: user,
            engine_kernel_us: kernel,
            exchange_us: per_msg(r.exchange.cpu_s),
            exchange_lag_ms: r.exchange.max_lag_ns as f64 / 1e6,
            others_pct: r.machine_cpu_s.map(|m| {
                let ours = r.tool_cpu_s + r.engine.as_ref().and_then(|e| e.cpu_s).unwrap_or(0.0);
                (m - ours).max(0.0) * 100.0 / r.span_s.max(1e-9)
            }),
            notes,
        }
    }

    /// One percentile (index into [`PCT_NAMES`]).
    fn p(&self, i: usize) -> Option<f64> {
        self.pct.map(|p| p[i])
    }
}

/// One round: the floor, then the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Clients straight on the exchange.
    pub floor: PhaseFigures,
    /// Clients on the engine.
    pub relay: PhaseFigures,
}

impl Round {
    /// relay ÷ floor for percentile `i` (0 = p50, 2 = p99).
    pub fn ratio(&self, i: usize) -> Option<f64> {
        ratio(self.relay.p(i), self.floor.p(i))
    }
}

/// `relay / floor`, when both exist and the floor is positive.
pub fn ratio(relay: Option<f64>, floor: Option<f64>) -> Option<f64> {
    match (relay, floor) {
        (Some(r), Some(f)) if f > 0.0 && r.is_finite() && f.is_finite() => Some(r / f),
        _ => None,
    }
}

/// The median of the values present (the mean of the middle two for an
/// even count); None when there are none.
pub fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The index of the quietest round: the lowest floor p99 among the rounds
/// that have one; the earliest on a tie.
pub fn quietest(floor_p99: &[Option<f64>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in floor_p99.iter().enumerate() {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            if best.map_or(true, |(_, b)| v < b) {
                best = Some((i, v));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// The summary over the rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Rounds measured.
    pub rounds: usize,
    /// Median relay/floor ratio of p50.
    pub median_p50: Option<f64>,
    /// Median relay/floor ratio of p99.
    pub median_p99: Option<f64>,
    /// The quietest round (0-based).
    pub quietest: Option<usize>,
    /// Median engine user CPU µs per delivered message.
    pub engine_user_us: Option<f64>,
    /// Median engine kernel CPU µs per delivered message.
    pub engine_kernel_us: Option<f64>,
    /// Median exchange CPU µs per delivered message in the floor phases.
    pub floor_exchange_us: Option<f64>,
}

/// Medians and the quietest round.
pub fn summarize(rounds: &[Round]) -> Summary {
    let floor_p99: Vec<Option<f64>> = rounds.iter().map(|r| r.floor.p(2)).collect();
    Summary {
        rounds: rounds.len(),
        median_p50: median(rounds.iter().map(|r| r.ratio(0))),
        median_p99: median(rounds.iter().map(|r| r.ratio(2))),
        quietest: quietest(&floor_p99),
        engine_user_us: median(rounds.iter().map(|r| r.relay.engine_user_us)),
        engine_kernel_us: median(rounds.iter().map(|r| r.relay.engine_kernel_us)),
        floor_exchange_us: median(rounds.iter().map(|r| r.floor.exchange_us)),
    }
}

/// Issue 17's p99 target for the run, as a most relay/floor ratio:
/// `fanout` ≤ 1.3×, `wide` ≤ 1.5×, each at the preset's own shape.
fn p99_target(plan: &Plan) -> Option<f64> {
    let shape = (plan.clients, plan.subs, plan.instruments, plan.rate);
    match plan.preset {
        Preset::Fanout if shape == (100, 20, 500, 5_000) => Some(1.3),
        Preset::Wide if shape == (1_000, 50, 2_000, 20_000) => Some(1.5),
        _ => None,
    }
}

/// The comparison's phases: the floor, then the engine (WS, or WSS for a
/// wss:// `--engine-url`).
fn relay_mode(plan: &Plan) -> Mode {
    if plan.ws {
        Mode::Engine
    } else {
        Mode::EngineTls
    }
}

/// Runs the rounds, prints the table (and writes `--json`). A phase that
/// fails ends the run; the rounds completed before it are still printed.
pub fn run(plan: &Plan, rounds_wanted: u32, watchdog: &Watchdog) -> Result<(), String> {
    let relay = relay_mode(plan);
    let mut rounds = Vec::new();
    let mut docs = Vec::new();
    let mut failure = None;
    'rounds: for i in 1..=rounds_wanted {
        let mut pair = Vec::with_capacity(2);
        for mode in [Mode::Floor, relay] {
            eprintln!(
                "loadgen: round {i}/{rounds_wanted}: measuring {} …",
                mode.name()
            );
            match run::run_phase(plan, mode, watchdog) {
                Ok(r) => {
                    let f = PhaseFigures::of(&r);
                    eprintln!(
                        "loadgen: round {i} {}: p50 {} µs, p99 {} µs, {} of {} delivered",
                        mode.name(),
                        us(f.p(0)),
                        us(f.p(2)),
                        f.delivered,
                        f.expected
                    );
                    pair.push((f, report::run_json(plan, &r)));
                }
                Err(e) => {
                    failure = Some(format!("round {i} ({}): {e}", mode.name()));
                    break 'rounds;
                }
            }
        }
        let (relay_f, relay_doc) = pair.pop().expect("two phases");
        let (floor_f, floor_doc) = pair.pop().expect("two phases");
        let round = Round {
            floor: floor_f,
            relay: relay_f,
        };
        docs.push(json!({
            "round": i,
            "floor": floor_doc,
            "engine": relay_doc,
            "ratio": ratios_json(&round),
        }));
        rounds.push(round);
    }
    let summary = summarize(&rounds);
    print!("{}", table(plan, &rounds, &summary));
    if let Some(path) = &plan.json {
        let doc = json!({
            "preset": plan.preset.name(),
            "protocol": plan.protocol.name(),
            "config": report::config_json(plan),
            "compare": {
                "rounds_planned": rounds_wanted,
                "rounds": docs,
                "summary": summary_json(&rounds, &summary),
                "failure": failure,
            },
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("loadgen: wrote {}", path.display());
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn times(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}×"))
}

fn cpu(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn ratios_json(r: &Round) -> Value {
    let mut m = serde_json::Map::new();
    for (i, name) in ["p50", "p90", "p99", "p999", "max"].iter().enumerate() {
        m.insert((*name).into(), json!(r.ratio(i)));
    }
    Value::Object(m)
}

fn summary_json(rounds: &[Round], s: &Summary) -> Value {
    let q = s.quietest.and_then(|i| rounds.get(i));
    json!({
        "rounds": s.rounds,
        "median_ratio_p50": s.median_p50,
        "median_ratio_p99": s.median_p99,
        "quietest_round": s.quietest.map(|i| i + 1),
        "quietest_floor_p99_us": q.and_then(|r| r.floor.p(2)),
        "quietest_engine_p99_us": q.and_then(|r| r.relay.p(2)),
        "quietest_floor_exchange_lag_ms": q.map(|r| r.floor.exchange_lag_ms),
        "quietest_ratio_p50": q.and_then(|r| r.ratio(0)),
        "quietest_ratio_p99": q.and_then(|r| r.ratio(2)),
        "median_engine_user_us_per_delivered_message": s.engine_user_us,
        "median_engine_kernel_us_per_delivered_message": s.engine_kernel_us,
        "median_floor_exchange_us_per_delivered_message": s.floor_exchange_us,
    })
}

/// The per-round table and the summary.
pub fn table(plan: &Plan, rounds: &[Round], s: &Summary) -> String {
    let mut rows: Vec<Vec<String>> = vec![[
        "round",
        "phase",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "delivered",
        "missing",
        "conflated",
        "exch lag ms",
        "others %",
        "p50 ×",
        "p99 ×",
        "CPU µs/msg user / kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()];
    for (i, r) in rounds.iter().enumerate() {
        for (name, f, is_relay) in [("floor", &r.floor, false), ("engine", &r.relay, true)] {
            let mut row = vec![(i + 1).to_string(), name.to_string()];
            row.extend((0..PCT_NAMES.len()).map(|k| us(f.p(k))));
            row.push(format!("{} / {}", f.delivered, f.expected));
            row.push(f.missing.to_string());
            row.push(f.conflated.to_string());
            row.push(format!("{:.1}", f.exchange_lag_ms));
            row.push(f.others_pct.map_or("-".into(), |v| format!("{v:.0}")));
            if is_relay {
                row.push(times(r.ratio(0)));
                row.push(times(r.ratio(2)));
                row.push(format!(
                    "{} / {}",
                    cpu(f.engine_user_us),
                    cpu(f.engine_kernel_us)
                ));
            } else {
                row.push(String::new());
                row.push(String::new());
                row.push(format!("(exchange {})", cpu(f.exchange_us)));
            }
            rows.push(row);
        }
    }
    let cols = rows[0].len();
    let width: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "compare: {} — {} clients × {} subs over {} instruments, {} ticks/s, window {:?}; {} round(s) of floor then engine\n",
        plan.preset.name(),
        plan.clients,
        plan.subs,
        plan.instruments,
        plan.rate,
        plan.duration,
        rounds.len()
    );
    for row in &rows {
        let mut line = String::new();
        for (c, v) in row.iter().enumerate() {
            let pad = width[c] - v.chars().count();
            if c == 1 {
                line.push_str(v);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(v);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for (i, r) in rounds.iter().enumerate() {
        for (name, f) in [("floor", &r.floor), ("engine", &r.relay)] {
            for n in &f.notes {
                out.push_str(&format!("note (round {} {name}): {n}\n", i + 1));
            }
        }
    }
    out.push_str(&format!(
        "median over {} round(s): engine/floor p50 {}, p99 {}; engine CPU per delivered msg user {} µs, kernel {} µs (floor's exchange {} µs)\n",
        s.rounds,
        times(s.median_p50),
        times(s.median_p99),
        cpu(s.engine_user_us),
        cpu(s.engine_kernel_us),
        cpu(s.floor_exchange_us)
    ));
    if let Some(q) = s.quietest.and_then(|i| rounds.get(i).map(|r| (i, r))) {
        let (i, r) = q;
        out.push_str(&format!(
            "quietest of {} (round {}, floor p99 {} µs): engine p99 {} µs = {} the floor, p50 {}\n",
            s.rounds,
            i + 1,
            us(r.floor.p(2)),
            us(r.relay.p(2)),
            times(r.ratio(2)),
            times(r.ratio(0))
        ));
        if r.floor.exchange_lag_ms >= SATURATED_LAG_MS {
            out.push_str(&format!(
                "note: in that round the floor's exchange fell {:.0} ms behind its schedule (starved of CPU or saturated): the floor's tail is the machine's, so the ratio is as much this machine's noise as the relay's cost\n",
                r.floor.exchange_lag_ms
            ));
        }
        if let Some(target) = p99_target(plan) {
            let met = r.ratio(2).is_some_and(|x| x <= target);
            out.push_str(&format!(
                "{}  p99 ≤ {target} × floor p99, quietest of {}: {}\n",
                if met { "PASS" } else { "FAIL" },
                s.rounds,
                times(r.ratio(2))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(p50: f64, p99: f64) -> PhaseFigures {
        PhaseFigures {
            pct: Some([p50, p50 * 1.5, p99, p99 * 2.0, p99 * 3.0]),
            ..PhaseFigures::default()
        }
    }

    fn round(floor: (f64, f64), relay: (f64, f64)) -> Round {
        Round {
            floor: phase(floor.0, floor.1),
            relay: phase(relay.0, relay.1),
        }
    }

    #[test]
    fn median_odd_even_and_gaps() {
        assert_eq!(median([Some(3.0), Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(
            median([Some(4.0), Some(1.0), Some(3.0), Some(2.0)]),
            Some(2.5)
        );
        assert_eq!(median([Some(5.0)]), Some(5.0));
        assert_eq!(median([None, Some(7.0), None]), Some(7.0));
        assert_eq!(median([None, None]), None);
        assert_eq!(median(std::iter::empty()), None);
        assert_eq!(median([Some(f64::NAN), Some(1.0)]), Some(1.0));
    }

    #[test]
    fn ratio_needs_a_positive_floor() {
        assert_eq!(ratio(Some(300.0), Some(200.0)), Some(1.5));
        assert_eq!(ratio(Some(300.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(200.0)), None);
        assert_eq!(ratio(Some(300.0), None), None);
    }

    #[test]
    fn quietest_is_the_lowest_floor_p99_earliest_on_ties() {
        assert_eq!(quietest(&[Some(300.0), Some(200.0), Some(250.0)]), Some(1));
        assert_eq!(quietest(&[Some(200.0), Some(300.0), Some(200.0)]), Some(0));
        assert_eq!(quietest(&[None, Some(900.0)]), Some(1));
        assert_eq!(quietest(&[None, None]), None);
        assert_eq!(quietest(&[]), None);
    }

    #[test]
    fn summary_over_rounds() {
        // floor p99 300, 200 (quietest), 400; ratios p99 2.0, 1.4, 1.5.
        let rounds = vec![
            round((100.0, 300.0), (200.0, 600.0)),
            round((100.0, 200.0), (150.0, 280.0)),
            round((100.0, 400.0), (300.0, 600.0)),
        ];
        let s = summarize(&rounds);
        assert_eq!(s.rounds, 3);
        assert_eq!(s.quietest, Some(1));
        assert_eq!(s.median_p50, Some(2.0));
        assert_eq!(s.median_p99, Some(1.5));
        let q = &rounds[s.quietest.unwrap()];
        assert!((q.ratio(2).unwrap() - 1.4).abs() < 1e-9);
        assert_eq!(q.ratio(0), Some(1.5));
        // A round whose engine delivered nothing has no ratio and is skipped
        // by the median, not counted as zero.
        let mut r = rounds.clone();
        r[2].relay.pct = None;
        let s = summarize(&r);
        assert_eq!(s.median_p99, Some((2.0 + 1.4) / 2.0));
    }

    #[test]
    fn cpu_split_per_delivered_message() {
        let s = summarize(&[
            Round {
                floor: PhaseFigures {
                    exchange_us: Some(8.0),
                    ..PhaseFigures::default()
                },
                relay: PhaseFigures {
                    engine_user_us: Some(2.0),
                    engine_kernel_us: Some(9.0),
                    ..PhaseFigures::default()
                },
            },
            Round {
                floor: PhaseFigures::default(),
                relay: PhaseFigures {
                    engine_user_us: Some(4.0),
                    engine_kernel_us: Some(11.0),
                    ..PhaseFigures::default()
                },
            },
        ]);
        assert_eq!(s.engine_user_us, Some(3.0));
        assert_eq!(s.engine_kernel_us, Some(10.0));
        assert_eq!(s.floor_exchange_us, Some(8.0));
        assert_eq!(s.median_p99, None);
        assert_eq!(s.quietest, None);
    }
}
