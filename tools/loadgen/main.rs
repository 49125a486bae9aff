//! `loadgen`: the load and latency generator for dhan-relay (issue 7).
//!
//! ```text
//! cargo build --release --bins
//! cargo run --release --bin loadgen -- --preset fanout [--json out.json]
//! cargo run --release --bin loadgen -- --preset wide --compare 3
//! ```
//!
//! One run, all on loopback, bounded in time (per phase at most the setup
//! limit — 20 s + 2 ms per client — plus warmup, duration, drain, the
//! optional `--quiet-wait` and 30 s; a watchdog kills the engine and exits
//! with status 3 past that). Every loop in the tool is bounded by a count or
//! a deadline:
//!
//! 1. An in-process **exchange** ([`exchange`]) speaks DhanHQ's Live Market
//!    Feed v2 on 127.0.0.1 and, once started, sends ticker packets at an
//!    aggregate rate over `M` instruments following a deterministic
//!    [`schedule`].
//! 2. The **engine under test** — the release `dhan-relay` binary next to
//!    this executable (`--engine-bin`), started as its own process with the
//!    exchange as its feed ([`engine`]), or one already running
//!    (`--engine-url`, with `--exchange-listen` so it can find the exchange).
//! 3. `N` **clients** ([`clients`]) on one or two `mio` threads each
//!    subscribe `K` instruments drawn from `--seed` and read until the end.
//!    In the `floor` phase the same clients connect straight to the exchange
//!    with DhanHQ's protocol: the cost of the harness and of loopback alone,
//!    measured the same way, to compare against (`fanout` measures it first,
//!    in the same run).
//!
//! Phases: setup (connect, subscribe, wait until every client's
//! subscription is in place and the exchange sees every instrument
//! subscribed), warmup (`--warmup` s at `--warmup-rate`), the measured window
//! (`--duration` s at `--rate`), then the drain: the exchange stops and the
//! tool waits until every expected message has arrived, or nothing arrived
//! for 500 ms, or `--drain` s passed.
//!
//! # How latency is measured
//!
//! Outside the engine, end to end: from the exchange's `write` of the frame
//! carrying a packet to the client's `read` that returned the relay's JSON
//! for it. The exchange encodes a per-instrument sequence number in the data
//! (LTP = sequence, LTT = a per-run nonce) and, just before writing a batch,
//! stores one monotonic timestamp for every packet in it in a shared table
//! indexed by (instrument, sequence) ([`schedule::SendTable`]). A client
//! stamps each `read` with the same clock and looks each message's send time
//! up. Both sides are threads of this process, so the clock is the same
//! `CLOCK_MONOTONIC` reading and no clock sync is involved. Latencies of the
//! first delivery of every window tick go into `hdrhistogram` (1 ns – 60 s,
//! 3 significant digits); the table prints p50/p90/p99/p99.9/max in µs.
//! Included: the exchange's socket write, loopback, the whole engine (decode,
//! book, fanout, JSON, socket write), loopback again, and the client
//! thread's wait for its turn to read — on a 2-core box shared by the tool
//! and the engine the last one is real, which is why the floor is measured
//! with the same clients. The engine's own view (`/stats` tickToWire: its
//! receive → its socket write) is printed beside it.
//!
//! # What each count means
//!
//! For every client and subscribed instrument, the window is a known range
//! of that instrument's sequence numbers ([`schedule::Schedule::window`]).
//!
//! * **expected**: the sum over clients and their instruments of the window
//!   sequences sent (clients that failed to connect included).
//! * **delivered**: distinct window sequences received.
//! * **duplicated**: a window sequence received again.
//! * **out of order**: a window sequence received after a later one of the
//!   same instrument (the relay keeps per-instrument order).
//! * **conflated** vs **missing**: every expected sequence not delivered is
//!   one or the other. The relay conflates a client only while that client
//!   is behind: its outbound buffer (kernel socket buffers plus
//!   `client_queue_bytes`) is full, i.e. hundreds of kilobytes are queued
//!   ahead of the next message, so the client's messages are then late by
//!   far more than normal. The tool therefore marks a client **behind** when
//!   a message reaches it at least `--behind-ms` late (default 50 ms), and
//!   counts a gap (a jump in an instrument's sequence) as **conflated** when
//!   the message after the gap arrived while its client was behind: that
//!   message itself, or another within the previous `--behind-ms`, was late.
//!   Every other undelivered sequence — gaps on a client keeping up, and
//!   sequences never followed by a later one (the relay always delivers the
//!   newest value in the end, so a tail can only be lost) — is **missing**.
//!   "Missing on clients keeping up" restricts that to clients that were
//!   never behind and were not closed.
//! * **undrained**: sequences after the last one read by a client that was
//!   still behind when the run stopped (its last message was `--behind-ms`
//!   late and the drain ended by its time limit): queued somewhere, not
//!   lost, not measured. Raise `--drain` to read them. The relay's own count of replaced
//!   messages, `/stats` `fanout_conflated_total` (its change over the run),
//!   is printed beside the tool's as a cross-check: each replacement is one
//!   sequence a client never gets.
//! * **clients behind**: clients that saw at least one window message
//!   `--behind-ms` late; **closed by server**: clients the relay closed
//!   (reasons are listed, e.g. 1008 "too slow").
//! * **other anomalies**: messages carrying another run's nonce or an
//!   unknown instrument (foreign), instruments the client did not subscribe
//!   (unsolicited), sequences never scheduled (unexpected), window ticks
//!   without a send time (unstamped; impossible unless the table is wrong),
//!   messages that do not parse (malformed), error messages from the server.
//!   All should be zero.
//! * **client messages/s**: delivered ÷ window duration.
//! * **engine CPU**: user + system time of the engine process from
//!   `/proc/PID/stat` between the window's start and the end of the drain;
//!   **CPU µs / delivered msg** divides it by delivered; per thread from
//!   `/proc/PID/task/*/stat`. The JSON also has the nanosecond sum of its
//!   threads' `/proc/PID/task/*/schedstat` (a cross-check) and the user part
//!   (tick-sampled by the kernel, so only a rough split). On loopback the
//!   kernel runs the *receiver's* TCP processing inside the sender's
//!   `send`, so a relay's system time includes part of its clients' receive
//!   cost; the floor's exchange pays the same, which is why its CPU per
//!   delivered message is printed too: the price of one loopback send per
//!   message, with no relay at all.
//! * **engine RSS**: `VmRSS` from `/proc/PID/status` before any client, with
//!   all clients subscribed, and the peak sampled every 100 ms; per client =
//!   (ready − idle) ÷ clients.
//! * **tool CPU**: this process's CPU over the same span, and separately the
//!   client threads' and the exchange thread's (`CLOCK_THREAD_CPUTIME_ID`).
//!   The exchange's worst lag behind its schedule is printed too.
//!
//! Slow consumers on purpose: `--slow-clients N` makes the first N clients
//! read at most `--slow-read-kib` per `--slow-every-ms` through an
//! `--slow-rcvbuf-kib` socket buffer, to exercise the relay's conflation and
//! slow-client closes; they are counted like every other client.
//!
//! Shared machines: every phase reports the CPU other processes used during
//! it (`/proc/stat` minus the tool and the engine); `--quiet-below PCT`
//! waits (up to `--quiet-wait` s) for a quieter moment before each phase.
//! Pin the tool and the engine apart with `--pin-tool` / `--pin-engine`
//! (or `taskset`) when that makes a figure cleaner.
//!
//! Presets (flags override each value): `fanout` 100 clients × 20
//! subscriptions over 500 instruments at 5,000 ticks/s, with the floor;
//! `wide` 1,000 × 50 over 2,000 at 20,000/s; `idle10k` 10,000 × 1 over
//! 1,000 at 1,000/s; `burst` 100 × 20 over 500, 50,000 ticks in one second
//! after a 1,000/s warmup; `floor` the `fanout` shape on the exchange only.
//! Only loopback addresses (127.0.0.0/8, ::1) are accepted anywhere.
//!
//! `--compare N` (1–20) measures the floor and the engine alternately, N
//! rounds of (floor, engine) with the preset's shape, and prints each
//! round's percentiles and the engine ÷ floor ratios, their median and the
//! quietest round's (lowest floor p99); see [`compare`].
//!
//! `--replay FILE… [--speed N|max]` measures on recorded traffic instead:
//! the in-process simulator replays the recording to the engine, one client
//! subscribes the recording's instruments, and the report splits the open's
//! first minute from the rest; [`replay`] says how packets are matched.

