//! The [`Listener`] actor: Qt's `QTcpServer`.
//!
//! The accept loop runs on the listener's own arbiter and never waits on a session. Each
//! accepted stream leaves this thread as a std stream and is registered again on the worker
//! that runs its session. Limits are kept by not accepting: at `max_connections`, or with a full
//! pending queue in pull mode, the loop stops polling the socket and the kernel backlog holds
//! new clients; a session ending below the limit wakes it.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    io,
    marker::PhantomData,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{self, Poll},
    time::Duration,
};

use actix::{
    fut::ActorFuture, Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message,
    MessageResult, Recipient,
};
use actix_rt::Arbiter;
use futures::task::AtomicWaker;
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    session::{spawn_on, Parts},
    ConfigError, IntoTarget, ListenError, Registry, Session, SessionCodec, SessionConfig,
    SessionError, SessionHandler, SessionId, ShutdownReport, Target, WorkerPool,
};

/// The default listen backlog. tokio's `TcpListener::bind` uses 128, which overflows under a
/// connect burst.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// The default pending-queue size in pull mode (Qt's `maxPendingConnections` default is 30).
pub const DEFAULT_MAX_PENDING: usize = 30;

/// Descriptors kept free for everything that is not a connection (listener, files, logs).
const RESERVED_DESCRIPTORS: u64 = 64;

/// Binds a std listener with `SO_REUSEADDR` and the given backlog (through socket2, since std
/// and tokio fix the backlog at 128). IPv6 addresses listen on IPv6 only.
///
/// # Errors
///
/// [`ListenError::Bind`] with the address and the operating system's reason.
///
/// # Examples
///
/// ```
/// let listener = switchboard::bind_listener("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
/// assert_ne!(listener.local_addr().unwrap().port(), 0);
/// ```
pub fn bind_listener(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        Ok(socket.into())
    };
    bind().map_err(|source| ListenError::Bind { addr, source })
}

/// Raises this process's soft descriptor limit to its hard limit and returns the new soft
/// limit. Servers call it once at start; each connection costs one descriptor.
///
/// # Errors
///
/// The operating system's error if the limit cannot be read or set.
///
/// # Examples
///
/// ```
/// let limit = switchboard::raise_fd_limit().unwrap();
/// assert!(limit > 0);
/// ```
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // `rlim_t` is `u64` on Linux but not on every platform.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

/// The default connection limit: the soft descriptor limit less a reserve of 64 (so hitting it
/// never starves the process of descriptors), at least 1.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    // `rlim_t` is `u64` on Linux but not on every platform.
    #[allow(clippy::unnecessary_cast)]
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as u64
    } else {
        1024
    };
    usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS).max(1)).unwrap_or(usize::MAX)
}

/// Connection counting for one listener: global and per-peer-IP limits, both changeable while
/// running. The count is released by [`ConnectionPermit`]'s `Drop`, so it cannot leak.
struct Limiter {
    active: AtomicUsize,
    max: AtomicUsize,
    /// 0 means off.
    max_per_ip: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The accept loop, parked at the limit.
    waker: AtomicWaker,
}

impl Limiter {
    fn has_room(&self) -> bool {
        self.active.load(Ordering::Acquire) < self.max.load(Ordering::Acquire)
    }

    /// Counts a new connection from `ip`, or refuses it when that peer is at its limit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionPermit> {
        let max_per_ip = self.max_per_ip.load(Ordering::Acquire);
        let per_ip_counted = max_per_ip > 0;
        if per_ip_counted {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max_per_ip {
                return None;
            }
            *count += 1;
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionPermit {
            limiter: self.clone(),
            ip,
            per_ip_counted,
        })
    }
}

/// One connection's place under its listener's limits; given back when dropped (the session
/// ends, or a pending connection is dropped).
pub struct ConnectionPermit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
    per_ip_counted: bool,
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("ip", &self.ip)
            .finish()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let limiter = &self.limiter;
        if self.per_ip_counted {
            let mut per_ip = limiter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        let before = limiter.active.fetch_sub(1, Ordering::AcqRel);
        if before >= limiter.max.load(Ordering::Acquire) {
            limiter.waker.wake();
        }
    }
}

