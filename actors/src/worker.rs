//! The pool of worker threads that sessions run on, one actix arbiter per thread.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_rt::{Arbiter, ArbiterHandle};

use crate::{spin, ConfigError};

/// How a [`WorkerPool`] picks the worker for a new session.
///
/// # Examples
///
/// ```
/// use switchboard::Assignment;
/// assert_eq!(Assignment::default(), Assignment::LeastLoaded);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignment {
    /// The worker with the fewest live sessions (ties go round-robin). The default.
    #[default]
    LeastLoaded,
    /// Each worker in turn.
    RoundRobin,
}

/// A fixed set of worker threads, each running an actix arbiter; sessions are started on them
/// so that one busy connection never stalls the others or the accept loop.
///
/// Cloning is cheap and shares the threads. The threads stop when the last clone is dropped
/// and the last session running on them has ended.
///
/// # Panics
///
/// Creating a pool outside a running actix `System` panics (actix needs one to start arbiters).
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use switchboard::WorkerPool;
///
/// let pool = WorkerPool::new(2).unwrap();
/// assert_eq!(pool.len(), 2);
/// assert!(WorkerPool::new(0).is_err());
/// # });
/// ```
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    workers: Vec<Worker>,
    /// Round-robin cursor, also used to break ties between equally loaded workers.
    next: AtomicUsize,
    /// Listeners started on this pool, for [`WorkerPool::next_home`].
    listeners: AtomicUsize,
    assignment: Assignment,
    /// The latency-mode window, if on (see [`WorkerPoolBuilder::spin`]).
    spin: Option<Duration>,
}

struct Worker {
    arbiter: Arbiter,
    /// The worker's thread, set by its first job (so always set when read on that thread).
    thread: Arc<std::sync::OnceLock<std::thread::ThreadId>>,
    /// Live sessions on this worker; decremented by [`WorkerLoad`]'s `Drop`, so it cannot leak.
    load: AtomicUsize,
    /// Handshakes (PROXY header, TLS) running on this worker at once; above the cap new
    /// connections wait for a permit (they are not refused, and nothing spins).
    handshakes: Arc<tokio::sync::Semaphore>,
}

/// Concurrent handshakes per worker (actix-tls uses the same default).
pub(crate) const DEFAULT_HANDSHAKES_PER_WORKER: usize = 256;

impl WorkerPool {
    /// Starts `threads` worker threads with least-loaded assignment.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `threads` is 0.
    pub fn new(threads: usize) -> Result<Self, ConfigError> {
        Self::with_assignment(threads, Assignment::LeastLoaded)
    }

    /// Starts one worker thread per available core.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// let pool = switchboard::WorkerPool::per_core();
    /// assert!(pool.len() >= 1);
    /// # });
    /// ```
    pub fn per_core() -> Self {
        Self::new(default_threads()).expect("at least one core")
    }

    /// Starts `threads` worker threads that assign sessions by `assignment`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `threads` is 0.
    pub fn with_assignment(threads: usize, assignment: Assignment) -> Result<Self, ConfigError> {
        Self::builder()
            .threads(threads)
            .assignment(assignment)
            .build()
    }

    /// Configures a pool: threads, assignment, and the opt-in latency mode
    /// ([`spin`](WorkerPoolBuilder::spin)).
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use std::time::Duration;
    /// use switchboard::WorkerPool;
    ///
    /// let pool = WorkerPool::builder()
    ///     .threads(1)
    ///     .spin(Duration::from_micros(100))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.spin(), Some(Duration::from_micros(100)));
    /// # });
    /// ```
    pub fn builder() -> WorkerPoolBuilder {
        WorkerPoolBuilder::default()
    }

    /// Number of worker threads.
    pub fn len(&self) -> usize {
        self.inner.workers.len()
    }

