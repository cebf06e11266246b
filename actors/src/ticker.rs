//! One timeout clock per worker thread and tick period, shared by every session on that thread
//! with that period: a session holds a slot (a waker) instead of a timer of its own, so an
//! idle session costs 8 bytes inline and 20 in its clock's slot lists rather than a boxed
//! interval and a timer entry, and a thread with 10,000 sessions keeps one timer running, not
//! 10,000.
//!
//! The clock counts ticks. Each tick it bumps its count and wakes every slot's waker (given
//! once, when the session joins); a session's driver, when polled, sees the count moved past
//! what it last saw and runs its timeout check once per tick missed. Every turn of every
//! session asks, so the question is one thread-local load: a counter bumped at each tick of
//! any clock on the thread, against the value the ticker saw last; only when it moved does
//! the ticker look at its clock. Nothing here knows sessions: it is wakers and time.
//!
//! This module is a leaf.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    fmt,
    marker::PhantomData,
    num::NonZeroU16,
    rc::{Rc, Weak},
    task::Waker,
    time::Duration,
};

thread_local! {
    /// The clocks of this thread (a handful: one per distinct session config). A clock stays
    /// for the thread's life, so its place in the list names it; its task runs only while it
    /// has sessions, so a thread whose sessions come and go one at a time never piles up timer
    /// tasks.
    static CLOCKS: RefCell<Clocks> = RefCell::new(Clocks::default());
    /// Bumped at every tick of any clock on this thread: a ticker whose last look saw the
    /// same value has no tick to count. Const and without a destructor, so reading it costs
    /// a load (`CLOCKS` is lazily set up and borrowed).
    static TICKS_ON_THREAD: Cell<u32> = const { Cell::new(0) };
}

#[derive(Default)]
struct Clocks {
    list: Vec<Rc<Clock>>,
    by_period: HashMap<Duration, NonZeroU16>,
}

impl Clocks {
    /// The clock a [`Ticker::clock`] index names.
    fn get(&self, index: NonZeroU16) -> &Rc<Clock> {
        &self.list[index.get() as usize - 1]
    }
}

struct Clock {
    period: Duration,
    ticks: Cell<u32>,
    /// The clock's task is running (it ends at the first tick with no session).
    running: Cell<bool>,
    slots: RefCell<Slots>,
}

#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    /// By slot: the clock's count when its session last looked.
    seen: Vec<u32>,
    free: Vec<u32>,
}

/// A session's place on its thread's clock for its period: indices, so that an idle session
/// carries 8 bytes (a `Lines` session is at the edge of its allocator size class). Not `Send`:
/// the indices are into this thread's clocks.
pub(crate) struct Ticker {
    /// The clock's place in [`Clocks::list`], plus one.
    clock: NonZeroU16,
    /// The low 16 bits of [`TICKS_ON_THREAD`] at the last look. Only equality is asked, so a
    /// wrap could hide ticks only if exactly a multiple of 65,536 ticks came between two
    /// turns of a session that each of them woke; the clock's own count (per slot, 32 bits)
    /// is what the ticks are counted from.
    seen_on_thread: u16,
    slot: u32,
    not_send: PhantomData<Rc<()>>,
}