/// Something the listener tells its owner (Qt's `newConnection` and `acceptError` signals).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum ListenerEvent {
    /// A client was accepted. In push mode its session is already starting; in pull mode it
    /// waits for [`NextPendingConnection`].
    NewConnection {
        /// The session id it has (push) or will have (pull).
        id: SessionId,
        /// The client's address.
        peer: SocketAddr,
    },
    /// Accepting failed (for example, out of descriptors); the listener retries by itself
    /// after `retry_in`.
    AcceptError {
        /// What the operating system said.
        error: Arc<io::Error>,
        /// The back-off before the next attempt.
        retry_in: Duration,
    },
}

/// Counters of a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Connections accepted and admitted.
    pub accepted: u64,
    /// Connections closed at once because their peer IP was at its limit.
    pub rejected_per_ip: u64,
    /// Accept errors that caused a back-off.
    pub accept_errors: u64,
    /// Connections currently counted against the limit.
    pub active: usize,
    /// Connections waiting in the pull-mode queue.
    pub pending: usize,
    /// The connection limit in force (see [`ListenerBuilder::max_connections`]).
    pub max_connections: usize,
    /// The per-peer-IP limit in force, `None` when off (the default; see
    /// [`ListenerBuilder::max_connections_per_ip`]).
    pub max_connections_per_ip: Option<usize>,
    /// Whether accepting is paused ([`PauseAccepting`]).
    pub paused: bool,
}

/// An accepted connection waiting in pull mode, handed over by [`NextPendingConnection`].
/// Start a session over it with [`start`](Self::start); dropping it closes the connection.
pub struct PendingConnection {
    id: SessionId,
    stream: std::net::TcpStream,
    parts: Parts,
    permit: ConnectionPermit,
    shared: Arc<Shared>,
}

impl fmt::Debug for PendingConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingConnection")
            .field("id", &self.id)
            .field("peer", &self.parts.peer_addr)
            .finish()
    }
}

impl PendingConnection {
    /// The id its session will have.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.parts.peer_addr
    }

    /// Starts a session over it on one of the listener's workers, registered with the
    /// listener's registry and counted against its limits.
    ///
    /// # Errors
    ///
    /// None today: the listener validated its session config when it started. The `Result`
    /// keeps room for start-up failures without an API change.
    pub fn start<C, H>(self, codec: C, handler: H) -> Result<Addr<Session<C, H>>, SessionError>
    where
        C: SessionCodec + Send,
        H: SessionHandler<C> + Send,
    {
        let shared = self.shared;
        let (arbiter, load) = shared.pool.pick();
        Ok(spawn_on(
            &arbiter,
            self.stream,
            self.parts,
            shared.session.clone(),
            Some(shared.registry.clone()),
            Some(self.permit),
            load,
            move || (codec, handler),
        ))
    }

    /// Takes the raw stream, leaving the listener's accounting: the connection no longer counts
    /// against its limits.
    pub fn into_std(self) -> std::net::TcpStream {
        self.stream
    }
}

/// What a listener does with an accepted stream.
enum Mode {
    /// Starts a session at once.
    /// Runs on the listener's thread only, so it need not be `Sync`.
    Push(Box<dyn FnMut(std::net::TcpStream, Parts, ConnectionPermit) + Send>),
    /// Queues it for [`NextPendingConnection`] and tells the owner.
    Pull {
        queue: VecDeque<PendingConnection>,
        max_pending: usize,
        owner: Recipient<ListenerEvent>,
    },
}

/// What every session of a listener shares.
struct Shared {
    pool: WorkerPool,
    registry: Registry,
    session: Arc<SessionConfig>,
}

