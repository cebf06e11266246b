//! The [`Listener`] actor: Qt's `QTcpServer`.
//!
//! By default the accept loop runs on the listener's own arbiter and never waits on a session.
//! Each accepted stream leaves this thread as a std stream and is registered again on the
//! worker that runs its session. With [`ListenerBuilder::accept_on_worker`] the loop runs on a
//! worker instead, taking turns with that worker's sessions, and a session that lands there
//! starts without leaving the thread. Limits are kept by not accepting: at `max_connections`,
//! or with a full pending queue in pull mode, the loop stops polling the socket and the kernel
//! backlog holds new clients; a session ending below the limit wakes it.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    io,
    marker::PhantomData,
    net::SocketAddr,
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
    counters::{accept_error_kind, HandshakeCounters},
    limits::{ConnectionPermit, Limiter},
    session::{Handshake, Launch, Parts, ProxyStep},
    target::UnixTarget,
    transport::{peer_credentials, proxy::ProxyProtocol, RawStream},
    Address, Cidr, ConfigError, HandshakeStats, IntoTarget, ListenError, Registry, Session,
    SessionCodec, SessionConfig, SessionError, SessionHandler, SessionId, ShutdownReport,
    SocketBuffers, Target, TlsAcceptor, WorkerPool, ACCEPT_ERROR_KINDS, MAX_PROXY_HEADER,
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
    bind_tcp(addr, backlog, false, SocketBuffers::new())
}

/// Binds and listens; with `reuse_port`, sets `SO_REUSEPORT` first, so that other sockets
/// (of this process or another of the same user) that set it too may bind the same port.
fn bind_tcp(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
    buffers: SocketBuffers,
) -> Result<std::net::TcpListener, ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        // Before `listen`: a connection takes the listener's sizes when its handshake ends.
        buffers.apply(&socket2::SockRef::from(&socket))?;
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        buffers.report(&addr, &socket2::SockRef::from(&socket));
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
        peer: Address,
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
    /// Connections closed at once because their peer IP was at its limit (behind a PROXY
    /// header: the client's IP, once the header was read).
    pub rejected_per_ip: u64,
    /// Accept errors that caused a back-off.
    pub accept_errors: u64,
    /// The same, per kind, in [`ACCEPT_ERROR_KINDS`](crate::ACCEPT_ERROR_KINDS) order.
    pub accept_errors_by_kind: [u64; 3],
    /// Times the accept loop stopped because the connection limit was reached (clients wait
    /// in the kernel's backlog meanwhile; none is refused for it).
    pub limit_waits: u64,
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
    stream: RawStream,
    parts: Parts,
    permit: ConnectionPermit,
    shared: Arc<Shared>,
}

/// An accepted stream taken out of a listener ([`PendingConnection::into_stream`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptedStream {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix socket connection.
    Unix(std::os::unix::net::UnixStream),
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
    pub fn peer_addr(&self) -> &Address {
        &self.parts.peer_addr
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
        let launch = shared.launch(self.parts, Some(self.permit));
        Ok(launch.start_on(&shared.pool, self.stream, move || (codec, handler)))
    }

    /// Takes the raw stream, leaving the listener's accounting: the connection no longer counts
    /// against its limits (and no handshake runs on it).
    pub fn into_stream(self) -> AcceptedStream {
        match self.stream {
            RawStream::Tcp(s) => AcceptedStream::Tcp(s),
            RawStream::NonBlockingTcp(s) => {
                // As `std::net::TcpListener::accept` would have given it. Should this fail,
                // the caller still has the stream, and a non-blocking one is usable too.
                let _ = s.set_nonblocking(false);
                AcceptedStream::Tcp(s)
            }
            RawStream::Unix(s) => AcceptedStream::Unix(s),
            RawStream::NonBlockingUnix(s) => {
                // As `std::os::unix::net::UnixListener::accept` would have given it.
                let _ = s.set_nonblocking(false);
                AcceptedStream::Unix(s)
            }
        }
    }
}

/// What a listener does with an accepted stream.
enum Mode {
    /// Starts a session at once.
    /// Runs on the listener's thread only, so it need not be `Sync`.
    Push(Box<dyn FnMut(RawStream, Parts, ConnectionPermit) + Send>),
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
    /// The worker of `pool` the accept loop runs on; none when it has a thread of its own.
    home: Option<usize>,
    registry: Registry,
    session: Arc<SessionConfig>,
    tls: Option<TlsAcceptor>,
    proxy: Option<Arc<ProxyProtocol>>,
    handshakes: Arc<HandshakeCounters>,
}

impl Shared {
    /// How a session of this listener starts: its handshake, its registry, its limits.
    fn launch(&self, parts: Parts, permit: Option<ConnectionPermit>) -> Launch {
        let mut launch = Launch::new(parts, self.session.clone(), Some(self.registry.clone()));
        launch.permit = permit;
        if let Some(tls) = &self.tls {
            launch.handshake = Handshake::TlsServer(tls.clone());
        }
        if let Some(proxy) = &self.proxy {
            launch.proxy = ProxyStep::Read(proxy.clone());
        }
        if self.tls.is_some() || self.proxy.is_some() {
            launch.handshake_counters = Some(self.handshakes.clone());
        }
        launch
    }
}

