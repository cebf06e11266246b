//! The [`Registry`]: every live session across all workers.
//!
//! Sessions register and unregister by a direct call into a sharded map (no cross-thread
//! message per connection: measured, two messages per connection to a registry thread cost 18%
//! of the accept rate). The registry is also an actor, for what users ask of it: count, list,
//! get, send-to-one, broadcast, kick, subscribe, wait for a count, shut down.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    task::{self, Poll, Waker},
    time::{Duration, Instant},
};

use actix::{Actor, Context, Handler, Message, Recipient, ResponseFuture};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::{
    outbox::{Attempt, Outcome},
    session::SessionMeta,
    CloseMode, DisconnectReason, SessionError, SessionId, SessionInfo, SlowConsumerPolicy,
};

const SHARDS: usize = 16;

/// Events a subscriber may fall behind by before newer ones are counted as missed (see
/// [`Registry::subscribe`]).
pub const DEFAULT_EVENT_BACKLOG: usize = 4096;

/// A live session as the registry holds it: its shared record. The registry never names
/// `Session<C, H>`: deliveries go through the record's outbound queue, close requests through
/// [`SessionMeta::request_close`].
type Entry = Arc<SessionMeta>;

/// Something that happened to the registry's sessions, sent to subscribers.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum RegistryEvent {
    /// A session started (Qt's `newConnection`).
    Connected(SessionInfo),
    /// A session ended (Qt's `disconnected`), with its final counters.
    Disconnected {
        /// The session's last snapshot.
        info: SessionInfo,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// The subscriber fell more than its backlog behind: this many events, which happened
    /// here in the sequence, were not kept for it. Also counted in
    /// [`RegistryStats::events_dropped`].
    Missed {
        /// How many events were missed.
        count: u64,
    },
}

/// What a [`Registry::broadcast`] did: every session it was meant for is counted exactly once.
///
/// # Examples
///
/// ```
/// let mut report = switchboard::BroadcastReport::default();
/// report.delivered = 3;
/// report.dropped = 1;
/// assert_eq!(report.sessions(), 4);
/// assert_eq!(report.undelivered(), 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Sessions the message was queued for, at once or after waiting for room.
    pub delivered: usize,
    /// Of those, sessions whose outbound queue was full, so the broadcast waited for them to
    /// take bytes.
    pub waited: usize,
    /// Slow consumers under [`SlowConsumerPolicy::Drop`]: the message was skipped for them
    /// (counted in [`SessionInfo::broadcasts_dropped`] and [`RegistryStats::broadcasts_dropped`]).
    pub dropped: usize,
    /// Slow consumers under [`SlowConsumerPolicy::Disconnect`]: disconnected with
    /// [`DisconnectReason::SlowConsumer`].
    pub disconnected: usize,
    /// Sessions closing or ended before the message could be queued for them.
    pub closed: usize,
}

impl BroadcastReport {
    /// Every session the broadcast was meant for.
    pub fn sessions(&self) -> usize {
        self.delivered + self.undelivered()
    }

    /// Sessions the message was not queued for, whatever the reason.
    pub fn undelivered(&self) -> usize {
        self.dropped + self.disconnected + self.closed
    }
}

/// The registry's totals when a shutdown began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Baseline {
    started: Instant,
    ended: u64,
    bytes: (u64, u64),
}

/// What a [`Registry::shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Sessions that ended within the drain timeout: closed gracefully (what they had read
    /// answered and flushed), or ended meanwhile by their peer or an error. Includes sessions
    /// that joined during the drain.
    pub drained: usize,
    /// Sessions still open at the deadline and aborted. `drained + aborted` is every session
    /// that was live when the shutdown began or joined before the deadline.
    pub aborted: usize,
    /// Bytes the aborted sessions still owed their peers (write buffers and outbound queues).
    pub unflushed_bytes: usize,
    /// Bytes read by the sessions that ended during the shutdown, over their whole lives.
    pub bytes_in: u64,
    /// Bytes written by the sessions that ended during the shutdown, over their whole lives.
    pub bytes_out: u64,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

/// Totals since the registry was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryStats {
    /// Live sessions.
    pub live: usize,
    /// Sessions ever registered.
    pub connected: u64,
    /// Sessions ended.
    pub disconnected: u64,
    /// Registry messages (broadcast, send-to-id) not delivered: skipped for slow consumers,
    /// abandoned by a broadcast dropped while it waited, refused by a session's codec, or left
    /// in the queue of a session that ended.
    pub broadcasts_dropped: u64,
    /// Times a session was found to be a slow consumer (nothing taken for its slow-consumer
    /// timeout while a sender waited).
    pub slow_consumers: u64,
    /// Events not kept for a subscriber that fell more than its backlog behind; each such
    /// subscriber also received [`RegistryEvent::Missed`] with its own count.
    pub events_dropped: u64,
    /// Bytes read by sessions that have ended, over their whole lives.
    pub bytes_in: u64,
    /// Bytes written by sessions that have ended, over their whole lives.
    pub bytes_out: u64,
}

