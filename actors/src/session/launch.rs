use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use super::buffer::{LazyBuf, WriteBuf};
use actix::{
    dev::channel::{self, AddressReceiver},
    Addr, Context,
};

use super::{
    Core, DisconnectReason, Flags, Rare, Session, SessionCodec, SessionHandler, SessionId,
    SessionMeta, State, WriteSide,
};
use crate::{
    counters::HandshakeCounters,
    limits::ConnectionPermit,
    transport::{
        proxy::{self, ProxyProtocol},
        Plain, Prefixed, RawStream, Stream,
    },
    worker::WorkerLoad,
    Address, Registry, SessionConfig, SessionError, TlsAcceptor, TlsConnector, WorkerPool,
};

/// Starts a [`Session`] over a stream you already hold, on the current arbiter or on a worker
/// pool.
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use bytes::Bytes;
/// use switchboard::{Conn, SessionBuilder, SessionHandler};
/// use switchboard_codec::Raw;
///
/// struct Echo;
/// impl SessionHandler<Raw> for Echo {
///     fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
///         let _ = conn.write(data);
///     }
/// }
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
/// let (server_side, _) = listener.accept().unwrap();
/// let session = SessionBuilder::new(Raw, Echo).start_std(server_side).unwrap();
/// assert!(session.connected());
/// # drop(client);
/// # });
/// ```
#[derive(Debug)]
pub struct SessionBuilder<C, H> {
    codec: C,
    handler: H,
    config: SessionConfig,
    registry: Option<Registry>,
}

impl<C: SessionCodec, H: SessionHandler<C>> SessionBuilder<C, H> {
    /// A builder for a session framed by `codec` and driven by `handler`, default config.
    pub fn new(codec: C, handler: H) -> Self {
        SessionBuilder {
            codec,
            handler,
            config: SessionConfig::default(),
            registry: None,
        }
    }

    /// Uses `config` for limits and tuning.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers the session with `registry` for its whole life.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    fn launch(&self, raw: &RawStream) -> Result<Launch, SessionError> {
        self.config.validate()?;
        Ok(Launch::new(
            Parts::of(raw)?,
            Arc::new(self.config.clone()),
            self.registry.clone(),
        ))
    }

    /// Starts the session on the current arbiter over a tokio TCP stream.
    ///
    /// # Errors
    ///
    /// [`SessionError::Io`] if the socket's addresses cannot be read;
    /// [`SessionError::Config`] if the config cannot work.
    pub fn start(self, stream: tokio::net::TcpStream) -> Result<Addr<Session<C, H>>, SessionError> {
        self.start_std(stream.into_std().map_err(io_error)?)
    }

    /// Starts the session on the current arbiter over a std TCP stream (set non-blocking
    /// here).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), plus the error of registering the socket with the runtime.
    pub fn start_std(
        self,
        stream: std::net::TcpStream,
    ) -> Result<Addr<Session<C, H>>, SessionError> {
        self.start_raw(RawStream::Tcp(stream))
    }

    /// Starts the session on the current arbiter over a std Unix stream.
    ///
    /// # Errors
    ///
    /// As [`start_std`](Self::start_std).
    pub fn start_unix(
        self,
        stream: std::os::unix::net::UnixStream,
    ) -> Result<Addr<Session<C, H>>, SessionError> {
        self.start_raw(RawStream::Unix(stream))
    }

    fn start_raw(self, raw: RawStream) -> Result<Addr<Session<C, H>>, SessionError> {
        let launch = self.launch(&raw)?;
        Ok(launch.start_here(raw, self.codec, self.handler))
    }
}

impl<C, H> SessionBuilder<C, H>
where
    C: SessionCodec + Send,
    H: SessionHandler<C> + Send,
{
    /// Starts the session on a worker of `pool` (the least loaded, by default).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_on(
        self,
        pool: &WorkerPool,
        stream: std::net::TcpStream,
    ) -> Result<Addr<Session<C, H>>, SessionError> {
        let raw = RawStream::Tcp(stream);
        let launch = self.launch(&raw)?;
        let (codec, handler) = (self.codec, self.handler);
        Ok(launch.start_on(pool, raw, move || (codec, handler)))
    }
}

fn io_error(error: io::Error) -> SessionError {
    SessionError::Io(Arc::new(error))
}

