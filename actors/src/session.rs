//! The [`Session`] actor: one TCP connection, Qt's `QTcpSocket`.
//!
//! A session owns its socket and drives it from one future inside its own actor context (the
//! driver), so reads, writes, the handler and the mailbox share one thread with no locks and no
//! extra hop. The driver never parks the actor: at the write high watermark it refuses outside
//! writes, but `Abort`, kicks and info queries are still answered at once.
//!
//! Flow control (DESIGN.md): reading depends only on where read bytes go, never on the write
//! buffer as such. A session reads while its decoder needs bytes and its handler takes frames
//! (not paused, `poll_ready` ready, no answer held). An answer the handler writes in
//! `ready_read` is never refused for room (it may go up to one high watermark past the mark);
//! once an answer leaves the buffer at or above the high watermark, frames are held (and so
//! reading stops) until it drains to the low watermark. A handler that writes nothing back
//! keeps reading however full its write buffer is, so two pumping peers cannot deadlock.
//! The registry's deliveries wait in the session's outbound queue ([`crate::outbox`]) and move
//! into the write buffer while it is under the high watermark.
//!
//! Read states (what the driver does in each):
//!
//! | state     | reads socket | hands buffered frames to handler | writes | leaves when |
//! |-----------|--------------|----------------------------------|--------|-------------|
//! | Open      | yes, while frames can be handed on (not paused, handler ready, no answer held) | yes | accepted until the write side is shut | close asked, error; EOF and write side shut |
//! | Closing   | no           | yes (bytes already read are answered) | accepted | buffer empty and flushed → shutdown(write) |
//! | Lingering | discards until the peer's FIN (counted in `bytes_discarded`, not `bytes_in`) | no | refused | FIN, error or close timeout |
//! | Closed    | no           | no                               | refused | actor stops |
//!
//! The peer's FIN ends only the read side: after the last frame the handler hears
//! `read_finished`, and then (unless [`SessionConfig::allow_half_close`] is set) the session
//! flushes, shuts its write side and ends with `PeerClosed`. This side can shut its write side
//! alone too ([`Conn::shutdown_write`], [`ShutdownWrite`]); the session ends once both sides are
//! done.

use std::{
    fmt, io,
    marker::PhantomData,
    net::SocketAddr,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    task::{self, Poll},
    time::{Duration, SystemTime},
};

use actix::{
    fut::ActorFuture, Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message,
    ResponseFuture,
};
use actix_rt::ArbiterHandle;
use bytes::{Buf, Bytes, BytesMut};
use tokio::{io::AsyncWrite, net::TcpStream, sync::oneshot};
use tokio_util::codec::{Decoder, Encoder};

use crate::{
    listener::ConnectionPermit, outbox::Outbox, registry::Registration, worker::WorkerLoad,
    Registry, SessionConfig, SessionError, WorkerPool,
};

/// A codec a [`Session`] can frame its socket with: any tokio-util `Decoder` that also encodes
/// [`Bytes`] (so the [`Registry`] can send to and broadcast over any session), with errors that
/// can travel across threads. Implemented for every such type; all `switchboard-codec` codecs
/// qualify.
///
/// # Examples
///
/// ```
/// fn assert_codec<C: switchboard::SessionCodec>() {}
/// assert_codec::<switchboard_codec::Lines>();
/// assert_codec::<switchboard_codec::Frames>();
/// assert_codec::<switchboard_codec::Raw>();
/// ```
pub trait SessionCodec:
    Decoder<Error = Self::DecodeError> + Encoder<Bytes, Error = Self::EncodeError> + Unpin + 'static
{
    /// The decoder's error type.
    type DecodeError: std::error::Error + Send + Sync + 'static;
    /// The error type of encoding [`Bytes`].
    type EncodeError: std::error::Error + Send + Sync + 'static;
}

impl<C> SessionCodec for C
where
    C: Decoder + Encoder<Bytes> + Unpin + 'static,
    <C as Decoder>::Error: std::error::Error + Send + Sync + 'static,
    <C as Encoder<Bytes>>::Error: std::error::Error + Send + Sync + 'static,
{
    type DecodeError = <C as Decoder>::Error;
    type EncodeError = <C as Encoder<Bytes>>::Error;
}

/// An error that can be cloned and sent across threads; downcast it to the codec's own type.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// A session's identity, unique within the process for its whole life.
///
/// # Examples
///
/// ```
/// let a = switchboard::SessionId::next();
/// let b = switchboard::SessionId::next();
/// assert_ne!(a, b);
/// assert_eq!(a.to_string(), format!("#{}", a.get()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// Hands out a new id.
    pub fn next() -> SessionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a session ended. Every session reports exactly one, once.
///
/// # Examples
///
/// ```
/// use switchboard::DisconnectReason;
/// assert!(!DisconnectReason::PeerClosed.is_error());
/// assert!(DisconnectReason::IdleTimeout.is_error());
/// assert_eq!(DisconnectReason::PeerClosed.to_string(), "the peer closed the connection");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer closed its side (EOF) and everything owed to it was flushed.
    PeerClosed,
    /// The peer reset the connection.
    Reset,
    /// This side closed gracefully ([`DisconnectFromHost`]).
    Closed,
    /// This side closed at once ([`Abort`]); unsent data was discarded.
    Aborted,
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
    /// A partial frame waited longer than the frame timeout.
    FrameTimeout,
    /// A graceful close did not finish within the close timeout: the buffer was not flushed,
    /// or the peer never sent its FIN after ours. It replaces the reason the close began with.
    CloseTimeout,
    /// The peer sent bytes the codec rejects (too long, malformed, not UTF-8, cut off).
    Codec(SharedError),
    /// A socket error other than a reset.
    Io(Arc<io::Error>),
    /// The session took nothing from its outbound queue for the slow-consumer timeout while a
    /// broadcast with [`SlowConsumerPolicy::Disconnect`](crate::SlowConsumerPolicy) waited on
    /// it.
    SlowConsumer,
    /// The registry kicked the session.
    Kicked,
    /// The server is shutting down.
    Shutdown,
    /// The session's handler panicked; the panic message.
    HandlerPanicked(String),
}