/// A listening TCP server as an actor (Qt's `QTcpServer`): accepts clients and starts a
/// [`Session`] for each on a pool of worker threads (push mode), or queues them for
/// [`NextPendingConnection`] (pull mode).
///
/// Build one with [`Listener::bind`]. It takes [`IsListening`], [`ServerAddress`], [`Close`],
/// [`PauseAccepting`], [`ResumeAccepting`], [`SetMaxConnections`], [`SetMaxConnectionsPerIp`],
/// [`SetMaxPendingConnections`], [`NextPendingConnection`] and [`GetListenerStats`].
pub struct Listener {
    socket: Option<AsyncFd<std::net::TcpListener>>,
    local_addr: SocketAddr,
    mode: Mode,
    limiter: Arc<Limiter>,
    shared: Arc<Shared>,
    events: Option<Recipient<ListenerEvent>>,
    paused: bool,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    next_backoff: Duration,
    backoff_range: (Duration, Duration),
    accepted: u64,
    rejected_per_ip: u64,
    accept_errors: Arc<AtomicU64>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("listening", &self.socket.is_some())
            .field("paused", &self.paused)
            .finish()
    }
}

impl Listener {
    /// Starts building a listener on `addr` (port 0 lets the OS choose; `0.0.0.0` or `[::]`
    /// listens on every address).
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use bytes::Bytes;
    /// use switchboard::{Conn, Listener, SessionHandler};
    /// use switchboard_codec::Raw;
    ///
    /// struct Echo;
    /// impl SessionHandler<Raw> for Echo {
    ///     fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
    ///         let _ = conn.write(data);
    ///     }
    /// }
    ///
    /// let server = Listener::bind("127.0.0.1:0")
    ///     .workers(2)
    ///     .serve(Raw, || Echo)
    ///     .unwrap();
    /// assert_ne!(server.local_addr().port(), 0);
    /// # });
    /// ```
    pub fn bind(addr: impl IntoTarget) -> ListenerBuilder {
        Self::builder(addr.into_target())
    }

    /// Starts building a listener on a socket that is already bound and listening (passed by
    /// systemd's socket activation, or by a previous process during a hand-over). It is made
    /// non-blocking; the backlog it was created with stays.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use bytes::Bytes;
    /// use switchboard::{Conn, Listener, SessionHandler};
    /// use switchboard_codec::Raw;
    ///
    /// struct Quiet;
    /// impl SessionHandler<Raw> for Quiet {
    ///     fn ready_read(&mut self, _: Bytes, _: &mut Conn<'_, Raw, Self>) {}
    /// }
    ///
    /// let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let port = socket.local_addr().unwrap().port();
    /// let server = Listener::from_std(socket).workers(1).serve(Raw, || Quiet).unwrap();
    /// assert_eq!(server.local_addr().port(), port);
    /// # });
    /// ```
    pub fn from_std(listener: std::net::TcpListener) -> ListenerBuilder {
        let addr = listener
            .local_addr()
            .map(Target::Addr)
            .map_err(|e| e.to_string());
        ListenerBuilder {
            adopted: Some(listener),
            ..Self::builder(addr)
        }
    }

    fn builder(addr: Result<Target, String>) -> ListenerBuilder {
        ListenerBuilder {
            adopted: None,
            addr,
            backlog: DEFAULT_BACKLOG,
            max_connections: None,
            max_per_ip: None,
            max_pending: DEFAULT_MAX_PENDING,
            workers: None,
            pool: None,
            registry: None,
            session: SessionConfig::default(),
            events: None,
            backoff: (Duration::from_millis(50), Duration::from_secs(1)),
        }
    }

