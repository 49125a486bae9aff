//! ingest: how fast the network thread takes packets from a DhanHQ feed
//! through TLS/WebSocket, decode and into the tick ring.
//!
//! The simulator runs as a separate process (`dhan-relay sim`), so its cost
//! is not this process's; the network thread runs here exactly as in the
//! engine, with a consumer thread draining the ring. The figure that matters
//! is the network thread's own CPU time per packet (read from
//! `/proc/self/task/*/stat` for the thread named `dhan-net`): it does not
//! depend on how fast the simulator can send.
//!
//! ```text
//! cargo run --release --bin ingest -- --rate 200000 --instruments 100 --mode quote --seconds 5 [--tls] [--record DIR]
//! ```
//!
//! With `--record DIR` the network thread also offers every frame to the
//! recorder (`src/record/`), as `dhan-relay --record` does: compare its
//! CPU per packet with and without, and the recorder's lost frames.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhan_relay::affinity::thread_cpu_seconds;
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::record::{RecordConfig, Recorder};
use dhan_relay::tick::Tick;
use dhan_relay::upstream::{
    load_ca_file, Command as NetCommand, Credentials, Upstream, UpstreamConfig, UpstreamStats,
};
use ringbuf::traits::{Consumer, Split};
use ringbuf::HeapRb;

struct Args {
    rate: u32,
    instruments: u32,
    mode: Mode,
    seconds: u64,
    tls: bool,
    record: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        rate: 200_000,
        instruments: 100,
        mode: Mode::Quote,
        seconds: 5,
        tls: false,
        record: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rate" => a.rate = value()?.parse().map_err(|_| "--rate: a number")?,
            "--instruments" => a.instruments = value()?.parse().map_err(|_| "--instruments: a number")?,
            "--mode" => a.mode = value()?.parse().map_err(|_| "--mode: ticker, quote or full")?,
            "--seconds" => a.seconds = value()?.parse::<u64>().map_err(|_| "--seconds: a number")?.clamp(1, 60),
            "--tls" => a.tls = true,
            "--record" => a.record = Some(value()?.into()),
            "-h" | "--help" => {
                return Err("usage: ingest [--rate N] [--instruments N] [--mode ticker|quote|full] [--seconds N] [--tls] [--record DIR]".into())
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ingest: {e}");
            std::process::exit(2);
        }
    };
    let exe = std::env::current_exe().expect("own path");
    let relay = exe.with_file_name("dhan-relay");
    let ca_path =
        std::env::temp_dir().join(format!("dhan-relay-ingest-{}.pem", std::process::id()));
    let mut cmd = Command::new(&relay);
    cmd.args([
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        &args.rate.to_string(),
    ]);
    if args.tls {
        cmd.args(["--tls", "--ca-out"]).arg(&ca_path);
    }
    let mut sim = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (cargo build --release --bins first)",
                relay.display()
            )
        });
    let mut url = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("simulator URL");
    let url = url.trim().to_string();

    let (prod, mut cons) = HeapRb::<Tick>::new(65_536).split();
    let popped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (popped, stop) = (Arc::clone(&popped), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("consumer".into())
            .spawn(move || {
                let mut sum = 0f64;
                while !stop.load(Relaxed) {
                    let mut n = 0;
                    while let Some(t) = cons.try_pop() {
                        if let dhan_relay::wire::feed::FeedData::Quote(q) = t.data {
                            sum += f64::from(q.ltp);
                        }
                        n += 1;
                    }
                    popped.fetch_add(n, Relaxed);
                    if n == 0 {
                        std::thread::park_timeout(Duration::from_millis(1));
                    }
                }
                std::hint::black_box(sum);
            })
            .expect("consumer thread")
    };
    let extra_ca = if args.tls {
        load_ca_file(&ca_path).expect("CA")
    } else {
        Vec::new()
    };
    let (recorder, tap) = match &args.record {
        Some(dir) => {
            let (r, tap) = Recorder::spawn(RecordConfig::new(dir)).expect("recorder");
            (Some(r), Some(tap))
        }
        None => (None, None),
    };
    let up = Upstream::spawn_with_depth(
        UpstreamConfig {
            feed_url: url.clone(),
            credentials: Credentials::new("ingest", "ingest"),
            extra_ca,
            ..UpstreamConfig::default()
        },
        prod,
        None,
        Some(consumer.thread().clone()),
        tap,
        None,
    )
    .expect("network thread");
    let keys: Vec<_> = (0..args.instruments)
        .map(|i| (InstrumentKey::new(Segment::NseFno, 40_000 + i), args.mode))
        .collect();
    up.control().send(NetCommand::Subscribe(keys));
    let stats = up.stats();
    std::thread::sleep(Duration::from_secs(1)); // warm up
    let (p0, f0, b0, c0, r0, t0) = (
        popped.load(Relaxed),
        stats.frames.get(),
        stats.bytes.get(),
        thread_cpu_seconds("dhan-net"),
        thread_cpu_seconds("dhan-record"),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (p1, f1, b1, c1, r1, secs) = (
        popped.load(Relaxed),
        stats.frames.get(),
        stats.bytes.get(),
        thread_cpu_seconds("dhan-net"),
        thread_cpu_seconds("dhan-record"),
        t0.elapsed().as_secs_f64(),
    );
    let packets = (p1 - p0) as f64;
    let cpu = c1 - c0;
    println!(
        "ingest: {} over {}, {} instruments in {} mode, simulator asked for {} packets/s",
        if args.tls { "wss" } else { "ws" },
        url,
        args.instruments,
        args.mode,
        args.rate
    );
    println!("  packets into the ring   {:>12.0} /s", packets / secs);
    println!(
        "  frames                  {:>12.0} /s",
        (f1 - f0) as f64 / secs
    );
    println!(
        "  wire bytes              {:>12.1} MB/s",
        (b1 - b0) as f64 / secs / 1e6
    );
    println!("  network thread CPU      {:>12.1} %", cpu / secs * 100.0);
    if packets > 0.0 {
        println!(
            "  network thread CPU/pkt  {:>12.0} ns   (10 ms clock ticks: ±{:.0} ns)",
            cpu / packets * 1e9,
            0.01 / packets * 1e9
        );
    }
    println!(
        "  ring-full waits         {:>12}",
        stats.ring_full_waits.get()
    );
    println!(
        "  decode errors           {:>12}",
        stats
            .decode_errors
            .iter()
            .map(UpstreamStats::get)
            .sum::<u64>()
    );
    if let Some(r) = &recorder {
        let rs = r.stats();
        println!(
            "  recorder thread CPU     {:>12.1} %",
            (r1 - r0) / secs * 100.0
        );
        println!(
            "  recorded                {:>12} frames, {:.1} MB, {} lost{}",
            rs.frames(),
            rs.bytes() as f64 / 1e6,
            rs.lost(),
            rs.error()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        );
    }
    stop.store(true, Relaxed);
    up.shutdown();
    if let Some(r) = recorder {
        r.shutdown();
    }
    let _ = consumer.join();
    let _ = sim.kill();
    let _ = sim.wait();
    let _ = std::fs::remove_file(&ca_path);
}