impl DisconnectReason {
    /// True for endings that point at a fault (timeouts, codec and I/O errors, panics, resets),
    /// false for orderly closes by either side.
    pub fn is_error(&self) -> bool {
        !matches!(
            self,
            DisconnectReason::PeerClosed
                | DisconnectReason::Closed
                | DisconnectReason::Aborted
                | DisconnectReason::Kicked
                | DisconnectReason::Shutdown
        )
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::PeerClosed => f.write_str("the peer closed the connection"),
            DisconnectReason::Reset => f.write_str("the peer reset the connection"),
            DisconnectReason::Closed => f.write_str("closed by this side"),
            DisconnectReason::Aborted => f.write_str("aborted by this side"),
            DisconnectReason::IdleTimeout => f.write_str("idle timeout"),
            DisconnectReason::FrameTimeout => f.write_str("partial frame timed out"),
            DisconnectReason::CloseTimeout => f.write_str("graceful close timed out"),
            DisconnectReason::Codec(e) => write!(f, "bad input: {e}"),
            DisconnectReason::Io(e) => write!(f, "socket error: {e}"),
            DisconnectReason::SlowConsumer => f.write_str("too slow to keep up with a broadcast"),
            DisconnectReason::Kicked => f.write_str("kicked"),
            DisconnectReason::Shutdown => f.write_str("server shutdown"),
            DisconnectReason::HandlerPanicked(m) => write!(f, "handler panicked: {m}"),
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
pub enum SessionState {
    /// Connected: reading and writing.
    Connected = 0,
    /// Closing gracefully: answering what was read, flushing, then waiting for the peer's FIN.
    Closing = 1,
    /// Ended.
    Closed = 2,
}

impl SessionState {
    fn from_u8(value: u8) -> SessionState {
        match value {
            0 => SessionState::Connected,
            1 => SessionState::Closing,
            _ => SessionState::Closed,
        }
    }
}

/// A snapshot of one session: addresses, worker, counters and state (Qt's `peerAddress`,
/// `localAddress`, `bytesToWrite`, `state`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's id.
    pub id: SessionId,
    /// The remote end.
    pub peer_addr: SocketAddr,
    /// The local end.
    pub local_addr: SocketAddr,
    /// Index of the worker thread in its pool, or `None` when started outside a pool.
    pub worker: Option<usize>,
    /// When the connection was established.
    pub connected_at: SystemTime,
    /// Bytes read from the socket and kept: decoded and handed to the handler, or waiting to
    /// be. Bytes thrown away while lingering for the peer's FIN are not counted here (see
    /// [`bytes_discarded`](Self::bytes_discarded)), so for an echo `bytes_in == bytes_out`
    /// once everything is flushed.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Frames decoded and handed to the handler.
    pub frames_in: u64,
    /// Items encoded for writing.
    pub frames_out: u64,
    /// Bytes waiting in the write buffer (as of the session's last turn).
    pub bytes_to_write: usize,
    /// Bytes the registry queued for the session (broadcast, send-to-id) that have not yet
    /// moved into its write buffer, with a small charge per message.
    pub bytes_queued: usize,
    /// Registry messages (broadcast, send-to-id) not delivered to this session: skipped while
    /// it was a slow consumer, abandoned by a sender that stopped waiting, or refused by its
    /// codec.
    pub broadcasts_dropped: u64,
    /// Whether the peer has finished sending (its FIN arrived and every frame before it was
    /// handed on): Qt's `readChannelFinished` has been signalled.
    pub read_finished: bool,
    /// Bytes read and thrown away after this side shut its write half (a graceful close
    /// waiting for the peer's FIN): never handed to the handler, never answered.
    pub bytes_discarded: u64,
    /// Where the session is in its life.
    pub state: SessionState,
    /// Times the write buffer reached its high watermark (`write_buffer_full` events).
    pub write_buffer_full: u64,
    /// Whether reading is held back (paused by the handler or an owner, or answers waiting for
    /// the write buffer to drain), as of the session's last turn.
    pub read_paused: bool,
    /// How long nothing has moved in either direction, to the session's timeout tick (zero
    /// when the session has no timeouts, so no tick).
    pub idle_for: Duration,
}

/// What a session shares with the registry: identity and counters, published once per turn.
#[derive(Debug)]
pub(crate) struct SessionMeta {
    pub(crate) id: SessionId,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) local_addr: SocketAddr,
    pub(crate) worker: Option<usize>,
    pub(crate) connected_at: SystemTime,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_discarded: AtomicU64,
    bytes_to_write: AtomicUsize,
    pub(crate) broadcasts_dropped: AtomicU64,
    read_finished: AtomicBool,
    state: AtomicU8,
    /// Write-buffer-full events; bumped once per crossing of the high watermark.
    write_buffer_full: AtomicU64,
    read_paused: AtomicBool,
    /// Quiet time as of the last tick, in milliseconds.
    idle_ms: AtomicU64,
    /// The strongest close already asked of this session through the registry (a
    /// [`CloseMode`] as `u8`, or [`NO_CLOSE_REQUESTED`]), so repeated kicks or a burst of
    /// slow-consumer broadcasts queue one close message per level, not one per call.
    pub(crate) close_requested: AtomicU8,
    /// What the registry hands this session from other threads.
    pub(crate) outbox: Outbox,
}

/// [`SessionMeta::close_requested`] before any close was asked.
pub(crate) const NO_CLOSE_REQUESTED: u8 = 0;

/// How a session is asked to close.
///
/// # Examples
///
/// ```
/// use switchboard::CloseMode;
/// assert!(CloseMode::Graceful < CloseMode::Abort);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum CloseMode {
    /// Stop reading, answer what was read, flush, then close (Qt's `disconnectFromHost`).
    Graceful = 1,
    /// Close at once, discarding unsent data (Qt's `abort`).
    Abort = 2,
}

impl SessionMeta {
    fn new(
        id: SessionId,
        parts: Parts,
        worker: Option<usize>,
        config: &SessionConfig,
    ) -> SessionMeta {
        SessionMeta {
            id,
            peer_addr: parts.peer_addr,
            local_addr: parts.local_addr,
            worker,
            connected_at: SystemTime::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_discarded: AtomicU64::new(0),
            bytes_to_write: AtomicUsize::new(0),
            broadcasts_dropped: AtomicU64::new(0),
            read_finished: AtomicBool::new(false),
            state: AtomicU8::new(SessionState::Connected as u8),
            write_buffer_full: AtomicU64::new(0),
            read_paused: AtomicBool::new(false),
            idle_ms: AtomicU64::new(0),
            close_requested: AtomicU8::new(NO_CLOSE_REQUESTED),
            outbox: Outbox::new(config.outbound_queue, config.slow_consumer_timeout),
        }
    }

    /// A record with no session behind it, for measuring the registry alone.
    pub(crate) fn placeholder(peer_addr: SocketAddr, local_addr: SocketAddr) -> Arc<SessionMeta> {
        let parts = Parts {
            id: None,
            peer_addr,
            local_addr,
        };
        Arc::new(SessionMeta::new(
            SessionId::next(),
            parts,
            None,
            &SessionConfig::default(),
        ))
    }

