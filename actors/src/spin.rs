//! Latency mode: a worker that just moved bytes keeps polling its I/O driver, without
//! blocking, for a bounded window before it parks.
//!
//! Why: on a virtual machine a worker that blocks in `epoll_wait` lets its vCPU halt, and the
//! next packet then pays for waking it (tens of microseconds here, most of a loopback ping-pong
//! round trip). A thread that never blocks is never woken.
//!
//! How: one spinner task per worker thread. Sessions call [`note_activity`] when they read or
//! write bytes. A dormant spinner is woken by that call; while awake it loops on
//! [`tokio::task::yield_now`], which on a current-thread runtime defers the task, so the
//! scheduler, finding only deferred work, polls the I/O driver with a zero timeout
//! (`epoll_wait(.., 0)`) instead of blocking, then runs whatever became ready. Each turn the
//! spinner reads the activity counter: a change restarts the window, `window` without one puts
//! it back to sleep, and the worker parks as it would without it. Each turn also calls
//! `sched_yield`, and a turn that took long with no activity (the thread was descheduled: the
//! core is contended) stops the spin for a back-off period, because a runnable-but-preempted
//! spinner notices a packet later than a thread the kernel wakes for it. Runtime park hooks
//! (`on_thread_park`) were not used: they run only just before a blocking park, cannot keep the
//! driver polling themselves, and cannot tell traffic from timer ticks.

use crate::ConfigError;
use std::{
    cell::Cell,
    future::poll_fn,
    task::{Poll, Waker},
    time::{Duration, Instant},
};

/// The longest spin window accepted: far above any useful setting, it keeps a typo from
/// turning a worker into a permanent busy loop.
const MAX_SPIN: Duration = Duration::from_millis(100);

/// Checks a spin window against [`MAX_SPIN`]; `option` names the setting in the error (the
/// pool's `spin` or the listener's `worker_spin`).
pub(crate) fn check_window(window: Duration, option: &'static str) -> Result<(), ConfigError> {
    if window > MAX_SPIN {
        return Err(ConfigError::invalid(
            option,
            format!("{window:?} is above the {MAX_SPIN:?} limit (useful windows are microseconds)"),
        ));
    }
    Ok(())
}

thread_local! {
    /// Bytes-moved events of the sessions on this thread (wrapping; only changes matter).
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    /// The spinner's waker while it sleeps; taken (and woken) by the first activity.
    static DORMANT: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// Records that a session on this thread moved bytes, waking this thread's spinner if it
/// sleeps. Cheap (two thread-local cells) and harmless on threads without a spinner.
pub(crate) fn note_activity() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
    if let Some(waker) = DORMANT.with(Cell::take) {
        waker.wake();
    }
}

fn activity() -> u64 {
    ACTIVITY.with(Cell::get)
}

/// Sleeps until [`note_activity`] runs on this thread.
async fn until_activity() {
    let mut registered = false;
    poll_fn(|cx| {
        let slot = DORMANT.with(Cell::take);
        if registered && slot.is_none() {
            // Our waker was taken: activity happened.
            return Poll::Ready(());
        }
        // First poll, or a poll that was not our wake-up: (re)register.
        DORMANT.with(|d| d.set(Some(cx.waker().clone())));
        registered = true;
        Poll::Pending
    })
    .await
}

/// A turn of the spin loop that took this long with no activity in it means the thread was
/// descheduled: the core is contended, and a spinning thread that is not running reacts later
/// than one blocked in `epoll_wait` (which the kernel wakes, and favours, at the event).
const PREEMPTED: Duration = Duration::from_micros(200);

/// How long a spinner that found its core contended leaves the worker to park normally.
fn backoff(window: Duration) -> Duration {
    (window * 10).max(Duration::from_millis(10))
}

/// The spinner, run on its worker thread for the worker's life. Idle it costs nothing: it
/// sleeps until a session moves bytes. Awake it keeps the thread polling for `window` after the
/// last activity (a full core while traffic keeps coming, none once it stops). On a contended
/// core it backs off (see [`PREEMPTED`]).
pub(crate) async fn run(window: Duration) {
    spin(window, PREEMPTED).await
}