    fn admit(&mut self, stream: std::net::TcpStream, peer: SocketAddr, ctx: &mut Context<Self>) {
        let Some(permit) = self.limiter.admit(peer.ip()) else {
            self.rejected_per_ip += 1;
            tracing::debug!(%peer, "connection refused: per-IP limit reached");
            return;
        };
        let parts = match Parts::new(Ok(peer), stream.local_addr()) {
            Ok(parts) => parts,
            Err(error) => {
                tracing::debug!(%peer, %error, "accepted socket unusable");
                return;
            }
        };
        self.accepted += 1;
        let id = SessionId::next();
        let parts = Parts {
            id: Some(id),
            ..parts
        };
        match &mut self.mode {
            Mode::Push(spawn) => spawn(stream, parts, permit),
            Mode::Pull { queue, owner, .. } => {
                queue.push_back(PendingConnection {
                    id,
                    stream,
                    parts,
                    permit,
                    shared: self.shared.clone(),
                });
                // At most `max_pending` of these are ever outstanding.
                owner.do_send(ListenerEvent::NewConnection { id, peer });
            }
        }
        if let Some(events) = &self.events {
            if matches!(self.mode, Mode::Push(_))
                && events
                    .try_send(ListenerEvent::NewConnection { id, peer })
                    .is_err()
            {
                tracing::trace!("listener event dropped: owner's mailbox is full");
            }
        }
        let _ = ctx;
    }

    fn accept_error(&mut self, error: io::Error) {
        let retry_in = self.next_backoff;
        self.next_backoff = (retry_in * 2).min(self.backoff_range.1);
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, ?retry_in, "accept failed; backing off");
        self.backoff = Some(Box::pin(tokio::time::sleep(retry_in)));
        let event = ListenerEvent::AcceptError {
            error: Arc::new(error),
            retry_in,
        };
        let owner = match &self.mode {
            Mode::Pull { owner, .. } => Some(owner),
            Mode::Push(_) => self.events.as_ref(),
        };
        if let Some(owner) = owner {
            // Bounded: at most one per back-off period.
            owner.do_send(event);
        }
    }

    fn pending_full(&self) -> bool {
        matches!(&self.mode, Mode::Pull { queue, max_pending, .. } if queue.len() >= *max_pending)
    }

    /// One turn of the accept loop.
    fn poll_accept(&mut self, ctx: &mut Context<Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        const ACCEPTS_PER_TURN: usize = 64;
        let mut accepted = 0;
        loop {
            if self.socket.is_none() {
                return Poll::Ready(());
            }
            if let Some(backoff) = self.backoff.as_mut() {
                if backoff.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.backoff = None;
            }
            // Paused, queue full: the mailbox handler that changes this is followed by a poll.
            if self.paused || self.pending_full() {
                return Poll::Pending;
            }
            if !self.limiter.has_room() {
                self.limiter.waker.register(cx.waker());
                if !self.limiter.has_room() {
                    return Poll::Pending;
                }
            }
            let socket = self.socket.as_ref().expect("checked above");
            let mut ready = match socket.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(error)) => {
                    self.accept_error(error);
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            match ready.try_io(|listener| listener.get_ref().accept()) {
                Err(_would_block) => continue,
                Ok(Ok((stream, peer))) => {
                    self.next_backoff = self.backoff_range.0;
                    self.admit(stream, peer, ctx);
                    accepted += 1;
                    if accepted >= ACCEPTS_PER_TURN {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Ok(Err(error)) if is_transient(&error) => continue,
                Ok(Err(error)) => self.accept_error(error),
            }
        }
    }
}

/// A socket handed over already listening, made non-blocking for the accept loop.
fn adopt(
    listener: std::net::TcpListener,
) -> Result<(std::net::TcpListener, SocketAddr), ListenError> {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let local = listener.local_addr().map_err(|source| ListenError::Bind {
        addr: unknown,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenError::Bind {
            addr: local,
            source,
        })?;
    Ok((listener, local))
}

/// Errors that concern one client only: accept the next one at once (as actix-server's
/// `connection_error` does). Anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || error.raw_os_error() == Some(libc::EPROTO)
}

struct AcceptLoop;

impl ActorFuture<Listener> for AcceptLoop {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        listener: &mut Listener,
        ctx: &mut Context<Listener>,
        cx: &mut task::Context<'_>,
    ) -> Poll<()> {
        listener.poll_accept(ctx, cx)
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(addr = %self.local_addr, "listening");
        ctx.spawn(AcceptLoop);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        tracing::info!(addr = %self.local_addr, "listener closed");
        // The listener's own thread has nothing else to do.
        Arbiter::current().stop();
    }
}