    pub(crate) fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id,
            peer_addr: self.peer_addr,
            local_addr: self.local_addr,
            worker: self.worker,
            connected_at: self.connected_at,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
            bytes_to_write: self.bytes_to_write.load(Ordering::Relaxed),
            bytes_queued: self.outbox.queued_bytes(),
            broadcasts_dropped: self.broadcasts_dropped.load(Ordering::Relaxed),
            read_finished: self.read_finished.load(Ordering::Relaxed),
            bytes_discarded: self.bytes_discarded.load(Ordering::Relaxed),
            state: SessionState::from_u8(self.state.load(Ordering::Relaxed)),
            write_buffer_full: self.write_buffer_full.load(Ordering::Relaxed),
            read_paused: self.read_paused.load(Ordering::Relaxed),
            idle_for: Duration::from_millis(self.idle_ms.load(Ordering::Relaxed)),
        }
    }

    /// Bytes this session still owes its peer: its write buffer and its outbound queue.
    pub(crate) fn bytes_owed(&self) -> usize {
        self.bytes_to_write.load(Ordering::Relaxed) + self.outbox.queued_bytes()
    }
}

/// Code that runs inside a session, on its worker thread, with no mailbox hop: the fast path.
///
/// Every method but [`ready_read`](Self::ready_read) has a default that does nothing. A panic
/// in any method ends only this session, with [`DisconnectReason::HandlerPanicked`].
///
/// # Examples
///
/// An echo handler:
///
/// ```
/// use bytes::Bytes;
/// use switchboard::{Conn, SessionHandler};
/// use switchboard_codec::Raw;
///
/// struct Echo;
///
/// impl SessionHandler<Raw> for Echo {
///     fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
///         // An answer written here is never refused for room: once answers fill the write
///         // buffer, the session holds further frames (and stops reading) until it drains.
///         let _ = conn.write(data);
///     }
/// }
/// # let _ = Echo;
/// ```
///
/// Answering after the peer has finished sending (request, FIN, answer):
///
/// ```
/// use bytes::Bytes;
/// use switchboard::{Conn, SessionHandler};
/// use switchboard_codec::Raw;
///
/// #[derive(Default)]
/// struct ByteCount(usize);
///
/// impl SessionHandler<Raw> for ByteCount {
///     fn ready_read(&mut self, data: Bytes, _: &mut Conn<'_, Raw, Self>) {
///         self.0 += data.len();
///     }
///     fn read_finished(&mut self, conn: &mut Conn<'_, Raw, Self>) {
///         // The peer's FIN came; the write side is still open for the answer. Without
///         // `allow_half_close` the session flushes and closes after this returns.
///         let _ = conn.write(Bytes::from(format!("{} bytes\n", self.0)));
///     }
/// }
/// # let _ = ByteCount::default();
/// ```
pub trait SessionHandler<C: SessionCodec>: Sized + Unpin + 'static {
    /// The session has started (Qt's `connected`, for client and server sessions alike).
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        let _ = conn;
    }

    /// Whether the handler can take another frame now. Returning `Pending` (after arranging for
    /// `cx` to be woken) stops delivery and, once the read buffer holds a frame, reading: TCP
    /// then pushes back on the peer. The default is always ready.
    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }

    /// A decoded frame arrived (Qt's `readyRead` followed by a read).
    ///
    /// What this writes is an answer: it is accepted past the high watermark (up to one more
    /// high watermark), and once answers leave the buffer at or above the mark the session
    /// holds further frames until it drains to the low watermark.
    fn ready_read(&mut self, frame: C::Item, conn: &mut Conn<'_, C, Self>);

    /// The peer has finished sending (its FIN arrived) and every frame before it was handed
    /// over (Qt's `readChannelFinished`). The write side is still open: what this writes is
    /// sent. Afterwards the session flushes, shuts its write side and ends with
    /// [`DisconnectReason::PeerClosed`], unless
    /// [`SessionConfig::allow_half_close`] is set: then it stays open for writing until the
    /// handler closes it ([`Conn::shutdown_write`], [`Conn::disconnect_from_host`]) or the idle
    /// timeout does.
    fn read_finished(&mut self, conn: &mut Conn<'_, C, Self>) {
        let _ = conn;
    }

    /// `bytes` more bytes left the write buffer for the socket (Qt's `bytesWritten`).
    fn bytes_written(&mut self, bytes: usize, conn: &mut Conn<'_, C, Self>) {
        let _ = (bytes, conn);
    }

    /// The write buffer reached its high watermark: writes other than answers are refused
    /// until [`write_buffer_drained`](Self::write_buffer_drained). Reading goes on: a pump
    /// that stops writing here still hears its peer.
    fn write_buffer_full(&mut self, conn: &mut Conn<'_, C, Self>) {
        let _ = conn;
    }

    /// The write buffer fell back to its low watermark: writes are welcome again.
    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, C, Self>) {
        let _ = conn;
    }

    /// The session ended (Qt's `disconnected`); called exactly once, last.
    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let _ = (reason, info);
    }
}

/// The session as its handler sees it during a callback: write, close, pause, query.
pub struct Conn<'a, C: SessionCodec, H: SessionHandler<C>> {
    core: &'a mut Core<C>,
    ctx: &'a mut Context<Session<C, H>>,
}

impl<C: SessionCodec, H: SessionHandler<C>> fmt::Debug for Conn<'_, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.core.meta.id)
            .finish()
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Conn<'_, C, H> {
    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.core.meta.id
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.core.meta.peer_addr
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.meta.local_addr
    }

    /// A fresh snapshot of this session.
    pub fn info(&mut self) -> SessionInfo {
        self.core.publish();
        self.core.meta.info()
    }

    /// Encodes `item` into the write buffer; the session writes it out as the socket allows.
    ///
    /// # Errors
    ///
    /// [`SessionError::WriteBufferFull`] at or above the high watermark,
    /// [`SessionError::Closing`] once the write side is shut, [`SessionError::Encode`] when the
    /// codec refuses the item.
    pub fn write<T>(&mut self, item: T) -> Result<(), SessionError>
    where
        C: Encoder<T>,
        <C as Encoder<T>>::Error: std::error::Error + Send + Sync + 'static,
    {
        self.core.write(item)
    }

    /// Bytes waiting in the write buffer (Qt's `bytesToWrite`).
    pub fn bytes_to_write(&self) -> usize {
        self.core.write_buf.len()
    }

    /// Closes gracefully: answers what was already read, flushes, then closes (Qt's
    /// `disconnectFromHost`).
    pub fn disconnect_from_host(&mut self) {
        if self.core.begin_close(DisconnectReason::Closed) {
            // Bounded like the `DisconnectFromHost` message: a peer that never reads or never
            // sends its FIN must not hold the session open for ever.
            arm_close_timeout(self.ctx, self.core.config.close_timeout);
        }
    }

    /// Shuts only this side's write half once everything written so far is flushed (a TCP
    /// half-close); reading goes on. The session ends once the peer has finished sending too
    /// (after [`read_finished`](SessionHandler::read_finished)). Writes after this are refused
    /// with [`SessionError::Closing`].
    pub fn shutdown_write(&mut self) {
        self.core.shutdown_write();
    }

    /// Whether the peer has finished sending (see [`SessionHandler::read_finished`]).
    pub fn is_read_finished(&self) -> bool {
        self.core.read_finished
    }

    /// Closes at once, discarding unsent data (Qt's `abort`).
    pub fn abort(&mut self) {
        self.core.set_reason(DisconnectReason::Aborted);
        self.core.state = State::Closed;
        self.ctx.stop();
    }

    /// Stops reading from the socket until [`resume_reading`](Self::resume_reading).
    pub fn pause_reading(&mut self) {
        self.core.user_paused = true;
    }

    /// Resumes reading after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&mut self) {
        self.core.user_paused = false;
    }

    /// The session's limits and tuning.
    pub fn config(&self) -> &SessionConfig {
        &self.core.config
    }

    /// This session's address, to hand to other actors.
    pub fn address(&self) -> Addr<Session<C, H>> {
        self.ctx.address()
    }

    /// The actix context, to spawn futures or set timers that run inside the session.
    pub fn context(&mut self) -> &mut Context<Session<C, H>> {
        self.ctx
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closing,
    Lingering,
    Closed,
}

