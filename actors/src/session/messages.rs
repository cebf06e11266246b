use super::{
    arm_close_timeout, CloseMode, DisconnectReason, Flags, Session, SessionCodec, SessionHandler,
    SessionInfo,
};

use actix::{Context, Handler, Message, ResponseFuture};
use tokio::sync::oneshot;
use tokio_util::codec::Encoder;

use crate::SessionError;

/// Sends `item` (Qt's `write`): encoded into the write buffer at once, written as the socket
/// allows. Bytes to send as they are go uncopied with [`WriteBytes`].
///
/// # Errors
///
/// As [`Conn::write`](crate::Conn::write): refused with [`SessionError::WriteBufferFull`] at or above the high
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
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Write<T>(pub T);

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

/// Sends `bytes` exactly as they are, past the codec and without copying them into the write
/// buffer, as [`Conn::write_bytes`](crate::Conn::write_bytes) does (where it says when a copy
/// is made after all): how a proxy hands a chunk read on one session to another.
///
/// # Errors
///
/// As `Conn::write_bytes`: [`SessionError::WriteBufferFull`] at or above the high watermark,
/// [`SessionError::Closing`] once the write side is shut.
///
/// # Examples
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo<H: switchboard::SessionHandler<switchboard_codec::Raw>>(
/// #     session: actix::Addr<switchboard::Session<switchboard_codec::Raw, H>>) {
/// use bytes::Bytes;
/// use switchboard::WriteBytes;
/// session.send(WriteBytes(Bytes::from_static(b"hello"))).await.unwrap().unwrap();
/// # }
/// ```
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct WriteBytes(pub bytes::Bytes);

impl<C: SessionCodec, H: SessionHandler<C>> Handler<WriteBytes> for Session<C, H> {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, msg: WriteBytes, _ctx: &mut Context<Self>) -> Self::Result {
        self.core.write_bytes(msg.0)
    }
}

/// Resolves once everything written so far has been handed to the kernel, through any layer
/// that buffers on the way (TLS) (Qt's `flush`, or
/// `waitForBytesWritten` without blocking a thread).
///
/// # Errors
///
/// [`SessionError::Gone`] if the session ends first.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Flush;

impl<C: SessionCodec, H: SessionHandler<C>> Handler<Flush> for Session<C, H> {
    type Result = ResponseFuture<Result<(), SessionError>>;

    fn handle(&mut self, _: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        if self.core.write_buf.is_empty() && !self.core.flags.has(Flags::TRANSPORT_UNFLUSHED) {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.core
            .rare()
            .flush_waiters
            .get_or_insert_with(Box::default)
            .push(tx);
        Box::pin(async move { rx.await.map_err(|_| SessionError::Gone) })
    }
}

/// Closes gracefully (Qt's `disconnectFromHost`): stops reading, answers frames already read,
/// flushes, shuts the write side, then waits (up to the close timeout) for the peer's FIN.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct DisconnectFromHost;

impl<C: SessionCodec, H: SessionHandler<C>> Handler<DisconnectFromHost> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: DisconnectFromHost, ctx: &mut Context<Self>) {
        self.close(DisconnectReason::Closed, CloseMode::Graceful, ctx);
    }
}

/// Closes at once, discarding unsent data (Qt's `abort`). Answered even when the write buffer
/// is full.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct Abort;

impl<C: SessionCodec, H: SessionHandler<C>> Handler<Abort> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        self.close(DisconnectReason::Aborted, CloseMode::Abort, ctx);
    }
}

/// Shuts only this side's write half once everything written so far is flushed (a TCP
/// half-close), as [`Conn::shutdown_write`](crate::Conn::shutdown_write): the session reads on and ends once the peer has
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
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "SessionInfo")]
pub struct GetInfo;

impl<C: SessionCodec, H: SessionHandler<C>> Handler<GetInfo> for Session<C, H> {
    type Result = actix::MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _ctx: &mut Context<Self>) -> Self::Result {
        self.core.publish();
        actix::MessageResult(self.core.meta.info())
    }
}

/// Stops reading from the socket (Akka's `SuspendReading`); TCP then pushes back on the peer.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct PauseReading;

impl<C: SessionCodec, H: SessionHandler<C>> Handler<PauseReading> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _ctx: &mut Context<Self>) {
        self.core.set_user_paused(true);
    }
}

/// Resumes reading after [`PauseReading`] (Akka's `ResumeReading`).
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct ResumeReading;

impl<C: SessionCodec, H: SessionHandler<C>> Handler<ResumeReading> for Session<C, H> {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, _ctx: &mut Context<Self>) {
        self.core.set_user_paused(false);
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Session<C, H> {
    pub(super) fn close(
        &mut self,
        reason: DisconnectReason,
        mode: CloseMode,
        ctx: &mut Context<Self>,
    ) {
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

/// The closure an [`Invoke`] carries.
type InvokeFn<C, H> = Box<dyn for<'a> FnOnce(&mut H, &mut crate::Conn<'a, C, H>) + Send>;

/// Runs a closure on the session's own thread with its handler and a [`Conn`](crate::Conn)
/// (Qt's `QMetaObject::invokeMethod` on the socket's thread): how work done elsewhere — a
/// blocking thread, another actor, a timer — hands its result back to the handler, which can
/// then write, pause, resume or close as in any callback. Resolves to `true` when the closure
/// ran, `false` when the session had already ended (the closure is dropped unrun). A panic in
/// the closure ends this session only, as in a callback.
///
/// # Examples
///
/// ```no_run
/// use switchboard::{Conn, Invoke, SessionHandler};
/// use switchboard_codec::Lines;
///
/// struct Job { done: u32 }
/// impl SessionHandler<Lines> for Job {
///     fn ready_read(&mut self, _: String, _: &mut Conn<'_, Lines, Self>) {}
/// }
/// # #[allow(dead_code)]
/// # async fn demo(session: actix::Addr<switchboard::Session<Lines, Job>>) {
/// // From any thread: the result of some work, written by the session itself.
/// let ran = session
///     .send(Invoke::new(|job: &mut Job, conn: &mut Conn<'_, Lines, Job>| {
///         job.done += 1;
///         let _ = conn.write(format!("job {} done", job.done));
///     }))
///     .await
///     .unwrap();
/// assert!(ran);
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Invoke<C: SessionCodec, H: SessionHandler<C>>(InvokeFn<C, H>);

impl<C: SessionCodec, H: SessionHandler<C>> Invoke<C, H> {
    /// Wraps `f`, which runs with the session's handler and a `Conn` to it.
    pub fn new(
        f: impl for<'a> FnOnce(&mut H, &mut crate::Conn<'a, C, H>) + Send + 'static,
    ) -> Self {
        Invoke(Box::new(f))
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> std::fmt::Debug for Invoke<C, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoke").finish_non_exhaustive()
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<Invoke<C, H>> for Session<C, H> {
    type Result = bool;

    fn handle(&mut self, msg: Invoke<C, H>, ctx: &mut Context<Self>) -> bool {
        if self.core.state == super::State::Closed {
            return false;
        }
        self.in_span(|session| session.call(ctx, msg.0))
    }
}
