//! [`Notify`]: Qt's pull style of reading. `ReadyRead` only says that bytes wait; the owner takes
//! them through the [`NotifyHandle`] every event carries (or with the [`Read`], [`ReadAll`] and
//! [`ReadLine`] messages), so code ported from Qt keeps its shape.
//!
//! The read buffer is shared between the session and its handle, not kept inside the actor: as
//! in Qt, where `readAll()` still returns the buffered bytes after `disconnected()`, what the
//! peer sent before it closed stays readable through the handle after the session has ended.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    task::{self, Poll, Waker},
};

use actix::{Addr, Context, Handler, Message, MessageResult, Recipient};
use bytes::{Bytes, BytesMut};
use switchboard_codec::Raw;

use crate::{
    Conn, DisconnectReason, Session, SessionError, SessionHandler, SessionId, SessionInfo, TlsInfo,
    WriteBytes,
};

/// What a [`Notify`] session tells its owner. Every event carries the session's
/// [`NotifyHandle`], so the owner needs no map of its own from ids to sessions.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum NotifyEvent {
    /// The session started.
    Connected {
        /// The session's snapshot at start.
        info: SessionInfo,
        /// Reads, writes and closes the session.
        handle: NotifyHandle,
    },
    /// New bytes wait in the read buffer (Qt's `readyRead`). Sent again only after the owner
    /// has read (any read through the handle or a message, even one that found no complete
    /// line) and more bytes arrived, so at most one is ever outstanding.
    ReadyRead {
        /// The session.
        handle: NotifyHandle,
        /// Bytes waiting (Qt's `bytesAvailable`).
        available: usize,
    },
    /// The peer has finished sending (Qt's `readChannelFinished`): no more bytes will come.
    /// Bytes still buffered stay readable.
    ReadFinished {
        /// The session.
        handle: NotifyHandle,
    },
    /// A STARTTLS upgraded the session ([`StartTls`](crate::StartTls), Qt's `encrypted`):
    /// bytes read from here on were encrypted on the wire. Bytes the peer sent before its
    /// handshake were read as plaintext, so the peer must wait for the answer to its STARTTLS
    /// command before it starts the handshake, as STARTTLS protocols require.
    Encrypted {
        /// The session.
        handle: NotifyHandle,
        /// What TLS negotiated.
        tls: TlsInfo,
    },
    /// The session ended (Qt's `disconnected`). Bytes still buffered stay readable through
    /// `handle` for as long as the owner keeps it.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// The final snapshot.
        info: SessionInfo,
        /// The session's read buffer, still readable.
        handle: NotifyHandle,
    },
}

/// A [`Notify`] session as its owner holds it (Qt's `QTcpSocket` pointer): reads from the
/// shared read buffer without a message round trip, and reaches the session for writes and
/// closes. Cheap to clone. Reads keep working after the session ended.
#[derive(Clone)]
pub struct NotifyHandle {
    id: SessionId,
    shared: Arc<Shared>,
    session: Addr<Session<Raw, Notify>>,
}

impl fmt::Debug for NotifyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyHandle")
            .field("id", &self.id)
            .field("available", &self.bytes_available())
            .finish()
    }
}

impl NotifyHandle {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's address, for [`Write`](crate::Write), [`Flush`](crate::Flush),
    /// [`DisconnectFromHost`](crate::DisconnectFromHost), [`GetInfo`](crate::GetInfo)...
    pub fn session(&self) -> &Addr<Session<Raw, Notify>> {
        &self.session
    }

    /// Bytes waiting (Qt's `bytesAvailable`).
    pub fn bytes_available(&self) -> usize {
        self.shared.lock().buffer.len()
    }

    /// Takes up to `max` buffered bytes (Qt's `read(maxSize)`); empty when nothing waits.
    pub fn read(&self, max: usize) -> Bytes {
        self.shared.take(|buffer| max.min(buffer.len()))
    }

    /// Takes every buffered byte (Qt's `readAll`).
    pub fn read_all(&self) -> Bytes {
        self.shared.take(|buffer| buffer.len())
    }

    /// Takes one line, newline included, or `max` bytes of a longer one (Qt's `readLine`);
    /// `None` while no complete line (and fewer than `max` bytes) waits, unless the peer has
    /// finished sending: then the last, unterminated line comes whole.
    pub fn read_line(&self, max: usize) -> Option<Bytes> {
        let taken = self
            .shared
            .take(|buffer| line_end(buffer, max).unwrap_or(0));
        (!taken.is_empty()).then_some(taken)
    }

