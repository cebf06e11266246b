//! A session's outbound queue: bytes other threads hand a session (registry broadcast and
//! send-to-id), bounded in bytes, with wake-ups both ways.
//!
//! No actix mailbox sits on this path, so a burst of short messages is bounded by the bytes it
//! holds, not by a message count. The rules (see DESIGN.md, "Flow control"):
//! - A sender offers bytes; while the queue holds less than its limit the bytes are queued
//!   (the last one may overshoot the limit by one message) and the session is woken.
//! - At the limit the sender waits ([`Attempt`]): it is woken each time the session takes
//!   bytes. The session takes bytes whenever its own write buffer is under the high watermark,
//!   so a session whose peer reads keeps taking, and its senders are only slowed down.
//! - A session that takes nothing for its slow-consumer timeout while a sender waits is marked
//!   slow: offers to it are refused at once (the caller's policy decides: drop and count, or
//!   disconnect) until it takes bytes again.
//! - Once the session stops taking writes the queue is closed and offers say so.
//!
//! This module is a leaf: it knows bytes, wakers and time, nothing of sessions or actors.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        atomic::{fence, AtomicU32, AtomicUsize, Ordering},
        Mutex, MutexGuard,
    },
    task::{Context, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::task::AtomicWaker;
use once_cell::race::OnceBox;

/// What a queued message costs beyond its bytes, so that empty messages are bounded too.
const ITEM_COST: usize = 32;
/// `Outbox::limit` of a closed queue.
const CLOSED: u32 = u32::MAX;

/// A session's outbound queue.
pub(crate) struct Outbox {
    /// Allocated at the first offer: most sessions are never sent anything through the
    /// registry, and an idle one should not carry an empty queue.
    state: OnceBox<Mutex<State>>,
    /// Charged bytes queued (bytes plus [`ITEM_COST`] per message); read without the lock on
    /// the session's hot path.
    charged: AtomicUsize,
    /// The session's driver, woken when the queue goes from empty to not empty.
    session: AtomicWaker,
    /// The most charged bytes queued, or [`CLOSED`] once the session takes no more writes.
    /// Outside `state`, so closing a queue that was never offered anything allocates nothing;
    /// one word with the limit, so the record stays in its allocator size class.
    limit: AtomicU32,
    /// In milliseconds: a session's record is kept small.
    slow_after_ms: u32,
}

struct State {
    queue: VecDeque<Bytes>,
    /// Bumped each time the session takes bytes: a waiting sender compares it to see progress.
    progress: u64,
    /// Marked slow: nothing taken for the slow-consumer timeout while a sender waited.
    slow: bool,
    /// Senders waiting for room, woken (and forgotten) when the session takes bytes or closes.
    waiters: Vec<Waker>,
    /// Counts the times `waiters` was emptied, so a sender registers once per round instead of
    /// once per poll.
    round: u64,
}

/// The answer to one offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued; the session will write it.
    Queued,
    /// At the limit; `progress` is the session's progress counter as of now.
    Full { progress: u64 },
    /// The session is marked slow; nothing was queued.
    Slow,
    /// The session takes no more writes.
    Closed,
}

impl Offer {
    /// The outcome, when the offer settled the delivery; the session's progress counter when
    /// the queue was full and the sender must wait.
    pub(crate) fn settled(self) -> Result<Outcome, u64> {
        match self {
            Offer::Queued => Ok(Outcome::Queued),
            Offer::Slow => Ok(Outcome::Slow { detected: false }),
            Offer::Closed => Ok(Outcome::Closed),
            Offer::Full { progress } => Err(progress),
        }
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.charged.load(Ordering::Relaxed))
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .finish()
    }
}

impl Outbox {
    /// A queue of at most `limit` charged bytes (one message may overshoot it), whose session
    /// counts as slow after taking nothing for `slow_after` while a sender waits.
    pub(crate) fn new(limit: usize, slow_after: Duration) -> Outbox {
        Outbox {
            state: OnceBox::new(),
            charged: AtomicUsize::new(0),
            session: AtomicWaker::new(),
            // Limits past 4 GiB or 49 days are limits nobody reaches.
            limit: AtomicU32::new(u32::try_from(limit).unwrap_or(u32::MAX).min(CLOSED - 1)),
            slow_after_ms: u32::try_from(slow_after.as_millis()).unwrap_or(u32::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        let state = self.state.get_or_init(|| {
            Box::new(Mutex::new(State {
                queue: VecDeque::new(),
                progress: 0,
                slow: false,
                waiters: Vec::new(),
                round: 0,
            }))
        });
        // Pairs with the fence in `close`: either the closer sees this state and empties it
        // under its lock, or whoever holds this lock sees `closed`.
        fence(Ordering::SeqCst);
        // Every update under this lock is a handful of plain stores: a panic elsewhere cannot
        // leave it half done.
        state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.limit.load(Ordering::SeqCst) == CLOSED
    }

    /// The limit of an open queue (a closed one is refused before its limit is looked at).
    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed) as usize
    }