/// One socket a listener accepts on.
enum ListenSocket {
    /// `local` is the socket's own address when it is bound to one IP: every accepted
    /// connection's local end is then known without a `getsockname` per connection.
    Tcp(AsyncFd<std::net::TcpListener>, Option<Arc<Address>>),
    /// With the file to remove when the listener stops (none for abstract names), and the
    /// socket's own address, the local end of every connection it accepts.
    Unix(
        AsyncFd<std::os::unix::net::UnixListener>,
        Option<SocketFile>,
        Arc<Address>,
    ),
}

/// The file a Unix listening socket is bound to, as it was when bound or adopted: removed when
/// the listener stops, but only while the path still names that same file (a server that
/// replaced it keeps its own), and never after a hand-over (see [`Release`]).
#[derive(Debug)]
struct SocketFile {
    path: std::path::PathBuf,
    /// Device and inode of the socket file.
    id: (u64, u64),
}

impl SocketFile {
    /// The socket file at `path`, if one is there.
    fn at(path: &std::path::Path) -> Option<SocketFile> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::symlink_metadata(path).ok()?;
        meta.file_type().is_socket().then(|| SocketFile {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        })
    }

    fn remove(&self) {
        if SocketFile::at(&self.path).is_some_and(|now| now.id == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ListenSocket {
    /// The next connection, with both its addresses (read once, here).
    fn poll_accept(&self, cx: &mut task::Context<'_>) -> Poll<io::Result<(RawStream, Parts)>> {
        loop {
            let result = match self {
                ListenSocket::Tcp(socket, local) => {
                    let mut ready = std::task::ready!(socket.poll_read_ready(cx))?;
                    ready.try_io(|l| {
                        // Non-blocking from the start: the worker registers it as it is.
                        let (socket, peer) = socket2::SockRef::from(l.get_ref())
                            .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
                        let stream = std::net::TcpStream::from(socket);
                        let peer = match peer.as_socket() {
                            Some(peer) => peer,
                            None => stream.peer_addr()?,
                        };
                        let local = match local {
                            Some(local) => local.clone(),
                            None => Arc::new(stream.local_addr()?.into()),
                        };
                        let parts = Parts::new(peer.into(), local);
                        Ok((RawStream::NonBlockingTcp(stream), parts))
                    })
                }
                ListenSocket::Unix(socket, _, local) => {
                    let mut ready = std::task::ready!(socket.poll_read_ready(cx))?;
                    ready.try_io(|l| {
                        // As for TCP: non-blocking from the start, the peer's address from
                        // `accept4` itself and the local one the listener's, so a connection
                        // costs no `ioctl`, `getpeername` or `getsockname`.
                        let (socket, peer) = socket2::SockRef::from(l.get_ref())
                            .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
                        let stream = std::os::unix::net::UnixStream::from(
                            std::os::fd::OwnedFd::from(socket),
                        );
                        let peer = Address::from_unix_sockaddr(&peer, peer_credentials(&stream));
                        let parts = Parts::new(peer, local.clone());
                        Ok((RawStream::NonBlockingUnix(stream), parts))
                    })
                }
            };
            match result {
                Ok(accepted) => return Poll::Ready(accepted),
                Err(_would_block) => continue,
            }
        }
    }

    fn address(&self) -> io::Result<Address> {
        match self {
            ListenSocket::Tcp(s, _) => Ok(Address::Ip(s.get_ref().local_addr()?)),
            ListenSocket::Unix(_, _, local) => Ok((**local).clone()),
        }
    }
}

impl ListenSocket {
    /// A second descriptor for the same socket, for another process.
    fn share(&self) -> io::Result<StdListener> {
        Ok(match self {
            ListenSocket::Tcp(s, _) => StdListener::Tcp(s.get_ref().try_clone()?),
            ListenSocket::Unix(s, _, _) => StdListener::Unix(s.get_ref().try_clone()?),
        })
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if let ListenSocket::Unix(_, Some(file), _) = self {
            // Ours (we bound or adopted it): a clean stop leaves no file behind.
            file.remove();
        }
    }
}

/// A listening socket as the standard library holds it: what [`Listener::adopt`] takes and
/// [`ShareSockets`] gives, TCP or Unix.
///
/// # Examples
///
/// ```
/// use switchboard::StdListener;
///
/// let socket: StdListener = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into();
/// assert!(socket.address().unwrap().to_string().starts_with("127.0.0.1:"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StdListener {
    /// A TCP listening socket.
    Tcp(std::net::TcpListener),
    /// A Unix stream listening socket.
    Unix(std::os::unix::net::UnixListener),
}

impl From<std::net::TcpListener> for StdListener {
    fn from(listener: std::net::TcpListener) -> Self {
        StdListener::Tcp(listener)
    }
}

impl From<std::os::unix::net::UnixListener> for StdListener {
    fn from(listener: std::os::unix::net::UnixListener) -> Self {
        StdListener::Unix(listener)
    }
}

impl std::os::fd::AsFd for StdListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            StdListener::Tcp(l) => l.as_fd(),
            StdListener::Unix(l) => l.as_fd(),
        }
    }
}

impl StdListener {
    /// The address it is bound to.
    ///
    /// # Errors
    ///
    /// The operating system's, when the socket's address cannot be read.
    pub fn address(&self) -> io::Result<Address> {
        Ok(match self {
            StdListener::Tcp(l) => Address::Ip(l.local_addr()?),
            StdListener::Unix(l) => Address::from_unix(&l.local_addr()?, None),
        })
    }

