//! The network and fanout loops, each on a thread of its own or both on one.
//!
//! Both are `mio` loops: poll, act on what came, repeat. [`EventLoop`] is
//! that shape cut at the poll, so a loop can run alone ([`run_alone`]: the
//! `spread` layout, a hot thread per loop, pinned where asked) or share a
//! thread with the other ([`run_together`]: the `compact` layout). Sharing
//! needs no second mechanism: each loop's poll is an epoll descriptor, and
//! an epoll descriptor is itself readable when it has events, so a third
//! poll watches both and the thread sleeps until either has work. The
//! network loop turns first, so what it forwards reaches clients in the
//! same pass — no wake-up, no other thread, between a socket read and the
//! client writes.

use std::os::fd::RawFd;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// Most fanout shards `fanout_threads = "auto"` gives: past this the one
/// network thread, which hands every update to every shard, is the limit
/// (README "Scaling").
pub const AUTO_SHARDS_MAX: usize = 8;

/// The thread layout (`threads` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Threads {
    /// `compact` on a box of 2 cores or fewer, `spread` on a bigger one.
    #[default]
    Auto,
    /// The network and fanout loops on one thread.
    Compact,
    /// A thread each (pinned with `[pin]`).
    Spread,
}

impl Threads {
    /// `auto` decided for a box with `cores` cores: compact at 2 or fewer,
    /// where two busy loops on two threads would compete with everything
    /// else for the same two cores and pay a cross-thread wake-up per
    /// batch.
    pub fn resolve(self, cores: usize) -> Threads {
        match self {
            Threads::Auto if cores <= 2 => Threads::Compact,
            Threads::Auto => Threads::Spread,
            other => other,
        }
    }

    /// Fanout shards for this (resolved) layout: one in `compact` (a
    /// single fanout loop shares the network thread), else `asked`, or by
    /// default a shard per core the network thread leaves, at most
    /// [`AUTO_SHARDS_MAX`].
    pub fn fanout_shards(self, asked: Option<usize>, cores: usize) -> usize {
        match (self, asked) {
            (Threads::Compact, _) => 1,
            (_, Some(n)) => n.max(1),
            _ => cores.saturating_sub(1).clamp(1, AUTO_SHARDS_MAX),
        }
    }

    /// The config and log name.
    pub fn name(self) -> &'static str {
        match self {
            Threads::Auto => "auto",
            Threads::Compact => "compact",
            Threads::Spread => "spread",
        }
    }
}

impl std::str::FromStr for Threads {
    type Err = String;
    fn from_str(s: &str) -> Result<Threads, String> {
        match s {
            "auto" => Ok(Threads::Auto),
            "compact" => Ok(Threads::Compact),
            "spread" => Ok(Threads::Spread),
            other => Err(format!("threads: '{other}' is not auto, compact or spread")),
        }
    }
}

/// A `mio` loop cut at its poll.
pub trait EventLoop: Send {
    /// The loop's poll (an epoll descriptor), to nest in another poll.
    fn poll_fd(&self) -> RawFd;
    /// How long the loop may sleep before it has something to do (zero:
    /// work is waiting that no readiness event will announce).
    fn timeout(&self) -> Duration;
    /// One turn: polls with `timeout`, acts on what came. False once the
    /// loop has ended, after its own orderly end.
    fn turn(&mut self, timeout: Duration) -> bool;
    /// Ends the loop in order now (its thread-mate has ended).
    fn finish(&mut self);
}

/// Runs one loop on this thread until it ends.
pub fn run_alone(mut l: impl EventLoop) {
    while l.turn(l.timeout()) {}
}

/// Runs `l` alone on a new thread named `name`, pinned to `core` (logged
/// as `role`).
pub fn spawn_alone(
    name: &str,
    role: &'static str,
    core: Option<usize>,
    l: impl EventLoop + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::affinity::pin(role, core);
            run_alone(l);
        })
}

/// [`run_together`] on a new thread named `name`, pinned to `core`
/// (logged as `role`).
pub fn spawn_together(
    name: &str,
    role: &'static str,
    core: Option<usize>,
    first: impl EventLoop + 'static,
    second: impl EventLoop + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::affinity::pin(role, core);
            if let Err(e) = run_together(first, second) {
                log::error!("the loops of {role} stopped: {e}");
            }
        })
}

