//! CPU placement for the engine's threads: pinning, and a lower priority
//! for background threads.
//!
//! Pinning is opt-in (`core: Some(n)`): the default is to let the OS place
//! threads, which is right on a small shared box. A core that does not exist
//! is reported and ignored rather than fatal.

/// Pins the current thread to `core` when one is given.
pub fn pin(role: &str, core: Option<usize>) {
    let Some(id) = core else { return };
    let available = core_affinity::get_core_ids().unwrap_or_default();
    match available.into_iter().find(|c| c.id == id) {
        Some(core_id) if core_affinity::set_for_current(core_id) => {
            log::info!("{role} thread pinned to core {id}");
        }
        _ => log::warn!("{role} thread: cannot pin to core {id}; running unpinned"),
    }
}

/// Lowers the current thread's scheduling priority (nice 10) so background
/// work — symbol resolution, REST bodies — yields the CPU to the hot
/// threads on a small box instead of competing with them. Best effort: a
/// refusal is logged and ignored.
pub fn background(role: &str) {
    // SAFETY: gettid has no preconditions and touches no memory.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // SAFETY: setpriority reads its integer arguments only; `tid` is this
    // thread, which is alive for the call.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) };
    if rc != 0 {
        log::debug!(
            "{role} thread: priority not lowered: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// CPU seconds (user + system) used so far by this process's thread named
/// `name` (`/proc/self/task/*/comm`); 0 when there is none. For tools and
/// tests that watch one thread's cost.
pub fn thread_cpu_seconds(name: &str) -> f64 {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised comm: state is 3rd, utime 14th, stime 15th.
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        return (utime + stime) / ticks_per_sec;
    }
    0.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn background_lowers_only_the_calling_thread() {
        let nice = || {
            // SAFETY: getpriority reads its integer arguments only.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        };
        let before = nice();
        let inside = std::thread::spawn(move || {
            super::background("test");
            // SAFETY: as above; `who` = this thread's id.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) };
            // SAFETY: getpriority reads its integer arguments only.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
        })
        .join()
        .unwrap();
        assert!(
            inside >= before + 10 || inside == 19,
            "nice {before} → {inside}"
        );
        assert_eq!(nice(), before, "the caller keeps its priority");
    }
}