/// Configures and starts a [`Listener`]; made by [`Listener::bind`].
pub struct ListenerBuilder {
    /// Where to listen, or why the address given is not one (reported by `serve`/`pull`).
    addr: Result<Target, String>,
    /// A socket already listening (socket activation, hand-over): used instead of binding.
    adopted: Option<std::net::TcpListener>,
    backlog: u32,
    max_connections: Option<usize>,
    max_per_ip: Option<usize>,
    max_pending: usize,
    workers: Option<usize>,
    pool: Option<WorkerPool>,
    registry: Option<Registry>,
    session: SessionConfig,
    events: Option<Recipient<ListenerEvent>>,
    backoff: (Duration, Duration),
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ListenerBuilder {
    /// Sets the listen backlog (default [`DEFAULT_BACKLOG`], 1024).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Sets the connection limit (default [`default_max_connections`]: the descriptor limit
    /// less 64). At the limit the listener stops accepting and clients wait in the kernel
    /// backlog; it resumes as soon as a connection ends. Change it while running with
    /// [`SetMaxConnections`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Limits connections per peer IP (default off: clients behind NAT or a proxy, and every
    /// loopback load test, share one address). A client over its limit is accepted and closed
    /// at once. This is the defence against one host holding every slot (slowloris).
    pub fn max_connections_per_ip(mut self, max: Option<usize>) -> Self {
        self.max_per_ip = max;
        self
    }

    /// Sets the pull-mode pending-queue size (default [`DEFAULT_MAX_PENDING`], 30). When full,
    /// the listener stops accepting until [`NextPendingConnection`] takes one.
    pub fn max_pending_connections(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Runs sessions on a new pool of `threads` workers (default: one per core).
    pub fn workers(mut self, threads: usize) -> Self {
        self.workers = Some(threads);
        self
    }

    /// Runs sessions on an existing pool, shared with other listeners or connectors.
    pub fn pool(mut self, pool: WorkerPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Registers sessions with `registry` (default: a new registry of its own).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Sets every session's limits and tuning.
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        self.session = config;
        self
    }

    /// Sends [`ListenerEvent`]s (new connections, accept errors) to `owner` in push mode.
    /// New-connection events use `try_send` and are skipped when the owner's mailbox is full.
    pub fn events(mut self, owner: Recipient<ListenerEvent>) -> Self {
        self.events = Some(owner);
        self
    }

    /// Sets the accept back-off after an error such as EMFILE: it starts at `min` and doubles
    /// up to `max` while errors persist (defaults 50 ms and 1 s).
    pub fn accept_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// Push mode: binds and starts accepting; each client gets a session framed by a clone of
    /// `codec` with a handler from `handler`, on a worker thread.
    ///
    /// # Errors
    ///
    /// [`ListenError::Bind`] when the address cannot be bound; [`ListenError::Config`] for
    /// settings that cannot work.
    pub fn serve<C, H, F>(self, codec: C, handler: F) -> Result<ListenerHandle, ListenError>
    where
        C: SessionCodec + Clone + Send,
        H: SessionHandler<C> + Send,
        F: Fn() -> H + Send + 'static,
    {
        self.start(move |shared| {
            Mode::Push(Box::new(move |stream, parts, permit| {
                let (arbiter, load) = shared.pool.pick();
                let codec = codec.clone();
                // Made here, on the listener's thread, and sent along: the factory is called
                // from one thread only, so it need not be `Sync`.
                let handler = handler();
                spawn_on(
                    &arbiter,
                    stream,
                    parts,
                    shared.session.clone(),
                    Some(shared.registry.clone()),
                    Some(permit),
                    load,
                    move || (codec, handler),
                );
            }))
        })
    }

    /// Pull mode (Qt's `nextPendingConnection`): binds and starts accepting into a bounded
    /// queue; `owner` hears [`ListenerEvent::NewConnection`] for each and takes it with
    /// [`NextPendingConnection`].
    ///
    /// # Errors
    ///
    /// As [`serve`](Self::serve).
    ///
    /// # Examples
    ///
    /// The owner needs the listener's handle to take connections, and the listener needs the
    /// owner to announce them: create the owner with [`Actor::create`], which hands out its
    /// address before the actor exists, and bind in between (Qt's `new QTcpServer(this)`).
    ///
    /// ```
    /// use actix::{Actor, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};
    /// use switchboard::{
    ///     Listener, ListenerEvent, ListenerHandle, NextPendingConnection, Notify, NotifyEvent,
    /// };
    /// use switchboard_codec::Raw;
    ///
    /// struct Server {
    ///     listener: Option<ListenerHandle>,
    /// }
    /// impl Actor for Server {
    ///     type Context = Context<Self>;
    /// }
    /// impl Handler<ListenerEvent> for Server {
    ///     type Result = ResponseActFuture<Self, ()>;
    ///     fn handle(&mut self, event: ListenerEvent, ctx: &mut Context<Self>) -> Self::Result {
    ///         let listener = self.listener.as_ref().expect("bound in create").address().clone();
    ///         let me = ctx.address();
    ///         Box::pin(
    ///             async move {
    ///                 if let ListenerEvent::NewConnection { .. } = event {
    ///                     // nextPendingConnection(), then talk to it Qt style.
    ///                     if let Ok(Some(pending)) = listener.send(NextPendingConnection).await {
    ///                         let _ = pending.start(Raw, Notify::new(me.recipient()));
    ///                     }
    ///                 }
    ///             }
    ///             .into_actor(self),
    ///         )
    ///     }
    /// }
    /// impl Handler<NotifyEvent> for Server {
    ///     type Result = ();
    ///     fn handle(&mut self, event: NotifyEvent, _: &mut Context<Self>) {
    ///         if let NotifyEvent::ReadyRead { handle, .. } = event {
    ///             let _ = handle.read_all(); // readAll()
    ///         }
    ///     }
    /// }
    ///
    /// # actix_rt::System::new().block_on(async {
    /// let server = Server::create(|ctx| {
    ///     let listener = Listener::bind("127.0.0.1:0")
    ///         .pull(ctx.address().recipient())
    ///         .expect("binds");
    ///     Server { listener: Some(listener) }
    /// });
    /// # drop(server);
    /// # });
    /// ```
    pub fn pull(self, owner: Recipient<ListenerEvent>) -> Result<ListenerHandle, ListenError> {
        let max_pending = self.max_pending;
        self.start(move |_| Mode::Pull {
            queue: VecDeque::new(),
            max_pending,
            owner,
        })
    }

    fn start(
        self,
        mode: impl FnOnce(Arc<Shared>) -> Mode + Send + 'static,
    ) -> Result<ListenerHandle, ListenError> {
        self.session.validate()?;
        if self.max_pending == 0 {
            return Err(
                ConfigError::invalid("max_pending_connections", "must be at least 1").into(),
            );
        }
        if self.max_per_ip == Some(0) {
            return Err(ConfigError::invalid(
                "max_connections_per_ip",
                "use None to turn it off, not 0",
            )
            .into());
        }
        if self.backoff.0.is_zero() || self.backoff.0 > self.backoff.1 {
            return Err(ConfigError::invalid("accept_backoff", "needs 0 < min <= max").into());
        }
        let pool = match (self.pool, self.workers) {
            (Some(pool), _) => pool,
            (None, Some(threads)) => WorkerPool::new(threads)?,
            (None, None) => WorkerPool::per_core(),
        };
        let registry = self.registry.unwrap_or_default();
        let (std_listener, bind_addr) = match self.adopted {
            Some(adopted) => adopt(adopted)?,
            None => {
                let target = self
                    .addr
                    .map_err(|reason| ListenError::InvalidTarget { reason })?;
                let resolved = target.resolve_blocking().and_then(|addrs| {
                    addrs.into_iter().next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
                    })
                });
                let bind_addr = resolved.map_err(|source| ListenError::Resolve {
                    target: target.to_string(),
                    source,
                })?;
                (bind_listener(bind_addr, self.backlog)?, bind_addr)
            }
        };
        let local_addr = std_listener
            .local_addr()
            .map_err(|source| ListenError::Bind {
                addr: bind_addr,
                source,
            })?;
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            registry: registry.clone(),
            session: Arc::new(self.session),
        });
        let limiter = Arc::new(Limiter {
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(self.max_connections.unwrap_or_else(default_max_connections)),
            max_per_ip: AtomicUsize::new(self.max_per_ip.unwrap_or(0)),
            per_ip: Mutex::new(HashMap::new()),
            waker: AtomicWaker::new(),
        });
        let accept_errors = Arc::new(AtomicU64::new(0));
        let events = self.events;
        let backoff = self.backoff;
        let arbiter = Arbiter::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread_limiter = limiter.clone();
        let thread_errors = accept_errors.clone();
        let addr = Listener::start_in_arbiter(&arbiter.handle(), move |ctx| {
            // SAFETY: the descriptor belongs to `std_listener`, which moves into the `AsyncFd`
            // and so stays open for as long as it is registered.
            let socket =
                unsafe { AsyncFd::register_with_interest(std_listener, Interest::READABLE) };
            let socket = match socket {
                Ok(socket) => Some(socket),
                Err(error) => {
                    let _ = tx.send(Err(error.into()));
                    ctx.stop();
                    None
                }
            };
            if socket.is_some() {
                let _ = tx.send(Ok(()));
            }
            Listener {
                socket,
                local_addr,
                mode: mode(thread_shared.clone()),
                limiter: thread_limiter,
                shared: thread_shared,
                events,
                paused: false,
                backoff: None,
                next_backoff: backoff.0,
                backoff_range: backoff,
                accepted: 0,
                rejected_per_ip: 0,
                accept_errors: thread_errors,
            }
        });
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(ListenError::Bind {
                    addr: bind_addr,
                    source,
                })
            }
            Err(_) => {
                return Err(ListenError::Bind {
                    addr: bind_addr,
                    source: io::Error::other("the listener thread ended during start-up"),
                })
            }
        }
        Ok(ListenerHandle {
            addr,
            local_addr,
            registry,
            pool,
            _marker: PhantomData,
        })
    }
}