/// The addresses of a stream, read before it moves to its worker.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    /// Set when the id was handed out before the session starts (listener events, pull mode).
    pub(crate) id: Option<SessionId>,
    pub(crate) peer_addr: Address,
    pub(crate) local_addr: Arc<Address>,
}

impl Parts {
    pub(crate) fn new(peer_addr: Address, local_addr: Arc<Address>) -> Parts {
        Parts {
            id: None,
            peer_addr,
            local_addr,
        }
    }

    pub(crate) fn of(raw: &RawStream) -> Result<Parts, SessionError> {
        let (peer_addr, local_addr) = raw.addresses().map_err(io_error)?;
        Ok(Parts::new(peer_addr, Arc::new(local_addr)))
    }
}

/// What runs between accepting (or connecting) and the session's start, on the session's
/// worker thread, under the handshake timeout.
#[derive(Debug, Clone, Default)]
pub(crate) enum Handshake {
    /// Plaintext: the session starts at once.
    #[default]
    None,
    /// TLS, server side.
    TlsServer(TlsAcceptor),
    /// TLS, client side, for this server name.
    TlsClient(TlsConnector, String),
}

/// The PROXY protocol step, before TLS: read the client's header (server side) or send one
/// (client side).
#[derive(Debug, Clone, Default)]
pub(crate) enum ProxyStep {
    /// No PROXY header on this connection.
    #[default]
    None,
    /// Read a header from an allowed proxy; the session's addresses become the client's.
    Read(Arc<ProxyProtocol>),
    /// Write this header first.
    Send(bytes::Bytes),
}

/// The one way a session starts, whoever starts it (listener push and pull mode, connector,
/// a stream the program holds): everything a session needs besides its stream, codec and
/// handler.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) parts: Parts,
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) registry: Option<Registry>,
    pub(crate) permit: Option<ConnectionPermit>,
    pub(crate) handshake: Handshake,
    pub(crate) proxy: ProxyStep,
    /// Where the handshake's outcome and duration are counted (a listener's; none for the
    /// connector).
    pub(crate) handshake_counters: Option<Arc<HandshakeCounters>>,
}

impl Launch {
    pub(crate) fn new(
        parts: Parts,
        config: Arc<SessionConfig>,
        registry: Option<Registry>,
    ) -> Launch {
        Launch {
            parts,
            config,
            registry,
            permit: None,
            handshake: Handshake::None,
            proxy: ProxyStep::None,
            handshake_counters: None,
        }
    }

    /// Starts the session on the current arbiter.
    pub(crate) fn start_here<C: SessionCodec, H: SessionHandler<C>>(
        self,
        raw: RawStream,
        codec: C,
        handler: H,
    ) -> Addr<Session<C, H>> {
        let (addr, rx) = mailbox(&self.config);
        actix_rt::spawn(self.run(raw, rx, None, move || (codec, handler)));
        addr
    }

    /// Moves the stream to a worker of `pool` and starts the session there; `make` builds the
    /// codec and handler on the worker thread, so neither needs to be `Send`.
    pub(crate) fn start_on<C, H, F>(
        self,
        pool: &WorkerPool,
        raw: RawStream,
        make: F,
    ) -> Addr<Session<C, H>>
    where
        C: SessionCodec,
        H: SessionHandler<C>,
        F: FnOnce() -> (C, H) + Send + 'static,
    {
        let (arbiter, load) = pool.pick();
        let (addr, rx) = mailbox(&self.config);
        arbiter.spawn(async move { self.run(raw, rx, Some(load), make).await });
        addr
    }

    /// As [`start_on`](Self::start_on) for a caller that needs no address (the listener's
    /// push mode): the mailbox is made on the worker thread, next to the session, instead of
    /// on the accepting thread, so the accept path allocates less and the session's
    /// allocations share one thread's heap.
    ///
    /// `home` is the worker the caller runs on, if it is one of `pool`'s: a session that
    /// lands there starts as a task of this thread, with no message to another.
    pub(crate) fn spawn_on<C, H, F>(
        self,
        pool: &WorkerPool,
        home: Option<usize>,
        raw: RawStream,
        make: F,
    ) where
        C: SessionCodec,
        H: SessionHandler<C>,
        F: FnOnce() -> (C, H) + Send + 'static,
    {
        let (arbiter, load) = pool.pick_near(home);
        let local = home == Some(load.index);
        let start = async move {
            let (_, rx) = mailbox(&self.config);
            self.run(raw, rx, Some(load), make).await
        };
        if local {
            actix_rt::spawn(start);
        } else {
            arbiter.spawn(start);
        }
    }

