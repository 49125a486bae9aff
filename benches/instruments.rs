//! Scrip-master load, search and symbol resolution on a generated
//! 290,000-row master (the size of DhanHQ's file), with pandas.read_csv on
//! the same file for comparison.
//!
//!     cargo bench --bench instruments
//!     cargo bench --bench instruments -- bulk    # the bulk-subscribe group only
//!
//! First a summary (load + index: best and median of 7 runs, pandas on the
//! same file through `tools/master_bench.py` when python3 has pandas; search
//! latency percentiles over queries typed keystroke by keystroke; a
//! 1,000-name subscribe of misspelt names resolved name by name with
//! candidates, and in bulk), then the criterion groups.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dhan_relay::instrument::{synth, Date, Kind, Master};

const ROWS: usize = 290_000;

fn master_file() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scrip-master-290k.csv");
    if !path.exists() {
        std::fs::write(&path, synth::generate(ROWS, 7)).expect("write the generated master");
    }
    path
}

fn load(path: &PathBuf) -> Master {
    let bytes = std::fs::read(path).expect("read master");
    Master::parse(&bytes).expect("parses")
}

/// Every prefix of each word, as a search box sends them, plus typos and
/// inner substrings.
fn queries() -> Vec<String> {
    let typed = [
        "reliance",
        "nifty",
        "banknifty",
        "crudeoil",
        "tata steel",
        "hdfc bank",
        "adani power",
        "infosys",
        "sensex",
        "usdinr",
        "gold",
        "bajaj auto",
        "nifty 24",
        "crudeoil dec",
        "power fin",
        "sun pharma",
    ];
    let mut out: Vec<String> = Vec::new();
    for w in typed {
        for end in 1..=w.len() {
            out.push(w[..end].to_string());
        }
    }
    for q in [
        "relaince",
        "xyzzy",
        "qqq",
        "industries",
        "ower",
        "ance",
        "limited",
        "-fut",
        "25050",
        "call",
        "dec2026",
        "z",
        "infra corp",
        "nifty 24 dec 25050 call",
    ] {
        out.push(q.to_string());
    }
    out
}