/// Every live session across all workers: count, list, get, send-to-one, broadcast, kick,
/// subscribe, wait for a count, graceful shutdown.
///
/// A `Registry` is a cheap, cloneable handle whose methods work from any thread; it is also an
/// actor (`registry.clone().start()`) answering the same questions as messages. An entry is
/// removed whenever its session ends, whatever the reason (even if its worker thread is torn
/// down without stopping it).
///
/// Messages to sessions ([`send_to`](Self::send_to), [`broadcast`](Self::broadcast)) go into
/// each session's outbound queue, bounded in bytes ([`SessionConfig::with_outbound_queue`]); no
/// actor mailbox decides whether a message is kept.
///
/// [`SessionConfig::with_outbound_queue`]: crate::SessionConfig::with_outbound_queue
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use switchboard::Registry;
///
/// let registry = Registry::new();
/// assert_eq!(registry.count(), 0);
/// assert!(registry.list().is_empty());
/// registry.wait_for_count(0).await;
/// # });
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<HashMap<SessionId, Entry>>]>,
    live: AtomicUsize,
    connected: AtomicU64,
    disconnected: AtomicU64,
    broadcasts_dropped: AtomicU64,
    slow_consumers: AtomicU64,
    events_dropped: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Woken on every count change while someone waits for a count.
    count_changed: tokio::sync::Notify,
    waiters: AtomicUsize,
    subscribers: RwLock<Vec<Arc<EventQueue>>>,
    has_subscribers: AtomicBool,
    /// Set by [`Registry::shutdown`]: a session that joins from then on is asked to close as
    /// soon as it registers (it was accepted before the listener stopped, but started after
    /// the shutdown asked everyone else to close).
    shutting_down: AtomicBool,
    /// Totals over ended sessions and broadcasts, for metrics and the admin socket.
    counters: crate::counters::RegistryCounters,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("live", &self.count())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                live: AtomicUsize::new(0),
                connected: AtomicU64::new(0),
                disconnected: AtomicU64::new(0),
                broadcasts_dropped: AtomicU64::new(0),
                slow_consumers: AtomicU64::new(0),
                events_dropped: AtomicU64::new(0),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                count_changed: tokio::sync::Notify::new(),
                waiters: AtomicUsize::new(0),
                subscribers: RwLock::new(Vec::new()),
                has_subscribers: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                counters: Default::default(),
            }),
        }
    }

    fn shard(&self, id: SessionId) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        lock(&self.inner.shards[(id.get() as usize) % SHARDS])
    }

    /// Live sessions, exact.
    pub fn count(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Totals since creation.
    pub fn stats(&self) -> RegistryStats {
        let i = &self.inner;
        RegistryStats {
            live: self.count(),
            connected: i.connected.load(Ordering::Relaxed),
            // Acquire: the closed counters of every session counted here were added before
            // (see `leave`), so `closed_stats` read after this holds at least as many.
            disconnected: i.disconnected.load(Ordering::Acquire),
            broadcasts_dropped: i.broadcasts_dropped.load(Ordering::Relaxed),
            slow_consumers: i.slow_consumers.load(Ordering::Relaxed),
            events_dropped: i.events_dropped.load(Ordering::Relaxed),
            bytes_in: i.bytes_in.load(Ordering::Relaxed),
            bytes_out: i.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Totals over the sessions that have ended (by reason, frames, write-buffer-full events,
    /// lifetimes) and broadcasts sent: a few atomic loads, for metrics and the admin socket.
    ///
    /// # Examples
    ///
    /// ```
    /// let stats = switchboard::Registry::new().closed_stats();
    /// assert_eq!(stats.frames_in, 0);
    /// ```
    pub fn closed_stats(&self) -> crate::ClosedStats {
        self.inner.counters.snapshot()
    }

    /// A snapshot of every live session (counters as of each session's last turn).
    ///
    /// Each shard is locked only while its records' pointers are copied; the snapshots are
    /// built after, so a session that starts or ends meanwhile waits for the copy alone.
    ///
    /// # Examples
    ///
    /// ```
    /// let registry = switchboard::Registry::new();
    /// assert!(registry.list().is_empty());
    /// ```
    pub fn list(&self) -> Vec<SessionInfo> {
        self.records().iter().map(|meta| meta.info()).collect()
    }

    /// Every live session's record: each shard locked only while its `Arc`s are cloned (a
    /// reference count each), so that the caller reads counters, sorts and formats with no
    /// lock held.
    pub(crate) fn records(&self) -> Vec<Arc<SessionMeta>> {
        let mut all = Vec::with_capacity(self.count());
        for shard in self.inner.shards.iter() {
            all.extend(lock(shard).values().cloned());
        }
        all
    }

    /// The ids of every live session, cheaper than [`list`](Self::list).
    pub fn ids(&self) -> Vec<SessionId> {
        let mut all = Vec::with_capacity(self.count());
        for shard in self.inner.shards.iter() {
            all.extend(lock(shard).keys().copied());
        }
        all
    }

    /// One session's snapshot.
    pub fn get(&self, id: SessionId) -> Option<SessionInfo> {
        self.shard(id).get(&id).map(|e| e.info())
    }

    /// Writes `data` to one session, through its codec (a line gets its newline, a frame its
    /// header), by way of its outbound queue: resolves once the message is queued. While the
    /// queue is full and the session keeps taking bytes, it waits; a session that takes
    /// nothing for its slow-consumer timeout fails it.
    ///
    /// Delivery is at most once: a queued message is lost if the session ends before writing
    /// it. A message the session's codec refuses is dropped there and counted in
    /// [`SessionInfo::broadcasts_dropped`].
    ///
    /// # Errors
    ///
    /// [`SessionError::Gone`] when no such session is live; [`SessionError::Closing`] when it
    /// is closing; [`SessionError::SlowConsumer`] when it took nothing for its slow-consumer
    /// timeout (or was found slow before).
    ///
    /// # Cancel safety
    ///
    /// Dropped before it resolves, nothing was queued.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use switchboard::{Registry, SessionError, SessionId};
    ///
    /// let registry = Registry::new();
    /// let sent = registry.send_to(SessionId::next(), bytes::Bytes::from("hi")).await;
    /// assert!(matches!(sent, Err(SessionError::Gone)));
    /// # });
    /// ```
    pub fn send_to(&self, id: SessionId, data: Bytes) -> Sending {
        let meta = self.shard(id).get(&id).cloned();
        Sending {
            registry: self.clone(),
            target: meta.map(|meta| (meta, None)),
            data,
            timer: None,
        }
    }

    /// Queues `data` for every live session except `except`, and resolves once every one of
    /// them is accounted for in the [`BroadcastReport`].
    ///
    /// The message goes into each session's outbound queue at once where there is room
    /// (before this returns: a broadcast no queue is full for is complete without being
    /// polled). Where a queue is full, the returned future waits while that session keeps
    /// taking bytes: a burst is slowed down to what the readers take, never dropped for them.
    /// A session that takes nothing for its slow-consumer timeout
    /// ([`SessionConfig::with_slow_consumer_timeout`](crate::SessionConfig::with_slow_consumer_timeout))
    /// is a slow consumer, and `policy` applies to it: the message is dropped for it (and
    /// later ones at once, until it takes bytes again), or it is disconnected. Memory stays
    /// bounded either way.
    ///
    /// A session handler that broadcasts what it reads should hold the future and return it
    /// from [`SessionHandler::poll_ready`](crate::SessionHandler::poll_ready) until it
    /// completes: the session then stops reading its own socket meanwhile, and TCP slows the
    /// sender down (see the `switchboard serve` chat mode).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up on the sessions it still waits for: the message is
    /// dropped for them and counted in [`SessionInfo::broadcasts_dropped`] and
    /// [`RegistryStats::broadcasts_dropped`]. Sessions it was queued for keep it.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use switchboard::{Registry, SlowConsumerPolicy};
    ///
    /// let registry = Registry::new();
    /// let report = registry
    ///     .broadcast(bytes::Bytes::from("hello"), None, SlowConsumerPolicy::Drop)
    ///     .await;
    /// assert_eq!(report.sessions(), 0);
    /// # });
    /// ```
    pub fn broadcast(
        &self,
        data: Bytes,
        except: Option<SessionId>,
        policy: SlowConsumerPolicy,
    ) -> Broadcasting {
        self.inner
            .counters
            .broadcasts
            .fetch_add(1, Ordering::Relaxed);
        let mut broadcast = Broadcasting {
            registry: self.clone(),
            data,
            policy,
            waiting: Vec::new(),
            report: BroadcastReport::default(),
            timer: None,
        };
        let mut now = None;
        let mut to_close = Vec::new();
        for shard in self.inner.shards.iter() {
            for (id, entry) in lock(shard).iter() {
                if Some(*id) == except {
                    continue;
                }
                let outcome = match entry.outbox.offer(&broadcast.data, None).settled() {
                    Ok(outcome) => outcome,
                    Err(progress) => {
                        let now = *now.get_or_insert_with(Instant::now);
                        let attempt = Attempt::new(&entry.outbox, progress, now);
                        broadcast.waiting.push((entry.clone(), attempt));
                        broadcast.report.waited += 1;
                        continue;
                    }
                };
                if broadcast.settle(entry, outcome) {
                    to_close.push(*id);
                }
            }
        }
        for id in to_close {
            self.close_slow_consumer(id);
        }
        broadcast
    }

    fn close_slow_consumer(&self, id: SessionId) {
        if let Some(entry) = self.shard(id).get(&id) {
            entry.request_close(DisconnectReason::SlowConsumer, CloseMode::Abort);
        }
    }

    fn count_slow_consumer(&self, meta: &SessionMeta) {
        self.inner.slow_consumers.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %meta.id, "slow consumer: took nothing for its timeout");
    }

    /// Counts a registry message a session will not get.
    fn count_undelivered(&self, meta: &SessionMeta) {
        meta.broadcasts_dropped.fetch_add(1, Ordering::Relaxed);
        self.count_drops(1);
    }

    pub(crate) fn count_drops(&self, messages: u64) {
        self.inner
            .broadcasts_dropped
            .fetch_add(messages, Ordering::Relaxed);
    }

    /// Closes one session, gracefully (flush, then close) or at once. Returns false when no
    /// such session is live.
    pub fn kick(&self, id: SessionId, mode: CloseMode) -> bool {
        match self.shard(id).get(&id) {
            Some(entry) => {
                entry.request_close(DisconnectReason::Kicked, mode);
                true
            }
            None => false,
        }
    }

    /// Closes every live session with `reason`; returns how many were asked to.
    pub fn close_all(&self, reason: DisconnectReason, mode: CloseMode) -> usize {
        let mut asked = 0;
        for shard in self.inner.shards.iter() {
            for entry in lock(shard).values() {
                entry.request_close(reason.clone(), mode);
                asked += 1;
            }
        }
        asked
    }

    /// Sends every future [`RegistryEvent`] to `subscriber`, in order, with up to
    /// [`DEFAULT_EVENT_BACKLOG`] events waiting for it; see
    /// [`subscribe_with_backlog`](Self::subscribe_with_backlog).
    ///
    /// # Panics
    ///
    /// Outside an actix system (it spawns the task that feeds the subscriber on the current
    /// arbiter); use [`events`](Self::events) there.
    pub fn subscribe(&self, subscriber: Recipient<RegistryEvent>) {
        self.subscribe_with_backlog(subscriber, DEFAULT_EVENT_BACKLOG);
    }

    /// Sends every future [`RegistryEvent`] to `subscriber`, in order: a task on the current
    /// arbiter takes them from [`events`](Self::events) and waits for room in the
    /// subscriber's mailbox for each. A subscriber more than `backlog` events behind misses
    /// the newer ones, and is then told how many with [`RegistryEvent::Missed`] (also counted
    /// in [`RegistryStats::events_dropped`]): no event disappears unannounced, and memory stays
    /// bounded. The task ends when the subscriber stops.
    ///
    /// # Panics
    ///
    /// Outside an actix system, as [`subscribe`](Self::subscribe).
    pub fn subscribe_with_backlog(&self, subscriber: Recipient<RegistryEvent>, backlog: usize) {
        let mut events = self.events(backlog);
        actix_rt::spawn(async move {
            while let Some(event) = events.next().await {
                if subscriber.send(event).await.is_err() {
                    break;
                }
            }
        });
    }

    /// A stream of every future [`RegistryEvent`], for code that is not an actor. At most
    /// `backlog` events (at least 1) wait in it; beyond that newer events are missed and the
    /// stream yields [`RegistryEvent::Missed`] in their place. The stream never ends by itself;
    /// drop it to unsubscribe.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use futures::StreamExt;
    /// use switchboard::{Registry, RegistryEvent};
    ///
    /// let registry = Registry::new();
    /// let mut events = registry.events(16);
    /// let placeholder = registry.register_placeholder(
    ///     "127.0.0.1:1".parse().unwrap(),
    ///     "127.0.0.1:2".parse().unwrap(),
    /// );
    /// assert!(matches!(events.next().await, Some(RegistryEvent::Connected(_))));
    /// drop(placeholder);
    /// assert!(matches!(events.next().await, Some(RegistryEvent::Disconnected { .. })));
    /// # });
    /// ```
    pub fn events(&self, backlog: usize) -> RegistryEvents {
        let queue = Arc::new(EventQueue {
            state: Mutex::new(EventState {
                events: VecDeque::new(),
                missed: 0,
                waker: None,
                receiver_gone: false,
            }),
            backlog: backlog.max(1),
        });
        let mut subscribers = self
            .inner
            .subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        subscribers.push(queue.clone());
        self.inner.has_subscribers.store(true, Ordering::Release);
        RegistryEvents { queue }
    }

    fn publish(&self, event: impl FnOnce() -> RegistryEvent) {
        if !self.inner.has_subscribers.load(Ordering::Acquire) {
            return;
        }
        let event = event();
        let mut gone = false;
        {
            let subscribers = self
                .inner
                .subscribers
                .read()
                .unwrap_or_else(|e| e.into_inner());
            for queue in subscribers.iter() {
                match queue.push(event.clone()) {
                    Pushed::Kept => {}
                    Pushed::Missed => {
                        self.inner.events_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Pushed::Gone => gone = true,
                }
            }
        }
        if gone {
            let mut subscribers = self
                .inner
                .subscribers
                .write()
                .unwrap_or_else(|e| e.into_inner());
            subscribers.retain(|queue| !queue.is_gone());
            self.inner
                .has_subscribers
                .store(!subscribers.is_empty(), Ordering::Release);
        }
    }

    /// Resolves once exactly `count` sessions are live (Ranch's `wait_for_connections`).
    ///
    /// The count is checked each time it changes, as seen when this future runs: a count
    /// passed through quickly on the way elsewhere (2 → 3 → 4 between two polls) may be
    /// missed. Waiting for a count the registry settles on (all connected, or 0 after
    /// closing) is exact. Wrap it in a timeout where the count may never come.
    pub fn wait_for_count(&self, count: usize) -> impl Future<Output = ()> + Send + 'static {
        let registry = self.clone();
        async move {
            // SeqCst here and in `change_count`: each side writes one atomic and then reads the
            // other's (store-buffering), and only a total order guarantees that at least one
            // side sees the other's write. With acquire/release both could read the old values
            // and the wake-up would be lost.
            registry.inner.waiters.fetch_add(1, Ordering::SeqCst);
            let _waiting = WaiterGuard(&registry.inner.waiters);
            loop {
                let changed = registry.inner.count_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if registry.inner.live.load(Ordering::SeqCst) == count {
                    return;
                }
                changed.await;
            }
        }
    }

    /// Graceful shutdown of every live session: each stops reading, answers what it already
    /// read, flushes and closes; whatever is still open after `drain_timeout` is aborted.
    ///
    /// Stop accepting first ([`ListenerHandle::shutdown`](crate::ListenerHandle::shutdown)
    /// does). A session that joins once the shutdown has begun (one accepted just before the
    /// listener stopped, whose worker had not started it yet) is asked to close gracefully as
    /// soon as it registers, and is drained like the others. So is any session that joins
    /// later: a registry that was shut down stays shut.
    ///
    /// The report counts as drained every session that ended before the deadline, whatever
    /// ended it, and as aborted every session still open at the deadline.
    pub fn shutdown(
        &self,
        drain_timeout: Duration,
    ) -> impl Future<Output = ShutdownReport> + Send + 'static {
        self.shutdown_from(self.baseline(), drain_timeout)
    }

    /// Where a shutdown's report starts counting from: now.
    pub(crate) fn baseline(&self) -> Baseline {
        Baseline {
            started: Instant::now(),
            ended: self.inner.disconnected.load(Ordering::SeqCst),
            bytes: (
                self.inner.bytes_in.load(Ordering::SeqCst),
                self.inner.bytes_out.load(Ordering::SeqCst),
            ),
        }
    }

    /// [`shutdown`](Self::shutdown), with a report that counts from `baseline` (taken before
    /// an earlier phase, such as a hand-over's linger).
    pub(crate) fn shutdown_from(
        &self,
        baseline: Baseline,
        drain_timeout: Duration,
    ) -> impl Future<Output = ShutdownReport> + Send + 'static {
        let registry = self.clone();
        async move {
            let Baseline {
                started,
                ended: ended_before,
                bytes: bytes_before,
            } = baseline;
            // SeqCst, before `close_all` takes the shard locks: a session registering after
            // `close_all` passed its shard sees the flag (see `Registry::join`).
            registry.inner.shutting_down.store(true, Ordering::SeqCst);
            registry.close_all(DisconnectReason::Shutdown, CloseMode::Graceful);
            let drained_in_time = tokio::time::timeout(drain_timeout, registry.wait_for_count(0))
                .await
                .is_ok();
            let mut report = ShutdownReport::default();
            let ended_in_time = if drained_in_time {
                registry.inner.disconnected.load(Ordering::SeqCst) - ended_before
            } else {
                // Every shard locked at once: no session can end or join while the ended are
                // counted and the live are aborted, so each is in exactly one of the two.
                let shards: Vec<_> = registry.inner.shards.iter().map(lock).collect();
                let ended = registry.inner.disconnected.load(Ordering::SeqCst) - ended_before;
                for entry in shards.iter().flat_map(|shard| shard.values()) {
                    report.aborted += 1;
                    report.unflushed_bytes += entry.bytes_owed();
                    entry.request_close(DisconnectReason::Shutdown, CloseMode::Abort);
                }
                drop(shards);
                ended
            };
            if !drained_in_time {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), registry.wait_for_count(0)).await;
            }
            report.drained = usize::try_from(ended_in_time).unwrap_or(usize::MAX);
            report.bytes_in = registry.inner.bytes_in.load(Ordering::SeqCst) - bytes_before.0;
            report.bytes_out = registry.inner.bytes_out.load(Ordering::SeqCst) - bytes_before.1;
            report.elapsed = started.elapsed();
            report
        }
    }

    /// Adds an entry with no session behind it, for measuring the registry itself (benches)
    /// and for examples; messages to it are queued and never written. The entry leaves when
    /// the returned guard is dropped.
    ///
    /// Hidden from the docs: it is scaffolding for the benches and the registry's own examples
    /// (a registry full of entries without sockets), not part of the API users build on; a
    /// cargo feature would make the benches build the library twice.
    #[doc(hidden)]
    pub fn register_placeholder(&self, peer: SocketAddr, local: SocketAddr) -> Placeholder {
        let meta = SessionMeta::placeholder(peer, local);
        self.join(&meta);
        Placeholder {
            registry: self.clone(),
            meta,
        }
    }

    /// Counts a session in or out. Called with the session's shard locked, so that a look at
    /// every shard under their locks (see `shutdown`) sees counts and entries that agree.
    fn change_count(&self, delta: isize) {
        // The totals before `live`, and all SeqCst (see `wait_for_count`): whoever sees the new
        // `live` also sees the total that goes with it.
        if delta > 0 {
            self.inner.connected.fetch_add(1, Ordering::SeqCst);
            self.inner.live.fetch_add(1, Ordering::SeqCst);
        } else {
            self.inner.disconnected.fetch_add(1, Ordering::SeqCst);
            self.inner.live.fetch_sub(1, Ordering::SeqCst);
        }
        if self.inner.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.count_changed.notify_waiters();
        }
    }
}

struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere never leaves a shard half-updated (each update is one map call).
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// An entry made by [`Registry::register_placeholder`]; removed when dropped.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct Placeholder {
    registry: Registry,
    meta: Arc<SessionMeta>,
}

impl Placeholder {
    /// Empties the entry's outbound queue, as a session writing it out would; returns how many
    /// messages it held.
    pub fn take_queued(&self) -> usize {
        self.meta.outbox.take(|_| true)
    }
}

impl Registry {
    /// Adds a session's record: called by the session once it runs.
    pub(crate) fn join(&self, meta: &Arc<SessionMeta>) {
        {
            let mut shard = self.shard(meta.id);
            shard.insert(meta.id, meta.clone());
            self.change_count(1);
        }
        self.publish(|| RegistryEvent::Connected(meta.info()));
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            // Joined after the shutdown asked everyone to close: closed like them.
            if let Some(entry) = self.shard(meta.id).get(&meta.id) {
                entry.request_close(DisconnectReason::Shutdown, CloseMode::Graceful);
            }
        }
    }

    /// Removes a session's record, if it joined: called by the session when it stops (with
    /// its final snapshot), and when a session is dropped without stopping (its worker was
    /// torn down), without one.
    pub(crate) fn leave(
        &self,
        meta: &SessionMeta,
        reason: DisconnectReason,
        info: Option<SessionInfo>,
    ) {
        let inner = &self.inner;
        let info = {
            let mut shard = self.shard(meta.id);
            if shard.remove(&meta.id).is_none() {
                // Never joined (it stopped before it ran): nobody heard of it.
                return;
            }
            let info = info.unwrap_or_else(|| meta.info());
            // Every total of an ended session before the count (see `change_count`): a
            // shutdown that sees the last session leave must also see its bytes in the report,
            // and whoever sees `disconnected` reach N sees the close reasons, frames and
            // lifetimes of N sessions in the metrics.
            inner.bytes_in.fetch_add(info.bytes_in, Ordering::SeqCst);
            inner.bytes_out.fetch_add(info.bytes_out, Ordering::SeqCst);
            inner.counters.record(&reason, &info);
            self.change_count(-1);
            info
        };
        self.publish(|| RegistryEvent::Disconnected { info, reason });
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        self.registry
            .leave(&self.meta, DisconnectReason::Shutdown, None);
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

/// Asks a [`Registry`] actor for the live session count.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct Count;

impl Handler<Count> for Registry {
    type Result = usize;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
        self.count()
    }
}

