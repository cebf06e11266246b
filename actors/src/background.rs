//! One low-priority thread for admin work that grows with the session count (listing every
//! session, summing their counters), so that such work never runs on a worker and, when the
//! cores are short, the workers win them.
//!
//! Why a thread of its own rather than tokio's blocking pool: the pool's threads are shared
//! with other blocking work and come and go, and a thread's priority is its own; this one is
//! lowered once, when it starts, and only admin jobs run on it.

use std::{
    panic::AssertUnwindSafe,
    sync::{mpsc, Mutex, OnceLock},
};

/// The name of the thread (as `/proc/self/task/TID/comm` shows it: at most 15 bytes).
pub(crate) const THREAD_NAME: &str = "sb-admin-low";

/// The thread's nice value on Linux (0 is the default, 19 the lowest priority): below the
/// workers, so that a worker woken during a listing takes a core at once, and not so low
/// that a listing waits behind batch jobs for long.
pub(crate) const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the low-priority thread (started at the first call) and resolves with what it
/// returns.
///
/// # Errors
///
/// When the thread cannot be started, or `job` panicked (the thread carries on with the next
/// job).
pub(crate) async fn run<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, &'static str> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(job)) {
            let _ = tx.send(value);
        }
    });
    sender()?
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| "the admin thread has stopped")?;
    rx.await.map_err(|_| "the admin job failed")
}

fn sender() -> Result<&'static Mutex<mpsc::Sender<Job>>, &'static str> {
    static SENDER: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    SENDER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    lower_priority();
                    // Ends when every sender is gone, that is never: the sender is static.
                    for job in rx {
                        job();
                    }
                })
                .map_err(|e| tracing::warn!("cannot start the admin thread: {e}"))
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
        .ok_or("cannot start the admin thread")
}

/// Sets this thread's nice value to [`NICE`] (Linux gives each thread its own).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` and `setpriority` take plain integers and touch no memory of ours.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
        };
        if result != 0 {
            tracing::debug!(
                "cannot lower the admin thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
