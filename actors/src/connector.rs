//! The [`Connector`]: the client side (Qt's `connectToHost`), yielding the same [`Session`] as
//! the server side.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::Addr;
use tokio::net::TcpStream;

use crate::{
    session::{Handshake, Launch, Parts, ProxyStep},
    transport::RawStream,
    ConnectError, IntoTarget, ProxyHeader, ProxyVersion, Registry, Session, SessionCodec,
    SessionConfig, SessionError, SessionHandler, SocketBuffers, Target, TlsConnector, WorkerPool,
};

/// Opens client connections and starts a [`Session`] on each: on the current arbiter, or on a
/// worker pool.
///
/// Resolution and connection share one timeout (default 10 s). Each resolved address is tried
/// in turn; the last error is reported.
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use bytes::Bytes;
/// use switchboard::{Conn, ConnectError, Connector, SessionHandler};
/// use switchboard_codec::Raw;
/// use std::time::Duration;
///
/// struct Quiet;
/// impl SessionHandler<Raw> for Quiet {
///     fn ready_read(&mut self, _: Bytes, _: &mut Conn<'_, Raw, Self>) {}
/// }
///
/// // Nothing listens on this port: the error says so.
/// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
/// let result = Connector::new()
///     .timeout(Duration::from_secs(2))
///     .connect(&format!("127.0.0.1:{port}"), Raw, Quiet)
///     .await;
/// assert!(matches!(result, Err(ConnectError::Io { .. })));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Connector {
    timeout: Duration,
    config: SessionConfig,
    pool: Option<WorkerPool>,
    registry: Option<Registry>,
    local_addr: Option<SocketAddr>,
    tls: Option<TlsConnector>,
    proxy: Option<ProxyHeaderPlan>,
    socket_buffers: SocketBuffers,
    /// Set once a connection found its buffers capped by the kernel: one warning per
    /// connector (and its clones), not one per connection of a load test.
    capped_buffers_warned: Arc<AtomicBool>,
}

/// The PROXY header a connector sends.
#[derive(Debug, Clone)]
enum ProxyHeaderPlan {
    /// Each connection's own addresses: its local end as the client, its peer as the
    /// destination (LOCAL / UNKNOWN over a Unix socket).
    Own(ProxyVersion),
    /// The same header on every connection.
    Fixed(ProxyHeader),
}

impl Default for Connector {
    fn default() -> Self {
        Self::new()
    }
}

impl Connector {
    /// The default connect timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A connector with a 10 s timeout and default session config, starting sessions on the
    /// current arbiter.
    pub fn new() -> Self {
        Connector {
            timeout: Self::DEFAULT_TIMEOUT,
            config: SessionConfig::default(),
            pool: None,
            registry: None,
            local_addr: None,
            tls: None,
            proxy: None,
            socket_buffers: SocketBuffers::new(),
            capped_buffers_warned: Arc::default(),
        }
    }

    /// Sends a PROXY protocol header first on each connection (before TLS), as a proxy would,
    /// naming the connection's own local address as the client and its peer as the
    /// destination; over a Unix socket, a header that names no client (v2 LOCAL, v1 UNKNOWN).
    /// For testing a server behind [`ListenerBuilder::proxy_protocol`](crate::ListenerBuilder::proxy_protocol).
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::{Connector, ProxyVersion};
    /// let connector = Connector::new().proxy_header(ProxyVersion::V2);
    /// # drop(connector);
    /// ```
    pub fn proxy_header(mut self, version: ProxyVersion) -> Self {
        self.proxy = Some(ProxyHeaderPlan::Own(version));
        self
    }

    /// Sends `header` first on each connection (before TLS): a client and destination of your
    /// choosing, TLVs included (v2).
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::{Connector, ProxyHeader, ProxyVersion};
    /// let header = ProxyHeader::new(
    ///     ProxyVersion::V1,
    ///     "203.0.113.9:40000".parse().unwrap(),
    ///     "127.0.0.1:7878".parse().unwrap(),
    /// );
    /// let connector = Connector::new().proxy_header_for(header);
    /// # drop(connector);
    /// ```
    pub fn proxy_header_for(mut self, header: ProxyHeader) -> Self {
        self.proxy = Some(ProxyHeaderPlan::Fixed(header));
        self
    }

    /// Speaks TLS over each connection (Qt's `connectToHostEncrypted`): the handshake runs on
    /// the session's thread under the handshake timeout, with the target's host name as the
    /// server name (its IP address for an address target).
    pub fn tls(mut self, connector: TlsConnector) -> Self {
        self.tls = Some(connector);
        self
    }

    /// Fixes the kernel's receive and send buffers of each TCP connection, set before it
    /// connects (default: the system's, tuned by the kernel); see [`SocketBuffers`]. A size of
    /// 0 fails the connect with a config error. When the kernel books less than asked
    /// (`net.core.rmem_max` / `wmem_max`), the first connection that finds it logs a warning;
    /// the connector and its clones warn once.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::{Connector, SocketBuffers};
    /// let connector = Connector::new().socket_buffers(SocketBuffers::new().receive(256 * 1024));
    /// # let _ = connector;
    /// ```
    pub fn socket_buffers(mut self, buffers: SocketBuffers) -> Self {
        self.socket_buffers = buffers;
        self
    }