    /// Whether [`read_line`](Self::read_line) would return a line (Qt's `canReadLine`).
    pub fn can_read_line(&self, max: usize) -> bool {
        line_end(&self.shared.lock().buffer, max).is_some()
    }

    /// Whether the peer has finished sending and every byte has been read (Qt's `atEnd`).
    pub fn at_end(&self) -> bool {
        let state = self.shared.lock();
        state.buffer.finished && state.buffer.bytes.is_empty()
    }

    /// Sends `data` (Qt's `write`), without copying it into the write buffer
    /// ([`WriteBytes`]).
    ///
    /// # Errors
    ///
    /// As [`WriteBytes`]; [`SessionError::Gone`] once the session has ended.
    pub async fn write(&self, data: Bytes) -> Result<(), SessionError> {
        self.session.send(WriteBytes(data)).await?
    }
}

/// Where the line to take ends: after the first newline within `max` bytes, at `max` for a
/// longer line, or at the end of the last line once the peer finished sending.
fn line_end(buffer: &SharedBuffer, max: usize) -> Option<usize> {
    let window = buffer.len().min(max);
    match buffer.bytes[..window].iter().position(|&b| b == b'\n') {
        Some(end) => Some(end + 1),
        None if window == max && max > 0 => Some(max),
        None if buffer.finished && window > 0 => Some(window),
        None => None,
    }
}

/// The read buffer, and whether the peer is done.
struct SharedBuffer {
    bytes: BytesMut,
    /// The peer has finished sending: nothing more will be appended.
    finished: bool,
}

impl SharedBuffer {
    fn len(&self) -> usize {
        self.bytes.len()
    }
}

struct State {
    buffer: SharedBuffer,
    /// A `ReadyRead` is out and no read has answered it yet.
    notified: bool,
    /// The session's driver, waiting for room in the buffer.
    waker: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates under this lock are a copy or a flag: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `amount(buffer)` bytes from the front, answers the outstanding `ReadyRead` and
    /// wakes the session if it waited for room.
    fn take(&self, amount: impl FnOnce(&SharedBuffer) -> usize) -> Bytes {
        let mut state = self.lock();
        let n = amount(&state.buffer);
        let taken = state.buffer.bytes.split_to(n).freeze();
        if state.buffer.bytes.is_empty() {
            // An idle session holds no buffer.
            state.buffer.bytes = BytesMut::new();
        }
        // Any read answers the `ReadyRead`, even one that took nothing (a `ReadLine` that found
        // no complete line): the next bytes to arrive must announce themselves again.
        state.notified = false;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        taken
    }
}

/// A [`SessionHandler`] that keeps arriving bytes in a bounded read buffer (Qt's
/// `readBufferSize`, from [`SessionConfig::with_read_buffer_size`](crate::SessionConfig::with_read_buffer_size),
/// default 256 KiB) for its owner to take through the [`NotifyHandle`] its events carry. While
/// the buffer is full the session stops reading.
///
/// The owner is told `Connected`, then `ReadyRead` whenever new bytes wait and the previous one
/// was answered by a read, `ReadFinished` when the peer has finished sending, and
/// `Disconnected` last. With [`SessionConfig::with_allow_half_close`](crate::SessionConfig::with_allow_half_close)
/// the owner can still answer after `ReadFinished`; without it the session flushes and closes.
///
/// # Examples
///
/// ```
/// use actix::{Actor, Context, Handler};
/// use switchboard::{Notify, NotifyEvent};
///
/// /// Answers every line with its length, Qt style.
/// struct Owner;
/// impl Actor for Owner {
///     type Context = Context<Self>;
/// }
/// impl Handler<NotifyEvent> for Owner {
///     type Result = ();
///     fn handle(&mut self, event: NotifyEvent, _: &mut Context<Self>) {
///         if let NotifyEvent::ReadyRead { handle, .. } = event {
///             while let Some(line) = handle.read_line(1024) {
///                 let handle = handle.clone();
///                 actix::spawn(async move {
///                     let _ = handle.write(format!("{}\n", line.len()).into()).await;
///                 });
///             }
///         }
///     }
/// }
///
/// # actix_rt::System::new().block_on(async {
/// let handler = Notify::new(Owner.start().recipient());
/// # let _ = handler;
/// # });
/// ```
pub struct Notify {
    owner: Recipient<NotifyEvent>,
    shared: Arc<Shared>,
    limit: usize,
    handle: Option<NotifyHandle>,
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify")
            .field("available", &self.shared.lock().buffer.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl Notify {
    /// Reports to `owner`.
    pub fn new(owner: Recipient<NotifyEvent>) -> Self {
        Notify {
            owner,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    buffer: SharedBuffer {
                        bytes: BytesMut::new(),
                        finished: false,
                    },
                    notified: false,
                    waker: None,
                }),
            }),
            limit: usize::MAX,
            handle: None,
        }
    }

    fn handle(&self) -> Option<NotifyHandle> {
        self.handle.clone()
    }
}

