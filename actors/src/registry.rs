//! The [`Registry`]: every live session across all workers.
//!
//! Sessions register and unregister by a direct call into a sharded map (no cross-thread
//! message per connection: measured, two messages per connection to a registry thread cost 18%
//! of the accept rate). The registry is also an actor, for what users ask of it: count, list,
//! get, send-to-one, broadcast, kick, subscribe, wait for a count, shut down.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use actix::{Actor, Addr, Context, Handler, Message, Recipient, ResponseFuture};
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::{
    session::{Control, SessionCodec, SessionMeta},
    DisconnectReason, Session, SessionError, SessionHandler, SessionId, SessionInfo,
    SlowConsumerPolicy, Write,
};

const SHARDS: usize = 16;

/// What the registry can do to a session without knowing its codec or handler.
trait SessionControl: Send + Sync {
    /// Queues a delivery; false when the mailbox is full or gone.
    fn deliver(&self, data: Bytes, policy: SlowConsumerPolicy) -> bool;
    fn write(&self, data: Bytes) -> BoxFuture<'static, Result<(), SessionError>>;
    fn close(&self, reason: DisconnectReason, graceful: bool);
}

impl<C: SessionCodec, H: SessionHandler<C>> SessionControl for Addr<Session<C, H>> {
    fn deliver(&self, data: Bytes, policy: SlowConsumerPolicy) -> bool {
        self.try_send(Control::Deliver(data, policy)).is_ok()
    }

    fn write(&self, data: Bytes) -> BoxFuture<'static, Result<(), SessionError>> {
        let request = self.send(Write(data));
        Box::pin(async move { request.await.map_err(SessionError::from)? })
    }

    fn close(&self, reason: DisconnectReason, graceful: bool) {
        // One close per call site and session: bounded, and it must not be lost to a full
        // mailbox, so it skips the capacity check.
        self.do_send(Control::Close(reason, graceful));
    }
}

/// A registry entry kept only for measuring the registry itself (see
/// [`Registry::register_placeholder`]).
struct NoSession;

impl SessionControl for NoSession {
    fn deliver(&self, _: Bytes, _: SlowConsumerPolicy) -> bool {
        true
    }
    fn write(&self, _: Bytes) -> BoxFuture<'static, Result<(), SessionError>> {
        Box::pin(async { Ok(()) })
    }
    fn close(&self, _: DisconnectReason, _: bool) {}
}

struct Entry {
    meta: Arc<SessionMeta>,
    control: Box<dyn SessionControl>,
}

impl Entry {
    /// Asks the session to close, unless a close at least as strong was already asked: the
    /// close message skips the mailbox's capacity (it must not be lost), so it is sent at most
    /// once per level.
    fn request_close(&self, reason: DisconnectReason, graceful: bool) {
        let level = if graceful { 1 } else { 2 };
        if self.meta.close_requested.fetch_max(level, Ordering::AcqRel) < level {
            self.control.close(reason, graceful);
        }
    }
}

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
}

/// What a [`Registry::broadcast`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Sessions the message was queued for.
    pub queued: usize,
    /// Sessions whose mailbox was full, handled by the policy (dropped or disconnected).
    pub mailbox_full: usize,
}

/// What a [`Registry::shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Sessions that ended within the drain timeout: closed gracefully (what they had read
    /// answered and flushed), or ended meanwhile by their peer or an error. Includes sessions
    /// that joined during the drain.
    pub drained: usize,
    /// Sessions still open at the deadline and aborted. `drained + aborted` is every session
    /// that was live when the shutdown began or joined before the deadline.
    pub aborted: usize,
    /// Bytes still in the aborted sessions' write buffers.
    pub unflushed_bytes: usize,
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
    /// Broadcast messages dropped for slow sessions.
    pub broadcasts_dropped: u64,
    /// Events not delivered because a subscriber's mailbox was full.
    pub events_dropped: u64,
}