    /// On the session's thread: registers the stream, runs the handshake, starts the actor.
    async fn run<C, H, F>(
        mut self,
        raw: RawStream,
        rx: AddressReceiver<Session<C, H>>,
        load: Option<WorkerLoad>,
        make: F,
    ) where
        C: SessionCodec,
        H: SessionHandler<C>,
        F: FnOnce() -> (C, H) + 'static,
    {
        let stream = match raw.register() {
            Ok(plain) => {
                // Before the handshake: a TLS server's flight is several writes, and with
                // Nagle each one after the first waits for the client's delayed ACK.
                if self.config.nodelay {
                    plain.set_nodelay(true);
                }
                handshake(plain, &mut self, load.as_ref()).await
            }
            Err(error) => Err(DisconnectReason::Io(Arc::new(error))),
        };
        let (codec, handler) = make();
        let session = new_session(stream, self, codec, handler, load);
        let ctx = Context::with_receiver(rx);
        ctx.run(session);
    }
}

/// A session's address and the receiving end of its mailbox.
type Mailbox<C, H> = (Addr<Session<C, H>>, AddressReceiver<Session<C, H>>);

/// A session's mailbox, made before the session so its address exists at once (messages sent
/// during a handshake wait in it).
fn mailbox<C: SessionCodec, H: SessionHandler<C>>(config: &SessionConfig) -> Mailbox<C, H> {
    let (tx, rx) = channel::channel(config.mailbox_capacity);
    (Addr::new(tx), rx)
}

/// Runs the launch's handshakes over `plain` (the PROXY step, then TLS) within the handshake
/// timeout, holding one of the worker's handshake permits meanwhile. The PROXY step may change
/// the launch's addresses and count its permit against the client's IP.
async fn handshake(
    plain: Plain,
    launch: &mut Launch,
    load: Option<&WorkerLoad>,
) -> Result<Stream, DisconnectReason> {
    if matches!(launch.handshake, Handshake::None) && matches!(launch.proxy, ProxyStep::None) {
        return Ok(Stream::Plain(plain));
    }
    let timeout: Duration = launch.config.handshake_timeout;
    let started = Instant::now();
    let counters = launch.handshake_counters.clone();
    let run = async {
        // Waiting for a permit counts against the timeout too: a client is not kept waiting
        // for ever behind a flood of silent ones.
        let _permit = match load {
            Some(load) => {
                let cap = load.handshakes();
                match cap.clone().try_acquire_owned() {
                    Ok(permit) => Some(Ok(permit)),
                    Err(_) => {
                        if let Some(counters) = &counters {
                            counters.record_wait();
                        }
                        Some(cap.acquire_owned().await)
                    }
                }
            }
            None => None,
        };
        let plain = proxy_step(plain, launch).await?;
        match &launch.handshake {
            Handshake::None => Ok(Stream::Plain(plain)),
            Handshake::TlsServer(acceptor) => acceptor
                .accept(plain)
                .await
                .map(|tls| Stream::Tls(Box::new(tls)))
                .map_err(|e| DisconnectReason::Tls(Arc::new(e))),
            Handshake::TlsClient(connector, name) => connector
                .connect(name, plain)
                .await
                .map(|tls| Stream::Tls(Box::new(tls)))
                .map_err(|e| DisconnectReason::Tls(Arc::new(e))),
        }
    };
    let result = match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(DisconnectReason::HandshakeTimeout),
    };
    if let Some(counters) = counters {
        counters.record(result.as_ref().map(|_| ()), started.elapsed());
    }
    result
}