    /// Always false: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.inner.workers.is_empty()
    }

    /// The latency-mode spin window, if on (see [`WorkerPoolBuilder::spin`]).
    pub fn spin(&self) -> Option<Duration> {
        self.inner.spin
    }

    /// Live sessions on each worker, in worker order.
    pub fn loads(&self) -> Vec<usize> {
        self.inner
            .workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }

    /// The worker a listener accepts on: listeners take the workers in turn, so several
    /// listeners spread their accept loops. Never the calling thread: the listener's start
    /// waits for that worker to register the sockets, which a worker cannot do while it waits.
    /// None when the caller is the pool's only worker.
    pub(crate) fn next_home(&self) -> Option<(usize, ArbiterHandle)> {
        let workers = &self.inner.workers;
        let first = self.inner.listeners.fetch_add(1, Ordering::Relaxed);
        let here = std::thread::current().id();
        (0..workers.len())
            .map(|offset| (first + offset) % workers.len())
            .find(|&i| workers[i].thread.get() != Some(&here))
            .map(|i| (i, workers[i].arbiter.handle()))
    }

    /// Picks a worker for a new session and counts the session against it.
    pub(crate) fn pick(&self) -> (ArbiterHandle, WorkerLoad) {
        self.pick_near(None)
    }

    /// As [`pick`](Self::pick), for a caller running on worker `home`: among the least loaded
    /// workers, `home` wins, so the session starts on the thread that accepted it without a
    /// hand-off to another thread.
    pub(crate) fn pick_near(&self, home: Option<usize>) -> (ArbiterHandle, WorkerLoad) {
        let inner = &self.inner;
        let start = inner.next.fetch_add(1, Ordering::Relaxed);
        let count = inner.workers.len();
        let index = match inner.assignment {
            Assignment::RoundRobin => start % count,
            Assignment::LeastLoaded => (0..count)
                .map(|offset| (start + offset) % count)
                .min_by_key(|&i| {
                    (
                        inner.workers[i].load.load(Ordering::Relaxed),
                        Some(i) != home,
                    )
                })
                .unwrap_or(0),
        };
        let worker = &inner.workers[index];
        worker.load.fetch_add(1, Ordering::Relaxed);
        (
            worker.arbiter.handle(),
            WorkerLoad {
                index,
                pool: Some(self.inner.clone()),
            },
        )
    }
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.len())
            .field("assignment", &self.inner.assignment)
            .field("spin", &self.inner.spin)
            .field("loads", &self.loads())
            .finish()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.arbiter.stop();
        }
    }
}

/// Configures and starts a [`WorkerPool`]; made by [`WorkerPool::builder`].
///
/// | setting | default |
/// |---|---|
/// | threads | one per core |
/// | assignment | [`Assignment::LeastLoaded`] |
/// | spin | off |
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use switchboard::{Assignment, WorkerPool};
///
/// let pool = WorkerPool::builder()
///     .threads(2)
///     .assignment(Assignment::RoundRobin)
///     .build()
///     .unwrap();
/// assert_eq!(pool.len(), 2);
/// assert_eq!(pool.spin(), None);
/// assert!(WorkerPool::builder().threads(0).build().is_err());
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkerPoolBuilder {
    threads: Option<usize>,
    assignment: Assignment,
    spin: Option<Duration>,
}

impl WorkerPoolBuilder {
    /// Sets the number of worker threads (default: one per core).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Sets how sessions are spread over the workers (default least-loaded).
    pub fn assignment(mut self, assignment: Assignment) -> Self {
        self.assignment = assignment;
        self
    }

    /// Turns on latency mode: a worker whose sessions moved bytes keeps polling its sockets
    /// (`epoll_wait` with a zero timeout) instead of blocking, until `window` has passed with
    /// no session on it reading or writing; then it parks as usual. Zero turns it off (the
    /// default); at most 100 ms.
    ///
    /// It saves the wake-up of a sleeping thread (on a virtual machine, of a halted vCPU:
    /// tens of microseconds) on each message that arrives within the window, so a
    /// request-response exchange answers sooner. On a quiet 2-vCPU VM a 64-byte loopback
    /// ping-pong went from a p50 of about 81 µs (plain tokio, and Switchboard without it) to
    /// about 27-30 µs with windows of 50-200 µs, the worker using 0.97 of a core against 0.39.
    ///
    /// **CPU cost:** while traffic keeps arriving with gaps shorter than `window`, every
    /// worker that carries some of it uses a full core, however light the traffic; after the
    /// last byte it burns at most `window` more. A worker with no traffic sleeps and uses no
    /// CPU. The spin yields the core to any other thread that wants it, and a worker that
    /// finds its core contended (it was descheduled mid-spin) stops spinning for ten windows
    /// (at least 10 ms): on a busy machine spinning only delays. Use it where latency matters
    /// more than cores (tens to a few hundred microseconds
    /// is the useful range), and with fewer workers than cores, so the spinning workers leave
    /// room for everything else.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use std::time::Duration;
    /// use switchboard::WorkerPool;
    ///
    /// let builder = WorkerPool::builder().threads(1);
    /// assert!(builder.clone().spin(Duration::from_secs(1)).build().is_err());
    /// let pool = builder.spin(Duration::ZERO).build().unwrap();
    /// assert_eq!(pool.spin(), None);
    /// # });
    /// ```
    pub fn spin(mut self, window: Duration) -> Self {
        self.spin = Some(window);
        self
    }

