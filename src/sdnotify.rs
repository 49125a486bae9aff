//! systemd's notify protocol, without a crate: readiness, status, stopping
//! and the watchdog, as datagrams to `$NOTIFY_SOCKET`.
//!
//! Contract: under systemd (`Type=notify`) the service manager passes a Unix
//! datagram socket in `$NOTIFY_SOCKET` — a path, or an abstract name when it
//! starts with `@` — and each message is one datagram of `KEY=VALUE` lines
//! (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`). Outside systemd the
//! variable is unset, [`Notifier::from_env`] returns `None` and the caller
//! sends nothing. Nothing here panics or fails the relay: a message that
//! cannot be sent is logged at debug and reported as `false`.
//!
//! The watchdog (`WatchdogSec=` in the unit, seen here as `$WATCHDOG_USEC`)
//! restarts a relay that stops pinging. [`spawn_watchdog`] pings from its own
//! thread at half the interval, but only while the caller's health check
//! says the engine's loops are turning, so a wedged engine — a loop stuck or
//! a thread gone — stops the pings and systemd restarts it, while a merely
//! quiet market does not. [`Heartbeat`] is such a check at the cost of one
//! relaxed atomic add per loop turn.

use crate::stoppable::Stoppable;
use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a send may block when systemd's socket queue is full: a
/// message is dropped (and logged) rather than stall the caller for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to systemd's notify socket. Cheap to clone (one socket,
/// shared).
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Arc<UnixDatagram>,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asked for through `$NOTIFY_SOCKET`, with the
    /// watchdog interval from `$WATCHDOG_USEC` / `$WATCHDOG_PID`; `None`
    /// when the relay does not run under systemd (or the address is not
    /// one this can reach).
    pub fn from_env() -> Option<Notifier> {
        Notifier::from_vars(|name| std::env::var_os(name), std::process::id())
    }

    /// [`Notifier::from_env`] over any variable look-up, for tests.
    fn from_vars(var: impl Fn(&str) -> Option<OsString>, pid: u32) -> Option<Notifier> {
        let socket = var("NOTIFY_SOCKET")?;
        let mut notifier = Notifier::connect(socket.as_bytes())?;
        notifier.watchdog = watchdog_interval_from(
            var("WATCHDOG_USEC").as_deref().and_then(|v| v.to_str()),
            var("WATCHDOG_PID").as_deref().and_then(|v| v.to_str()),
            pid,
        );
        Some(notifier)
    }

    /// A notifier sending to `address`: an absolute path, or `@name` for
    /// the abstract namespace. `None` (logged at debug) for anything else
    /// or when no socket can be made.
    pub fn connect(address: &[u8]) -> Option<Notifier> {
        let addr = match address.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&address[1..]),
            Some(b'/') => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(address)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor @abstract",
            )),
        };
        let addr = match addr {
            Ok(a) => a,
            Err(e) => {
                log::debug!(
                    "NOTIFY_SOCKET {:?} not usable: {e}; not notifying systemd",
                    String::from_utf8_lossy(address)
                );
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                log::debug!("cannot make a socket to notify systemd: {e}");
                return None;
            }
        };
        if let Err(e) = socket.set_write_timeout(Some(SEND_TIMEOUT)) {
            log::debug!("notify socket: cannot set a send timeout: {e}");
        }
        Some(Notifier {
            socket: Arc::new(socket),
            addr,
            watchdog: None,
        })
    }

    /// `READY=1`, with `STATUS=` when given: start-up is complete. systemd
    /// holds `systemctl start` (and units ordered after this one) until it.
    pub fn ready(&self, status: Option<&str>) -> bool {
        match status {
            Some(s) => self.send(&format!("READY=1\nSTATUS={}", one_line(s))),
            None => self.send("READY=1"),
        }
    }

    /// `STATUS=…`: one line shown by `systemctl status` (newlines become
    /// spaces, so a status cannot smuggle in another assignment).
    pub fn status(&self, status: &str) -> bool {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    /// `WATCHDOG=1`: the service is alive; resets systemd's watchdog timer.
    pub fn watchdog(&self) -> bool {
        self.send("WATCHDOG=1")
    }

    /// `STOPPING=1`: an orderly shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.send("STOPPING=1")
    }

    /// The watchdog interval systemd expects pings within (`WatchdogSec=`),
    /// when it is enabled for this process: `$WATCHDOG_USEC`, and
    /// `$WATCHDOG_PID`, if set, is our pid. Ping at half of it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one raw message (`KEY=VALUE` lines); `true` when the datagram
    /// was handed to the kernel. Failures are logged at debug.
    pub fn send(&self, message: &str) -> bool {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(_) => true,
            Err(e) => {
                let key = message.split('=').next().unwrap_or("");
                log::debug!("cannot notify systemd ({key}): {e}");
                false
            }
        }
    }
}

/// `STATUS` values are one line.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        s.replace(['\n', '\r'], " ").into()
    } else {
        s.into()
    }
}