/// A running listener: its address, its registry and its workers.
#[derive(Clone)]
pub struct ListenerHandle {
    addr: Addr<Listener>,
    local_addr: SocketAddr,
    registry: Registry,
    pool: WorkerPool,
    _marker: PhantomData<()>,
}

impl fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerHandle")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl ListenerHandle {
    /// The bound address (Qt's `serverAddress` and `serverPort`), with the real port when 0
    /// was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener actor, for its messages.
    pub fn address(&self) -> &Addr<Listener> {
        &self.addr
    }

    /// The registry its sessions join.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The worker pool its sessions run on.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Graceful shutdown: stops accepting (new clients are refused), then drains the registry
    /// within `drain_timeout` and aborts what is left (see [`Registry::shutdown`]).
    pub async fn shutdown(&self, drain_timeout: Duration) -> ShutdownReport {
        let _ = self.addr.send(Close).await;
        self.registry.shutdown(drain_timeout).await
    }
}

/// Whether the listener is still accepting (Qt's `isListening`); false once closed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct IsListening;

impl Handler<IsListening> for Listener {
    type Result = bool;
    fn handle(&mut self, _: IsListening, _: &mut Context<Self>) -> bool {
        self.socket.is_some()
    }
}

/// The bound address (Qt's `serverAddress`/`serverPort`); `None` once closed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<SocketAddr>")]
pub struct ServerAddress;

