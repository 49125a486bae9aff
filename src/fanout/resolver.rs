//! Symbol resolution off the fanout thread.
//!
//! A subscribe or unsubscribe that names instruments by symbol is sent here
//! whole; the fanout stops reading that client until the answer comes back
//! (so its later messages keep their order) and serves everyone else
//! meanwhile. Names resolve through the watchlist first (the operator's own
//! names, as `/prices` shows them), then the instrument master with exact
//! rules only; closest-candidate suggestions, which scan the master, are
//! computed for the first [`SUGGEST_FOR`] failures of a message, and all
//! failures come back as one error message.

use crossbeam_channel::Receiver;

use super::protocol::InstrumentRef;
use super::rest::SharedView;
use super::shard::Door;
use crate::domain::{InstrumentKey, Mode};
use crate::instrument::{Master, SharedMaster, WallClock};

/// Failures of one message that get closest-candidate suggestions.
pub const SUGGEST_FOR: usize = 3;

/// What the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Subscribe in this mode.
    Subscribe(Mode),
    /// Subscribe in `depth20` (and full).
    SubscribeDepth20,
    /// Unsubscribe.
    Unsubscribe,
}

/// One client message to resolve.
#[derive(Debug)]
pub struct Job {
    /// The session's slot and its unique id (slots are reused).
    pub slot: usize,
    /// The session's id.
    pub session: u64,
    /// The request.
    pub op: Op,
    /// The instruments as the client named them.
    pub refs: Vec<InstrumentRef>,
}

/// The resolved message.
#[derive(Debug)]
pub struct Answer {
    /// The session's slot.
    pub slot: usize,
    /// The session's id.
    pub session: u64,
    /// The request.
    pub op: Op,
    /// Every instrument that resolved, in the client's order.
    pub keys: Vec<InstrumentKey>,
    /// One message for everything that did not.
    pub error: Option<String>,
}

/// Resolves one job (the thread's work; also called directly by tests).
pub fn resolve(job: Job, master: &Master, view: &SharedView, clock: &WallClock) -> Answer {
    let view = view.load();
    let today = clock.today();
    let mut keys: Vec<Option<InstrumentKey>> = Vec::with_capacity(job.refs.len());
    let mut names: Vec<(usize, &str)> = Vec::new();
    for (i, r) in job.refs.iter().enumerate() {
        match r {
            InstrumentRef::Key(k) => keys.push(Some(*k)),
            InstrumentRef::Symbol(sym) => match view.watch_key(sym) {
                Some(k) => keys.push(Some(k)),
                None => {
                    keys.push(None);
                    names.push((i, sym.as_str()));
                }
            },
        }
    }
    let mut error = None;
    if !names.is_empty() {
        let queries: Vec<&str> = names.iter().map(|(_, n)| *n).collect();
        let resolved = master.resolve_many(&queries, today, SUGGEST_FOR);
        for found in &resolved.found {
            keys[names[found.index].0] = Some(found.key);
        }
        error = resolved.error;
    }
    Answer {
        slot: job.slot,
        session: job.session,
        op: job.op,
        keys: keys.into_iter().flatten().collect(),
        error,
    }
}

/// Runs the resolver until the job channel closes; each answer goes to
/// the shard its session lives on ([`super::shard::of_session`]).
pub fn run(
    jobs: Receiver<Job>,
    answers: Vec<Door<Answer>>,
    master: SharedMaster,
    view: SharedView,
    clock: WallClock,
) {
    crate::affinity::background("resolver");
    for job in jobs {
        let answer = resolve(job, &master.load(), &view, &clock);
        let shard = super::shard::of_session(answer.session, answers.len());
        if answers[shard].send(answer).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::fanout::rest::View;
    use crate::instrument::watch::WatchItem;
    use arc_swap::ArcSwap;
    use std::sync::Arc;

    #[test]
    fn watchlist_names_then_the_master_and_one_error_for_the_rest() {
        let master = Master::sample();
        let my_rel = InstrumentKey::new(Segment::BseEq, 500325);
        let view: SharedView = Arc::new(ArcSwap::from_pointee(View {
            watchlist: vec![WatchItem {
                symbol: "MYREL".into(),
                key: my_rel,
            }],
            active: Vec::new(),
        }));
        let nifty = InstrumentKey::new(Segment::IdxI, 13);
        let by_key = InstrumentKey::new(Segment::NseEq, 1);
        let job = Job {
            slot: 3,
            session: 7,
            op: Op::Subscribe(Mode::Quote),
            refs: vec![
                InstrumentRef::Symbol("myrel".into()),
                InstrumentRef::Symbol("RELIANCX12".into()),
                InstrumentRef::Key(by_key),
                InstrumentRef::Symbol("NIFTY".into()),
                InstrumentRef::Symbol("ZZQ1".into()),
            ],
        };
        let a = resolve(job, &master, &view, &WallClock::system());
        assert_eq!(
            (a.slot, a.session, a.op),
            (3, 7, Op::Subscribe(Mode::Quote))
        );
        assert_eq!(a.keys, vec![my_rel, by_key, nifty], "client order kept");
        let e = a.error.expect("two failures");
        assert!(e.starts_with("2 of 3 symbols not found"), "{e}");
        assert!(e.contains("RELIANCX12 (did you mean RELIANCE"), "{e}");
        assert!(e.contains("ZZQ1"), "{e}");
    }
}