/// This side's write half, apart from the session's state: a half-close shuts it while the
/// session goes on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// Shut once the buffer is flushed.
    Shutting,
    Shut,
}

/// Everything a session has but its handler, so the handler can borrow it mutably.
pub(crate) struct Core<C> {
    stream: Option<TcpStream>,
    codec: C,
    /// Bytes read but not yet decoded; empty with no allocation while nothing waits.
    read_buf: BytesMut,
    /// Encoded bytes not yet written; released once empty.
    write_buf: BytesMut,
    state: State,
    write_side: WriteSide,
    /// Set by the first thing that ends the session; later causes do not overwrite it.
    reason: Option<DisconnectReason>,
    config: Arc<SessionConfig>,
    meta: Arc<SessionMeta>,
    /// The peer's FIN was seen: no more reads, and no lingering on close.
    eof: bool,
    /// `read_finished` was called (once, after the last frame before the FIN).
    read_finished: bool,
    /// The peer finished sending while our write side was still open: the session ends as
    /// `PeerClosed` rather than `Closed`.
    peer_finished_first: bool,
    /// The decoder asked for more bytes: reading is what moves the session forward.
    needs_data: bool,
    user_paused: bool,
    above_high: bool,
    /// Inside `ready_read` / `read_finished`: writes are answers, refused only past one more
    /// high watermark.
    answering: bool,
    /// An answer left the buffer at or above the high watermark: frames wait (and reading
    /// with them) until it drains to the low watermark.
    answers_held: bool,
    /// A write was refused since the last flush: the handler hears `write_buffer_full` (and
    /// so, later, `write_buffer_drained`) even if the buffer is back under the mark by then.
    refused: bool,
    /// The last flush stopped because the socket was full (a writable wake-up is registered).
    write_blocked: bool,
    /// Counters kept locally and published to `meta` once per turn.
    bytes_in: u64,
    bytes_out: u64,
    frames_in: u64,
    frames_out: u64,
    /// Bytes read while lingering and thrown away; kept out of `bytes_in`, which counts only
    /// input the session accepted (an echo's `bytes_in` must equal its `bytes_out`).
    bytes_discarded: u64,
    /// Counter values at the last timeout tick, and for how many ticks they have not moved.
    last_moved: u64,
    idle_ticks: u32,
    last_frames: u64,
    partial_ticks: u32,
    /// `bytes_in` where the last decoded frame ended: bytes past it belong to a frame the
    /// peer has not finished sending.
    frame_end: u64,
    flush_waiters: Vec<oneshot::Sender<()>>,
    registration: Option<Registration>,
    /// The session's `tracing` span (id, peer, transport, listener): entered around every
    /// driver turn, timeout tick, start and stop, so the log lines of the session are in it.
    span: tracing::Span,
    /// Released when the session is dropped, whatever ended it.
    _permit: Option<ConnectionPermit>,
    _load: Option<WorkerLoad>,
}

impl<C: SessionCodec> Core<C> {
    fn set_reason(&mut self, reason: DisconnectReason) {
        if self.reason.is_none() {
            self.reason = Some(reason);
        }
    }

    /// Whether writes are still taken (by `write` and from the outbound queue).
    fn takes_writes(&self) -> bool {
        matches!(self.state, State::Open | State::Closing) && self.write_side == WriteSide::Open
    }

    fn write<T>(&mut self, item: T) -> Result<(), SessionError>
    where
        C: Encoder<T>,
        <C as Encoder<T>>::Error: std::error::Error + Send + Sync + 'static,
    {
        if !self.takes_writes() {
            return Err(SessionError::Closing);
        }
        let high = self.config.high_watermark;
        // An answer gets one more high watermark of room: refusing it would lose it, and the
        // frames behind it are held once it lands (see `deliver_frames`).
        let limit = if self.answering {
            high.saturating_mul(2)
        } else {
            high
        };
        if self.write_buf.len() >= limit {
            self.refused = true;
            return Err(SessionError::WriteBufferFull {
                buffered: self.write_buf.len(),
                high_watermark: high,
            });
        }
        self.codec
            .encode(item, &mut self.write_buf)
            .map_err(|e| SessionError::Encode(Arc::new(e)))?;
        self.frames_out += 1;
        Ok(())
    }

    /// Moves registry deliveries from the outbound queue into the write buffer while it is
    /// under `room` bytes, at most `budget` of them (each costs one frame of the turn's budget).
    fn take_outbound(&mut self, room: usize, budget: &mut usize) {
        if *budget == 0 || self.write_buf.len() >= room || !self.meta.outbox.has_items() {
            return;
        }
        let Core {
            meta,
            codec,
            write_buf,
            frames_out,
            ..
        } = self;
        let mut refused = 0u64;
        meta.outbox.take(|item| {
            match codec.encode(item, write_buf) {
                Ok(()) => *frames_out += 1,
                Err(error) => {
                    tracing::debug!(session = %meta.id, %error, "codec refused a registry message");
                    refused += 1;
                }
            }
            *budget = budget.saturating_sub(1);
            write_buf.len() < room && *budget > 0
        });
        if refused > 0 {
            self.count_undelivered(refused);
        }
    }

    /// Counts registry messages this session will never write.
    fn count_undelivered(&self, messages: u64) {
        self.meta
            .broadcasts_dropped
            .fetch_add(messages, Ordering::Relaxed);
        if let Some(registration) = &self.registration {
            registration.count_drops(messages);
        }
    }

    /// Stops taking registry deliveries: what is queued already still goes out (it was
    /// accepted before the close), nothing more is queued.
    fn seal_outbound(&mut self) {
        let mut unlimited = usize::MAX;
        self.take_outbound(usize::MAX, &mut unlimited);
        let discarded = self.meta.outbox.close();
        if discarded > 0 {
            self.count_undelivered(discarded as u64);
        }
    }

    /// Asks for a half-close: flush, then shut the write side, reading on.
    fn shutdown_write(&mut self) {
        if self.state == State::Open && self.write_side == WriteSide::Open {
            self.seal_outbound();
            self.write_side = WriteSide::Shutting;
        }
    }

