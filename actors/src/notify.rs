//! [`Notify`]: Qt's pull style of reading. `ReadyRead` only says that bytes wait; the owner takes
//! them with [`Read`], [`ReadAll`] or [`ReadLine`], so code ported from Qt keeps its shape.

use std::{
    fmt,
    task::{self, Poll, Waker},
};

use actix::{Addr, Context, Handler, Message, MessageResult, Recipient};
use bytes::{Bytes, BytesMut};
use switchboard_codec::Raw;

use crate::{Conn, DisconnectReason, Session, SessionHandler, SessionId, SessionInfo};

/// What a [`Notify`] session tells its owner.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum NotifyEvent {
    /// The session started; read from it through `session`.
    Connected {
        /// The session's snapshot at start.
        info: SessionInfo,
        /// The session's address: send it [`Read`], [`ReadAll`], [`ReadLine`],
        /// [`Write`](crate::Write)...
        session: Addr<Session<Raw, Notify>>,
    },
    /// New bytes wait in the read buffer (Qt's `readyRead`). Sent again only after the owner
    /// has read and more bytes arrived, so at most one is ever outstanding.
    ReadyRead {
        /// The session.
        id: SessionId,
        /// Bytes waiting (Qt's `bytesAvailable`).
        available: usize,
    },
    /// The session ended. Bytes still buffered are gone with it.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// The final snapshot.
        info: SessionInfo,
    },
}

/// A [`SessionHandler`] that keeps arriving bytes in a bounded read buffer (Qt's
/// `readBufferSize`, from [`SessionConfig::read_buffer_size`](crate::SessionConfig::read_buffer_size),
/// default 256 KiB) for its owner to take. While the buffer is full the session stops reading.
///
/// # Examples
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(session: actix::Addr<switchboard::Session<switchboard_codec::Raw, switchboard::Notify>>) {
/// use switchboard::{ReadAll, ReadLine};
/// let line = session.send(ReadLine { max: 1024 }).await.unwrap();
/// let rest = session.send(ReadAll).await.unwrap();
/// # let _ = (line, rest);
/// # }
/// ```
pub struct Notify {
    owner: Recipient<NotifyEvent>,
    buffer: BytesMut,
    limit: usize,
    /// A `ReadyRead` is out and no read has answered it yet.
    notified: bool,
    /// The session's driver, waiting for room in the buffer.
    waker: Option<Waker>,
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify")
            .field("available", &self.buffer.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl Notify {
    /// Reports to `owner`.
    pub fn new(owner: Recipient<NotifyEvent>) -> Self {
        Notify {
            owner,
            buffer: BytesMut::new(),
            limit: usize::MAX,
            notified: false,
            waker: None,
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.buffer.len());
        let taken = self.buffer.split_to(n).freeze();
        if self.buffer.is_empty() {
            // An idle session holds no buffer.
            self.buffer = BytesMut::new();
        }
        self.notified = false;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        taken
    }
}

impl SessionHandler<Raw> for Notify {
    fn connected(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        self.limit = conn.config().read_buffer_size;
        let info = conn.info();
        // One per session.
        self.owner.do_send(NotifyEvent::Connected {
            info,
            session: conn.address(),
        });
    }

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<()> {
        if self.buffer.len() < self.limit {
            Poll::Ready(())
        } else {
            self.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        self.buffer.extend_from_slice(&data);
        if !self.notified {
            self.notified = true;
            // At most one outstanding: bounded.
            self.owner.do_send(NotifyEvent::ReadyRead {
                id: conn.id(),
                available: self.buffer.len(),
            });
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        self.owner.do_send(NotifyEvent::Disconnected {
            reason: reason.clone(),
            info: info.clone(),
        });
    }
}

/// Takes up to `max` buffered bytes (Qt's `read(maxSize)`); empty when nothing waits.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Bytes")]
pub struct Read {
    /// The most bytes to take.
    pub max: usize,
}

impl Handler<Read> for Session<Raw, Notify> {
    type Result = MessageResult<Read>;
    fn handle(&mut self, msg: Read, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.handler_mut().take(msg.max))
    }
}

/// Takes every buffered byte (Qt's `readAll`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Bytes")]
pub struct ReadAll;

impl Handler<ReadAll> for Session<Raw, Notify> {
    type Result = MessageResult<ReadAll>;
    fn handle(&mut self, _: ReadAll, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.handler_mut().take(usize::MAX))
    }
}

/// Takes one line, newline included, or `max` bytes of a longer one (Qt's `readLine`);
/// `None` while no complete line (and fewer than `max` bytes) waits (Qt's `canReadLine`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<Bytes>")]
pub struct ReadLine {
    /// The most bytes to take.
    pub max: usize,
}

impl Handler<ReadLine> for Session<Raw, Notify> {
    type Result = Option<Bytes>;
    fn handle(&mut self, msg: ReadLine, _: &mut Context<Self>) -> Option<Bytes> {
        let notify = self.handler_mut();
        let window = notify.buffer.len().min(msg.max);
        match notify.buffer[..window].iter().position(|&b| b == b'\n') {
            Some(end) => Some(notify.take(end + 1)),
            None if window == msg.max && msg.max > 0 => Some(notify.take(msg.max)),
            None => None,
        }
    }
}

/// Bytes waiting in the read buffer (Qt's `bytesAvailable`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct BytesAvailable;

impl Handler<BytesAvailable> for Session<Raw, Notify> {
    type Result = usize;
    fn handle(&mut self, _: BytesAvailable, _: &mut Context<Self>) -> usize {
        self.handler_mut().buffer.len()
    }
}
