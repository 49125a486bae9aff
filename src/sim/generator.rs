//! The generator thread: turns the configured rate into packets for the
//! connections that subscribed.
//!
//! Each due tick steps the next instrument, round-robin in key order, over
//! the union of every open connection's subscriptions, encodes it once per
//! mode that someone holds, and queues the shared bytes on each subscriber
//! with [`ConnHandle::push`], which never blocks (a full queue drops and
//! counts). Below [`BATCH_RATE`] it sleeps until each tick is due; at or
//! above, it wakes every millisecond and emits everything due since, which
//! the connection threads then batch into frames. If it falls more than
//! [`MAX_LAG`] behind (a slow machine, a stall) it forgets the debt rather
//! than bursting.
//!
//! Four times a second ([`HOUSEKEEPING`]), whatever the rate, it also runs
//! the token expiry check ([`Shared::expire_tokens`]): not per tick, and on
//! a thread no client can hold up.
//!
//! An option with a model (`SimConfig::options`) is stepped with its
//! underlying's current price from the same table of states.
//!
//! The routing table (instrument → subscribers) is rebuilt only when
//! [`Shared::subs_version`] moves. Instrument states live here, created on
//! first subscription and kept for the simulator's life, so volume and OI
//! keep growing across unsubscribe/subscribe.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tungstenite::Bytes;

use super::market::{has_oi, Instrument};
use super::shared::{lock, rupees, ConnHandle, Endpoint, Out, Shared};
use crate::domain::{InstrumentKey, Mode};
use crate::wire::depth::DepthMessage;
use crate::wire::feed::{FeedData, FeedMessage};

/// From this rate up, ticks are emitted in 1 ms rounds and may share frames.
pub(crate) const BATCH_RATE: u32 = 1_000;
/// How far behind schedule the generator may fall before dropping the debt.
const MAX_LAG: Duration = Duration::from_millis(100);
/// Every this many trades a derivative sends an OI packet as well.
const OI_EVERY: u64 = 10;
/// How long to sleep when there is nothing to generate.
const IDLE: Duration = Duration::from_millis(100);
/// How often token expiry is checked.
pub(crate) const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Who wants one instrument, and how.
#[derive(Debug, Default)]
struct Route {
    feed: Vec<(Arc<ConnHandle>, Mode)>,
    depth: Vec<Arc<ConnHandle>>,
}

/// Runs until [`Shared::stop`] is set; `poked` wakes it early.
pub(crate) fn run(shared: &Shared, poked: &Receiver<()>) {
    let rate = shared.settings.ticks_per_sec;
    let interval = (rate > 0)
        .then(|| Duration::from_secs_f64(1.0 / f64::from(rate)).max(Duration::from_nanos(1)));
    // Most ticks in one round: twice a round's worth, so a late wake-up
    // catches up but a huge rate cannot keep this thread in one round.
    let max_per_round = (rate / 500).clamp(4, 100_000);
    let round = if rate >= BATCH_RATE {
        Duration::from_millis(1)
    } else {
        Duration::ZERO
    };
    let mut market: HashMap<InstrumentKey, Instrument> = HashMap::new();
    let mut routes: Vec<(InstrumentKey, Route)> = Vec::new();
    let mut version = None;
    let mut next_instrument = 0usize;
    let mut next_due = Instant::now();
    let mut touched: Vec<Arc<ConnHandle>> = Vec::new();
    let mut next_housekeeping = Instant::now();
    // Prices moved this round, for the paper book (one lock per round).
    let mut moved: Vec<(InstrumentKey, f64)> = Vec::new();

    loop {
        let now = Instant::now();
        let wait = match interval {
            Some(_) if !routes.is_empty() && !shared.stalled() => {
                next_due.saturating_duration_since(now).max(round)
            }
            _ => IDLE,
        }
        .min(next_housekeeping.saturating_duration_since(now));
        match poked.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.stopping() {
            return;
        }
        let now = Instant::now();
        if now >= next_housekeeping {
            shared.expire_tokens();
            next_housekeeping = now + HOUSEKEEPING;
        }
        let Some(interval) = interval else { continue };
        let now = Instant::now();
        let v = shared.subs_version.load(Ordering::SeqCst);
        if version != Some(v) {
            version = Some(v);
            routes = routing_table(shared);
        }
        if routes.is_empty() || shared.stalled() {
            next_due = now;
            continue;
        }
        if now.saturating_duration_since(next_due) > MAX_LAG {
            next_due = now;
        }
        let epoch = epoch_seconds();
        let mut emitted = 0;
        while next_due <= now {
            if emitted == max_per_round {
                next_due = now + interval;
                break;
            }
            emitted += 1;
            next_due += interval;
            let (key, route) = &routes[next_instrument % routes.len()];
            next_instrument = next_instrument.wrapping_add(1);
            let underlying = underlying_price(shared, &mut market, &routes, *key, epoch);
            let inst = market
                .entry(*key)
                .or_insert_with(|| shared.settings.instrument(*key));
            inst.step_with(epoch, underlying);
            if key.segment != crate::domain::Segment::IdxI {
                moved.push((*key, rupees(inst.ticker().ltp)));
            }
            emit(shared, inst, route, &mut touched);
        }
        if !moved.is_empty() {
            shared.prices(&moved);
            moved.clear();
        }
        touched.sort_by_key(|c| c.id);
        touched.dedup_by_key(|c| c.id);
        for conn in touched.drain(..) {
            conn.notify();
        }
    }
}