const FIRST: Token = Token(0);
const SECOND: Token = Token(1);

/// Runs two loops on this thread: sleeps until either's poll has events
/// or either's timer is due, then turns `first`, then `second`, neither
/// sleeping. When one ends, the other is finished: both end together.
pub fn run_together(mut first: impl EventLoop, mut second: impl EventLoop) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&first.poll_fd()), FIRST, Interest::READABLE)?;
    poll.registry()
        .register(&mut SourceFd(&second.poll_fd()), SECOND, Interest::READABLE)?;
    let mut events = Events::with_capacity(4);
    loop {
        let timeout = first.timeout().min(second.timeout());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::error!("shared loop poll failed: {e}; stopping both loops");
                first.finish();
                second.finish();
                return Err(e);
            }
        }
        if !first.turn(Duration::ZERO) {
            second.finish();
            return Ok(());
        }
        if !second.turn(Duration::ZERO) {
            first.finish();
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::Waker;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::Instant;

    /// A loop woken by its waker; it ends after `ends_after` wake-ups.
    struct Woken {
        poll: Poll,
        events: Events,
        seen: Arc<AtomicUsize>,
        ends_after: usize,
        finished: Arc<AtomicUsize>,
    }

    fn woken(ends_after: usize) -> (Woken, Arc<Waker>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let l = Woken {
            poll,
            events: Events::with_capacity(8),
            seen: Arc::clone(&seen),
            ends_after,
            finished: Arc::clone(&finished),
        };
        (l, waker, seen, finished)
    }

    impl EventLoop for Woken {
        fn poll_fd(&self) -> RawFd {
            self.poll.as_raw_fd()
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(10)
        }
        fn turn(&mut self, timeout: Duration) -> bool {
            self.poll.poll(&mut self.events, Some(timeout)).unwrap();
            let n = self.events.iter().count();
            let seen = self.seen.fetch_add(n, Relaxed) + n;
            seen < self.ends_after
        }
        fn finish(&mut self) {
            self.finished.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn either_loop_is_woken_through_the_shared_poll_and_both_end_together() {
        let (a, wake_a, seen_a, fin_a) = woken(usize::MAX);
        let (b, wake_b, seen_b, fin_b) = woken(2);
        let t = std::thread::spawn(move || run_together(a, b));
        let wait = |what: &AtomicUsize, n: usize| {
            let end = Instant::now() + Duration::from_secs(5);
            while what.load(Relaxed) < n && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            what.load(Relaxed)
        };
        wake_a.wake().unwrap();
        assert_eq!(wait(&seen_a, 1), 1, "the first loop's waker reaches it");
        wake_b.wake().unwrap();
        assert_eq!(wait(&seen_b, 1), 1, "so does the second's");
        wake_a.wake().unwrap();
        assert_eq!(wait(&seen_a, 2), 2);
        wake_b.wake().unwrap();
        t.join().unwrap().unwrap();
        assert_eq!(seen_b.load(Relaxed), 2);
        assert_eq!(
            (fin_a.load(Relaxed), fin_b.load(Relaxed)),
            (1, 0),
            "the second ended on its own; the first was finished"
        );
    }

    #[test]
    fn auto_is_compact_on_two_cores_or_fewer() {
        assert_eq!(Threads::Auto.resolve(1), Threads::Compact);
        assert_eq!(Threads::Auto.resolve(2), Threads::Compact);
        assert_eq!(Threads::Auto.resolve(4), Threads::Spread);
        assert_eq!(Threads::Spread.resolve(2), Threads::Spread);
        assert_eq!(Threads::Compact.resolve(16), Threads::Compact);
        assert_eq!("compact".parse(), Ok(Threads::Compact));
        assert!("fast"
            .parse::<Threads>()
            .unwrap_err()
            .contains("auto, compact or spread"));
    }

    #[test]
    fn fanout_shards_fill_the_cores_the_network_thread_leaves() {
        assert_eq!(Threads::Compact.fanout_shards(Some(4), 16), 1);
        assert_eq!(Threads::Spread.fanout_shards(Some(3), 2), 3);
        assert_eq!(Threads::Spread.fanout_shards(None, 2), 1);
        assert_eq!(Threads::Spread.fanout_shards(None, 4), 3);
        assert_eq!(Threads::Spread.fanout_shards(None, 64), AUTO_SHARDS_MAX);
    }
}
