//! Name resolution off the network thread.
//!
//! A system lookup (`getaddrinfo`) blocks for as long as the resolver likes:
//! seconds per server, times retries. On the network thread that would stall
//! the reads of every other upstream connection, so each lookup runs on a
//! short-lived thread of its own and its answer comes back over a channel,
//! followed by a wake of the network loop's `mio::Waker`. The network thread
//! never waits: the slot sits in a resolving phase with a deadline, and an
//! answer for a phase that has moved on is dropped.
//!
//! Nothing is cached: every connect attempt asks again, since DhanHQ may
//! move its feed. At most one lookup runs per slot, though: an attempt that
//! starts while the previous attempt's lookup still hangs adopts that lookup
//! (its answer, when it comes, is as fresh as the new attempt) instead of
//! starting another thread, so a resolver that never answers costs one
//! thread per slot, not one per retry.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

/// Turns a host name into addresses. Called on a lookup thread, never on
/// the network thread, so it may block.
///
/// The default is [`SystemResolver`]; tests inject slow or scripted ones
/// through [`super::UpstreamConfig::resolver`].
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The addresses of `host` (a name, never an IP literal: those skip the
    /// lookup), with `port` set.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (`getaddrinfo` through
/// [`ToSocketAddrs`]): `/etc/hosts`, then DNS.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// A finished lookup, on its way back to the network thread.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The slot that asked.
    pub slot: usize,
    /// Which lookup this answers (see [`Lookups::start`]).
    pub lookup: u64,
    /// The address to connect to, or why there is none (no secrets in it:
    /// only the host name).
    pub result: Result<SocketAddr, String>,
}

/// The network thread's side of the lookups: starts them, collects answers.
pub(crate) struct Lookups {
    resolver: Arc<dyn Resolver>,
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    waker: Arc<Waker>,
    /// The lookup still running for each slot, if any.
    in_flight: Vec<Option<u64>>,
    next: u64,
}

impl fmt::Debug for Lookups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookups")
            .field("resolver", &self.resolver)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Lookups {
    /// Lookups for `slots` connection slots; answers wake `waker`.
    pub fn new(resolver: Arc<dyn Resolver>, waker: Arc<Waker>, slots: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Lookups {
            resolver,
            tx,
            rx,
            waker,
            in_flight: vec![None; slots],
            next: 0,
        }
    }

    /// Starts a lookup of `host` for `slot`, or adopts the one still running
    /// for it; returns the id its [`Answer`] will carry. Fails only when the
    /// OS refuses a thread.
    pub fn start(&mut self, slot: usize, host: &str, port: u16) -> io::Result<u64> {
        if let Some(running) = self.in_flight[slot] {
            return Ok(running);
        }
        let lookup = self.next;
        let (resolver, tx, waker) = (
            Arc::clone(&self.resolver),
            self.tx.clone(),
            Arc::clone(&self.waker),
        );
        let host = host.to_string();
        std::thread::Builder::new()
            .name("dhan-dns".into())
            .spawn(move || {
                let result = first_address(resolver.resolve(&host, port), &host);
                // Both fail only once the network thread has ended.
                if tx
                    .send(Answer {
                        slot,
                        lookup,
                        result,
                    })
                    .is_ok()
                {
                    let _ = waker.wake();
                }
            })?;
        self.next += 1;
        self.in_flight[slot] = Some(lookup);
        Ok(lookup)
    }

    /// An answer that has arrived, if any; its slot may start a new lookup
    /// from now on.
    pub fn try_next(&mut self) -> Option<Answer> {
        let answer = self.rx.try_recv().ok()?;
        if self.in_flight[answer.slot] == Some(answer.lookup) {
            self.in_flight[answer.slot] = None;
        }
        Some(answer)
    }
}

fn first_address(found: io::Result<Vec<SocketAddr>>, host: &str) -> Result<SocketAddr, String> {
    found
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use mio::{Events, Poll, Token};

    /// Answers 127.0.0.1 after waiting for the test to open the gate.
    #[derive(Debug, Default)]
    struct Gated {
        open: Mutex<bool>,
        calls: AtomicUsize,
    }

    impl Resolver for Gated {
        fn resolve(&self, _host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            self.calls.fetch_add(1, Relaxed);
            while !*self.open.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        }
    }

    fn wait_answer(poll: &mut Poll, lookups: &mut Lookups) -> Answer {
        let mut events = Events::with_capacity(4);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = lookups.try_next() {
                return a;
            }
            assert!(Instant::now() < end, "no answer");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
        }
    }

    #[test]
    fn a_slot_adopts_its_running_lookup_and_answers_wake_the_poll() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let gated = Arc::new(Gated::default());
        let mut lookups = Lookups::new(gated.clone(), waker, 2);
        let first = lookups.start(0, "feed.test", 9).unwrap();
        assert_eq!(lookups.start(0, "feed.test", 9).unwrap(), first, "adopted");
        let other = lookups.start(1, "feed.test", 9).unwrap();
        assert_ne!(other, first, "slots do not share lookups");
        *gated.open.lock().unwrap() = true;
        let mut answers = [
            wait_answer(&mut poll, &mut lookups),
            wait_answer(&mut poll, &mut lookups),
        ];
        answers.sort_by_key(|a| a.slot);
        assert_eq!((answers[0].slot, answers[0].lookup), (0, first));
        assert_eq!((answers[1].slot, answers[1].lookup), (1, other));
        assert_eq!(answers[0].result, Ok(SocketAddr::from(([127, 0, 0, 1], 9))));
        assert_eq!(gated.calls.load(Relaxed), 2, "one thread per slot");
        let again = lookups.start(0, "feed.test", 9).unwrap();
        assert!(again > other, "answered: the next attempt asks afresh");
    }

    #[test]
    fn failures_name_the_host() {
        let err = io::Error::new(io::ErrorKind::NotFound, "no such host");
        assert_eq!(
            first_address(Err(err), "feed.test"),
            Err("cannot resolve feed.test: no such host".into())
        );
        assert_eq!(
            first_address(Ok(vec![]), "feed.test"),
            Err("feed.test resolves to no address".into())
        );
    }

    #[test]
    fn the_system_resolver_knows_localhost() {
        let found = SystemResolver.resolve("localhost", 80).unwrap();
        assert!(found.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        assert!(!found.is_empty());
    }
}