impl fmt::Debug for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticker")
            .field("clock", &self.clock)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Ticker {
    /// Joins this thread's clock for `period`, starting the clock (a task on the current
    /// tokio runtime) if this is its first session. `waker` is woken at every tick until the
    /// ticker is dropped: it must reach whatever polls the ticker (the session hands a waker
    /// that wakes its driver's current one).
    pub(crate) fn join(period: Duration, waker: Waker) -> Ticker {
        let (index, clock) = CLOCKS.with(|clocks| {
            let mut clocks = clocks.borrow_mut();
            let Clocks { list, by_period } = &mut *clocks;
            let index = *by_period.entry(period).or_insert_with(|| {
                list.push(Rc::new(Clock {
                    period,
                    ticks: Cell::new(0),
                    running: Cell::new(false),
                    slots: RefCell::new(Slots::default()),
                }));
                NonZeroU16::new(u16::try_from(list.len()).expect("fewer than 2^16 periods"))
                    .expect("the list is not empty")
            });
            (index, clocks.get(index).clone())
        });
        if !clock.running.replace(true) {
            tokio::task::spawn_local(run(Rc::downgrade(&clock), period));
        }
        let mut slots = clock.slots.borrow_mut();
        let now = clock.ticks.get();
        let slot = match slots.free.pop() {
            Some(slot) => {
                slots.seen[slot as usize] = now;
                slots.wakers[slot as usize] = Some(waker);
                slot
            }
            None => {
                slots.wakers.push(Some(waker));
                slots.seen.push(now);
                u32::try_from(slots.wakers.len() - 1).expect("fewer than 2^32 sessions")
            }
        };
        Ticker {
            clock: index,
            seen_on_thread: TICKS_ON_THREAD.get() as u16,
            slot,
            not_send: PhantomData,
        }
    }

    fn with_clock<R>(&self, f: impl FnOnce(&Clock) -> R) -> R {
        CLOCKS.with(|clocks| f(clocks.borrow().get(self.clock)))
    }

    /// The period of this ticker's clock.
    pub(crate) fn period(&self) -> Duration {
        self.with_clock(|clock| clock.period)
    }

    /// How many ticks of this ticker's clock passed since the last call.
    #[inline]
    pub(crate) fn poll(&mut self) -> u32 {
        let on_thread = TICKS_ON_THREAD.get() as u16;
        if on_thread == self.seen_on_thread {
            return 0;
        }
        self.seen_on_thread = on_thread;
        self.count_ticks()
    }

    #[inline(never)]
    fn count_ticks(&mut self) -> u32 {
        let slot = self.slot as usize;
        self.with_clock(|clock| {
            let mut slots = clock.slots.borrow_mut();
            let now = clock.ticks.get();
            let passed = now.wrapping_sub(slots.seen[slot]);
            slots.seen[slot] = now;
            passed
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // A session dropped while its thread tears down its locals has no clock left to leave.
        let _ = CLOCKS.try_with(|clocks| {
            let clocks = clocks.borrow();
            let mut slots = clocks.get(self.clock).slots.borrow_mut();
            slots.wakers[self.slot as usize] = None;
            slots.free.push(self.slot);
        });
    }
}

/// The clock's task: ticks while any session holds the clock.
async fn run(clock: Weak<Clock>, period: Duration) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // A late tick is not made up in a burst: the sessions count the ticks they missed anyway.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(clock) = clock.upgrade() else {
            return;
        };
        let slots = clock.slots.borrow();
        if slots.free.len() == slots.wakers.len() {
            // No session left: stop until the next one joins.
            clock.running.set(false);
            return;
        }
        clock.ticks.set(clock.ticks.get().wrapping_add(1));
        TICKS_ON_THREAD.set(TICKS_ON_THREAD.get().wrapping_add(1));
        // A tokio waker only queues its task, never polls it here, so waking under the borrow
        // cannot re-enter `Ticker::poll`.
        for waker in slots.wakers.iter().flatten() {
            waker.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        task::Wake,
    };

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_on_one_period_share_a_clock_and_count_missed_ticks() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let count = Arc::new(Count(AtomicUsize::new(0)));
                let waker = Waker::from(count.clone());
                let period = Duration::from_millis(100);
                let mut first = Ticker::join(period, waker.clone());
                let mut second = Ticker::join(period, waker.clone());
                assert_eq!(first.clock, second.clock);
                assert_ne!(first.slot, second.slot);
                let other = Ticker::join(period * 2, waker.clone());
                assert_ne!(other.clock, first.clock, "another period, another clock");
                drop(other);
                assert_eq!(first.poll(), 0);
                assert_eq!(second.poll(), 0);
                tokio::time::sleep(Duration::from_millis(350)).await;
                // Three ticks: each woke both registered wakers, and each session counts all
                // three at its next poll.
                assert_eq!(count.0.load(Ordering::SeqCst), 6);
                assert_eq!(first.poll(), 3);
                assert_eq!(first.poll(), 0);
                drop(second);
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(
                    count.0.load(Ordering::SeqCst),
                    7,
                    "a dropped slot is not woken"
                );
                // The freed slot is reused.
                let third = Ticker::join(period, waker.clone());
                assert_eq!(third.slot, 1);
                let first_clock = first.clock;
                drop((first, third));
                // The last session gone, the clock's task ends at its next tick; a new
                // session starts it again.
                let clock = CLOCKS.with(|c| c.borrow().get(first_clock).clone());
                assert!(clock.running.get());
                tokio::time::sleep(Duration::from_millis(150)).await;
                assert!(!clock.running.get(), "an empty clock stops ticking");
                let mut fourth = Ticker::join(period, waker.clone());
                assert!(clock.running.get());
                assert_eq!(fourth.poll(), 0);
                tokio::time::sleep(Duration::from_millis(150)).await;
                assert_eq!(fourth.poll(), 1, "the restarted clock ticks");
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_of_another_clock_on_the_thread_counts_nothing_for_this_one() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let count = Arc::new(Count(AtomicUsize::new(0)));
                let waker = Waker::from(count.clone());
                let mut fast = Ticker::join(Duration::from_millis(100), waker.clone());
                let mut slow = Ticker::join(Duration::from_millis(250), waker.clone());
                tokio::time::sleep(Duration::from_millis(260)).await;
                assert_eq!(fast.poll(), 2);
                assert_eq!(slow.poll(), 1);
                // The fast clock ticks alone: the thread's counter moves, the slow ticker
                // looks at its clock and finds nothing to count.
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(slow.poll(), 0);
                assert_eq!(fast.poll(), 1);
                assert_eq!(
                    (fast.poll(), slow.poll()),
                    (0, 0),
                    "nothing since the last look"
                );
            })
            .await;
    }
}