/// A subscribe message's worth (1,000) of names the master does not know:
/// equity symbols with the last letter wrong and two digits added
/// (`RELIANCX12`), every fourth a name like nothing in the file.
fn near_misses(master: &Master) -> Vec<String> {
    let mut equities = master
        .iter()
        .filter(|i| i.kind() == Kind::Equity)
        .map(|i| i.symbol());
    (0..1_000)
        .map(|i| match (i % 4, equities.next()) {
            (0, _) | (_, None) => format!("QZX{i:04}W"),
            (_, Some(sym)) => {
                let stem = &sym[..sym.len() - 1];
                format!("{stem}X{:02}", i % 100)
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU time of this process (all its threads): the work done, however busy
/// the machine.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One pandas.read_csv of the file, in a python3 process: (wall, cpu).
fn pandas(path: &PathBuf) -> Result<(Duration, Duration, String), String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/master_bench.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(path)
        .arg("1")
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let secs = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap_or(f64::NAN));
    Ok((
        secs("min_s"),
        secs("min_cpu_s"),
        v["pandas"].as_str().unwrap_or("?").to_string(),
    ))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(path: &PathBuf) -> Master {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    // Rounds alternate the two loaders, so a busy machine slows both alike.
    let (mut ours, mut ours_cpu, mut theirs, mut theirs_cpu) = (vec![], vec![], vec![], vec![]);
    let mut version = String::new();
    let mut pandas_error = None;
    let mut master = None;
    for _ in 0..7 {
        let (c0, t0) = (process_cpu(), Instant::now());
        let m = load(path);
        ours.push(t0.elapsed());
        ours_cpu.push(process_cpu() - c0);
        master = Some(m);
        if pandas_error.is_none() {
            match pandas(path) {
                Ok((wall, cpu, v)) => {
                    theirs.push(wall);
                    theirs_cpu.push(cpu);
                    version = v;
                }
                Err(e) => pandas_error = Some(e),
            }
        }
    }
    let master = master.expect("loaded");
    for v in [&mut ours, &mut ours_cpu, &mut theirs, &mut theirs_cpu] {
        v.sort();
    }
    println!(
        "scrip master: {} rows, {:.1} MB at {}",
        master.len(),
        size as f64 / 1e6,
        path.display()
    );
    println!(
        "  dhan-relay load+index (read, parse, sort, index) ×7: wall best {:.0} ms, median {:.0} ms; CPU best {:.0} ms",
        ms(ours[0]),
        ms(ours[3]),
        ms(ours_cpu[0])
    );
    match pandas_error {
        None => println!(
            "  pandas {version} read_csv, same file, alternating ×7: wall best {:.0} ms, median {:.0} ms; CPU best {:.0} ms",
            ms(theirs[0]),
            ms(theirs[theirs.len() / 2]),
            ms(theirs_cpu[0])
        ),
        Some(e) => println!("  pandas: not measured ({e})"),
    }
    let qs = queries();
    let mut lat = Vec::new();
    let mut worst: Vec<(Duration, &str)> =
        qs.iter().map(|q| (Duration::ZERO, q.as_str())).collect();
    let mut results = 0usize;
    for _ in 0..20 {
        for (i, q) in qs.iter().enumerate() {
            let t0 = Instant::now();
            let r = master.search(q, 20);
            let took = t0.elapsed();
            lat.push(took);
            worst[i].0 = worst[i].0.max(took);
            results += r.len();
        }
    }
    lat.sort();
    worst.sort();
    worst.reverse();
    println!(
        "  search (limit 20), {} queries × 20: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} results)",
        qs.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
        results
    );
    let slowest: Vec<String> = worst
        .iter()
        .take(5)
        .map(|(d, q)| format!("{q:?} {:.0} µs", d.as_secs_f64() * 1e6))
        .collect();
    println!("  slowest queries (worst of 20): {}", slowest.join(", "));
    let phases: Vec<String> = master
        .report()
        .phases
        .iter()
        .map(|(name, d)| format!("{name} {:.0} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "  load phases (last run): {}; heap held {:.0} MB",
        phases.join(", "),
        master.heap_bytes() as f64 / 1e6
    );
    bulk_summary(&master);
    master
}

/// One 1,000-name subscribe of misspelt names: per name with candidates
/// (what the fanout did), per name without, and in bulk with candidates for
/// three.
fn bulk_summary(master: &Master) {
    let today = Date::from_ymd(2026, 11, 22).expect("date");
    let names = near_misses(master);
    let unknown = names
        .iter()
        .filter(|n| master.resolve_exact(n, today).is_err())
        .count();
    let t0 = Instant::now();
    for n in &names {
        black_box(master.resolve(n, today).is_ok());
    }
    let per_name = t0.elapsed();
    let mut lat: Vec<Duration> = names
        .iter()
        .map(|n| {
            let t0 = Instant::now();
            black_box(master.resolve_exact(n, today).is_ok());
            t0.elapsed()
        })
        .collect();
    lat.sort();
    let t0 = Instant::now();
    let r = master.resolve_many(&names, today, 3);
    let bulk = t0.elapsed();
    println!(
        "  subscribe of 1,000 names ({unknown} unknown): resolve per name {:.0} ms; \
         resolve_many(.., 3) {:.2} ms; resolve_exact per name p50 {:.1} µs, max {:.1} µs",
        ms(per_name),
        ms(bulk),
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
    let error = r.error.unwrap_or_default();
    println!(
        "  its error: {}",
        error.chars().take(200).collect::<String>()
    );
    // Derivative-shaped names walk their underlying's contracts: the
    // biggest underlying bounds them.
    let options: Vec<String> = (0..1_000)
        .map(|i| format!("NIFTY {} CE", 12_345 + i))
        .collect();
    let t0 = Instant::now();
    let r = master.resolve_many(&options, today, 3);
    println!(
        "  1,000 NIFTY options at strikes that do not exist: resolve_many(.., 3) {:.2} ms ({} failed)",
        ms(t0.elapsed()),
        r.failed
    );
}

fn main() {
    let path = master_file();
    let master = summary(&path);
    let bytes = std::fs::read(&path).expect("read master");
    let today = Date::from_ymd(2026, 11, 22).expect("date");

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("instruments");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("parse_and_index_290k", |b| {
        b.iter(|| Master::parse(black_box(&bytes)).expect("parses"))
    });
    g.finish();
    let mut g = c.benchmark_group("search");
    for q in ["relia", "nifty", "ance", "xyzzy"] {
        g.bench_function(q, |b| b.iter(|| master.search(black_box(q), 20)));
    }
    g.finish();
    let mut g = c.benchmark_group("resolve");
    for q in ["RELIANCE", "CRUDEOIL", "NIFTY FUT"] {
        g.bench_function(q, |b| b.iter(|| master.resolve(black_box(q), today)));
    }
    for q in ["RELIANCX12", "QZX0000W"] {
        g.bench_function(format!("exact_unknown_{q}"), |b| {
            b.iter(|| master.resolve_exact(black_box(q), today))
        });
    }
    g.finish();
    // A 1,000-name subscribe of misspelt names: in bulk, against the old
    // way (candidates for every name; 100 of them, it takes seconds for
    // all 1,000 — the summary above times those once).
    let names = near_misses(&master);
    let mut g = c.benchmark_group("bulk");
    g.sample_size(10);
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("resolve_many_1000_suggest_3", |b| {
        b.iter(|| master.resolve_many(black_box(&names), today, 3))
    });
    g.bench_function("resolve_exact_1000", |b| {
        b.iter(|| {
            names
                .iter()
                .filter(|n| master.resolve_exact(black_box(n), today).is_ok())
                .count()
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("resolve_per_name_first_100", |b| {
        b.iter(|| {
            names[..100]
                .iter()
                .filter(|n| master.resolve(black_box(n), today).is_ok())
                .count()
        })
    });
    g.finish();
    c.final_summary();
}