    /// Offers `data`; at the limit, `waiter` (if any) is woken once the session takes bytes.
    /// `round` remembers the round a waiter registered in, so polling again does not register
    /// it twice.
    pub(crate) fn offer(&self, data: &Bytes, waiter: Option<(&Waker, &mut Option<u64>)>) -> Offer {
        let mut state = self.lock();
        if self.is_closed() {
            return Offer::Closed;
        }
        if state.slow {
            return Offer::Slow;
        }
        let charged = self.charged.load(Ordering::Relaxed);
        if charged >= self.limit() {
            if let Some((waker, round)) = waiter {
                if *round != Some(state.round) {
                    state.waiters.push(waker.clone());
                    *round = Some(state.round);
                }
            }
            return Offer::Full {
                progress: state.progress,
            };
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(data.clone());
        self.charged
            .store(charged + data.len() + ITEM_COST, Ordering::Release);
        drop(state);
        if was_empty {
            self.session.wake();
        }
        Offer::Queued
    }

    /// Whether anything waits to be taken (no lock).
    #[inline]
    pub(crate) fn has_items(&self) -> bool {
        self.charged.load(Ordering::Acquire) > 0
    }

    /// Bytes queued, with the per-message charge.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.charged.load(Ordering::Relaxed)
    }

    /// Wakes the session's driver (for something other than bytes: a close request).
    pub(crate) fn wake_session(&self) {
        self.session.wake();
    }

    /// Registers the session's driver for the empty-to-not-empty wake-up.
    pub(crate) fn register(&self, waker: &Waker) {
        self.session.register(waker);
    }

    /// Hands queued messages to `take`, in order, while it returns true (it has room for
    /// more); at least one message when any waits. Returns how many were taken.
    pub(crate) fn take(&self, mut take: impl FnMut(Bytes) -> bool) -> usize {
        let mut state = self.lock();
        let mut taken = 0;
        let mut released = 0;
        while let Some(item) = state.queue.pop_front() {
            taken += 1;
            released += item.len() + ITEM_COST;
            if !take(item) {
                break;
            }
        }
        if taken > 0 {
            self.charged.fetch_sub(released, Ordering::AcqRel);
            state.progress = state.progress.wrapping_add(1);
            state.slow = false;
            if self.charged.load(Ordering::Relaxed) < self.limit() {
                wake_all(&mut state);
            }
        }
        taken
    }

    /// Marks the session slow if it has taken nothing since `progress` was read. Returns true
    /// when this call marked it (false: it moved meanwhile, was already marked, or closed).
    pub(crate) fn mark_slow(&self, progress: u64) -> bool {
        let mut state = self.lock();
        if self.is_closed() || state.slow || state.progress != progress {
            return false;
        }
        state.slow = true;
        // Everyone waiting learns at once instead of each waiting out a timeout of its own.
        wake_all(&mut state);
        true
    }

    /// Stops taking offers; returns the messages still queued, now thrown away.
    pub(crate) fn close(&self) -> usize {
        if self.limit.swap(CLOSED, Ordering::SeqCst) == CLOSED {
            return 0;
        }
        fence(Ordering::SeqCst);
        let Some(state) = self.state.get() else {
            return 0;
        };
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let discarded = state.queue.len();
        state.queue = VecDeque::new();
        self.charged.store(0, Ordering::Release);
        wake_all(&mut state);
        discarded
    }

    /// How long the session may take nothing while a sender waits before it counts as slow.
    pub(crate) fn slow_after(&self) -> Duration {
        Duration::from_millis(u64::from(self.slow_after_ms))
    }
}

fn wake_all(state: &mut State) {
    state.round = state.round.wrapping_add(1);
    for waker in state.waiters.drain(..) {
        waker.wake();
    }
    if state.waiters.capacity() > 16 {
        state.waiters = Vec::new();
    }
}

/// How one waiting delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Queued for the session.
    Queued,
    /// Not queued: the session is slow. `detected` is true when this attempt's timeout marked
    /// it (so the caller applies its policy once), false when it was marked already.
    Slow { detected: bool },
    /// Not queued: the session takes no more writes.
    Closed,
}

/// One message on its way into one outbox, waiting for room while the session makes progress.
#[derive(Debug)]
pub(crate) struct Attempt {
    round: Option<u64>,
    progress: u64,
    deadline: Instant,
}

impl Attempt {
    /// Starts waiting after an offer answered `Full { progress }`.
    pub(crate) fn new(outbox: &Outbox, progress: u64, now: Instant) -> Attempt {
        Attempt {
            round: None,
            progress,
            deadline: now + outbox.slow_after(),
        }
    }

