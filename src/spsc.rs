//! Pushing into the engine's SPSC rings: wait, never drop.
//!
//! Every ring on the data path (ticks, updates, depth) is bounded. A full
//! one is never a silent drop: the producer naps and retries, poking its
//! consumer before each nap, so it stops reading its own input and the
//! pressure travels back (to the upstream socket, and through TCP to the
//! sender). Only a consumer that has gone away, or shutdown, ends the wait.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use ringbuf::traits::{Observer, Producer};
use ringbuf::HeapProd;

use crate::metrics::Counter;

/// How long the producer naps between tries on a full ring.
const NAP: Duration = Duration::from_micros(20);

/// Pushes `item`; on a full ring counts one wait in `waits`, then naps and
/// retries, calling `poke` (wake the consumer) before each nap. False only
/// when the consumer is gone or `stop` is set: the item is dropped then.
pub fn push_or_wait<T>(
    ring: &mut HeapProd<T>,
    item: T,
    waits: &Counter,
    stop: &AtomicBool,
    mut poke: impl FnMut(),
) -> bool {
    let Err(mut item) = ring.try_push(item) else {
        return true;
    };
    waits.inc();
    loop {
        if !ring.read_is_held() || stop.load(Relaxed) {
            return false;
        }
        poke();
        std::thread::sleep(NAP);
        match ring.try_push(item) {
            Ok(()) => return true,
            Err(back) => item = back,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::traits::{Consumer, Split};
    use ringbuf::HeapRb;
    use std::sync::Arc;

    #[test]
    fn a_full_ring_waits_for_the_consumer_and_loses_nothing() {
        let (mut tx, mut rx) = HeapRb::<u32>::new(2).split();
        let waits = Counter::new("w", "w");
        let stop = AtomicBool::new(false);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 50 {
                match rx.try_pop() {
                    Some(v) => got.push(v),
                    None => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            got
        });
        let mut pokes = 0;
        for i in 0..50 {
            assert!(push_or_wait(&mut tx, i, &waits, &stop, || pokes += 1));
        }
        assert_eq!(reader.join().unwrap(), (0..50).collect::<Vec<_>>());
        assert!(waits.get() > 0 && pokes > 0);
    }

    #[test]
    fn stop_or_a_gone_consumer_ends_the_wait() {
        let (mut tx, rx) = HeapRb::<u32>::new(1).split();
        let waits = Counter::new("w", "w");
        let stop = Arc::new(AtomicBool::new(false));
        assert!(push_or_wait(&mut tx, 1, &waits, &stop, || {}));
        stop.store(true, Relaxed);
        assert!(!push_or_wait(&mut tx, 2, &waits, &stop, || {}));
        stop.store(false, Relaxed);
        drop(rx);
        assert!(!push_or_wait(&mut tx, 3, &waits, &stop, || {}));
        assert_eq!(waits.get(), 2);
    }
}