    /// Moves an open session to `Closing`; true when it did, so a close started by this side
    /// can arm its timeout ([`arm_close_timeout`]).
    fn begin_close(&mut self, reason: DisconnectReason) -> bool {
        if self.state == State::Open {
            self.set_reason(reason);
            self.seal_outbound();
            self.state = State::Closing;
            self.meta
                .state
                .store(SessionState::Closing as u8, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    fn publish(&self) {
        let m = &self.meta;
        m.bytes_in.store(self.bytes_in, Ordering::Relaxed);
        m.bytes_out.store(self.bytes_out, Ordering::Relaxed);
        m.frames_in.store(self.frames_in, Ordering::Relaxed);
        m.frames_out.store(self.frames_out, Ordering::Relaxed);
        m.bytes_discarded
            .store(self.bytes_discarded, Ordering::Relaxed);
        m.bytes_to_write
            .store(self.write_buf.len(), Ordering::Relaxed);
        m.read_paused
            .store(self.user_paused || self.answers_held, Ordering::Relaxed);
    }

    /// Whether buffered frames may go to the handler now.
    fn may_deliver(&self) -> bool {
        matches!(self.state, State::Open | State::Closing)
            && !self.user_paused
            && !self.answers_held
    }
}

/// One TCP connection as an actor (Qt's `QTcpSocket`), generic over its codec `C` and the
/// handler `H` that runs inside it.
///
/// Start one with a [`SessionBuilder`], or let a [`Listener`](crate::Listener) or
/// [`Connector`](crate::Connector) do it. It takes [`Write`], [`Flush`],
/// [`DisconnectFromHost`], [`Abort`], [`GetInfo`], [`PauseReading`] and [`ResumeReading`].
pub struct Session<C: SessionCodec, H: SessionHandler<C>> {
    core: Core<C>,
    handler: H,
}

impl<C: SessionCodec, H: SessionHandler<C>> fmt::Debug for Session<C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.core.meta.id)
            .field("peer", &self.core.meta.peer_addr)
            .field("state", &self.core.state)
            .finish()
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Session<C, H> {
    /// The handler, for message handlers that reach into it (such as [`Notify`](crate::Notify)'s reads).
    pub(crate) fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Runs `f` inside the session's span. The span is moved out for the call (no reference
    /// count is touched) and put back after.
    fn in_span<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let span = std::mem::replace(&mut self.core.span, tracing::Span::none());
        let result = {
            let _entered = span.enter();
            f(self)
        };
        self.core.span = span;
        result
    }

    /// Runs a handler callback; a panic ends this session only.
    fn call(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut H, &mut Conn<'_, C, H>),
    ) -> bool {
        let Session { core, handler } = self;
        let mut conn = Conn { core, ctx };
        match catch_unwind(AssertUnwindSafe(|| f(handler, &mut conn))) {
            Ok(()) => true,
            Err(payload) => {
                let message = panic_message(payload);
                tracing::error!(session = %self.core.meta.id, %message, "session handler panicked");
                self.fail(DisconnectReason::HandlerPanicked(message), ctx);
                false
            }
        }
    }

    /// Ends the session now with `reason` (unless an earlier reason is already set).
    fn fail(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.core.set_reason(reason);
        self.core.state = State::Closed;
        ctx.stop();
    }

    fn io_failure(error: io::Error) -> DisconnectReason {
        match error.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => DisconnectReason::Reset,
            _ => DisconnectReason::Io(Arc::new(error)),
        }
    }

