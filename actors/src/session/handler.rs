use std::{
    fmt,
    task::{self, Poll},
};

use actix::{ActorContext, Addr, AsyncContext, Context};
use tokio_util::codec::Encoder;

use super::{
    arm_close_timeout, Core, DisconnectReason, Flags, Session, SessionCodec, SessionId,
    SessionInfo, State,
};
use crate::{Address, SessionConfig, SessionError, TlsInfo, TransportKind};

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
    /// [`SessionConfig::with_allow_half_close`] is set: then it stays open for writing until the
    /// handler closes it ([`Conn::shutdown_write`], [`Conn::disconnect_from_host`]) or the idle
    /// timeout does.
    fn read_finished(&mut self, conn: &mut Conn<'_, C, Self>) {
        let _ = conn;
    }

    /// A STARTTLS upgrade ([`Conn::start_server_encryption`],
    /// [`Conn::start_client_encryption`], [`StartTls`](crate::StartTls)) finished its handshake
    /// (Qt's `encrypted`): from here on every byte either way is encrypted, and frames are
    /// decoded again.
    fn encrypted(&mut self, tls: &TlsInfo, conn: &mut Conn<'_, C, Self>) {
        let _ = (tls, conn);
    }

    /// `bytes` more bytes left the write buffer for the socket (Qt's `bytesWritten`).
    fn bytes_written(&mut self, bytes: usize, conn: &mut Conn<'_, C, Self>) {
        let _ = (bytes, conn);
    }

    /// The write buffer reached its high watermark, or the session stopped reading to send an
    /// answer that took the buffer past the mark (a large answer can be part sent, with less
    /// than the mark left): writes other than answers are refused while the buffer is at or
    /// above the mark, and [`write_buffer_drained`](Self::write_buffer_drained) follows once
    /// it is back at the low watermark. Outside writes alone never stop reading: a pump that
    /// stops writing here still hears its peer.
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
    pub(super) core: &'a mut Core<C>,
    pub(super) ctx: &'a mut Context<Session<C, H>>,
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
    pub fn peer_addr(&self) -> &Address {
        &self.core.meta.peer_addr
    }

    /// The local address.
    pub fn local_addr(&self) -> &Address {
        &self.core.meta.local_addr
    }

    /// What the session runs over.
    pub fn transport(&self) -> TransportKind {
        self.core.meta.transport()
    }

    /// The descriptor of the plaintext Unix socket this session runs over, for what only the
    /// socket itself can carry: passing descriptors to the peer (`SCM_RIGHTS`, as the admin
    /// socket's `handover` does). `None` over TCP, TLS, or once the socket is gone.
    ///
    /// Bytes sent on it go around the write buffer: flush first, and send only between
    /// replies, so the peer reads them in order.
    pub fn unix_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match &self.core.stream {
            Some(crate::transport::Stream::Plain(crate::transport::Plain::Unix(socket))) => {
                Some(socket.as_fd())
            }
            _ => None,
        }
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
    /// [`SessionError::WriteBufferFull`] at or above the high watermark (twice it for an
    /// answer written in [`ready_read`](SessionHandler::ready_read)),
    /// [`SessionError::Closing`] once the write side is shut, [`SessionError::Encode`] when the
    /// codec refuses the item.
    pub fn write<T>(&mut self, item: T) -> Result<(), SessionError>
    where
        C: Encoder<T>,
        <C as Encoder<T>>::Error: std::error::Error + Send + Sync + 'static,
    {
        self.core.write(item)
    }

    /// Queues `bytes` to be sent exactly as they are, past the codec, without copying them
    /// into the write buffer: on a plain socket the kernel takes them straight from their own
    /// memory (TLS encrypts from it into its records). This is how a handler hands back bytes
    /// it was given (an echo, a proxy with [`Raw`](switchboard_codec::Raw)) at no cost but the
    /// write: [`write`](Self::write) would copy them. Written into an empty buffer, the bytes
    /// are held by reference, and the memory they share stays allocated until they are out: a
    /// chunk split from the read buffer goes back to it if it is written before the next read.
    /// If the socket stops taking bytes first, a held piece under 16 KiB that shares its
    /// memory is copied after all, so a slow peer does not keep a read buffer allocated for
    /// a few bytes. Behind other unwritten bytes they are copied, so the order of writes
    /// always holds.
    ///
    /// Taken, refused and counted as `write` is (one frame out). With a framing codec the
    /// bytes must already be a whole encoded frame: nothing checks or frames them.
    ///
    /// # Errors
    ///
    /// [`SessionError::WriteBufferFull`] at or above the high watermark (twice it for an
    /// answer written in [`ready_read`](SessionHandler::ready_read)),
    /// [`SessionError::Closing`] once the write side is shut.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use switchboard::{Conn, SessionHandler};
    /// use switchboard_codec::Raw;
    ///
    /// /// Sends every chunk back from the memory it was read into.
    /// struct Echo;
    ///
    /// impl SessionHandler<Raw> for Echo {
    ///     fn ready_read(&mut self, chunk: Bytes, conn: &mut Conn<'_, Raw, Self>) {
    ///         if conn.write_bytes(chunk).is_err() {
    ///             conn.disconnect_from_host();
    ///         }
    ///     }
    /// }
    ///
    /// # #[allow(dead_code)]
    /// fn serve_echo() -> Result<(), switchboard::ListenError> {
    ///     let addr = "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap();
    ///     let _echo = switchboard::Listener::bind(addr).serve(Raw, || Echo)?;
    ///     Ok(())
    /// }
    /// ```
    pub fn write_bytes(&mut self, bytes: bytes::Bytes) -> Result<(), SessionError> {
        self.core.write_bytes(bytes)
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
        self.core.flags.has(Flags::READ_FINISHED)
    }

    /// Closes at once, discarding unsent data (Qt's `abort`).
    pub fn abort(&mut self) {
        self.core.set_reason(DisconnectReason::Aborted);
        self.core.state = State::Closed;
        self.ctx.stop();
    }

    /// Stops reading from the socket until [`resume_reading`](Self::resume_reading).
    pub fn pause_reading(&mut self) {
        self.core.set_user_paused(true);
    }

    /// Resumes reading after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&mut self) {
        self.core.set_user_paused(false);
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