    /// Takes a descriptor received from elsewhere (another process, a service manager): it
    /// must be a listening stream socket, TCP (IPv4 or IPv6) or Unix.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when it is another kind of descriptor or socket, or is not listening;
    /// the operating system's error when the socket cannot be inspected.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// use switchboard::StdListener;
    ///
    /// let fd = OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    /// assert!(matches!(StdListener::from_fd(fd).unwrap(), StdListener::Tcp(_)));
    /// let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    /// assert!(StdListener::from_fd(file).is_err());
    /// ```
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<StdListener> {
        use socket2::{Domain, Socket, Type};
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        // A descriptor that is not a socket fails the first getsockopt with ENOTSOCK.
        let socket = Socket::from(fd);
        let kind = socket.r#type().map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTSOCK) => invalid("not a socket"),
            _ => e,
        })?;
        if kind != Type::STREAM {
            return Err(invalid("not a stream socket"));
        }
        if !socket.is_listener()? {
            return Err(invalid("a socket that is not listening"));
        }
        match socket.domain()? {
            Domain::IPV4 | Domain::IPV6 => Ok(StdListener::Tcp(socket.into())),
            Domain::UNIX => Ok(StdListener::Unix(socket.into())),
            _ => Err(invalid(
                "a socket of an address family other than IP or Unix",
            )),
        }
    }
}

/// A listening TCP server as an actor (Qt's `QTcpServer`): accepts clients and starts a
/// [`Session`] for each on a pool of worker threads (push mode), or queues them for
/// [`NextPendingConnection`] (pull mode).
///
/// Build one with [`Listener::bind`]. It takes [`IsListening`], [`ServerAddress`], [`Close`],
/// [`PauseAccepting`], [`ResumeAccepting`], [`SetMaxConnections`], [`SetMaxConnectionsPerIp`],
/// [`SetMaxPendingConnections`], [`NextPendingConnection`] and [`GetListenerStats`].
pub struct Listener {
    /// Every socket it accepts on; empty once closed.
    sockets: Vec<ListenSocket>,
    /// Which socket the next accept turn starts with, so none starves the others.
    next_socket: usize,
    /// The first IP socket's address (Qt's `serverAddress`).
    local_addr: Option<SocketAddr>,
    addresses: Vec<Address>,
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
    accept_errors: [u64; ACCEPT_ERROR_KINDS.len()],
    limit_waits: u64,
    /// The last turn stopped at the connection limit (a wait is counted once, not per poll).
    at_limit: bool,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("listening", &!self.sockets.is_empty())
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
        Self::adopt([StdListener::Tcp(listener)])
    }

    /// Starts building a listener on sockets that are already bound and listening, TCP or
    /// Unix, in that order (passed by systemd's socket activation, or received from a previous
    /// process during a hand-over, see [`handover`](crate::handover)). Each is made
    /// non-blocking and keeps the backlog it was created with; a Unix socket's file is removed
    /// when this listener stops, as if it had bound it. [`also_bind`](ListenerBuilder::also_bind)
    /// adds more addresses.
    ///
    /// # Errors
    ///
    /// `serve` and `pull` fail with [`ListenError::Adopt`] for a socket that cannot be used,
    /// and with [`ListenError::InvalidTarget`] when `sockets` is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use bytes::Bytes;
    /// use switchboard::{Conn, Listener, SessionHandler, StdListener};
    /// use switchboard_codec::Raw;
    ///
    /// struct Quiet;
    /// impl SessionHandler<Raw> for Quiet {
    ///     fn ready_read(&mut self, _: Bytes, _: &mut Conn<'_, Raw, Self>) {}
    /// }
    ///
    /// let dir = std::env::temp_dir().join(format!("sb-adopt-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let unix = std::os::unix::net::UnixListener::bind(dir.join("s.sock")).unwrap();
    /// let sockets = [StdListener::from(tcp), StdListener::from(unix)];
    /// let server = Listener::adopt(sockets).workers(1).serve(Raw, || Quiet).unwrap();
    /// assert_eq!(server.addresses().len(), 2);
    /// # server.shutdown(std::time::Duration::from_secs(1)).await;
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    pub fn adopt(sockets: impl IntoIterator<Item = StdListener>) -> ListenerBuilder {
        ListenerBuilder {
            adopted: sockets.into_iter().collect(),
            ..Self::builder(Err("no socket was given to adopt".into()))
        }
    }

    fn builder(addr: Result<Target, String>) -> ListenerBuilder {
        ListenerBuilder {
            adopted: Vec::new(),
            addr,
            backlog: DEFAULT_BACKLOG,
            max_connections: None,
            max_per_ip: None,
            max_pending: DEFAULT_MAX_PENDING,
            workers: None,
            spin: None,
            pool: None,
            accept_on_worker: false,
            registry: None,
            session: SessionConfig::default(),
            events: None,
            backoff: (Duration::from_millis(50), Duration::from_secs(1)),
            more: Vec::new(),
            tls: None,
            unix_mode: 0o600,
            proxy: None,
            reuse_port: None,
            socket_buffers: SocketBuffers::new(),
        }
    }

    fn admit(&mut self, stream: RawStream, parts: Parts, ctx: &mut Context<Self>) {
        let peer = parts.peer_addr.clone();
        // Behind a proxy the peer is the proxy: the per-IP limit waits for the header to name
        // the client, on the worker.
        let per_ip = match self.shared.proxy {
            Some(_) => None,
            None => peer.ip(),
        };
        let Some(permit) = self.limiter.admit(per_ip) else {
            self.rejected_per_ip += 1;
            tracing::debug!(%peer, "connection refused: per-IP limit reached");
            return;
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
                owner.do_send(ListenerEvent::NewConnection {
                    id,
                    peer: peer.clone(),
                });
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
        self.accept_errors[accept_error_kind(&error)] += 1;
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
            if self.sockets.is_empty() {
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
                    if !self.at_limit {
                        self.at_limit = true;
                        self.limit_waits += 1;
                    }
                    return Poll::Pending;
                }
            }
            self.at_limit = false;
            // Every socket in turn, starting after the one served last; each registers for a
            // wake-up when it has nothing.
            let count = self.sockets.len();
            let mut polled = None;
            for offset in 0..count {
                let index = (self.next_socket + offset) % count;
                if let Poll::Ready(result) = self.sockets[index].poll_accept(cx) {
                    self.next_socket = index + 1;
                    polled = Some(result);
                    break;
                }
            }
            match polled {
                None => return Poll::Pending,
                Some(Ok((stream, parts))) => {
                    self.next_backoff = self.backoff_range.0;
                    self.admit(stream, parts, ctx);
                    accepted += 1;
                    if accepted >= ACCEPTS_PER_TURN {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Some(Err(error)) if is_transient(&error) => continue,
                Some(Err(error)) => self.accept_error(error),
            }
        }
    }
}