/// The PROXY step: reads the header from an allowed proxy (keeping what came after it for
/// the next reader), or writes the connector's header.
async fn proxy_step(mut plain: Plain, launch: &mut Launch) -> Result<Plain, DisconnectReason> {
    use tokio::io::AsyncWriteExt;
    let io = |e: io::Error| DisconnectReason::Io(Arc::new(e));
    let protocol = match &launch.proxy {
        ProxyStep::None => return Ok(plain),
        ProxyStep::Send(header) => {
            plain.write_all(header).await.map_err(io)?;
            return Ok(plain);
        }
        ProxyStep::Read(protocol) => protocol.clone(),
    };
    let parts = &mut launch.parts;
    if !protocol.allows(&parts.peer_addr) {
        return Err(DisconnectReason::Proxy(Arc::new(
            crate::ProxyError::NotAllowed {
                peer: parts.peer_addr.clone(),
            },
        )));
    }
    let (header, rest) = match proxy::read_header(&mut plain, protocol.limit).await {
        Ok(read) => read,
        Err(proxy::ReadError::Proxy(e)) => return Err(DisconnectReason::Proxy(Arc::new(e))),
        Err(proxy::ReadError::Io(e)) => return Err(io(e)),
    };
    if let Some((source, destination)) = header.addresses {
        tracing::trace!(proxy = %parts.peer_addr, client = %source, "PROXY header read");
        parts.peer_addr = source.into();
        parts.local_addr = Arc::new(destination.into());
    }
    if let (Some(permit), Some(ip)) = (launch.permit.as_mut(), parts.peer_addr.ip()) {
        if !permit.count_ip(ip) {
            return Err(DisconnectReason::PerIpLimit(ip));
        }
    }
    Ok(Prefixed::wrap(rest, plain))
}

pub(crate) fn new_session<C: SessionCodec, H: SessionHandler<C>>(
    stream: Result<Stream, DisconnectReason>,
    launch: Launch,
    codec: C,
    handler: H,
    load: Option<WorkerLoad>,
) -> Session<C, H> {
    let Launch {
        parts,
        config,
        registry,
        permit,
        ..
    } = launch;
    let (stream, rare) = match stream {
        Ok(stream) => (Some(stream), None),
        Err(reason) => (
            None,
            Some(Box::new(Rare {
                reason: Some(reason),
                ..Rare::default()
            })),
        ),
    };
    let worker = load.as_ref().map(|l| l.index);
    let transport = stream.as_ref().map(Stream::kind);
    let tls = stream.as_ref().and_then(Stream::tls_info);
    let (limiter, counted_ip) = permit.map(ConnectionPermit::into_parts).unzip();
    let counted_ip = counted_ip.flatten();
    // A permit is counted per IP under the address the session is known by: the peer's, or
    // the client a PROXY header named (see `proxy_step`).
    debug_assert!(counted_ip.is_none() || counted_ip == parts.peer_addr.ip());
    let meta = Arc::new(SessionMeta::new(
        parts.id.unwrap_or_else(SessionId::next),
        parts,
        worker,
        &config,
        transport,
        tls,
        counted_ip.is_some(),
    ));
    // Disabled (and free) when no subscriber takes INFO spans of this target.
    let span = tracing::info_span!(
        target: crate::SESSION_SPAN_TARGET,
        "session",
        id = %meta.id,
        peer = %meta.peer_addr,
        transport = %meta.transport(),
        listener = %meta.local_addr,
        // `Option` records the bare index, or nothing off a pool: shorter than `?worker`'s
        // `Some(i)`, in every line and in the subscriber's span store.
        worker,
    );
    Session {
        core: Core {
            stream,
            codec,
            read_buf: LazyBuf::default(),
            write_buf: WriteBuf::default(),
            state: State::Open,
            write_side: WriteSide::Open,
            rare,
            config,
            registry,
            meta,
            flags: Flags::new(Flags::NEEDS_DATA),
            close_taken: super::meta::NO_CLOSE_REQUESTED,
            read_doublings: 0,
            ticker: None,
            idle_ticks: 0,
            partial_ticks: 0,
            span: super::span::SessionSpan::of(span),
            limiter,
            pool: load.map(WorkerLoad::into_pool),
        },
        handler,
    }
}

/// Starts a session over one end of an in-memory duplex, on the current arbiter: the state
/// machine's unit tests need no socket.
#[cfg(test)]
pub(crate) fn start_in_memory<C: SessionCodec, H: SessionHandler<C>>(
    stream: tokio::io::DuplexStream,
    codec: C,
    handler: H,
    config: SessionConfig,
) -> Addr<Session<C, H>> {
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().expect("a literal address");
    let launch = Launch::new(
        Parts::new(addr.into(), Arc::new(addr.into())),
        Arc::new(config),
        None,
    );
    actix::Actor::start(new_session(
        Ok(Stream::Memory(stream)),
        launch,
        codec,
        handler,
        None,
    ))
}
