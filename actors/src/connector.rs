//! The [`Connector`]: the client side (Qt's `connectToHost`), yielding the same [`Session`] as
//! the server side.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix::Addr;
use tokio::net::TcpStream;

use crate::{
    session::{new_session, spawn_on, Parts},
    ConnectError, IntoTarget, Registry, Session, SessionCodec, SessionConfig, SessionError,
    SessionHandler, Target, WorkerPool,
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
        }
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
            .map_err(|e| ConnectError::Session(SessionError::Config(e)))?;
        let stream = match tokio::time::timeout(self.timeout, open(&target, self.local_addr)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ConnectError::Timeout {
                    target: target.to_string(),
                    after: self.timeout,
                })
            }
        };
        let parts = Parts::new(stream.peer_addr(), stream.local_addr())?;
        let config = Arc::new(self.config.clone());
        let registry = self.registry.clone();
        Ok(match &self.pool {
            None => {
                use actix::Actor;
                new_session(
                    Ok(stream),
                    parts,
                    codec,
                    handler,
                    config,
                    registry,
                    None,
                    None,
                )
                .start()
            }
            Some(pool) => {
                let stream = stream
                    .into_std()
                    .map_err(|e| SessionError::Io(Arc::new(e)))?;
                let (arbiter, load) = pool.pick();
                spawn_on(
                    &arbiter,
                    stream,
                    parts,
                    config,
                    registry,
                    None,
                    load,
                    move || (codec, handler),
                )
            }
        })
    }
}

async fn open(target: &Target, local: Option<SocketAddr>) -> Result<TcpStream, ConnectError> {
    let addrs = target
        .resolve()
        .await
        .map_err(|source| ConnectError::Resolve {
            target: target.to_string(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match connect_one(addr, local).await {
            Ok(stream) => return Ok(stream),
            Err(source) => last = Some(ConnectError::Io { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::NoAddress {
        target: target.to_string(),
    }))
}

async fn connect_one(addr: SocketAddr, local: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(local)?;
    socket.connect(addr).await
}