/// A socket handed over already listening (socket activation, a hand-over), made
/// non-blocking for the accept loop: the one way both come in.
fn adopt(socket: StdListener, buffers: SocketBuffers) -> Result<Bound, ListenError> {
    use std::os::fd::{AsFd, AsRawFd};
    let name = match socket.address() {
        Ok(address) => address.to_string(),
        Err(_) => format!("fd {}", socket.as_fd().as_raw_fd()),
    };
    let error = |source: io::Error| ListenError::Adopt {
        socket: name.clone(),
        source,
    };
    match socket {
        StdListener::Tcp(listener) => {
            listener.set_nonblocking(true).map_err(error)?;
            buffers
                .apply(&socket2::SockRef::from(&listener))
                .map_err(error)?;
            if let Ok(addr) = listener.local_addr() {
                buffers.report(&addr, &socket2::SockRef::from(&listener));
            }
            Ok(Bound::Tcp(listener))
        }
        StdListener::Unix(listener) => {
            listener.set_nonblocking(true).map_err(error)?;
            let file = listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().and_then(SocketFile::at));
            Ok(Bound::Unix(listener, file))
        }
    }
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
        for addr in &self.addresses {
            tracing::info!(%addr, "listening");
        }
        ctx.spawn(AcceptLoop);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        tracing::info!(addresses = self.addresses.len(), "listener closed");
        if self.shared.home.is_none() {
            // The listener's own thread has nothing else to do.
            Arbiter::current().stop();
        }
    }
}

