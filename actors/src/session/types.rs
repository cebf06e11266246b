use crate::{Address, ProxyError, TlsInfo, TransportKind};
use std::{
    fmt, io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::SystemTime,
};

use bytes::Bytes;
use tokio_util::codec::{Decoder, Encoder};

/// A codec a [`Session`](crate::Session) can frame its socket with: any tokio-util `Decoder` that also encodes
/// [`Bytes`] (so the [`Registry`](crate::Registry) can send to and broadcast over any session), with errors that
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

    /// The id whose number is `n` (as the admin socket reads it from a command).
    pub(crate) fn from_raw(n: u64) -> SessionId {
        SessionId(n)
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
    /// This side closed gracefully ([`DisconnectFromHost`](crate::DisconnectFromHost)).
    Closed,
    /// This side closed at once ([`Abort`](crate::Abort)); unsent data was discarded.
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
    /// The TLS handshake failed, or a TLS record was bad (wrong protocol, garbage, unknown CA,
    /// expired certificate, no certificate where one is required, a connection dropped
    /// mid-record); the error says which.
    Tls(Arc<io::Error>),
    /// The handshakes (PROXY header, TLS) did not finish within the handshake timeout.
    HandshakeTimeout,
    /// A PROXY-protocol listener refused the connection's header: missing, malformed, too
    /// long, cut off, or sent by a peer not on the allowlist; the error says which (shared,
    /// so the reason stays small and cheap to clone).
    Proxy(Arc<ProxyError>),
    /// The client a PROXY header names already holds as many connections as the per-IP limit
    /// allows ([`ListenerBuilder::max_connections_per_ip`](crate::ListenerBuilder::max_connections_per_ip)).
    /// Other listeners refuse such clients when accepting, before any session exists.
    PerIpLimit(std::net::IpAddr),
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
            DisconnectReason::Tls(e) => write!(f, "TLS failed: {e}"),
            DisconnectReason::HandshakeTimeout => f.write_str("handshake timed out"),
            DisconnectReason::Proxy(e) => write!(f, "PROXY header refused: {e}"),
            DisconnectReason::PerIpLimit(ip) => write!(f, "too many connections from {ip}"),
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
    pub(super) fn from_u8(value: u8) -> SessionState {
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
    /// The remote end (for a PROXY-protocol listener, the client the proxy speaks for).
    pub peer_addr: Address,
    /// The local end.
    pub local_addr: Address,
    /// What the session runs over.
    pub transport: TransportKind,
    /// What TLS negotiated, for a TLS session: version, cipher suite, ALPN, the peer's
    /// certificate identity.
    pub tls: Option<TlsInfo>,
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
    /// Times the write buffer reached its high watermark, or an answer past it held the frames
    /// (`write_buffer_full` events).
    pub write_buffer_full: u64,
    /// Whether reading is held back (paused by the handler or an owner, or answers waiting for
    /// the write buffer to drain), as of the session's last turn.
    pub read_paused: bool,
    /// How long nothing has moved in either direction, to the session's timeout tick (zero
    /// when the session has no timeouts, so no tick).
    pub idle_for: std::time::Duration,
}

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

/// How a broadcast treats a slow consumer: a session that took nothing from its outbound
/// queue for its slow-consumer timeout
/// ([`SessionConfig::with_slow_consumer_timeout`](crate::SessionConfig::with_slow_consumer_timeout), default 5 s) while the broadcast waited for room.
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