/// For an option priced from its underlying, the underlying's current
/// simulated price (rupees, as its feed packets carry it): its state here
/// is the one its subscribers get, created if new; an underlying nobody
/// subscribed to is stepped along with its options (at most once a
/// second), so they still move with a live underlying.
fn underlying_price(
    shared: &Shared,
    market: &mut HashMap<InstrumentKey, Instrument>,
    routes: &[(InstrumentKey, Route)],
    key: InstrumentKey,
    epoch: u32,
) -> Option<f64> {
    let spec = shared.settings.options.get(&key)?;
    let under = spec.underlying;
    if under == key {
        return None;
    }
    let routed = routes.binary_search_by_key(&under, |(k, _)| *k).is_ok();
    let inst = market
        .entry(under)
        .or_insert_with(|| shared.settings.instrument(under));
    // At most one trade a second, however many of its options tick.
    if !routed && inst.ticker().ltt != epoch {
        inst.step(epoch);
    }
    Some(rupees(inst.ticker().ltp))
}

/// The current routing table, instruments in key order.
fn routing_table(shared: &Shared) -> Vec<(InstrumentKey, Route)> {
    let mut table: BTreeMap<InstrumentKey, Route> = BTreeMap::new();
    for (conn, login) in shared.open_conns() {
        let subs = lock(&conn.subs);
        for (key, mode) in subs.iter() {
            let route = table.entry(*key).or_default();
            match login.endpoint {
                Endpoint::Feed => route.feed.push((conn.clone(), *mode)),
                Endpoint::Depth => route.depth.push(conn.clone()),
            }
        }
    }
    table.into_iter().collect()
}

/// Queues one trade of `inst` on each subscriber, in its mode.
fn emit(shared: &Shared, inst: &mut Instrument, route: &Route, touched: &mut Vec<Arc<ConnHandle>>) {
    let key = inst.key();
    let mut encoded: [Option<Bytes>; 3] = [None, None, None];
    let oi = (has_oi(key.segment) && inst.steps() % OI_EVERY == 0).then(|| {
        let mut b = Vec::with_capacity(12);
        FeedMessage::Data(key, FeedData::Oi(inst.oi())).encode(&mut b);
        Bytes::from(b)
    });
    for (conn, mode) in &route.feed {
        let bytes = encoded[*mode as usize]
            .get_or_insert_with(|| {
                let data = match mode {
                    Mode::Ticker => FeedData::Ticker(inst.ticker()),
                    Mode::Quote => FeedData::Quote(inst.quote()),
                    Mode::Full => FeedData::Full(inst.full()),
                };
                let msg = FeedMessage::Data(key, data);
                let mut b = Vec::with_capacity(msg.wire_len());
                msg.encode(&mut b);
                Bytes::from(b)
            })
            .clone();
        conn.push(
            Out::Tick {
                key,
                mode: *mode,
                bytes,
                packets: 1,
            },
            &shared.stats,
        );
        if let (Some(oi), Mode::Quote | Mode::Full) = (&oi, mode) {
            conn.push(
                Out::Tick {
                    key,
                    mode: *mode,
                    bytes: oi.clone(),
                    packets: 1,
                },
                &shared.stats,
            );
        }
        touched.push(conn.clone());
    }
    if !route.depth.is_empty() {
        let mut b = Vec::with_capacity(2 * crate::wire::depth::SIDE_LEN);
        for book in inst.depth20() {
            DepthMessage::Book(book).encode(&mut b);
        }
        let bytes = Bytes::from(b);
        for conn in &route.depth {
            conn.push(
                Out::Tick {
                    key,
                    mode: Mode::Full,
                    bytes: bytes.clone(),
                    packets: 2,
                },
                &shared.stats,
            );
            touched.push(conn.clone());
        }
    }
}

/// Wall-clock seconds since the Unix epoch, for LTT.
pub(crate) fn epoch_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}