/// Configures and starts a [`Listener`]; made by [`Listener::bind`].
pub struct ListenerBuilder {
    /// Where to listen, or why the address given is not one (reported by `serve`/`pull`).
    addr: Result<Target, String>,
    /// Sockets already listening (socket activation, hand-over): used instead of binding.
    adopted: Vec<StdListener>,
    backlog: u32,
    max_connections: Option<usize>,
    max_per_ip: Option<usize>,
    max_pending: usize,
    workers: Option<usize>,
    /// Latency mode for the pool the listener creates (see [`WorkerPoolBuilder::spin`](crate::WorkerPoolBuilder::spin)).
    spin: Option<Duration>,
    pool: Option<WorkerPool>,
    accept_on_worker: bool,
    registry: Option<Registry>,
    session: SessionConfig,
    events: Option<Recipient<ListenerEvent>>,
    backoff: (Duration, Duration),
    /// More addresses to listen on, sharing this listener's limits, registry and workers.
    more: Vec<Result<Target, String>>,
    tls: Option<TlsAcceptor>,
    unix_mode: u32,
    proxy: Option<Vec<Cidr>>,
    /// Sockets per TCP address with `SO_REUSEPORT`; `None`: one, without the option.
    reuse_port: Option<usize>,
    socket_buffers: SocketBuffers,
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ListenerBuilder {
    /// Listens on `addr` too: an IP address, or a Unix socket (`"unix:/path"`,
    /// `"unix:@abstract"`, a [`Path`](std::path::Path)). Every address shares the listener's
    /// connection limit, registry and worker pool.
    pub fn also_bind(mut self, addr: impl IntoTarget) -> Self {
        self.more.push(addr.into_target());
        self
    }

    /// Binds `sockets` sockets on each TCP address, all with `SO_REUSEPORT`: port 0 is resolved
    /// by the first and the others bind the port it got. The kernel spreads new connections
    /// over the sockets (by a hash of the connection's addresses), and this listener accepts on
    /// all of them under its one connection limit, registry and worker pool.
    ///
    /// It also lets other processes of the same user that set `SO_REUSEPORT` bind the same
    /// port and take their share of new connections (several servers on one port; an old and a
    /// new server during a restart). Without it, a second bind of the port fails with
    /// `AddrInUse`. Unix-socket addresses are bound once either way. `sockets` of 0 is refused
    /// when the listener starts ([`ConfigError`]).
    ///
    /// # Examples
    ///
    /// ```
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
    /// # actix_rt::System::new().block_on(async {
    /// let server = Listener::bind("127.0.0.1:0")
    ///     .reuse_port(4)
    ///     .serve(Raw, || Echo)
    ///     .unwrap();
    /// // Four sockets, one port.
    /// assert_eq!(server.addresses().len(), 4);
    /// assert!(server.addresses().iter().all(|a| a == &server.addresses()[0]));
    /// # });
    /// ```
    pub fn reuse_port(mut self, sockets: usize) -> Self {
        self.reuse_port = Some(sockets);
        self
    }

    /// Speaks TLS on every connection (Qt's `QSslServer`): the handshake runs on the session's
    /// worker under the handshake timeout
    /// ([`SessionConfig::with_handshake_timeout`](crate::SessionConfig::with_handshake_timeout)),
    /// never in the accept loop.
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Expects a PROXY protocol header (v1 or v2, HAProxy's) first on every connection, and
    /// accepts it only from peers in `allowlist` (Unix-socket peers are allowed: the socket
    /// file's mode decides who connects). The header is read on the session's worker, before
    /// TLS, under the handshake timeout; the session's peer and local addresses
    /// ([`SessionInfo`](crate::SessionInfo), the registry, logs) and the per-IP limit are then
    /// the client's from the header (a LOCAL or UNKNOWN header keeps the socket's). Bytes that
    /// follow the header in the same segment are kept for TLS or the codec.
    ///
    /// A connection whose header is missing, malformed, longer than [`MAX_PROXY_HEADER`], cut
    /// off, or sent by a peer not on the list ends with
    /// [`DisconnectReason::Proxy`](crate::DisconnectReason::Proxy); one that sends nothing, with
    /// [`DisconnectReason::HandshakeTimeout`](crate::DisconnectReason::HandshakeTimeout).
    /// [`ListenerEvent::NewConnection`] and [`PendingConnection::peer_addr`] come before the
    /// header and name the proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use bytes::Bytes;
    /// use switchboard::{Cidr, Conn, Listener, SessionHandler};
    /// use switchboard_codec::Raw;
    ///
    /// struct Echo;
    /// impl SessionHandler<Raw> for Echo {
    ///     fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
    ///         let _ = conn.write(data);
    ///     }
    /// }
    ///
    /// let proxies: Vec<Cidr> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
    /// let server = Listener::bind("127.0.0.1:0")
    ///     .proxy_protocol(proxies)
    ///     .workers(1)
    ///     .serve(Raw, || Echo)
    ///     .unwrap();
    /// # drop(server);
    /// # });
    /// ```
    pub fn proxy_protocol(mut self, allowlist: impl IntoIterator<Item = Cidr>) -> Self {
        self.proxy = Some(allowlist.into_iter().collect());
        self
    }

    /// Fixes the kernel's receive and send buffers of every TCP connection this listener
    /// accepts (default: the system's, tuned by the kernel). They are set on each listening
    /// socket before it listens, and every accepted socket inherits them; see
    /// [`SocketBuffers`] for what fixing them does. An adopted socket (socket activation, a
    /// hand-over) is already listening: connections already queued on it keep the sizes they
    /// had, the setting reaches every process that holds the socket, and it stays after this
    /// listener is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use switchboard::{Conn, Listener, SessionHandler, SocketBuffers};
    /// use switchboard_codec::Raw;
    ///
    /// struct Echo;
    /// impl SessionHandler<Raw> for Echo {
    ///     fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
    ///         let _ = conn.write(data);
    ///     }
    /// }
    ///
    /// # actix_rt::System::new().block_on(async {
    /// // Bulk clients that read slowly hold at most ~256 KiB each in the server's kernel.
    /// let server = Listener::bind("127.0.0.1:0")
    ///     .socket_buffers(SocketBuffers::new().receive(64 * 1024).send(64 * 1024))
    ///     .serve(Raw, || Echo)
    ///     .unwrap();
    /// assert_ne!(server.local_addr().port(), 0);
    ///
    /// // A size of 0 is refused by name.
    /// let refused = Listener::bind("127.0.0.1:0")
    ///     .socket_buffers(SocketBuffers::new().receive(0))
    ///     .serve(Raw, || Echo)
    ///     .unwrap_err();
    /// assert!(refused.to_string().contains("socket_buffers"), "{refused}");
    /// # });
    /// ```
    pub fn socket_buffers(mut self, buffers: SocketBuffers) -> Self {
        self.socket_buffers = buffers;
        self
    }

    /// Sets the file mode of Unix socket paths (default `0o600`: only the owner connects).
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.unix_mode = mode;
        self
    }

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

    /// Turns on latency mode for the workers the listener starts: a worker that just moved
    /// bytes polls its sockets without blocking for up to `window` before it parks (default
    /// off; zero is off; at most 100 ms). It saves the wake-up of a sleeping thread on each
    /// request that arrives within the window, at the cost of a full core per busy worker while
    /// traffic lasts; idle workers still use no CPU. See [`WorkerPoolBuilder::spin`](crate::WorkerPoolBuilder::spin). With
    /// [`pool`](Self::pool), set it on that pool instead (both at once is a [`ConfigError`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use switchboard::{Conn, Listener, SessionHandler};
    /// # use switchboard_codec::Raw;
    /// # struct Quiet;
    /// # impl SessionHandler<Raw> for Quiet {
    /// #     fn ready_read(&mut self, _: bytes::Bytes, _: &mut Conn<'_, Raw, Self>) {}
    /// # }
    /// # actix_rt::System::new().block_on(async {
    /// use std::time::Duration;
    ///
    /// let server = Listener::bind("127.0.0.1:0")
    ///     .workers(1)
    ///     .worker_spin(Duration::from_micros(200))
    ///     .serve(Raw, || Quiet)
    ///     .unwrap();
    /// assert_eq!(server.pool().spin(), Some(Duration::from_micros(200)));
    /// # });
    /// ```
    pub fn worker_spin(mut self, window: Duration) -> Self {
        self.spin = Some(window);
        self
    }

    /// Runs the accept loop on one of the pool's workers instead of a thread of its own
    /// (default: its own thread).
    ///
    /// A session that starts on that worker (the least loaded one, or one tied with it) then
    /// starts as a task of the accepting thread: no hand-off to another thread and one thread
    /// woken per connection instead of two. Connection-heavy loads gain: connect, echo and
    /// close ran at 1.15× the rate for 0.78× the server CPU per connection (BENCHMARKS.md,
    /// "Accept path, allocator and bulk fairness"). The cost: the accept loop now takes turns
    /// with that worker's sessions, and the handler factory runs there too, so a handler or
    /// factory that keeps that thread busy delays accepting for the whole listener, where the
    /// listener's own thread would have carried on. Listeners on one pool take its workers in
    /// turn, never the worker that starts them (starting waits for the accepting thread to
    /// register the sockets); started from a pool's only worker, the listener takes a thread
    /// of its own.
    ///
    /// # Examples
    ///
    /// ```
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
    /// # actix_rt::System::new().block_on(async {
    /// let server = Listener::bind("127.0.0.1:0")
    ///     .workers(2)
    ///     .accept_on_worker(true)
    ///     .serve(Raw, || Echo)
    ///     .unwrap();
    /// assert_eq!(server.pool().len(), 2);
    /// # });
    /// ```
    pub fn accept_on_worker(mut self, on_worker: bool) -> Self {
        self.accept_on_worker = on_worker;
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
                let codec = codec.clone();
                // Made here, on the listener's thread, and sent along: the factory is called
                // from one thread only, so it need not be `Sync`.
                let handler = handler();
                shared.launch(parts, Some(permit)).spawn_on(
                    &shared.pool,
                    shared.home,
                    stream,
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
        if matches!(&self.proxy, Some(list) if list.is_empty()) {
            return Err(ConfigError::invalid(
                "proxy_protocol",
                "the allowlist is empty, so no proxy could connect",
            )
            .into());
        }
        self.socket_buffers.validate("socket_buffers")?;
        if self.reuse_port == Some(0) {
            return Err(ConfigError::invalid("reuse_port", "needs at least one socket").into());
        }
        if self.backoff.0.is_zero() || self.backoff.0 > self.backoff.1 {
            return Err(ConfigError::invalid("accept_backoff", "needs 0 < min <= max").into());
        }
        let pool = match (self.pool, self.spin) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "worker_spin",
                    "the listener runs on a pool it was given: set spin on that pool",
                )
                .into())
            }
            (Some(pool), None) => pool,
            (None, spin) => {
                let mut builder = WorkerPool::builder();
                if let Some(threads) = self.workers {
                    builder = builder.threads(threads);
                }
                if let Some(window) = spin {
                    // Checked here to name this builder's option in the error.
                    crate::spin::check_window(window, "worker_spin")?;
                    builder = builder.spin(window);
                }
                builder.build()?
            }
        };
        let registry = self.registry.unwrap_or_default();
        let bind_options = BindOptions {
            backlog: self.backlog,
            unix_mode: self.unix_mode,
            reuse_port: self.reuse_port,
            socket_buffers: self.socket_buffers,
        };
        let mut bound = Vec::new();
        if !self.adopted.is_empty() {
            // Sockets bound by someone else (systemd, a parent, a previous process) come first.
            for socket in self.adopted {
                bound.push(adopt(socket, self.socket_buffers)?);
            }
        } else {
            let target = self
                .addr
                .map_err(|reason| ListenError::InvalidTarget { reason })?;
            bind_target(&target, &bind_options, &mut bound)?;
        }
        for target in self.more {
            let target = target.map_err(|reason| ListenError::InvalidTarget { reason })?;
            bind_target(&target, &bind_options, &mut bound)?;
        }
        let local_addr = bound.iter().find_map(|b| match b {
            Bound::Tcp(l) => l.local_addr().ok(),
            Bound::Unix(..) => None,
        });
        // Its own thread by default; with `accept_on_worker`, a worker of the pool, where a
        // session that starts on that worker needs no hand-off (never the calling worker: the
        // start below waits for the accepting thread).
        let on_worker = self.accept_on_worker.then(|| pool.next_home()).flatten();
        if self.accept_on_worker && on_worker.is_none() {
            tracing::debug!("started on the pool's only worker: accepting on a thread of its own");
        }
        let (home, arbiter) = match on_worker {
            Some((home, arbiter)) => (Some(home), arbiter),
            // The thread runs until the listener stops it (`stopped`).
            None => (None, Arbiter::new().handle()),
        };
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            home,
            registry: registry.clone(),
            session: Arc::new(self.session),
            tls: self.tls,
            proxy: self.proxy.map(|allowlist| {
                Arc::new(ProxyProtocol {
                    allowlist,
                    limit: MAX_PROXY_HEADER,
                })
            }),
            handshakes: Arc::default(),
        });
        let limiter = Arc::new(Limiter {
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(self.max_connections.unwrap_or_else(default_max_connections)),
            max_per_ip: AtomicUsize::new(self.max_per_ip.unwrap_or(0)),
            per_ip: Mutex::new(HashMap::new()),
            waker: AtomicWaker::new(),
            rejected_per_ip_late: AtomicU64::new(0),
            idle: tokio::sync::Notify::new(),
        });
        let events = self.events;
        let backoff = self.backoff;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread_limiter = limiter.clone();
        let addr = Listener::start_in_arbiter(&arbiter, move |ctx| {
            let mut sockets = Vec::with_capacity(bound.len());
            for socket in bound {
                match socket.register() {
                    Ok(socket) => sockets.push(socket),
                    Err(error) => {
                        let _ = tx.send(Err(error));
                        ctx.stop();
                        sockets.clear();
                        break;
                    }
                }
            }
            let addresses: Vec<Address> = sockets.iter().filter_map(|s| s.address().ok()).collect();
            if !sockets.is_empty() {
                let _ = tx.send(Ok(addresses.clone()));
            }
            Listener {
                sockets,
                next_socket: 0,
                local_addr,
                addresses,
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
                accept_errors: [0; ACCEPT_ERROR_KINDS.len()],
                limit_waits: 0,
                at_limit: false,
            }
        });
        let addresses = match rx.recv() {
            Ok(Ok(addresses)) => addresses,
            Ok(Err(source)) => return Err(ListenError::Register { source }),
            Err(_) => {
                return Err(ListenError::Register {
                    source: io::Error::other("the listener thread ended during start-up"),
                })
            }
        };
        Ok(ListenerHandle {
            addr,
            limiter,
            local_addr,
            addresses,
            registry,
            pool,
            handshakes: shared.handshakes.clone(),
            _marker: PhantomData,
        })
    }
}