    /// Writes what the socket takes. `Err` ends the session.
    fn flush_writes(
        &mut self,
        ctx: &mut Context<Self>,
        cx: &mut task::Context<'_>,
    ) -> Result<(), DisconnectReason> {
        let Some(stream) = self.core.stream.as_mut() else {
            return Ok(());
        };
        let mut written = 0;
        self.core.write_blocked = false;
        while !self.core.write_buf.is_empty() {
            match Pin::new(&mut *stream).poll_write(cx, &self.core.write_buf) {
                Poll::Ready(Ok(0)) => {
                    return Err(Self::io_failure(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.core.write_buf.advance(n);
                    written += n;
                }
                Poll::Ready(Err(e)) => return Err(Self::io_failure(e)),
                Poll::Pending => {
                    self.core.write_blocked = true;
                    break;
                }
            }
        }
        if written > 0 {
            self.core.bytes_out += written as u64;
            if self.core.write_buf.is_empty() {
                // The buffer stays for the next reply; the timeout tick frees it once idle.
                for waiter in self.core.flush_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
            self.call(ctx, |h, c| h.bytes_written(written, c));
        }
        self.track_watermarks(ctx);
        Ok(())
    }

    /// Reports the write buffer crossing its watermarks, once per crossing. "Full" starts at
    /// the high watermark itself, where `Core::write` starts refusing (`>=`), and a refused
    /// write counts as full even if a flush already took the buffer back under the mark:
    /// whoever was refused was told to wait for `write_buffer_drained`, so the pair must be
    /// reported. "Drained" comes once the buffer is back at the low watermark, possibly right
    /// after "full"; held answers are released at the same point.
    fn track_watermarks(&mut self, ctx: &mut Context<Self>) {
        let buffered = self.core.write_buf.len();
        let refused = std::mem::take(&mut self.core.refused);
        if !self.core.above_high && (refused || buffered >= self.core.config.high_watermark) {
            self.core.above_high = true;
            self.core
                .meta
                .write_buffer_full
                .fetch_add(1, Ordering::Relaxed);
            self.call(ctx, |h, c| h.write_buffer_full(c));
        }
        if buffered <= self.core.config.low_watermark {
            self.core.answers_held = false;
            if self.core.above_high {
                self.core.above_high = false;
                self.call(ctx, |h, c| h.write_buffer_drained(c));
            }
        }
    }

    /// Runs a callback whose writes are answers (see `Core::write`); once an answer leaves the
    /// buffer at or above the high watermark, frames are held until it drains. False when the
    /// handler panicked.
    fn answer(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut H, &mut Conn<'_, C, H>),
    ) -> bool {
        let written_before = self.core.frames_out;
        self.core.answering = true;
        let ok = self.call(ctx, f);
        self.core.answering = false;
        if self.core.frames_out != written_before
            && self.core.write_buf.len() >= self.core.config.high_watermark
        {
            self.core.answers_held = true;
        }
        ok
    }

    /// Hands buffered frames to the handler, at most `budget` of them, and says why it stopped.
    fn deliver_frames(
        &mut self,
        ctx: &mut Context<Self>,
        cx: &mut task::Context<'_>,
        budget: &mut usize,
    ) -> Result<Delivery, DisconnectReason> {
        loop {
            if self.core.needs_data {
                return Ok(Delivery::NeedsData);
            }
            if *budget == 0 {
                return Ok(Delivery::BudgetSpent);
            }
            if !self.core.may_deliver() || self.handler.poll_ready(cx).is_pending() {
                return Ok(Delivery::Stalled);
            }
            let decoded = if self.core.eof {
                self.core.codec.decode_eof(&mut self.core.read_buf)
            } else {
                self.core.codec.decode(&mut self.core.read_buf)
            };
            match decoded {
                Ok(Some(frame)) => {
                    self.core.frames_in += 1;
                    self.core.frame_end = self.core.bytes_in - self.core.read_buf.len() as u64;
                    *budget -= 1;
                    if !self.answer(ctx, |h, c| h.ready_read(frame, c)) {
                        return Ok(Delivery::Stalled);
                    }
                }
                Ok(None) => self.core.needs_data = true,
                Err(e) => return Err(DisconnectReason::Codec(Arc::new(e))),
            }
        }
    }

    /// Reads from the socket once it is readable. Returns whether bytes arrived.
    fn read_socket(
        &mut self,
        cx: &mut task::Context<'_>,
        read_this_turn: bool,
    ) -> Result<Poll<()>, DisconnectReason> {
        let core = &mut self.core;
        let Some(stream) = core.stream.as_mut() else {
            return Ok(Poll::Pending);
        };
        loop {
            match stream.poll_read_ready(cx) {
                Poll::Pending => return Ok(Poll::Pending),
                Poll::Ready(Err(e)) => return Err(Self::io_failure(e)),
                Poll::Ready(Ok(())) => {}
            }
            // Allocate only now: a fresh socket can report readable before any byte arrives.
            core.read_buf.reserve(core.config.read_chunk);
            // `poll_read` (unlike `try_read_buf`) clears readiness after a short read, which
            // saves the `recvfrom` that would only say EAGAIN.
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut core.read_buf) {
                Poll::Ready(Ok(0)) => {
                    core.eof = true;
                    core.needs_data = false;
                    return Ok(Poll::Ready(()));
                }
                Poll::Ready(Ok(n)) => {
                    core.bytes_in += n as u64;
                    core.needs_data = false;
                    return Ok(Poll::Ready(()));
                }
                Poll::Pending => {
                    // Keep the buffer for a session in full flow; one that read nothing this
                    // turn (a spurious wake-up, or a fresh socket) holds none.
                    if core.read_buf.is_empty() && !read_this_turn {
                        core.read_buf = BytesMut::new();
                    }
                    return Ok(Poll::Pending);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(Self::io_failure(e)),
            }
        }
    }

    /// Reads and throws away until the peer's FIN, so closing never resets data the peer has
    /// not read yet. Like reading, at most `reads_left` reads per turn: a peer that keeps
    /// sending while we linger must not hold the worker thread (its neighbours, the mailbox
    /// and the close timeout all wait for this turn to end).
    fn linger(&mut self, cx: &mut task::Context<'_>, reads_left: &mut usize) -> Poll<()> {
        let Some(stream) = self.core.stream.as_ref() else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if *reads_left == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return Poll::Ready(()),
                // Not `bytes_in`: these bytes were never accepted (nor answered).
                Ok(n) => {
                    self.core.bytes_discarded += n as u64;
                    *reads_left -= 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }

    /// One turn of the driver: write, hand frames to the handler, read, until the socket has
    /// nothing more or the turn's frame budget is spent.
    fn drive(&mut self, ctx: &mut Context<Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let mut budget = self.core.config.frames_per_turn;
        let mut reads_left = READS_PER_TURN;
        let result = loop {
            let step = self.step(ctx, cx, &mut budget, &mut reads_left);
            if step.is_ready() || self.core.state == State::Closed {
                break step;
            }
            // Never go to sleep on unflushed replies unless the socket itself said "full".
            if !self.core.write_buf.is_empty() && !self.core.write_blocked {
                continue;
            }
            // Registry deliveries wake the driver when the queue stops being empty; one that
            // came after this turn looked must not wait for another wake-up.
            self.core.meta.outbox.register(cx.waker());
            if self.core.takes_writes()
                && self.core.meta.outbox.has_items()
                && self.core.write_buf.len() < self.core.config.high_watermark
            {
                if budget > 0 {
                    continue;
                }
                cx.waker().wake_by_ref();
            }
            break step;
        };
        // Going to sleep with the socket full: frames answered after a blocked flush can push
        // the buffer over the mark with no flush to follow until the peer reads, which a peer
        // that never reads never does. The handler must hear `write_buffer_full` now.
        if result.is_pending() && self.core.state != State::Closed {
            self.track_watermarks(ctx);
        }
        self.core.publish();
        result
    }

    fn step(
        &mut self,
        ctx: &mut Context<Self>,
        cx: &mut task::Context<'_>,
        budget: &mut usize,
        reads_left: &mut usize,
    ) -> Poll<()> {
        loop {
            if self.core.takes_writes() {
                self.core
                    .take_outbound(self.core.config.high_watermark, budget);
            }
            if let Err(reason) = self.flush_writes(ctx, cx) {
                self.fail(reason, ctx);
                break Poll::Ready(());
            }
            match self.core.state {
                State::Closed => break Poll::Ready(()),
                State::Lingering => {
                    if self.linger(cx, reads_left).is_ready() {
                        self.finish_close(ctx);
                        break Poll::Ready(());
                    }
                    break Poll::Pending;
                }
                State::Open | State::Closing => {}
            }
            let delivery = match self.deliver_frames(ctx, cx, budget) {
                Ok(delivery) => delivery,
                Err(reason) => {
                    self.fail(reason, ctx);
                    break Poll::Ready(());
                }
            };
            match (self.core.state, delivery) {
                (State::Closed, _) => break Poll::Ready(()),
                (_, Delivery::BudgetSpent) => {
                    // Let the mailbox and the other sessions on this thread have their turn.
                    cx.waker().wake_by_ref();
                    break Poll::Pending;
                }
                // Woken by the handler, the socket draining, or a resume message.
                (_, Delivery::Stalled) => break Poll::Pending,
                (_, Delivery::NeedsData) => {}
            }
            if self.core.eof && !self.core.read_finished {
                // Everything the peer sent before its FIN has been handed on.
                self.finish_reading(ctx);
                if self.core.state == State::Closed {
                    break Poll::Ready(());
                }
                continue;
            }
            if self.core.state == State::Closing {
                if !self.core.write_buf.is_empty() {
                    break Poll::Pending;
                }
                match self.poll_shutdown(cx) {
                    Poll::Pending => break Poll::Pending,
                    Poll::Ready(Ok(())) if !self.core.eof => {
                        self.core.state = State::Lingering;
                        continue;
                    }
                    Poll::Ready(_) => {
                        self.finish_close(ctx);
                        break Poll::Ready(());
                    }
                }
            }
            if self.core.write_side == WriteSide::Shutting {
                if !self.core.write_buf.is_empty() {
                    break Poll::Pending;
                }
                match self.poll_shutdown(cx) {
                    Poll::Pending => break Poll::Pending,
                    Poll::Ready(Ok(())) => self.core.write_side = WriteSide::Shut,
                    Poll::Ready(Err(e)) => {
                        self.fail(Self::io_failure(e), ctx);
                        break Poll::Ready(());
                    }
                }
            }
            if self.core.eof {
                if self.core.write_side == WriteSide::Shut {
                    // Both sides are done.
                    self.core.set_reason(if self.core.peer_finished_first {
                        DisconnectReason::PeerClosed
                    } else {
                        DisconnectReason::Closed
                    });
                    self.finish_close(ctx);
                    break Poll::Ready(());
                }
                // Half-closed by the peer, our side still open: woken by writes or a close.
                break Poll::Pending;
            }
            if self.core.user_paused {
                break Poll::Pending;
            }
            if *reads_left == 0 {
                // A turn moves at most a few read chunks, so one fast sender cannot hold its
                // worker thread while its neighbours' sockets wait.
                cx.waker().wake_by_ref();
                break Poll::Pending;
            }
            match self.read_socket(cx, *reads_left < READS_PER_TURN) {
                Ok(Poll::Ready(())) => {
                    *reads_left -= 1;
                    continue;
                }
                Ok(Poll::Pending) => break Poll::Pending,
                Err(reason) => {
                    self.fail(reason, ctx);
                    break Poll::Ready(());
                }
            }
        }
    }

    /// The peer's FIN came and every frame before it was handed on: tell the handler (Qt's
    /// `readChannelFinished`), then, unless half-close is allowed, shut our side too.
    fn finish_reading(&mut self, ctx: &mut Context<Self>) {
        self.core.read_finished = true;
        self.core.meta.read_finished.store(true, Ordering::Relaxed);
        if self.core.write_side == WriteSide::Open {
            self.core.peer_finished_first = true;
        }
        if !self.answer(ctx, |h, c| h.read_finished(c)) {
            return;
        }
        if !self.core.config.allow_half_close {
            // No close timeout here: a half-closed peer may still be reading a long answer;
            // one that stopped reading is the idle timeout's to end.
            self.core.shutdown_write();
        }
    }

    fn poll_shutdown(&mut self, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        match self.core.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn finish_close(&mut self, ctx: &mut Context<Self>) {
        self.core.state = State::Closed;
        ctx.stop();
    }

    fn tick(&mut self, ctx: &mut Context<Self>, period: Duration) {
        let core = &mut self.core;
        // Discarded bytes moved too: a peer still sending while we linger is not idle.
        let moved = core.bytes_in + core.bytes_out + core.bytes_discarded;
        if moved == core.last_moved {
            core.idle_ticks = core.idle_ticks.saturating_add(1);
        } else {
            core.last_moved = moved;
            core.idle_ticks = 0;
        }
        let idle = u64::try_from((period * core.idle_ticks).as_millis()).unwrap_or(u64::MAX);
        core.meta.idle_ms.store(idle, Ordering::Relaxed);
        if core.idle_ticks > 0 {
            // Quiet for a whole period: give the buffers back (an idle session holds none).
            if core.read_buf.is_empty() {
                core.read_buf = BytesMut::new();
            }
            if core.write_buf.is_empty() {
                core.write_buf = BytesMut::new();
            }
        }
        // Only a frame the decoder is still waiting for the peer to finish counts: complete
        // frames held back (paused, write buffer full, busy handler) are not the peer's fault,
        // and a decoder that consumed a header already (`Frames`) still waits on the peer.
        let waiting_on_peer = core.needs_data
            && !core.eof
            && !core.user_paused
            && !core.answers_held
            && core.bytes_in > core.frame_end;
        if !waiting_on_peer || core.frames_in != core.last_frames {
            core.last_frames = core.frames_in;
            core.partial_ticks = 0;
        } else {
            core.partial_ticks = core.partial_ticks.saturating_add(1);
        }
        let reason = if core
            .config
            .idle_timeout
            .is_some_and(|t| period * core.idle_ticks >= t)
        {
            Some(DisconnectReason::IdleTimeout)
        } else if core
            .config
            .frame_timeout
            .is_some_and(|t| period * core.partial_ticks >= t)
        {
            Some(DisconnectReason::FrameTimeout)
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::debug!(session = %core.meta.id, %reason, "closing session");
            self.fail(reason, ctx);
        }
    }
}

/// Socket reads one driver turn may make before it yields (each up to `read_chunk` bytes).
const READS_PER_TURN: usize = 4;

/// Why [`Session::deliver_frames`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// No complete frame is buffered: reading moves the session forward.
    NeedsData,
    /// Frames wait, but the handler, a pause or the write buffer holds them back.
    Stalled,
    /// The turn's frame budget is used up.
    BudgetSpent,
}

/// The future that drives a session's socket from inside its actor context.
struct Driver<C, H>(PhantomData<fn() -> (C, H)>);

impl<C: SessionCodec, H: SessionHandler<C>> ActorFuture<Session<C, H>> for Driver<C, H> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        session: &mut Session<C, H>,
        ctx: &mut Context<Session<C, H>>,
        cx: &mut task::Context<'_>,
    ) -> Poll<()> {
        session.in_span(|session| session.drive(ctx, cx))
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Actor for Session<C, H> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.in_span(|session| session.start(ctx));
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.in_span(|session| session.stop(ctx));
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Session<C, H> {
    fn start(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.core.config.mailbox_capacity);
        if self.core.stream.is_none() {
            // Setting the socket up on this thread failed; the reason is already recorded.
            ctx.stop();
            return;
        }
        if let Some(registration) = &mut self.core.registration {
            registration.connected(&self.core.meta, ctx.address());
        }
        if let Some(period) = self.core.config.tick() {
            ctx.run_interval(period, move |session, ctx| {
                session.in_span(|session| session.tick(ctx, period))
            });
        }
        if self.call(ctx, |h, c| h.connected(c)) {
            ctx.spawn(Driver(PhantomData));
        }
    }

    fn stop(&mut self, _ctx: &mut Context<Self>) {
        let reason = self.core.reason.take().unwrap_or(DisconnectReason::Closed);
        self.core.state = State::Closed;
        self.core
            .meta
            .state
            .store(SessionState::Closed as u8, Ordering::Relaxed);
        let discarded = self.core.meta.outbox.close();
        if discarded > 0 {
            self.core.count_undelivered(discarded as u64);
        }
        self.core.publish();
        let info = self.core.meta.info();
        tracing::debug!(
            session = %info.id,
            peer = %info.peer_addr,
            %reason,
            bytes_in = info.bytes_in,
            bytes_out = info.bytes_out,
            frames_in = info.frames_in,
            frames_out = info.frames_out,
            lasted = ?info.connected_at.elapsed().unwrap_or_default(),
            "session ended"
        );
        let handler = &mut self.handler;
        if let Err(payload) =
            catch_unwind(AssertUnwindSafe(|| handler.disconnected(&reason, &info)))
        {
            tracing::error!(session = %info.id, message = %panic_message(payload), "disconnected handler panicked");
        }
        if let Some(registration) = self.core.registration.take() {
            registration.finish(reason, info);
        }
    }
}

/// Sends `item` (Qt's `write`): encoded into the write buffer at once, written as the socket
/// allows.
///
/// # Errors
///
/// As [`Conn::write`]: refused with [`SessionError::WriteBufferFull`] at or above the high
/// watermark, so a producer learns of a slow peer instead of growing memory.
///
/// # Examples
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo<H: switchboard::SessionHandler<switchboard_codec::Lines>>(
/// #     session: actix::Addr<switchboard::Session<switchboard_codec::Lines, H>>) {
/// use switchboard::Write;
/// session.send(Write("hello".to_string())).await.unwrap().unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Write<T>(pub T);

impl<T> Message for Write<T> {
    type Result = Result<(), SessionError>;
}

impl<C, H, T> Handler<Write<T>> for Session<C, H>
where
    C: SessionCodec + Encoder<T>,
    <C as Encoder<T>>::Error: std::error::Error + Send + Sync + 'static,
    H: SessionHandler<C>,
{
    type Result = Result<(), SessionError>;

    fn handle(&mut self, msg: Write<T>, _ctx: &mut Context<Self>) -> Self::Result {
        self.core.write(msg.0)
    }
}

/// Resolves once everything written so far has been handed to the kernel (Qt's `flush`, or
/// `waitForBytesWritten` without blocking a thread).
///
/// # Errors
///
/// [`SessionError::Gone`] if the session ends first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flush;

impl Message for Flush {
    type Result = Result<(), SessionError>;
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<Flush> for Session<C, H> {
    type Result = ResponseFuture<Result<(), SessionError>>;

    fn handle(&mut self, _: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        if self.core.write_buf.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.core.flush_waiters.push(tx);
        Box::pin(async move { rx.await.map_err(|_| SessionError::Gone) })
    }
}

/// Closes gracefully (Qt's `disconnectFromHost`): stops reading, answers frames already read,
/// flushes, shuts the write side, then waits (up to the close timeout) for the peer's FIN.
#[derive(Debug, Clone, Copy, Default)]
pub struct DisconnectFromHost;

impl Message for DisconnectFromHost {
    type Result = ();
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<DisconnectFromHost> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: DisconnectFromHost, ctx: &mut Context<Self>) {
        self.close(DisconnectReason::Closed, CloseMode::Graceful, ctx);
    }
}

/// Closes at once, discarding unsent data (Qt's `abort`). Answered even when the write buffer
/// is full.
#[derive(Debug, Clone, Copy, Default)]
pub struct Abort;

impl Message for Abort {
    type Result = ();
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<Abort> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        self.close(DisconnectReason::Aborted, CloseMode::Abort, ctx);
    }
}

/// Shuts only this side's write half once everything written so far is flushed (a TCP
/// half-close), as [`Conn::shutdown_write`]: the session reads on and ends once the peer has
/// finished sending too.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct ShutdownWrite;

impl<C: SessionCodec, H: SessionHandler<C>> Handler<ShutdownWrite> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: ShutdownWrite, _ctx: &mut Context<Self>) {
        self.core.shutdown_write();
    }
}

/// Asks for a [`SessionInfo`] snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct GetInfo;

impl Message for GetInfo {
    type Result = SessionInfo;
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<GetInfo> for Session<C, H> {
    type Result = actix::MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _ctx: &mut Context<Self>) -> Self::Result {
        self.core.publish();
        actix::MessageResult(self.core.meta.info())
    }
}

/// Stops reading from the socket (Akka's `SuspendReading`); TCP then pushes back on the peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PauseReading;

impl Message for PauseReading {
    type Result = ();
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<PauseReading> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _ctx: &mut Context<Self>) {
        self.core.user_paused = true;
    }
}