/// The watchdog interval from `$WATCHDOG_USEC` and `$WATCHDOG_PID` as
/// systemd sets them: microseconds, more than zero, and meant for `pid`
/// (a `WATCHDOG_PID` naming another process — our parent, say — means the
/// watchdog is not ours).
fn watchdog_interval_from(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    let usec = usec?;
    let Ok(us) = usec.trim().parse::<u64>() else {
        log::debug!("WATCHDOG_USEC {usec:?} is not a number; no watchdog");
        return None;
    };
    if us == 0 {
        return None;
    }
    if let Some(p) = watchdog_pid {
        if p.trim().parse::<u32>() != Ok(pid) {
            log::debug!("WATCHDOG_PID {p:?} is not this process ({pid}); no watchdog");
            return None;
        }
    }
    Some(Duration::from_micros(us))
}

/// A liveness counter: a loop calls [`Heartbeat::beat`] once per turn (one
/// relaxed atomic add); the watchdog's health check sees whether it moved.
/// Only useful for loops that turn even when idle (a poll with a timeout).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    /// A counter at zero.
    pub fn new() -> Heartbeat {
        Heartbeat::default()
    }

    /// One turn of the loop.
    #[inline]
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Turns so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A health check for [`spawn_watchdog`]: `true` when every named
/// heartbeat has beaten since the previous call (or since this was made).
/// The first loop that stops is logged as a warning by name, once until it
/// turns again.
pub fn all_beating(beats: Vec<(String, Heartbeat)>) -> impl FnMut() -> bool + Send + 'static {
    let mut seen: Vec<u64> = beats.iter().map(|(_, b)| b.count()).collect();
    let mut stalled = false;
    move || {
        let mut stuck = None;
        for ((name, beat), last) in beats.iter().zip(seen.iter_mut()) {
            let now = beat.count();
            if now == *last && stuck.is_none() {
                stuck = Some(name.as_str());
            }
            *last = now;
        }
        match stuck {
            Some(name) if !stalled => {
                stalled = true;
                log::warn!(
                    "watchdog: the {name} loop has not turned since the last check; \
                     not pinging systemd, which restarts the relay if this lasts"
                );
            }
            None if stalled => {
                stalled = false;
                log::info!("watchdog: every loop turns again; pinging systemd");
            }
            _ => {}
        }
        stuck.is_none()
    }
}

/// The watchdog thread; stopped and joined by [`Watchdog::stop`] or on
/// drop.
#[derive(Debug)]
pub struct Watchdog {
    worker: Stoppable,
}

impl Watchdog {
    /// Stops pinging and joins the thread (also on drop).
    pub fn stop(mut self) {
        self.worker.stop();
    }
}