/// A socket bound on the caller's thread, registered on the listener's.
enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, Option<SocketFile>),
}

impl Bound {
    fn register(self) -> io::Result<ListenSocket> {
        // SAFETY (both arms): the descriptor belongs to the listener, which moves into the
        // `AsyncFd` and so stays open for as long as it is registered.
        Ok(match self {
            Bound::Tcp(listener) => {
                let bound = listener.local_addr()?;
                let specific = (!bound.ip().is_unspecified()).then(|| Arc::new(Address::Ip(bound)));
                let socket =
                    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE)? };
                ListenSocket::Tcp(socket, specific)
            }
            Bound::Unix(listener, path) => {
                listener.set_nonblocking(true)?;
                let local = Arc::new(Address::from_unix(&listener.local_addr()?, None));
                let socket =
                    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE)? };
                ListenSocket::Unix(socket, path, local)
            }
        })
    }
}

/// How a listener binds each of its addresses.
struct BindOptions {
    backlog: u32,
    unix_mode: u32,
    reuse_port: Option<usize>,
    socket_buffers: SocketBuffers,
}

/// Binds `target` (several sockets for a TCP address with `SO_REUSEPORT`) into `bound`.
fn bind_target(
    target: &Target,
    options: &BindOptions,
    bound: &mut Vec<Bound>,
) -> Result<(), ListenError> {
    match target {
        Target::Unix(unix) => bound.push(bind_unix(unix, options.unix_mode)?),
        _ => {
            let addr = target
                .resolve_blocking()
                .and_then(|addrs| {
                    addrs.into_iter().next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
                    })
                })
                .map_err(|source| ListenError::Resolve {
                    target: target.to_string(),
                    source,
                })?;
            let Some(sockets) = options.reuse_port else {
                let listener = bind_tcp(addr, options.backlog, false, options.socket_buffers)?;
                bound.push(Bound::Tcp(listener));
                return Ok(());
            };
            let first = bind_tcp(addr, options.backlog, true, options.socket_buffers)?;
            // Port 0 is chosen once; the other sockets join the port the first one got.
            let resolved = first
                .local_addr()
                .map_err(|source| ListenError::Bind { addr, source })?;
            bound.push(Bound::Tcp(first));
            for _ in 1..sockets {
                bound.push(Bound::Tcp(bind_tcp(
                    resolved,
                    options.backlog,
                    true,
                    options.socket_buffers,
                )?));
            }
        }
    }
    Ok(())
}