    /// Starts the threads.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `threads` is 0 or the spin window is above 100 ms.
    ///
    /// # Panics
    ///
    /// Outside a running actix `System`, like [`WorkerPool::new`].
    pub fn build(self) -> Result<WorkerPool, ConfigError> {
        let threads = self.threads.unwrap_or_else(default_threads);
        if threads == 0 {
            return Err(ConfigError::invalid(
                "workers",
                "at least one worker thread is needed",
            ));
        }
        let spin = self.spin.filter(|window| !window.is_zero());
        if let Some(window) = spin {
            spin::check_window(window, "spin")?;
        }
        let workers = (0..threads)
            .map(|index| {
                let arbiter = Arbiter::with_tokio_rt(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .thread_name(format!("switchboard-worker-{index}"))
                        .build()
                        .expect("worker runtime")
                });
                let thread = Arc::new(std::sync::OnceLock::new());
                let mark = thread.clone();
                arbiter.spawn_fn(move || {
                    let _ = mark.set(std::thread::current().id());
                });
                if let Some(window) = spin {
                    arbiter.spawn(spin::run(window));
                }
                Worker {
                    arbiter,
                    thread,
                    load: AtomicUsize::new(0),
                    handshakes: Arc::new(tokio::sync::Semaphore::new(
                        DEFAULT_HANDSHAKES_PER_WORKER,
                    )),
                }
            })
            .collect();
        Ok(WorkerPool {
            inner: Arc::new(PoolInner {
                workers,
                next: AtomicUsize::new(0),
                listeners: AtomicUsize::new(0),
                assignment: self.assignment,
                spin,
            }),
        })
    }
}

/// One session's share of a worker's load; releases it when dropped. It also keeps the pool
/// alive: the worker threads stop only once the last handle and the last session are gone, so
/// dropping a `WorkerPool` (or the `Connector` holding it) never kills live sessions.
pub(crate) struct WorkerLoad {
    pub(crate) index: usize,
    /// Taken only by `into_pool`, which consumes the load.
    pool: Option<Arc<PoolInner>>,
}

impl WorkerLoad {
    /// This worker's handshake cap.
    pub(crate) fn handshakes(&self) -> Arc<tokio::sync::Semaphore> {
        let pool = self
            .pool
            .as_ref()
            .expect("a load holds its pool until consumed");
        pool.workers[self.index].handshakes.clone()
    }

    /// The load as a session keeps it: the pool alone, 8 bytes, as the session's record holds
    /// the worker's index. The session gives it back with [`PoolShare::release`].
    pub(crate) fn into_pool(mut self) -> PoolShare {
        PoolShare(
            self.pool
                .take()
                .expect("a load holds its pool until consumed"),
        )
    }
}

/// A session's [`WorkerLoad`] without its index (see [`WorkerLoad::into_pool`]).
pub(crate) struct PoolShare(Arc<PoolInner>);

impl PoolShare {
    /// Gives back one session's load on worker `index`.
    pub(crate) fn release(self, index: usize) {
        self.0.workers[index].load.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for WorkerLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerLoad")
            .field("index", &self.index)
            .finish()
    }
}

impl Drop for WorkerLoad {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            PoolShare(pool).release(self.index);
        }
    }
}

pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