/// Starts a thread that sends `WATCHDOG=1` every half watchdog interval
/// while `health()` returns `true`. `health` runs on that thread, once per
/// ping: make it cheap and non-blocking (read atomics, e.g.
/// [`all_beating`]). `None` when systemd asked for no watchdog (or the
/// thread cannot start, logged as a warning: systemd will then restart the
/// relay when the interval passes).
pub fn spawn_watchdog(
    notifier: Notifier,
    health: impl FnMut() -> bool + Send + 'static,
) -> Option<Watchdog> {
    let interval = notifier.watchdog_interval()?;
    let every = interval / 2;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let mut health = health;
    let spawned = Stoppable::spawn("dhan-watchdog", stop, move || {
        let mut next = Instant::now() + every;
        loop {
            // park_timeout may wake early (unpark, spuriously): wait
            // out the deadline, leaving as soon as asked to stop.
            loop {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::park_timeout(next - now);
            }
            next += every;
            if health() {
                notifier.watchdog();
            }
        }
    });
    match spawned {
        Ok(worker) => {
            log::debug!(
                "systemd watchdog: {} ms, pinging every {} ms while healthy",
                interval.as_millis(),
                every.as_millis()
            );
            Some(Watchdog { worker })
        }
        Err(e) => {
            log::warn!(
                "cannot start the systemd watchdog thread: {e}; systemd will restart the relay"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    /// A socket bound where systemd's would be, in a fresh temp dir.
    struct PathSocket {
        dir: PathBuf,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl PathSocket {
        fn new() -> PathSocket {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "dhan-relay-sdnotify-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            PathSocket { dir, path, socket }
        }
    }

    impl Drop for PathSocket {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn each_call_sends_its_exact_datagram_to_a_path_socket() {
        let server = PathSocket::new();
        let n = Notifier::connect(server.path.as_os_str().as_bytes()).unwrap();
        assert!(n.ready(None));
        assert_eq!(recv(&server.socket), "READY=1");
        assert!(n.ready(Some("listening on 127.0.0.1:8000")));
        assert_eq!(
            recv(&server.socket),
            "READY=1\nSTATUS=listening on 127.0.0.1:8000"
        );
        assert!(n.status("2 upstream connections\nREADY=1"));
        assert_eq!(
            recv(&server.socket),
            "STATUS=2 upstream connections READY=1",
            "a status stays one line"
        );
        assert!(n.watchdog());
        assert_eq!(recv(&server.socket), "WATCHDOG=1");
        assert!(n.stopping());
        assert_eq!(recv(&server.socket), "STOPPING=1");
        let clone = n.clone();
        assert!(clone.watchdog());
        assert_eq!(recv(&server.socket), "WATCHDOG=1");
    }

    #[test]
    fn an_abstract_address_reaches_an_abstract_socket() {
        let name = format!("dhan-relay-sdnotify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let env = vars(&[("NOTIFY_SOCKET", &format!("@{name}"))]);
        let n = Notifier::from_vars(env, 42).unwrap();
        assert_eq!(n.watchdog_interval(), None, "no WATCHDOG_USEC");
        assert!(n.ready(Some("up")));
        assert_eq!(recv(&server), "READY=1\nSTATUS=up");
    }

    #[test]
    fn no_socket_means_no_notifier_and_failures_are_false() {
        assert!(Notifier::from_vars(vars(&[]), 1).is_none());
        assert!(Notifier::from_vars(vars(&[("WATCHDOG_USEC", "30000000")]), 1).is_none());
        for bad in ["", "relative/path", "vsock:2:1"] {
            assert!(
                Notifier::from_vars(vars(&[("NOTIFY_SOCKET", bad)]), 1).is_none(),
                "{bad:?}"
            );
        }
        // Nobody listening: false, no panic.
        let gone = std::env::temp_dir().join(format!("dhan-relay-no-such-{}", std::process::id()));
        let n = Notifier::connect(gone.as_os_str().as_bytes()).unwrap();
        assert!(!n.ready(None));
        assert!(!n.watchdog());
    }

    #[test]
    fn watchdog_usec_is_parsed_and_checked_against_our_pid() {
        let d = |usec, pid| watchdog_interval_from(usec, pid, 4242);
        assert_eq!(d(Some("30000000"), None), Some(Duration::from_secs(30)));
        assert_eq!(
            d(Some("1500"), Some("4242")),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            d(Some("30000000"), Some("4243")),
            None,
            "another pid's watchdog"
        );
        assert_eq!(d(Some("30000000"), Some("x")), None);
        assert_eq!(d(Some("0"), None), None, "zero: disabled");
        assert_eq!(d(Some("30s"), None), None);
        assert_eq!(d(Some("-1"), None), None);
        assert_eq!(d(None, Some("4242")), None);

        let server = PathSocket::new();
        let path = server.path.to_str().unwrap();
        let n = Notifier::from_vars(
            vars(&[
                ("NOTIFY_SOCKET", path),
                ("WATCHDOG_USEC", "20000000"),
                ("WATCHDOG_PID", "7"),
            ]),
            7,
        )
        .unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(20)));
        let n = Notifier::from_vars(
            vars(&[
                ("NOTIFY_SOCKET", path),
                ("WATCHDOG_USEC", "20000000"),
                ("WATCHDOG_PID", "8"),
            ]),
            7,
        )
        .unwrap();
        assert_eq!(n.watchdog_interval(), None, "pid mismatch");
        assert!(
            spawn_watchdog(n, || true).is_none(),
            "no interval, no thread"
        );
    }

    #[test]
    fn the_watchdog_pings_at_half_the_interval_only_while_healthy() {
        let server = PathSocket::new();
        let mut n = Notifier::connect(server.path.as_os_str().as_bytes()).unwrap();
        n.watchdog = Some(Duration::from_millis(100));
        let healthy = Arc::new(AtomicBool::new(true));
        let h = Arc::clone(&healthy);
        let dog = spawn_watchdog(n, move || h.load(Ordering::Relaxed)).unwrap();
        let started = Instant::now();
        for _ in 0..3 {
            assert_eq!(recv(&server.socket), "WATCHDOG=1");
        }
        // Three pings 50 ms apart: not before ~150 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(140),
            "{:?}",
            started.elapsed()
        );
        healthy.store(false, Ordering::Relaxed);
        // Drain a ping that may have raced the switch, then silence.
        server
            .socket
            .set_read_timeout(Some(Duration::from_millis(120)))
            .unwrap();
        let _ = recv_opt(&server.socket);
        assert_eq!(recv_opt(&server.socket), None, "unhealthy: no pings");
        assert_eq!(recv_opt(&server.socket), None, "unhealthy: no pings");
        healthy.store(true, Ordering::Relaxed);
        server
            .socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(recv(&server.socket), "WATCHDOG=1", "healthy again");
        let stopping = Instant::now();
        dog.stop();
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "stop is prompt"
        );
    }

    fn recv_opt(socket: &UnixDatagram) -> Option<String> {
        let mut buf = [0u8; 64];
        socket
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn all_beating_needs_every_loop_to_turn_between_checks() {
        let net = Heartbeat::new();
        let fanout = Heartbeat::new();
        let mut check = all_beating(vec![
            ("net".into(), net.clone()),
            ("fanout".into(), fanout.clone()),
        ]);
        assert!(!check(), "nothing turned yet");
        net.beat();
        fanout.beat();
        assert!(check());
        net.beat();
        assert!(!check(), "fanout stalled");
        net.beat();
        fanout.beat();
        fanout.beat();
        assert!(check(), "both turned again");
        assert_eq!((net.count(), fanout.count()), (3, 3));
    }
}
