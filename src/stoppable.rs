//! A background thread that parks between turns and ends when told to.
//!
//! The book, history, maintenance, recorder and watchdog threads all work
//! the same way: a shared stop flag the thread reads between its parks, and
//! an owner that sets it, unparks the thread and joins it, on `shutdown` or
//! on drop. [`Stoppable`] is that owner's half, once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};

/// A running thread with its stop flag; stopped and joined by
/// [`Stoppable::stop`] or on drop.
#[derive(Debug)]
pub struct Stoppable {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stoppable {
    /// Starts `body` on a thread named `name`; `stop` is the flag `body`
    /// reads (it is set, and the thread unparked, when asked to stop).
    pub fn spawn(
        name: &str,
        stop: Arc<AtomicBool>,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Stoppable> {
        let thread = std::thread::Builder::new().name(name.into()).spawn(body)?;
        Ok(Stoppable {
            stop,
            thread: Some(thread),
        })
    }

    /// The thread's handle (to unpark it), while it runs.
    pub fn thread(&self) -> Option<Thread> {
        self.thread.as_ref().map(|t| t.thread().clone())
    }

    /// Sets the flag, unparks the thread and waits for it to end (logged
    /// if it panicked). Does nothing the second time.
    pub fn stop(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        t.thread().unpark();
        let name = t.thread().name().unwrap_or("a worker").to_string();
        if t.join().is_err() {
            log::error!("{name} thread panicked");
        }
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stop_wakes_a_parked_thread_and_joins_it_once() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut s = Stoppable::spawn("parked", Arc::clone(&stop), move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::park_timeout(Duration::from_secs(3600));
            }
        })
        .unwrap();
        assert_eq!(s.thread().unwrap().name(), Some("parked"));
        s.stop();
        assert!(stop.load(Ordering::Relaxed));
        assert!(s.thread().is_none(), "joined");
        s.stop();
    }
}