/// Asks a [`Registry`] actor for every live session.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<SessionInfo>")]
pub struct List;

impl Handler<List> for Registry {
    type Result = actix::MessageResult<List>;
    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.list())
    }
}

/// Asks a [`Registry`] actor for one session.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<SessionInfo>")]
pub struct Get(pub SessionId);

impl Handler<Get> for Registry {
    type Result = Option<SessionInfo>;
    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Option<SessionInfo> {
        self.get(msg.0)
    }
}

/// Writes to one session through a [`Registry`] actor; see [`Registry::send_to`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct SendTo {
    /// The session.
    pub id: SessionId,
    /// What to write (framed by the session's codec).
    pub data: Bytes,
}

impl Handler<SendTo> for Registry {
    type Result = ResponseFuture<Result<(), SessionError>>;
    fn handle(&mut self, msg: SendTo, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.send_to(msg.id, msg.data))
    }
}

/// Broadcasts through a [`Registry`] actor; see [`Registry::broadcast`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "BroadcastReport")]
pub struct Broadcast {
    /// What to write to each session.
    pub data: Bytes,
    /// A session to leave out (typically the sender).
    pub except: Option<SessionId>,
    /// What to do with a session that cannot keep up.
    pub policy: SlowConsumerPolicy,
}

impl Handler<Broadcast> for Registry {
    type Result = ResponseFuture<BroadcastReport>;
    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.broadcast(msg.data, msg.except, msg.policy))
    }
}

