//! Operating-system helpers: loopback checks, CPU sets, file limits, CPU and
//! memory figures from `/proc` and the thread clock.
//!
//! Linux only (the relay's deployment target): `/proc/PID/stat` gives a
//! process's user + system CPU time in clock ticks (`sysconf(_SC_CLK_TCK)`,
//! usually 100 per second), `/proc/PID/status` its resident set (`VmRSS`),
//! `/proc/PID/task/*/schedstat` the nanoseconds each of its threads spent on
//! a CPU.

use std::net::IpAddr;

/// True for 127.0.0.0/8 and ::1 (and ::ffff:127.x.y.z): the only addresses
/// this tool ever connects to or listens on.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.octets()[0] == 127)
        }
    }
}

/// Parses a CPU list as `taskset -c` takes it: `1`, `0,1`, `0-3,6`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("CPU list '{s}': '{part}' is not N or N-M");
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<usize>().map_err(|_| bad())?,
                b.trim().parse::<usize>().map_err(|_| bad())?,
            ),
            None => {
                let n = part.parse::<usize>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if lo > hi || hi >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    if cpus.is_empty() {
        return Err(format!("CPU list '{s}' is empty"));
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// A `cpu_set_t` holding `cpus`.
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` < CPU_SETSIZE (checked by `parse_cpu_list`), so the
        // bit lies inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Restricts the calling thread (and every thread it creates later) to
/// `cpus`.
pub fn pin_current(cpus: &[usize]) -> Result<(), String> {
    let set = cpu_set(cpus);
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the
    // size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot pin to CPUs {cpus:?}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Raises the soft open-file limit to the hard limit
/// ([`dhan_relay::fdlimit::raise_to_hard_limit`]); returns the new soft
/// limit, 0 when it cannot be read (the caller then reports it as short).
pub fn raise_nofile() -> u64 {
    dhan_relay::fdlimit::raise_to_hard_limit().unwrap_or(0)
}

/// Sets a socket's receive buffer (`SO_RCVBUF`; the kernel doubles it).
pub fn set_rcvbuf(socket: &impl std::os::fd::AsRawFd, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `v`, which
    // lives across the call; the fd is open (borrowed from its owner).
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// CPU time the calling thread has used, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// User and system CPU time of process `pid` (all its threads) in
/// nanoseconds, from `/proc/PID/stat` (clock-tick resolution).
pub fn proc_cpu_split_ns(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'. After it: state(3) ppid(4) … utime(14) stime(15).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tick = 1_000_000_000 / clock_ticks_per_sec();
    Some((utime * tick, stime * tick))
}

/// User + system CPU time of process `pid`, ns ([`proc_cpu_split_ns`]).
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    proc_cpu_split_ns(pid).map(|(u, s)| u + s)
}

/// CPU time (user + system, ns, clock-tick resolution) of each live thread
/// of `pid`, summed by thread name, from `/proc/PID/task/*/stat`.
pub fn proc_threads_cpu_ns(pid: u32) -> Vec<(String, u64)> {
    let mut by_name: Vec<(String, u64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    let tick = 1_000_000_000 / clock_ticks_per_sec();
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let name = text[open + 1..close].to_string();
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let cpu = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .zip(fields.get(12).and_then(|s| s.parse::<u64>().ok()))
            .map_or(0, |(u, s)| (u + s) * tick);
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += cpu,
            None => by_name.push((name, cpu)),
        }
    }
    by_name.sort();
    by_name
}

/// Nanoseconds on a CPU summed over the live threads of `pid`, from
/// `/proc/PID/task/*/schedstat` (nanosecond resolution; threads that have
/// exited are not counted).
pub fn proc_sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread that ended since the listing has nothing left to add.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// CPU time of the whole machine from `/proc/stat`, all cores together:
/// (busy, total) in nanoseconds (busy = everything but idle and iowait).
pub fn machine_cpu_ns() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let tick = 1_000_000_000 / clock_ticks_per_sec();
    Some(((total - idle) * tick, total * tick))
}

/// Number of CPUs online.
pub fn cpus_online() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resident set size of `pid` in bytes (`VmRSS`).
pub fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        for ok in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "192.168.1.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_loopback(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("0-2,1,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn own_process_figures() {
        let pid = std::process::id();
        assert!(proc_rss_bytes(pid).unwrap() > 0);
        assert!(proc_cpu_ns(pid).is_some());
        assert!(proc_sched_ns(pid).unwrap() > 0);
        assert!(!proc_threads_cpu_ns(pid).is_empty());
        let (busy, total) = machine_cpu_ns().unwrap();
        assert!(busy <= total && total > 0);
        let a = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > a);
    }
}