/// [`run`] with the preemption threshold as a parameter (tests turn it off).
async fn spin(window: Duration, preempted: Duration) {
    loop {
        until_activity().await;
        let mut seen = activity();
        let mut last = Instant::now();
        let mut turn = last;
        // Bounded by time: it ends `window` after the last activity seen.
        let contended = loop {
            tokio::task::yield_now().await;
            // Lets another thread that wants this core run first (a client on this machine,
            // another process): spinning must only use a core nobody else wants. Without
            // contention it returns at once.
            std::thread::yield_now();
            let now = Instant::now();
            let current = activity();
            if current != seen {
                seen = current;
                last = now;
            } else if now.duration_since(turn) >= preempted {
                break true;
            } else if now.duration_since(last) >= window {
                break false;
            }
            turn = now;
        };
        if contended {
            // Park normally for a while; activity meanwhile does not restart the spin.
            tokio::time::sleep(backoff(window)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// This thread's CPU time (user + system).
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes only the timespec we own.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Contention detection off: the tests of the polling itself would see a loaded test
    /// machine make the spinner back off.
    const NEVER_PREEMPTED: Duration = Duration::MAX;

    /// Runs `f` on a fresh thread inside a current-thread runtime and LocalSet, as a worker
    /// runs (actix arbiters are the same), with a spinner of `(window, preempted)`.
    fn on_worker<F: std::future::Future<Output = ()>>(
        spinner: Option<(Duration, Duration)>,
        f: impl FnOnce() -> F + Send + 'static,
    ) {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                if let Some((window, preempted)) = spinner {
                    tokio::task::spawn_local(spin(window, preempted));
                }
                tokio::time::timeout(Duration::from_secs(4), f())
                    .await
                    .expect("test body timed out");
            });
        })
        .join()
        .expect("worker thread");
    }

    fn parks() -> u64 {
        tokio::runtime::Handle::current()
            .metrics()
            .worker_park_count(0)
    }

    /// A local echo over loopback, `rounds` ping-pongs; returns how often the thread parked
    /// meanwhile. The peer runs on a plain thread and leaves a 1 ms gap before each message
    /// (well inside the 50 ms window), so the thread has time to park between messages
    /// unless it spins: on a machine busy with other work, back-to-back messages could
    /// otherwise always be waiting by the time the thread runs, and it would never park.
    async fn ping_pong_parks(rounds: usize) -> u64 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut client = TcpStream::connect(addr).unwrap();
            client.set_nodelay(true).unwrap();
            let mut byte = [0u8; 1];
            for i in 0..rounds {
                // Pacing of the load, not synchronisation: the gap is what is measured.
                std::thread::sleep(Duration::from_millis(1));
                client.write_all(&[i as u8]).unwrap();
                client.read_exact(&mut byte).unwrap();
                assert_eq!(byte[0], i as u8);
            }
        });
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        note_activity();
        stream.write_all(&byte).await.unwrap();
        // Counted from the first exchange on: the spinner is awake by then.
        let before = parks();
        for _ in 1..rounds {
            stream.read_exact(&mut byte).await.unwrap();
            note_activity();
            stream.write_all(&byte).await.unwrap();
        }
        let parked = parks() - before;
        tokio::task::spawn_blocking(move || peer.join().unwrap())
            .await
            .unwrap();
        parked
    }

    #[test]
    fn a_spinning_worker_serves_a_ping_pong_without_parking() {
        on_worker(
            Some((Duration::from_millis(50), NEVER_PREEMPTED)),
            || async {
                let parked = ping_pong_parks(200).await;
                // The peer's reply may come later than the window only if this machine is
                // starved for tens of milliseconds; allow a few.
                assert!(parked <= 5, "parked {parked} times in 199 exchanges");
            },
        );
        // Without the spinner the same exchange parks about once per message: the test
        // above measures the spinner, not the runtime.
        on_worker(None, || async {
            let parked = ping_pong_parks(200).await;
            assert!(parked >= 40, "parked only {parked} times without spinning");
        });
    }

    #[test]
    fn the_spinner_sleeps_until_activity_and_stops_after_the_window() {
        on_worker(
            Some((Duration::from_millis(50), NEVER_PREEMPTED)),
            || async {
                // Never any activity: the spinner sleeps, the thread uses no CPU.
                let start = thread_cpu();
                tokio::time::sleep(Duration::from_millis(150)).await;
                let idle = thread_cpu() - start;
                assert!(
                    idle < Duration::from_millis(15),
                    "idle worker used {idle:?}"
                );

                // Activity: the thread keeps polling (busy) through the window…
                let start = thread_cpu();
                note_activity();
                tokio::time::sleep(Duration::from_millis(30)).await;
                let busy = thread_cpu() - start;
                assert!(
                    busy >= Duration::from_millis(3),
                    "spinning used only {busy:?}"
                );

                // …and is quiet again once the window has passed with nothing new.
                tokio::time::sleep(Duration::from_millis(40)).await;
                let start = thread_cpu();
                tokio::time::sleep(Duration::from_millis(150)).await;
                let after = thread_cpu() - start;
                assert!(
                    after < Duration::from_millis(15),
                    "spun on after the window: {after:?}"
                );
            },
        );
    }

    #[test]
    fn a_spinner_on_a_contended_core_backs_off() {
        let window = Duration::from_millis(2);
        on_worker(Some((window, PREEMPTED)), move || async move {
            // The spinner goes dormant, activity wakes it, it starts its first turn.
            tokio::task::yield_now().await;
            note_activity();
            tokio::task::yield_now().await;
            // A turn without activity that takes far longer than PREEMPTED: to the
            // spinner, the thread was descheduled.
            std::thread::sleep(Duration::from_millis(2));
            tokio::task::yield_now().await;
            // Traffic continues through the back-off, yet the thread does not spin: it
            // parks between the messages.
            let start = thread_cpu();
            let until = Instant::now() + backoff(window) - Duration::from_millis(2);
            let mut messages = 0;
            while Instant::now() < until && messages < 100 {
                note_activity();
                messages += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let used = thread_cpu() - start;
            assert!(messages >= 2, "the back-off window is too short to test");
            assert!(
                used < Duration::from_millis(3),
                "spun through the back-off: {used:?} over {messages} messages"
            );
        });
    }
}
