//! [`Forward`]: a session handler that sends every event to an actix [`Recipient`], for code
//! that wants its connection logic in an actor of its own.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{self, Poll},
};

use actix::{dev::SendError, Addr, Message, Recipient};
use futures::task::AtomicWaker;
use tokio::sync::mpsc;

use crate::{
    Conn, DisconnectReason, Session, SessionCodec, SessionHandler, SessionId, SessionInfo, TlsInfo,
};

/// A session event, as [`Forward`] sends it.
#[non_exhaustive]
pub enum SessionEvent<C: SessionCodec>
where
    C::Item: Send,
{
    /// The session started; `session` takes [`Write`](crate::Write) and the other messages.
    Connected {
        /// The session's snapshot at start.
        info: SessionInfo,
        /// The session's address.
        session: Addr<Session<C, Forward<C>>>,
    },
    /// A frame arrived (Qt's `readyRead`).
    ReadyRead {
        /// The session.
        id: SessionId,
        /// The decoded frame.
        frame: C::Item,
    },
    /// The peer has finished sending (Qt's `readChannelFinished`); every frame before its FIN
    /// was sent ahead of this. With
    /// [`SessionConfig::with_allow_half_close`](crate::SessionConfig::with_allow_half_close) the session
    /// stays open for the recipient's answer until it sends
    /// [`ShutdownWrite`](crate::ShutdownWrite) or [`DisconnectFromHost`](crate::DisconnectFromHost);
    /// otherwise it flushes and closes.
    ReadFinished {
        /// The session.
        id: SessionId,
    },
    /// A STARTTLS upgraded the session ([`StartTls`](crate::StartTls)); what follows is
    /// encrypted (Qt's `encrypted`).
    Encrypted {
        /// The session.
        id: SessionId,
        /// What TLS negotiated.
        tls: TlsInfo,
    },
    /// Bytes left the write buffer (Qt's `bytesWritten`); only with
    /// [`Forward::with_bytes_written`].
    BytesWritten {
        /// The session.
        id: SessionId,
        /// How many.
        bytes: usize,
    },
    /// The write buffer reached its high watermark, or an answer past it held the frames.
    WriteBufferFull {
        /// The session.
        id: SessionId,
    },
    /// The write buffer fell back to its low watermark.
    WriteBufferDrained {
        /// The session.
        id: SessionId,
    },
    /// The session ended; always the last event.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// The final snapshot.
        info: SessionInfo,
    },
}

impl<C: SessionCodec> fmt::Debug for SessionEvent<C>
where
    C::Item: Send,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEvent::Connected { info, .. } => write!(f, "Connected({})", info.id),
            SessionEvent::ReadyRead { id, .. } => write!(f, "ReadyRead({id})"),
            SessionEvent::ReadFinished { id } => write!(f, "ReadFinished({id})"),
            SessionEvent::Encrypted { id, tls } => write!(f, "Encrypted({id}, {})", tls.version),
            SessionEvent::BytesWritten { id, bytes } => write!(f, "BytesWritten({id}, {bytes})"),
            SessionEvent::WriteBufferFull { id } => write!(f, "WriteBufferFull({id})"),
            SessionEvent::WriteBufferDrained { id } => write!(f, "WriteBufferDrained({id})"),
            SessionEvent::Disconnected { reason, info } => {
                write!(f, "Disconnected({}, {reason})", info.id)
            }
        }
    }
}

impl<C: SessionCodec> Message for SessionEvent<C>
where
    C::Item: Send,
{
    type Result = ();
}

/// Events queued for the recipient but not yet taken by it.
struct Backlog {
    queued: AtomicUsize,
    /// The session's driver, waiting for the backlog to shrink.
    waker: AtomicWaker,
}

/// A [`SessionHandler`] that forwards every event to a [`Recipient`], in order.
///
/// At most `max_in_flight` frames (default 16) wait for the recipient at once; beyond that the
/// session stops reading and TCP pushes back on the peer, so a lagging recipient never grows a
/// mailbox without bound. `Disconnected` always arrives, last.
///
/// The session keeps reading while its write buffer is full (the recipient's writes are not
/// answers the session could hold frames for): a recipient that answers every frame should
/// send [`PauseReading`](crate::PauseReading) on `WriteBufferFull` and
/// [`ResumeReading`](crate::ResumeReading) on `WriteBufferDrained`, or retry refused writes
/// then.
///
/// # Examples
///
/// ```
/// use actix::{Actor, Context, Handler};
/// use switchboard::{Forward, SessionEvent};
/// use switchboard_codec::Lines;
///
/// struct Chat;
/// impl Actor for Chat {
///     type Context = Context<Self>;
/// }
/// impl Handler<SessionEvent<Lines>> for Chat {
///     type Result = ();
///     fn handle(&mut self, event: SessionEvent<Lines>, _: &mut Context<Self>) {
///         if let SessionEvent::ReadyRead { frame, .. } = event {
///             println!("got {frame}");
///         }
///     }
/// }
///
/// # actix_rt::System::new().block_on(async {
/// let chat = Chat.start();
/// let handler: Forward<Lines> = Forward::new(chat.recipient());
/// # let _ = handler;
/// # });
/// ```
pub struct Forward<C: SessionCodec>
where
    C::Item: Send,
{
    recipient: Recipient<SessionEvent<C>>,
    queue: Option<mpsc::UnboundedSender<SessionEvent<C>>>,
    backlog: Arc<Backlog>,
    max_in_flight: usize,
    bytes_written: bool,
    id: Option<SessionId>,
}