/// Resumes reading after [`PauseReading`] (Akka's `ResumeReading`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResumeReading;

impl Message for ResumeReading {
    type Result = ();
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<ResumeReading> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, _ctx: &mut Context<Self>) {
        self.core.user_paused = false;
    }
}

/// How a broadcast treats a slow consumer: a session that took nothing from its outbound
/// queue for its slow-consumer timeout
/// ([`SessionConfig::slow_consumer_timeout`], default 5 s) while the broadcast waited for room.
/// A session whose queue is full but still taking bytes is not slow: the broadcast waits for
/// it.
///
/// # Examples
///
/// ```
/// assert_eq!(switchboard::SlowConsumerPolicy::default(), switchboard::SlowConsumerPolicy::Drop);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Skip this message for that session and count it in
    /// [`SessionInfo::broadcasts_dropped`], the registry's totals and the
    /// [`BroadcastReport`](crate::BroadcastReport); later messages are skipped at once, without
    /// waiting, until the session takes bytes again. The default.
    #[default]
    Drop,
    /// Disconnect that session with [`DisconnectReason::SlowConsumer`].
    Disconnect,
}

/// A close asked by the registry (kick, shutdown, slow consumer), type-erased so the registry
/// can hold any session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct CloseRequest(pub(crate) DisconnectReason, pub(crate) CloseMode);