mod cli;
mod clients;
mod compare;
mod engine;
mod exchange;
mod relay_json;
mod replay;
mod report;
mod run;
mod schedule;
mod sys;
mod tls;
mod wsframe;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Args;
use crate::run::{Mode, Watchdog};

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: &Args) -> Result<(), String> {
    if let Some(plan) = args.replay_plan()? {
        return replay::run(&plan);
    }
    let plan = args.plan()?;
    if let Some(cpus) = &plan.pin_tool {
        sys::pin_current(cpus)?;
    }
    let nofile = sys::raise_nofile();
    if nofile < u64::from(plan.clients) + 256 {
        return Err(format!(
            "open-file limit is {nofile}, too low for {} clients; raise it (ulimit -n)",
            plan.clients
        ));
    }
    let cap = plan.hard_cap();
    eprintln!(
        "loadgen {} ({} clients): {} clients × {} subs over {} instruments, {} ticks/s (warmup {:?} at {}/s, window {:?}), seed {}, {} client thread(s); hard limit {:?}",
        plan.preset.name(),
        plan.protocol.name(),
        plan.clients,
        plan.subs,
        plan.instruments,
        plan.rate,
        plan.warmup,
        plan.warmup_rate,
        plan.duration,
        plan.seed,
        plan.client_threads,
        cap
    );
    let watchdog = Watchdog::start(cap);
    if let Some(n) = plan.compare {
        let r = compare::run(&plan, n, &watchdog);
        watchdog.disarm();
        return r;
    }
    let mut results = Vec::new();
    let mut modes = Vec::new();
    if plan.floor {
        modes.push(Mode::Floor);
    }
    if plan.engine.is_some() && plan.ws {
        modes.push(Mode::Engine);
    }
    if plan.engine.is_some() && plan.wss {
        modes.push(Mode::EngineTls);
    }
    for mode in modes {
        eprintln!("loadgen: measuring {} …", mode.name());
        results.push(run::run_phase(&plan, mode, &watchdog)?);
    }
    watchdog.disarm();
    let targets = report::targets(&plan, &results);
    print!("{}", report::table(&plan, &results));
    if !targets.is_empty() {
        println!("\ntargets (issue 7):");
        print!("{}", report::targets_text(&targets));
    }
    if let Some(path) = &plan.json {
        let doc = report::json(&plan, &results, &targets);
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("loadgen: wrote {}", path.display());
    }
    Ok(())
}
