use std::{io, net::SocketAddr, sync::Arc};

use actix::{Actor, Addr};
use actix_rt::ArbiterHandle;
use bytes::BytesMut;
use tokio::net::TcpStream;

use super::{
    Core, DisconnectReason, Session, SessionCodec, SessionHandler, SessionId, SessionMeta, State,
    WriteSide,
};
use crate::{
    limits::ConnectionPermit, registry::Registration, worker::WorkerLoad, Registry, SessionConfig,
    SessionError, WorkerPool,
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

    /// Starts the session on the current arbiter over a tokio stream.
    ///
    /// # Errors
    ///
    /// [`SessionError::Io`] if the socket's addresses cannot be read;
    /// [`SessionError::Config`] if the config cannot work.
    pub fn start(self, stream: TcpStream) -> Result<Addr<Session<C, H>>, SessionError> {
        self.config.validate()?;
        let parts = Parts::new(stream.peer_addr(), stream.local_addr())?;
        let SessionBuilder {
            codec,
            handler,
            config,
            registry,
        } = self;
        let session = new_session(
            Ok(stream),
            parts,
            codec,
            handler,
            Arc::new(config),
            registry,
            None,
            None,
        );
        Ok(session.start())
    }

    /// Starts the session on the current arbiter over a std stream (set non-blocking here).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), plus the error of registering the socket with the runtime.
    pub fn start_std(
        self,
        stream: std::net::TcpStream,
    ) -> Result<Addr<Session<C, H>>, SessionError> {
        stream.set_nonblocking(true).map_err(io_error)?;
        let stream = TcpStream::from_std(stream).map_err(io_error)?;
        self.start(stream)
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
        self.config.validate()?;
        let parts = Parts::new(stream.peer_addr(), stream.local_addr())?;
        let SessionBuilder {
            codec,
            handler,
            config,
            registry,
        } = self;
        let (arbiter, load) = pool.pick();
        Ok(spawn_on(
            &arbiter,
            stream,
            parts,
            Arc::new(config),
            registry,
            None,
            load,
            move || (codec, handler),
        ))
    }
}

fn io_error(error: io::Error) -> SessionError {
    SessionError::Io(Arc::new(error))
}

/// The addresses of a stream, read before it moves to its worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts {
    /// Set when the id was handed out before the session starts (listener events, pull mode).
    pub(crate) id: Option<SessionId>,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) local_addr: SocketAddr,
}

impl Parts {
    pub(crate) fn new(
        peer: io::Result<SocketAddr>,
        local: io::Result<SocketAddr>,
    ) -> Result<Parts, SessionError> {
        Ok(Parts {
            id: None,
            peer_addr: peer.map_err(io_error)?,
            local_addr: local.map_err(io_error)?,
        })
    }
}

/// Moves a std stream to `arbiter` and starts a session there; `make` builds the codec and
/// handler on the worker thread, so neither needs to be `Send`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_on<C, H, F>(
    arbiter: &ArbiterHandle,
    stream: std::net::TcpStream,
    parts: Parts,
    config: Arc<SessionConfig>,
    registry: Option<Registry>,
    permit: Option<ConnectionPermit>,
    load: WorkerLoad,
    make: F,
) -> Addr<Session<C, H>>
where
    C: SessionCodec,
    H: SessionHandler<C>,
    F: FnOnce() -> (C, H) + Send + 'static,
{
    Session::start_in_arbiter(arbiter, move |_ctx| {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        let (codec, handler) = make();
        new_session(
            stream,
            parts,
            codec,
            handler,
            config,
            registry,
            permit,
            Some(load),
        )
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn new_session<C: SessionCodec, H: SessionHandler<C>>(
    stream: io::Result<TcpStream>,
    parts: Parts,
    codec: C,
    handler: H,
    config: Arc<SessionConfig>,
    registry: Option<Registry>,
    permit: Option<ConnectionPermit>,
    load: Option<WorkerLoad>,
) -> Session<C, H> {
    let (stream, reason) = match stream {
        Ok(stream) => {
            if config.nodelay {
                let _ = stream.set_nodelay(true);
            }
            (Some(stream), None)
        }
        Err(e) => (None, Some(DisconnectReason::Io(Arc::new(e)))),
    };
    let worker = load.as_ref().map(|l| l.index);
    let meta = Arc::new(SessionMeta::new(
        parts.id.unwrap_or_else(SessionId::next),
        parts,
        worker,
        &config,
    ));
    Session {
        core: Core {
            stream,
            codec,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            state: State::Open,
            write_side: WriteSide::Open,
            reason,
            config,
            registration: registry.map(|r| Registration::new(r, meta.clone())),
            meta,
            eof: false,
            read_finished: false,
            peer_finished_first: false,
            needs_data: true,
            user_paused: false,
            above_high: false,
            answering: false,
            answers_held: false,
            refused: false,
            write_blocked: false,
            bytes_in: 0,
            bytes_out: 0,
            frames_in: 0,
            frames_out: 0,
            bytes_discarded: 0,
            last_moved: 0,
            idle_ticks: 0,
            last_frames: 0,
            partial_ticks: 0,
            frame_end: 0,
            flush_waiters: Vec::new(),
            _permit: permit,
            _load: load,
        },
        handler,
    }
}
