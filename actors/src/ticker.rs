//! One timeout clock per worker thread and tick period, shared by every session on that thread
//! with that period: a session holds a slot (a waker) instead of a timer of its own, so an
//! idle session costs 16 bytes here rather than a boxed interval and a timer entry, and a
//! thread with 10,000 sessions keeps one timer running, not 10,000.
//!
//! The clock counts ticks. Each tick it bumps its count and wakes every slot's waker; a
//! session's driver, when polled, sees the count moved past what it last saw and runs its
//! timeout check once per tick missed. Nothing here knows sessions: it is wakers and time.
//!
//! This module is a leaf.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    fmt,
    rc::{Rc, Weak},
    task::Waker,
    time::Duration,
};

thread_local! {
    /// The clocks of this thread, by period (a handful: one per distinct session config). A
    /// clock stays for the thread's life; its task runs only while it has sessions, so a
    /// thread whose sessions come and go one at a time never piles up timer tasks.
    static CLOCKS: RefCell<HashMap<Duration, Rc<Clock>>> = RefCell::new(HashMap::new());
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
    free: Vec<u32>,
}

/// A session's place on its thread's clock for its period. Not `Send`: it belongs to the
/// thread the session runs on.
pub(crate) struct Ticker {
    clock: Rc<Clock>,
    slot: u32,
    seen: u32,
}

impl fmt::Debug for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticker")
            .field("slot", &self.slot)
            .field("seen", &self.seen)
            .finish()
    }
}

impl Ticker {
    /// Joins this thread's clock for `period`, starting the clock (a task on the current
    /// tokio runtime) if this is its first session.
    pub(crate) fn join(period: Duration) -> Ticker {
        let clock = CLOCKS.with(|clocks| {
            clocks
                .borrow_mut()
                .entry(period)
                .or_insert_with(|| {
                    Rc::new(Clock {
                        period,
                        ticks: Cell::new(0),
                        running: Cell::new(false),
                        slots: RefCell::new(Slots::default()),
                    })
                })
                .clone()
        });
        if !clock.running.replace(true) {
            tokio::task::spawn_local(run(Rc::downgrade(&clock), period));
        }
        let slot = {
            let mut slots = clock.slots.borrow_mut();
            match slots.free.pop() {
                Some(slot) => slot,
                None => {
                    slots.wakers.push(None);
                    u32::try_from(slots.wakers.len() - 1).expect("fewer than 2^32 sessions")
                }
            }
        };
        let seen = clock.ticks.get();
        Ticker { clock, slot, seen }
    }

    /// The period of this ticker's clock.
    pub(crate) fn period(&self) -> Duration {
        self.clock.period
    }

    /// Records the waker to wake at the next tick (cheap when it has not changed) and returns
    /// how many ticks passed since the last call.
    pub(crate) fn poll(&mut self, waker: &Waker) -> u32 {
        {
            let mut slots = self.clock.slots.borrow_mut();
            let slot = &mut slots.wakers[self.slot as usize];
            match slot {
                Some(current) if current.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        let now = self.clock.ticks.get();
        let passed = now.wrapping_sub(self.seen);
        self.seen = now;
        passed
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let mut slots = self.clock.slots.borrow_mut();
        slots.wakers[self.slot as usize] = None;
        slots.free.push(self.slot);
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
                let mut first = Ticker::join(period);
                let mut second = Ticker::join(period);
                assert!(Rc::ptr_eq(&first.clock, &second.clock));
                assert_eq!(first.poll(&waker), 0);
                assert_eq!(second.poll(&waker), 0);
                tokio::time::sleep(Duration::from_millis(350)).await;
                // Three ticks: each woke both registered wakers, and each session counts all
                // three at its next poll.
                assert_eq!(count.0.load(Ordering::SeqCst), 6);
                assert_eq!(first.poll(&waker), 3);
                assert_eq!(first.poll(&waker), 0);
                drop(second);
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(
                    count.0.load(Ordering::SeqCst),
                    7,
                    "a dropped slot is not woken"
                );
                // The freed slot is reused.
                let third = Ticker::join(period);
                assert_eq!(third.slot, 1);
                drop((first, third));
                // The last session gone, the clock's task ends at its next tick; a new
                // session starts it again.
                let clock = CLOCKS.with(|c| c.borrow()[&period].clone());
                assert!(clock.running.get());
                tokio::time::sleep(Duration::from_millis(150)).await;
                assert!(!clock.running.get(), "an empty clock stops ticking");
                let mut fourth = Ticker::join(period);
                assert!(clock.running.get());
                assert_eq!(fourth.poll(&waker), 0);
                tokio::time::sleep(Duration::from_millis(150)).await;
                assert_eq!(fourth.poll(&waker), 1, "the restarted clock ticks");
            })
            .await;
    }
}