impl SessionHandler<Raw> for Notify {
    fn connected(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        self.limit = conn.config().read_buffer_size;
        let handle = NotifyHandle {
            id: conn.id(),
            shared: self.shared.clone(),
            session: conn.address(),
        };
        self.handle = Some(handle.clone());
        let info = conn.info();
        // One per session.
        self.owner.do_send(NotifyEvent::Connected { info, handle });
    }

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.buffer.len() < self.limit {
            Poll::Ready(())
        } else {
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn ready_read(&mut self, data: Bytes, _: &mut Conn<'_, Raw, Self>) {
        let available = {
            let mut state = self.shared.lock();
            state.buffer.bytes.extend_from_slice(&data);
            if state.notified {
                return;
            }
            state.notified = true;
            state.buffer.len()
        };
        if let Some(handle) = self.handle() {
            // At most one outstanding: bounded.
            self.owner
                .do_send(NotifyEvent::ReadyRead { handle, available });
        }
    }

    fn encrypted(&mut self, tls: &TlsInfo, _: &mut Conn<'_, Raw, Self>) {
        if let Some(handle) = self.handle() {
            self.owner.do_send(NotifyEvent::Encrypted {
                handle,
                tls: tls.clone(),
            });
        }
    }

    fn read_finished(&mut self, _: &mut Conn<'_, Raw, Self>) {
        {
            let mut state = self.shared.lock();
            state.buffer.finished = true;
        }
        if let Some(handle) = self.handle() {
            // One per session.
            self.owner.do_send(NotifyEvent::ReadFinished { handle });
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        if let Some(handle) = self.handle.take() {
            // One per session; the handle keeps the buffer readable.
            self.owner.do_send(NotifyEvent::Disconnected {
                reason: reason.clone(),
                info: info.clone(),
                handle,
            });
        }
    }
}

/// Takes up to `max` buffered bytes (Qt's `read(maxSize)`); empty when nothing waits. As
/// [`NotifyHandle::read`], through the session's mailbox.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Bytes")]
pub struct Read {
    /// The most bytes to take.
    pub max: usize,
}

impl Handler<Read> for Session<Raw, Notify> {
    type Result = MessageResult<Read>;
    fn handle(&mut self, msg: Read, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.handler_mut()
                .shared
                .take(|buffer| msg.max.min(buffer.len())),
        )
    }
}

/// Takes every buffered byte (Qt's `readAll`). As [`NotifyHandle::read_all`], through the
/// session's mailbox.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Bytes")]
pub struct ReadAll;

impl Handler<ReadAll> for Session<Raw, Notify> {
    type Result = MessageResult<ReadAll>;
    fn handle(&mut self, _: ReadAll, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.handler_mut().shared.take(|buffer| buffer.len()))
    }
}

/// Takes one line, newline included, or `max` bytes of a longer one (Qt's `readLine`);
/// `None` while no complete line (and fewer than `max` bytes) waits (Qt's `canReadLine`). As
/// [`NotifyHandle::read_line`], through the session's mailbox.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<Bytes>")]
pub struct ReadLine {
    /// The most bytes to take.
    pub max: usize,
}

impl Handler<ReadLine> for Session<Raw, Notify> {
    type Result = Option<Bytes>;
    fn handle(&mut self, msg: ReadLine, _: &mut Context<Self>) -> Option<Bytes> {
        let taken = self
            .handler_mut()
            .shared
            .take(|buffer| line_end(buffer, msg.max).unwrap_or(0));
        (!taken.is_empty()).then_some(taken)
    }
}

/// Bytes waiting in the read buffer (Qt's `bytesAvailable`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct BytesAvailable;

impl Handler<BytesAvailable> for Session<Raw, Notify> {
    type Result = usize;
    fn handle(&mut self, _: BytesAvailable, _: &mut Context<Self>) -> usize {
        self.handler_mut().shared.lock().buffer.len()
    }
}