impl<C: SessionCodec> fmt::Debug for Forward<C>
where
    C::Item: Send,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("in_flight", &self.backlog.queued.load(Ordering::Relaxed))
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl<C: SessionCodec> Forward<C>
where
    C::Item: Send,
{
    /// Forwards to `recipient`, at most 16 frames in flight.
    pub fn new(recipient: Recipient<SessionEvent<C>>) -> Self {
        Forward {
            recipient,
            queue: None,
            backlog: Arc::new(Backlog {
                queued: AtomicUsize::new(0),
                waker: AtomicWaker::new(),
            }),
            max_in_flight: 16,
            bytes_written: false,
            id: None,
        }
    }

    /// Sets how many frames may wait for the recipient before reading pauses (at least 1).
    pub fn max_in_flight(mut self, frames: usize) -> Self {
        self.max_in_flight = frames.max(1);
        self
    }

    /// Also forwards [`SessionEvent::BytesWritten`] (off by default: one more message per
    /// flush).
    pub fn with_bytes_written(mut self) -> Self {
        self.bytes_written = true;
        self
    }

    fn push(&self, event: SessionEvent<C>) {
        if let Some(queue) = &self.queue {
            self.backlog.queued.fetch_add(1, Ordering::AcqRel);
            // Fails only when the pump is gone, i.e. the worker is shutting down.
            let _ = queue.send(event);
        }
    }
}

impl<C: SessionCodec> SessionHandler<C> for Forward<C>
where
    C::Item: Send,
{
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<SessionEvent<C>>();
        let recipient = self.recipient.clone();
        let backlog = self.backlog.clone();
        // One pump per session, on the session's thread: it keeps events in order and waits
        // for room in the recipient's mailbox instead of overfilling it.
        actix_rt::spawn(async move {
            while let Some(event) = rx.recv().await {
                match recipient.try_send(event) {
                    Ok(()) => {}
                    Err(SendError::Full(event)) => {
                        let _ = recipient.send(event).await;
                    }
                    Err(SendError::Closed(_)) => {}
                }
                backlog.queued.fetch_sub(1, Ordering::AcqRel);
                backlog.waker.wake();
            }
        });
        self.queue = Some(tx);
        self.id = Some(conn.id());
        let info = conn.info();
        let session = conn.address();
        self.push(SessionEvent::Connected { info, session });
    }

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<()> {
        if self.backlog.queued.load(Ordering::Acquire) < self.max_in_flight {
            return Poll::Ready(());
        }
        self.backlog.waker.register(cx.waker());
        if self.backlog.queued.load(Ordering::Acquire) < self.max_in_flight {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn ready_read(&mut self, frame: C::Item, conn: &mut Conn<'_, C, Self>) {
        self.push(SessionEvent::ReadyRead {
            id: conn.id(),
            frame,
        });
    }

    fn read_finished(&mut self, conn: &mut Conn<'_, C, Self>) {
        self.push(SessionEvent::ReadFinished { id: conn.id() });
    }

    fn encrypted(&mut self, tls: &TlsInfo, conn: &mut Conn<'_, C, Self>) {
        self.push(SessionEvent::Encrypted {
            id: conn.id(),
            tls: tls.clone(),
        });
    }

    fn bytes_written(&mut self, bytes: usize, conn: &mut Conn<'_, C, Self>) {
        if self.bytes_written {
            self.push(SessionEvent::BytesWritten {
                id: conn.id(),
                bytes,
            });
        }
    }

    fn write_buffer_full(&mut self, conn: &mut Conn<'_, C, Self>) {
        self.push(SessionEvent::WriteBufferFull { id: conn.id() });
    }

    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, C, Self>) {
        self.push(SessionEvent::WriteBufferDrained { id: conn.id() });
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let event = SessionEvent::Disconnected {
            reason: reason.clone(),
            info: info.clone(),
        };
        if self.queue.is_some() && self.backlog.queued.load(Ordering::Acquire) > 0 {
            // Behind events still queued: the pump keeps the order.
            self.push(event);
        } else {
            // Nothing ahead of it (or the session never started): send it now, so it arrives
            // even if the worker thread, and the pump with it, is being torn down. One per
            // session, so skipping the capacity check stays bounded.
            self.recipient.do_send(event);
        }
        // Closing the queue lets the pump finish once it has delivered everything.
        self.queue = None;
    }
}