impl Handler<ServerAddress> for Listener {
    type Result = Option<SocketAddr>;
    fn handle(&mut self, _: ServerAddress, _: &mut Context<Self>) -> Option<SocketAddr> {
        self.socket.as_ref().map(|_| self.local_addr)
    }
}

/// Stops listening (Qt's `close`): the socket closes and new clients are refused; live sessions
/// carry on (use [`ListenerHandle::shutdown`] to drain them too). Pending connections are closed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Close> for Listener {
    type Result = ();
    fn handle(&mut self, _: Close, _: &mut Context<Self>) {
        if self.socket.take().is_some() {
            tracing::info!(addr = %self.local_addr, "stopped listening");
        }
        if let Mode::Pull { queue, .. } = &mut self.mode {
            queue.clear();
        }
        // The actor stays up so that `IsListening` and `ServerAddress` answer `false` and
        // `None` as documented (stopping it here made them fail with a mailbox error). With
        // its socket gone the accept loop ends, so the actor (and its thread) stops once the
        // last `Addr` is dropped.
    }
}

/// Stops accepting while keeping the socket (Qt's `pauseAccepting`); clients wait in the
/// kernel backlog.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PauseAccepting;

impl Handler<PauseAccepting> for Listener {
    type Result = ();
    fn handle(&mut self, _: PauseAccepting, _: &mut Context<Self>) {
        self.paused = true;
    }
}