/// Every live session across all workers: count, list, get, send-to-one, broadcast, kick,
/// subscribe, wait for a count, graceful shutdown.
///
/// A `Registry` is a cheap, cloneable handle whose methods work from any thread; it is also an
/// actor (`registry.clone().start()`) answering the same questions as messages. An entry is
/// removed whenever its session ends, whatever the reason (even if its worker thread is torn
/// down without stopping it).
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
    events_dropped: AtomicU64,
    /// Woken on every count change while someone waits for a count.
    count_changed: tokio::sync::Notify,
    waiters: AtomicUsize,
    subscribers: RwLock<Vec<Recipient<RegistryEvent>>>,
    has_subscribers: std::sync::atomic::AtomicBool,
    /// Set by [`Registry::shutdown`]: a session that joins from then on is asked to close as
    /// soon as it registers (it was accepted before the listener stopped, but started after
    /// the shutdown asked everyone else to close).
    shutting_down: std::sync::atomic::AtomicBool,
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
                events_dropped: AtomicU64::new(0),
                count_changed: tokio::sync::Notify::new(),
                waiters: AtomicUsize::new(0),
                subscribers: RwLock::new(Vec::new()),
                has_subscribers: std::sync::atomic::AtomicBool::new(false),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
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
            disconnected: i.disconnected.load(Ordering::Relaxed),
            broadcasts_dropped: i.broadcasts_dropped.load(Ordering::Relaxed),
            events_dropped: i.events_dropped.load(Ordering::Relaxed),
        }
    }

    /// A snapshot of every live session (counters as of each session's last turn).
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut all = Vec::with_capacity(self.count());
        for shard in self.inner.shards.iter() {
            all.extend(lock(shard).values().map(|e| e.meta.info()));
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
        self.shard(id).get(&id).map(|e| e.meta.info())
    }

    /// Writes `data` to one session, through its codec (a line gets its newline, a frame its
    /// header).
    ///
    /// # Errors
    ///
    /// [`SessionError::Gone`] when no such session is live; otherwise as
    /// [`Write`](crate::Write): [`SessionError::WriteBufferFull`] when it cannot keep up.
    pub fn send_to(
        &self,
        id: SessionId,
        data: Bytes,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        let request = self.shard(id).get(&id).map(|e| e.control.write(data));
        async move {
            match request {
                Some(request) => request.await,
                None => Err(SessionError::Gone),
            }
        }
    }

    /// Queues `data` for every live session except `except`, without waiting on any of them.
    /// A session that cannot keep up (full write buffer or mailbox) is handled by `policy`:
    /// the message is dropped for it and counted, or it is disconnected with
    /// [`DisconnectReason::SlowConsumer`]. Memory stays bounded either way.
    pub fn broadcast(
        &self,
        data: Bytes,
        except: Option<SessionId>,
        policy: SlowConsumerPolicy,
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for shard in self.inner.shards.iter() {
            for (id, entry) in lock(shard).iter() {
                if Some(*id) == except {
                    continue;
                }
                if entry.control.deliver(data.clone(), policy) {
                    report.queued += 1;
                } else {
                    report.mailbox_full += 1;
                    self.slow_consumer(entry, policy);
                }
            }
        }
        report
    }

    fn slow_consumer(&self, entry: &Entry, policy: SlowConsumerPolicy) {
        match policy {
            SlowConsumerPolicy::Drop => {
                entry
                    .meta
                    .broadcasts_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.count_drop();
            }
            SlowConsumerPolicy::Disconnect => {
                entry.request_close(DisconnectReason::SlowConsumer, false);
            }
        }
    }

    pub(crate) fn count_drop(&self) {
        self.inner
            .broadcasts_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Closes one session: gracefully (flush, then close) or at once. Returns false when no
    /// such session is live.
    pub fn kick(&self, id: SessionId, graceful: bool) -> bool {
        match self.shard(id).get(&id) {
            Some(entry) => {
                entry.request_close(DisconnectReason::Kicked, graceful);
                true
            }
            None => false,
        }
    }

    /// Closes every live session with `reason`; returns how many were asked to.
    pub fn close_all(&self, reason: DisconnectReason, graceful: bool) -> usize {
        let mut asked = 0;
        for shard in self.inner.shards.iter() {
            for entry in lock(shard).values() {
                entry.request_close(reason.clone(), graceful);
                asked += 1;
            }
        }
        asked
    }

    /// Sends every future [`RegistryEvent`] to `subscriber`. Delivery uses `try_send`: give the
    /// subscriber a mailbox big enough for bursts (`ctx.set_mailbox_capacity`); events that do
    /// not fit are counted in [`RegistryStats::events_dropped`], never queued without bound.
    pub fn subscribe(&self, subscriber: Recipient<RegistryEvent>) {
        let mut subscribers = self
            .inner
            .subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        subscribers.push(subscriber);
        self.inner.has_subscribers.store(true, Ordering::Release);
    }

    fn publish(&self, event: impl FnOnce() -> RegistryEvent) {
        if !self.inner.has_subscribers.load(Ordering::Acquire) {
            return;
        }
        let event = event();
        let mut subscribers = self
            .inner
            .subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.connected());
        for subscriber in subscribers.iter() {
            if subscriber.try_send(event.clone()).is_err() {
                self.inner.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
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
        let registry = self.clone();
        async move {
            let started = Instant::now();
            let ended_before = registry.inner.disconnected.load(Ordering::SeqCst);
            // SeqCst, before `close_all` takes the shard locks: a session registering after
            // `close_all` passed its shard sees the flag (see `Registration::insert`).
            registry.inner.shutting_down.store(true, Ordering::SeqCst);
            registry.close_all(DisconnectReason::Shutdown, true);
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
                    report.unflushed_bytes += entry.meta.bytes_to_write();
                    entry.request_close(DisconnectReason::Shutdown, false);
                }
                drop(shards);
                ended
            };
            if !drained_in_time {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), registry.wait_for_count(0)).await;
            }
            report.drained = usize::try_from(ended_in_time).unwrap_or(usize::MAX);
            report.elapsed = started.elapsed();
            report
        }
    }

    /// Adds an entry with no session behind it, for measuring the registry itself (benches).
    /// The entry leaves when the returned guard is dropped.
    #[doc(hidden)]
    pub fn register_placeholder(&self, peer: SocketAddr, local: SocketAddr) -> Placeholder {
        let meta = SessionMeta::placeholder(peer, local);
        let mut registration = Registration::new(self.clone(), meta.clone());
        registration.insert(&meta, Box::new(NoSession));
        Placeholder {
            _entry: registration,
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
    _entry: Registration,
}

/// A session's membership in a registry, held by the session; leaving is guaranteed by `Drop`.
pub(crate) struct Registration {
    registry: Registry,
    meta: Arc<SessionMeta>,
    inserted: bool,
}

impl Registration {
    pub(crate) fn new(registry: Registry, meta: Arc<SessionMeta>) -> Self {
        Registration {
            registry,
            meta,
            inserted: false,
        }
    }

    fn insert(&mut self, meta: &Arc<SessionMeta>, control: Box<dyn SessionControl>) {
        {
            let mut shard = self.registry.shard(meta.id);
            shard.insert(
                meta.id,
                Entry {
                    meta: meta.clone(),
                    control,
                },
            );
            self.registry.change_count(1);
        }
        self.inserted = true;
        self.registry
            .publish(|| RegistryEvent::Connected(meta.info()));
        if self.registry.inner.shutting_down.load(Ordering::SeqCst) {
            // Joined after the shutdown asked everyone to close: closed like them.
            if let Some(entry) = self.registry.shard(meta.id).get(&meta.id) {
                entry.request_close(DisconnectReason::Shutdown, true);
            }
        }
    }

    /// Called by the session once it runs.
    pub(crate) fn connected<C: SessionCodec, H: SessionHandler<C>>(
        &mut self,
        meta: &Arc<SessionMeta>,
        addr: Addr<Session<C, H>>,
    ) {
        self.insert(meta, Box::new(addr));
    }

    pub(crate) fn count_drop(&self) {
        self.registry.count_drop();
    }

    /// Called by the session when it stops.
    pub(crate) fn finish(mut self, reason: DisconnectReason, info: SessionInfo) {
        self.remove(reason, Some(info));
    }

    fn remove(&mut self, reason: DisconnectReason, info: Option<SessionInfo>) {
        if !std::mem::take(&mut self.inserted) {
            return;
        }
        {
            let mut shard = self.registry.shard(self.meta.id);
            shard.remove(&self.meta.id);
            self.registry.change_count(-1);
        }
        let meta = &self.meta;
        self.registry.publish(|| RegistryEvent::Disconnected {
            info: info.unwrap_or_else(|| meta.info()),
            reason,
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Reached without `finish` only when the session was dropped without stopping (its
        // worker was torn down).
        self.remove(DisconnectReason::Shutdown, None);
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
    type Result = actix::MessageResult<Broadcast>;
    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.broadcast(msg.data, msg.except, msg.policy))
    }
}

/// Kicks one session through a [`Registry`] actor; answers whether it was live.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct Kick {
    /// The session.
    pub id: SessionId,
    /// Flush before closing (true) or abort (false).
    pub graceful: bool,
}

impl Handler<Kick> for Registry {
    type Result = bool;
    fn handle(&mut self, msg: Kick, _: &mut Context<Self>) -> bool {
        self.kick(msg.id, msg.graceful)
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