impl<C: SessionCodec, H: SessionHandler<C>> Handler<CloseRequest> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, CloseRequest(reason, mode): CloseRequest, ctx: &mut Context<Self>) {
        self.close(reason, mode, ctx);
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Session<C, H> {
    fn close(&mut self, reason: DisconnectReason, mode: CloseMode, ctx: &mut Context<Self>) {
        match mode {
            CloseMode::Abort => self.fail(reason, ctx),
            CloseMode::Graceful => {
                if self.core.begin_close(reason) {
                    arm_close_timeout(ctx, self.core.config.close_timeout);
                }
            }
        }
    }
}

/// Aborts a graceful close started by this side (message or handler) that has not finished
/// within `timeout`, with [`DisconnectReason::CloseTimeout`].
fn arm_close_timeout<C: SessionCodec, H: SessionHandler<C>>(
    ctx: &mut Context<Session<C, H>>,
    timeout: Duration,
) {
    ctx.run_later(timeout, |session, ctx| {
        if session.core.state != State::Closed {
            session.core.reason = Some(DisconnectReason::CloseTimeout);
            session.fail(DisconnectReason::CloseTimeout, ctx);
        }
    });
}

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
    // Disabled (and free) when no subscriber takes INFO spans.
    let span = tracing::info_span!(
        "session",
        id = %meta.id,
        peer = %meta.peer_addr,
        transport = "tcp",
        listener = %meta.local_addr,
        worker = ?worker,
    );
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
            span,
            _permit: permit,
            _load: load,
        },
        handler,
    }
}