    /// Binds the client socket to `addr` before connecting (port 0: any port). Load tests use
    /// it to spread connections over several loopback source addresses (127.0.0.2, ...), each
    /// with its own range of ephemeral ports.
    pub fn bind_local(mut self, addr: SocketAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// Sets the connect timeout (resolution included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout in force (default [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT), 10 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use switchboard::Connector;
    ///
    /// assert_eq!(Connector::new().connect_timeout(), Duration::from_secs(10));
    /// ```
    pub fn connect_timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the sessions' limits and tuning.
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts sessions on `pool`'s workers instead of the current arbiter.
    pub fn pool(mut self, pool: WorkerPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Registers sessions with `registry`.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Connects to `target` (`host:port`, a name or an address) and starts a session framed by
    /// `codec` and driven by `handler`, whose `connected` runs first (Qt's `connected`).
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: resolution failed, nothing resolved, timed out, refused or another
    /// socket error, or an invalid session config.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves abandons the attempt; no session is started.
    pub async fn connect<C, H>(
        &self,
        target: impl IntoTarget,
        codec: C,
        handler: H,
    ) -> Result<Addr<Session<C, H>>, ConnectError>
    where
        C: SessionCodec + Send,
        H: SessionHandler<C> + Send,
    {
        let target = target
            .into_target()
            .map_err(|reason| ConnectError::InvalidTarget { reason })?;
        self.config
            .validate()
            .and_then(|()| self.socket_buffers.validate("socket_buffers"))
            .map_err(|e| ConnectError::Session(SessionError::Config(e)))?;
        let buffers = BufferPlan {
            sizes: self.socket_buffers,
            capped_warned: &self.capped_buffers_warned,
        };
        let opening = open(&target, self.local_addr, buffers);
        let stream = match tokio::time::timeout(self.timeout, opening).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ConnectError::Timeout {
                    target: target.to_string(),
                    after: self.timeout,
                })
            }
        };
        let raw = match stream {
            Opened::Tcp(stream) => RawStream::Tcp(
                stream
                    .into_std()
                    .map_err(|e| SessionError::Io(Arc::new(e)))?,
            ),
            Opened::Unix(stream) => RawStream::Unix(
                stream
                    .into_std()
                    .map_err(|e| SessionError::Io(Arc::new(e)))?,
            ),
        };
        let mut launch = Launch::new(
            Parts::of(&raw)?,
            Arc::new(self.config.clone()),
            self.registry.clone(),
        );
        if let Some(tls) = &self.tls {
            launch.handshake = Handshake::TlsClient(tls.clone(), target.server_name());
        }
        if let Some(plan) = &self.proxy {
            let header = match plan {
                ProxyHeaderPlan::Fixed(header) => header.clone(),
                ProxyHeaderPlan::Own(version) => {
                    match (
                        launch.parts.local_addr.socket_addr(),
                        launch.parts.peer_addr.socket_addr(),
                    ) {
                        (Some(local), Some(peer)) => ProxyHeader::new(*version, local, peer),
                        _ => ProxyHeader::local(*version),
                    }
                }
            };
            launch.proxy = ProxyStep::Send(header.to_bytes().into());
        }
        Ok(match &self.pool {
            None => launch.start_here(raw, codec, handler),
            Some(pool) => launch.start_on(pool, raw, move || (codec, handler)),
        })
    }
}

/// A connected socket, before it becomes a session.
enum Opened {
    Tcp(TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The socket buffers a connection asks for, and whether its connector has warned already
/// that the kernel capped them.
#[derive(Clone, Copy)]
struct BufferPlan<'a> {
    sizes: SocketBuffers,
    capped_warned: &'a AtomicBool,
}

async fn open(
    target: &Target,
    local: Option<SocketAddr>,
    buffers: BufferPlan<'_>,
) -> Result<Opened, ConnectError> {
    if let Target::Unix(path) = target {
        return match path.connect().await {
            Ok(stream) => Ok(Opened::Unix(stream)),
            Err(source) => Err(ConnectError::Unix {
                target: target.to_string(),
                source,
            }),
        };
    }
    let addrs = target
        .resolve()
        .await
        .map_err(|source| ConnectError::Resolve {
            target: target.to_string(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match connect_one(addr, local, buffers).await {
            Ok(stream) => return Ok(Opened::Tcp(stream)),
            Err(source) => last = Some(ConnectError::Io { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::NoAddress {
        target: target.to_string(),
    }))
}

async fn connect_one(
    addr: SocketAddr,
    local: Option<SocketAddr>,
    buffers: BufferPlan<'_>,
) -> std::io::Result<TcpStream> {
    if local.is_none() && buffers.sizes.is_system_default() {
        return TcpStream::connect(addr).await;
    }
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Before the handshake, so that the window scale offered fits the receive buffer.
    let sock = socket2::SockRef::from(&socket);
    buffers.sizes.apply(&sock)?;
    if let Some(capped) = buffers.sizes.booked(&sock).find(|b| b.is_capped()) {
        if !buffers.capped_warned.swap(true, Ordering::Relaxed) {
            capped.warn_capped("connector", &addr);
        }
    }
    if let Some(local) = local {
        socket.bind(local)?;
    }
    socket.connect(addr).await
}