    /// The instant at which, without progress, the session counts as slow.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Offers again; `None` while it must keep waiting (the waker is registered).
    pub(crate) fn poll(
        &mut self,
        outbox: &Outbox,
        data: &Bytes,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Option<Outcome> {
        match outbox
            .offer(data, Some((cx.waker(), &mut self.round)))
            .settled()
        {
            Ok(outcome) => Some(outcome),
            Err(progress) if progress != self.progress => {
                // The session took something: it is slow to read, not stuck. Wait on.
                self.progress = progress;
                self.deadline = now + outbox.slow_after();
                None
            }
            Err(progress) if now >= self.deadline => {
                if outbox.mark_slow(progress) {
                    Some(Outcome::Slow { detected: true })
                } else {
                    // Lost a race with a take, a close or another sender's marking: ask again.
                    self.poll(outbox, data, cx, now)
                }
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(false.into()));
        (flag.clone(), Waker::from(flag))
    }

    #[test]
    fn queues_until_the_limit_then_wakes_the_waiter_on_take() {
        let outbox = Outbox::new(100, Duration::from_secs(5));
        let data = Bytes::from_static(&[0; 40]);
        assert_eq!(outbox.offer(&data, None), Offer::Queued);
        // 72 charged: under the limit, so this one overshoots it.
        assert_eq!(outbox.offer(&data, None), Offer::Queued);
        let (woken, waker) = flag();
        let mut round = None;
        assert_eq!(
            outbox.offer(&data, Some((&waker, &mut round))),
            Offer::Full { progress: 0 }
        );
        // A second poll in the same round does not register twice.
        assert!(matches!(
            outbox.offer(&data, Some((&waker, &mut round))),
            Offer::Full { .. }
        ));
        assert_eq!(outbox.lock().waiters.len(), 1);
        assert_eq!(outbox.take(|_| true), 2);
        assert!(woken.0.load(Ordering::SeqCst));
        assert!(!outbox.has_items());
        assert_eq!(outbox.offer(&data, None), Offer::Queued);
    }

    #[test]
    fn empty_messages_are_charged_so_the_queue_stays_bounded() {
        let outbox = Outbox::new(10 * ITEM_COST, Duration::from_secs(5));
        let empty = Bytes::new();
        let queued = (0..1000)
            .take_while(|_| outbox.offer(&empty, None) == Offer::Queued)
            .count();
        assert_eq!(queued, 10);
    }

    #[test]
    fn take_stops_when_the_taker_has_no_more_room() {
        let outbox = Outbox::new(10_000, Duration::from_secs(5));
        for i in 0..5u8 {
            outbox.offer(&Bytes::from(vec![i]), None);
        }
        let mut seen = Vec::new();
        assert_eq!(
            outbox.take(|b| {
                seen.push(b[0]);
                seen.len() < 2
            }),
            2
        );
        assert_eq!(seen, [0, 1]);
        outbox.take(|b| {
            seen.push(b[0]);
            true
        });
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_waiter_marks_a_stuck_session_slow_once_and_progress_clears_it() {
        let outbox = Outbox::new(10, Duration::from_millis(100));
        let data = Bytes::from_static(b"0123456789");
        assert_eq!(outbox.offer(&data, None), Offer::Queued);
        let Offer::Full { progress } = outbox.offer(&data, None) else {
            panic!("expected full");
        };
        let start = Instant::now();
        let mut attempt = Attempt::new(&outbox, progress, start);
        let (_, waker) = flag();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(attempt.poll(&outbox, &data, &mut cx, start), None);
        let late = attempt.deadline();
        assert_eq!(
            attempt.poll(&outbox, &data, &mut cx, late),
            Some(Outcome::Slow { detected: true })
        );
        // Marked: the next sender is refused at once, no wait.
        assert_eq!(outbox.offer(&data, None), Offer::Slow);
        // It takes again: no longer slow.
        outbox.take(|_| true);
        assert_eq!(outbox.offer(&data, None), Offer::Queued);
    }

    #[test]
    fn progress_while_full_restarts_the_wait() {
        let outbox = Outbox::new(10, Duration::from_millis(100));
        let data = Bytes::from_static(b"0123456789");
        outbox.offer(&data, None);
        let Offer::Full { progress } = outbox.offer(&data, None) else {
            panic!("expected full");
        };
        let start = Instant::now();
        let mut attempt = Attempt::new(&outbox, progress, start);
        let (_, waker) = flag();
        let mut cx = Context::from_waker(&waker);
        // Taken and refilled: full again, but it moved.
        outbox.take(|_| true);
        outbox.offer(&data, None);
        let late = attempt.deadline();
        assert_eq!(attempt.poll(&outbox, &data, &mut cx, late), None);
        assert!(attempt.deadline() > late);
    }

    #[test]
    fn close_refuses_offers_wakes_waiters_and_counts_what_was_queued() {
        let outbox = Outbox::new(10, Duration::from_secs(5));
        let data = Bytes::from_static(b"0123456789");
        outbox.offer(&data, None);
        let (woken, waker) = flag();
        let mut round = None;
        outbox.offer(&data, Some((&waker, &mut round)));
        assert_eq!(outbox.close(), 1);
        assert!(woken.0.load(Ordering::SeqCst));
        assert_eq!(outbox.offer(&data, None), Offer::Closed);
        assert!(!outbox.has_items());
        assert_eq!(outbox.close(), 0);
    }
}