/// Binds a Unix socket. A file already at the path is probed: a socket nothing answers on
/// (left by a crashed server) is removed and replaced; a live one is never taken over
/// (`AddrInUse`); anything else is reported and kept.
fn bind_unix(unix: &UnixTarget, mode: u32) -> Result<Bound, ListenError> {
    let error = |source: io::Error| ListenError::BindUnix {
        target: unix.to_string(),
        source,
    };
    let path = match unix {
        UnixTarget::Abstract(_) => return unix.bind().map(|l| Bound::Unix(l, None)).map_err(error),
        UnixTarget::Path(path) => path,
    };
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(error(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way (kept)",
            )));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(error(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is listening there",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing a stale socket file");
                std::fs::remove_file(path).map_err(error)?;
            }
            Err(e) => return Err(error(e)),
        }
    }
    let listener = unix.bind().map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(error)?;
    Ok(Bound::Unix(listener, SocketFile::at(path)))
}

/// A running listener: its address, its registry and its workers.
#[derive(Clone)]
pub struct ListenerHandle {
    addr: Addr<Listener>,
    /// Its connection count, which [`retire`](Self::retire) waits on.
    limiter: Arc<Limiter>,
    local_addr: Option<SocketAddr>,
    addresses: Vec<Address>,
    registry: Registry,
    pool: WorkerPool,
    handshakes: Arc<HandshakeCounters>,
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
    /// The first bound IP address (Qt's `serverAddress` and `serverPort`), with the real port
    /// when 0 was asked for.
    ///
    /// # Panics
    ///
    /// For a listener on Unix sockets only; [`addresses`](Self::addresses) covers every kind.
    pub fn local_addr(&self) -> SocketAddr {
        match self.local_addr {
            Some(addr) => addr,
            None => panic!("this listener has no IP socket; use `addresses()`"),
        }
    }