/// Resumes accepting (Qt's `resumeAccepting`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ResumeAccepting;

impl Handler<ResumeAccepting> for Listener {
    type Result = ();
    fn handle(&mut self, _: ResumeAccepting, _: &mut Context<Self>) {
        self.paused = false;
    }
}

/// Changes the connection limit while running. Lowering it never closes live connections;
/// raising it resumes accepting at once.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SetMaxConnections(pub usize);

impl Handler<SetMaxConnections> for Listener {
    type Result = ();
    fn handle(&mut self, msg: SetMaxConnections, _: &mut Context<Self>) {
        self.limiter.max.store(msg.0, Ordering::Release);
    }
}

/// Changes the per-peer-IP limit while running (`None` turns it off). It counts connections
/// accepted while it is on.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SetMaxConnectionsPerIp(pub Option<usize>);

impl Handler<SetMaxConnectionsPerIp> for Listener {
    type Result = ();
    fn handle(&mut self, msg: SetMaxConnectionsPerIp, _: &mut Context<Self>) {
        self.limiter
            .max_per_ip
            .store(msg.0.unwrap_or(0), Ordering::Release);
    }
}

/// Changes the pull-mode queue size (Qt's `setMaxPendingConnections`); ignored in push mode.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SetMaxPendingConnections(pub usize);

impl Handler<SetMaxPendingConnections> for Listener {
    type Result = ();
    fn handle(&mut self, msg: SetMaxPendingConnections, _: &mut Context<Self>) {
        if let Mode::Pull { max_pending, .. } = &mut self.mode {
            *max_pending = msg.0.max(1);
        }
    }
}

/// Takes the oldest pending connection (Qt's `nextPendingConnection`); `None` when the queue
/// is empty or the listener is in push mode.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<PendingConnection>")]
pub struct NextPendingConnection;

impl Handler<NextPendingConnection> for Listener {
    type Result = MessageResult<NextPendingConnection>;
    fn handle(&mut self, _: NextPendingConnection, _: &mut Context<Self>) -> Self::Result {
        MessageResult(match &mut self.mode {
            Mode::Pull { queue, .. } => queue.pop_front(),
            Mode::Push(_) => None,
        })
    }
}

/// Asks for the listener's [`ListenerStats`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ListenerStats")]
pub struct GetListenerStats;

impl Handler<GetListenerStats> for Listener {
    type Result = MessageResult<GetListenerStats>;
    fn handle(&mut self, _: GetListenerStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ListenerStats {
            accepted: self.accepted,
            rejected_per_ip: self.rejected_per_ip,
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            active: self.limiter.active.load(Ordering::Relaxed),
            pending: match &self.mode {
                Mode::Pull { queue, .. } => queue.len(),
                Mode::Push(_) => 0,
            },
            max_connections: self.limiter.max.load(Ordering::Relaxed),
            max_connections_per_ip: match self.limiter.max_per_ip.load(Ordering::Relaxed) {
                0 => None,
                max => Some(max),
            },
            paused: self.paused,
        })
    }
}