/// Kicks one session through a [`Registry`] actor; answers whether it was live.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct Kick {
    /// The session.
    pub id: SessionId,
    /// Flush before closing, or abort.
    pub mode: CloseMode,
}

impl Handler<Kick> for Registry {
    type Result = bool;
    fn handle(&mut self, msg: Kick, _: &mut Context<Self>) -> bool {
        self.kick(msg.id, msg.mode)
    }
}

/// Subscribes to [`RegistryEvent`]s through a [`Registry`] actor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<RegistryEvent>);

impl Handler<Subscribe> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribe(msg.0);
    }
}

/// Resolves once the registry holds exactly this many sessions.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct WaitForCount(pub usize);

impl Handler<WaitForCount> for Registry {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: WaitForCount, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.wait_for_count(msg.0))
    }
}

/// Graceful shutdown through a [`Registry`] actor; see [`Registry::shutdown`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ShutdownReport")]
pub struct Shutdown {
    /// How long sessions get to flush and close before they are aborted.
    pub drain_timeout: Duration,
}

impl Handler<Shutdown> for Registry {
    type Result = ResponseFuture<ShutdownReport>;
    fn handle(&mut self, msg: Shutdown, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.shutdown(msg.drain_timeout))
    }
}

/// A [`Registry::broadcast`] on its way: resolves to the [`BroadcastReport`] once every target
/// session has the message queued or is accounted for otherwise.
#[must_use = "dropped, a broadcast gives up on the sessions it waits for (counted as dropped)"]
pub struct Broadcasting {
    registry: Registry,
    data: Bytes,
    policy: SlowConsumerPolicy,
    /// Sessions whose outbound queue was full, with the wait for each.
    waiting: Vec<(Arc<SessionMeta>, Attempt)>,
    report: BroadcastReport,
    /// Fires at the earliest slow-consumer deadline among `waiting`.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl fmt::Debug for Broadcasting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcasting")
            .field("report", &self.report)
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

impl Broadcasting {
    /// Whether every target is accounted for (polling would resolve at once).
    pub fn is_done(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The report as of now; sessions still waited for are in none of its counts but
    /// [`waited`](BroadcastReport::waited).
    pub fn report(&self) -> BroadcastReport {
        self.report
    }

    /// Books one target's outcome; true when the target must be disconnected.
    fn settle(&mut self, meta: &SessionMeta, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Queued => self.report.delivered += 1,
            Outcome::Closed => self.report.closed += 1,
            Outcome::Slow { detected } => {
                if detected {
                    self.registry.count_slow_consumer(meta);
                }
                match self.policy {
                    SlowConsumerPolicy::Drop => {
                        self.report.dropped += 1;
                        self.registry.count_undelivered(meta);
                    }
                    SlowConsumerPolicy::Disconnect => {
                        self.report.disconnected += 1;
                        return true;
                    }
                }
            }
        }
        false
    }
}

impl Future for Broadcasting {
    type Output = BroadcastReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<BroadcastReport> {
        let this = &mut *self;
        loop {
            if this.waiting.is_empty() {
                this.timer = None;
                return Poll::Ready(this.report);
            }
            let now = Instant::now();
            let mut index = 0;
            while index < this.waiting.len() {
                let (meta, attempt) = &mut this.waiting[index];
                match attempt.poll(&meta.outbox, &this.data, cx, now) {
                    None => index += 1,
                    Some(outcome) => {
                        let (meta, _) = this.waiting.swap_remove(index);
                        if this.settle(&meta, outcome) {
                            this.registry.close_slow_consumer(meta.id);
                        }
                    }
                }
            }
            let Some(deadline) = this.waiting.iter().map(|(_, a)| a.deadline()).min() else {
                continue;
            };
            if poll_deadline(&mut this.timer, deadline, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Broadcasting {
    fn drop(&mut self) {
        for (meta, _) in self.waiting.drain(..) {
            self.registry.count_undelivered(&meta);
        }
    }
}

/// Arms `timer` for `deadline` and polls it.
fn poll_deadline(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    deadline: Instant,
    cx: &mut task::Context<'_>,
) -> Poll<()> {
    let deadline = tokio::time::Instant::from_std(deadline);
    match timer {
        Some(sleep) if sleep.deadline() == deadline => {}
        Some(sleep) => sleep.as_mut().reset(deadline),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
    timer
        .as_mut()
        .map_or(Poll::Ready(()), |sleep| sleep.as_mut().poll(cx))
}

/// A [`Registry::send_to`] on its way: resolves once the message is queued for the session.
#[must_use = "a send does nothing unless polled"]
pub struct Sending {
    registry: Registry,
    /// The session, and the wait once its queue was found full; `None` when it is not live.
    target: Option<(Arc<SessionMeta>, Option<Attempt>)>,
    data: Bytes,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl fmt::Debug for Sending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sending")
            .field("to", &self.target.as_ref().map(|(meta, _)| meta.id))
            .finish()
    }
}

impl Future for Sending {
    type Output = Result<(), SessionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some((meta, attempt)) = &mut this.target else {
            return Poll::Ready(Err(SessionError::Gone));
        };
        loop {
            let now = Instant::now();
            let outcome = match attempt {
                None => match meta.outbox.offer(&this.data, None).settled() {
                    Ok(outcome) => Some(outcome),
                    Err(progress) => {
                        let mut waiting = Attempt::new(&meta.outbox, progress, now);
                        let outcome = waiting.poll(&meta.outbox, &this.data, cx, now);
                        *attempt = Some(waiting);
                        outcome
                    }
                },
                Some(waiting) => waiting.poll(&meta.outbox, &this.data, cx, now),
            };
            let result = match outcome {
                Some(Outcome::Queued) => Ok(()),
                Some(Outcome::Closed) => Err(SessionError::Closing),
                Some(Outcome::Slow { detected }) => {
                    if detected {
                        this.registry.count_slow_consumer(meta);
                    }
                    Err(SessionError::SlowConsumer {
                        timeout: meta.outbox.slow_after(),
                    })
                }
                None => {
                    let deadline = attempt.as_ref().map_or(now, Attempt::deadline);
                    if poll_deadline(&mut this.timer, deadline, cx).is_pending() {
                        return Poll::Pending;
                    }
                    continue;
                }
            };
            this.timer = None;
            this.target = None;
            return Poll::Ready(result);
        }
    }
}

/// The [`RegistryEvent`]s of a [`Registry`], as a stream; made by [`Registry::events`].
pub struct RegistryEvents {
    queue: Arc<EventQueue>,
}

impl fmt::Debug for RegistryEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEvents")
            .field("backlog", &self.queue.backlog)
            .finish()
    }
}

struct EventQueue {
    state: Mutex<EventState>,
    backlog: usize,
}

struct EventState {
    events: VecDeque<RegistryEvent>,
    /// Events missed since the last one kept: reported as `Missed` in their place.
    missed: u64,
    waker: Option<Waker>,
    receiver_gone: bool,
}

enum Pushed {
    Kept,
    Missed,
    Gone,
}

impl EventQueue {
    fn push(&self, event: RegistryEvent) -> Pushed {
        let mut state = lock(&self.state);
        if state.receiver_gone {
            return Pushed::Gone;
        }
        let pushed = if state.events.len() < self.backlog {
            if state.missed > 0 {
                // In sequence: the notice goes where the missed events would have been (it may
                // take the queue one past its backlog).
                let count = std::mem::take(&mut state.missed);
                state.events.push_back(RegistryEvent::Missed { count });
            }
            state.events.push_back(event);
            Pushed::Kept
        } else {
            state.missed += 1;
            Pushed::Missed
        };
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        pushed
    }

    fn is_gone(&self) -> bool {
        lock(&self.state).receiver_gone
    }
}

impl Stream for RegistryEvents {
    type Item = RegistryEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<RegistryEvent>> {
        let mut state = lock(&self.queue.state);
        if let Some(event) = state.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if state.missed > 0 {
            let count = std::mem::take(&mut state.missed);
            return Poll::Ready(Some(RegistryEvent::Missed { count }));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for RegistryEvents {
    fn drop(&mut self) {
        lock(&self.queue.state).receiver_gone = true;
    }
}