    /// The handshakes (PROXY header, TLS) its sessions have run: outcomes, durations, waits at
    /// the per-worker cap. Read from shared counters, without asking the listener's thread.
    pub fn handshake_stats(&self) -> HandshakeStats {
        self.handshakes.snapshot()
    }

    /// Every address it listens on, joined by commas (`127.0.0.1:7878,unix:/run/sb.sock`): a
    /// label for logs and metrics.
    pub fn label(&self) -> String {
        self.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every address it listens on, in the order they were given.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
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

    /// Shutdown after a hand-over: stops accepting at once and closes this listener's
    /// descriptors with [`Release`] (the sockets stay open in the process that took them,
    /// and a Unix socket's file stays where it is), then lets the sessions end on their own
    /// for up to `linger` (a client that already connected finishes its exchange instead of
    /// being cut off mid-way), then shuts the rest down as [`shutdown`](Self::shutdown) does
    /// within `drain_timeout`. The report counts every session that ended from the start,
    /// lingering included.
    ///
    /// The wait covers every connection this listener accepted, including one still on its
    /// way to a worker (its handshake not done, not yet in the registry).
    pub async fn retire(&self, linger: Duration, drain_timeout: Duration) -> ShutdownReport {
        let baseline = self.registry.baseline();
        // Released already by whoever committed the hand-over, or here.
        let _ = self.addr.send(Release).await;
        let live = self.limiter.active.load(Ordering::Acquire);
        tracing::info!(
            live,
            ?linger,
            "handed over: no longer accepting, letting sessions finish"
        );
        let ended = tokio::time::timeout(linger, self.limiter.wait_idle())
            .await
            .is_ok();
        if !ended {
            tracing::info!(
                live = self.limiter.active.load(Ordering::Acquire),
                "linger over: closing the remaining sessions"
            );
        }
        self.registry.shutdown_from(baseline, drain_timeout).await
    }
}

/// Duplicates of every socket the listener accepts on, for another process to accept on
/// (a hand-over); the listener goes on accepting. The reply says how its connections start,
/// so the taker can check it would serve them the same way.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "io::Result<SharedSockets>")]
pub struct ShareSockets;

/// What [`ShareSockets`] gives.
#[derive(Debug)]
#[non_exhaustive]
pub struct SharedSockets {
    /// The sockets, in the listener's order (empty once it has closed).
    pub sockets: Vec<StdListener>,
    /// Whether its sessions start with a TLS handshake.
    pub tls: bool,
    /// Whether its sessions start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl Handler<ShareSockets> for Listener {
    type Result = io::Result<SharedSockets>;
    fn handle(&mut self, _: ShareSockets, _: &mut Context<Self>) -> Self::Result {
        let sockets = self
            .sockets
            .iter()
            .map(ListenSocket::share)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SharedSockets {
            sockets,
            tls: self.shared.tls.is_some(),
            proxy_protocol: self.shared.proxy.is_some(),
        })
    }
}

/// Stops accepting at once and closes the listener's descriptors as [`Close`] does, but leaves
/// Unix socket files in place: another process took the sockets over (a hand-over) and
/// serves them now. Connections still in the kernel backlog go to that process; pending
/// connections (pull mode) stay queued for the owner. Answers how many sockets it released.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct Release;

impl Handler<Release> for Listener {
    type Result = usize;
    fn handle(&mut self, _: Release, _: &mut Context<Self>) -> usize {
        let released = self.sockets.len();
        for socket in &mut self.sockets {
            if let ListenSocket::Unix(_, file, _) = socket {
                *file = None;
            }
        }
        // Deregistered from this thread's poller and closed here: the accept loop, which runs
        // on this thread too, never polls them again.
        self.sockets.clear();
        if released > 0 {
            for addr in &self.addresses {
                tracing::info!(%addr, "released to another process");
            }
        }
        released
    }
}

/// Whether the listener is still accepting (Qt's `isListening`); false once closed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct IsListening;

impl Handler<IsListening> for Listener {
    type Result = bool;
    fn handle(&mut self, _: IsListening, _: &mut Context<Self>) -> bool {
        !self.sockets.is_empty()
    }
}

/// The first bound IP address (Qt's `serverAddress`/`serverPort`); `None` once closed, or for
/// a listener on Unix sockets only.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<SocketAddr>")]
pub struct ServerAddress;

impl Handler<ServerAddress> for Listener {
    type Result = Option<SocketAddr>;
    fn handle(&mut self, _: ServerAddress, _: &mut Context<Self>) -> Option<SocketAddr> {
        if self.sockets.is_empty() {
            None
        } else {
            self.local_addr
        }
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
        if !self.sockets.is_empty() {
            // Dropping a Unix socket removes its file.
            self.sockets.clear();
            for addr in &self.addresses {
                tracing::info!(%addr, "stopped listening");
            }
        }
        if let Mode::Pull { queue, .. } = &mut self.mode {
            queue.clear();
        }
        // The actor stays up so that `IsListening` and `ServerAddress` answer `false` and
        // `None` as documented (stopping it here made them fail with a mailbox error). With
        // its socket gone the accept loop ends, so the actor stops once the last `Addr` is
        // dropped, and with it its own thread (a worker it ran on carries on).
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
            rejected_per_ip: self.rejected_per_ip
                + self.limiter.rejected_per_ip_late.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.iter().sum(),
            accept_errors_by_kind: self.accept_errors,
            limit_waits: self.limit_waits,
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
