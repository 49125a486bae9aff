//! The acceptor thread: takes TCP connections and gives each its own
//! connection thread ([`super::conn`]).
//!
//! It does no protocol work, so a slow or hostile client (a stalled TLS
//! handshake, garbage instead of HTTP) only ever occupies its own thread. At
//! most [`MAX_CONNECTIONS`] connection threads live at once; a connection
//! beyond that is closed as soon as it is accepted. On shutdown the acceptor
//! joins every connection thread before it returns.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::shared::Shared;

/// Most connection threads alive at once (handshaking or open).
pub(crate) const MAX_CONNECTIONS: usize = 256;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// A bound listener, ready to run on its own thread.
#[derive(Debug)]
pub(crate) struct Acceptor {
    shared: Arc<Shared>,
    listener: TcpListener,
    poll: Poll,
    waker: Arc<Waker>,
}

impl Acceptor {
    pub(crate) fn bind(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<Acceptor> {
        let mut listener = TcpListener::bind(addr)?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Acceptor {
            shared,
            listener,
            poll,
            waker,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address; fall back to the
        // unspecified one rather than panic.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Wakes [`Acceptor::run`] so it sees the stop flag.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(16);
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        while !self.shared.stopping() {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
            {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            loop {
                match self.listener.accept() {
                    Ok((stream, _peer)) => {
                        workers.retain(|w| !w.is_finished());
                        if workers.len() >= MAX_CONNECTIONS || self.shared.stopping() {
                            drop(stream);
                            continue;
                        }
                        let shared = self.shared.clone();
                        let id = shared.next_conn_id();
                        let spawned = std::thread::Builder::new()
                            .name(format!("dhan-sim-conn-{id}"))
                            .spawn(move || super::conn::run(&shared, id, stream));
                        if let Ok(handle) = spawned {
                            workers.push(handle);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // ECONNABORTED, EMFILE and the like: this one connection
                    // is lost; try again at the next readiness event.
                    Err(_) => break,
                }
            }
        }
        // Connection threads see the stop flag within one poll timeout.
        for w in workers {
            let _ = w.join();
        }
    }
}
