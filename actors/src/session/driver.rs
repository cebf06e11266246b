use super::{
    panic_message, Conn, DisconnectReason, Flags, Rare, Session, SessionCodec, SessionHandler,
    State, WriteSide,
};
use crate::{transport::Stream, TransportKind};
use std::{
    io::{self, IoSlice},
    marker::PhantomData,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{self, Poll},
};
use tokio::io::AsyncRead;

use actix::{fut::ActorFuture, ActorContext, Context};
use tokio::io::AsyncWrite;

impl<C: SessionCodec, H: SessionHandler<C>> Session<C, H> {
    /// The handler, for message handlers that reach into it (such as [`Notify`](crate::Notify)'s reads).
    pub(crate) fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Runs `f` inside the session's span. The span is moved out for the call (no reference
    /// count is touched) and put back after.
    pub(super) fn in_span<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let Some(span) = self.core.span.take() else {
            return f(self);
        };
        let result = {
            let _entered = span.enter();
            f(self)
        };
        self.core.span = Some(span);
        result
    }

    /// Runs a handler callback; a panic ends this session only.
    pub(super) fn call(
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
    pub(super) fn fail(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.core.set_reason(reason);
        self.core.state = State::Closed;
        ctx.stop();
    }

    /// What a socket error ends the session with. Over TLS anything but a reset is a TLS
    /// failure (a bad record, a connection dropped mid-record without close_notify).
    pub(super) fn io_failure(error: io::Error, transport: TransportKind) -> DisconnectReason {
        match error.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => DisconnectReason::Reset,
            _ if transport.is_tls() => DisconnectReason::Tls(Arc::new(error)),
            _ => DisconnectReason::Io(Arc::new(error)),
        }
    }

    /// Writes what the socket takes. `Err` ends the session.
    pub(super) fn flush_writes(
        &mut self,
        ctx: &mut Context<Self>,
        cx: &mut task::Context<'_>,
    ) -> Result<(), DisconnectReason> {
        if self.core.stream.is_none() {
            return Ok(());
        }
        self.core.flags.set(Flags::WRITE_BLOCKED, false);
        if self.core.write_side_settled() {
            // The driver calls this at every step, most often with nothing written since.
            return Ok(());
        }
        let mut written = 0;
        // During a STARTTLS switch only what was written before it goes out (in plaintext);
        // the rest waits for the TLS stream.
        // No publish before writing: the byte and frame counters are live in the record, so a
        // peer that has its reply already sees what was read and decoded before it.
        let mut sendable = match self.core.upgrade() {
            None => self.core.write_buf.len(),
            Some(upgrade) => upgrade.plaintext,
        };
        let Some(stream) = self.core.stream.as_mut() else {
            return Ok(());
        };
        while sendable > 0 {
            let wrote = match self.core.write_buf.chunks(sendable) {
                [only, []] | [[], only] => Pin::new(&mut *stream).poll_write(cx, only),
                // Held bytes and encoded ones behind them: one vectored write for both.
                [held, encoded] => Pin::new(&mut *stream)
                    .poll_write_vectored(cx, &[IoSlice::new(held), IoSlice::new(encoded)]),
            };
            match wrote {
                Poll::Ready(Ok(0)) => {
                    return Err(Self::io_failure(
                        io::ErrorKind::WriteZero.into(),
                        self.core.meta.transport(),
                    ));
                }
                Poll::Ready(Ok(n)) => {
                    self.core.write_buf.consume(n);
                    written += n;
                    sendable -= n;
                }
                Poll::Ready(Err(e)) => return Err(Self::io_failure(e, self.core.meta.transport())),
                Poll::Pending => {
                    self.core.flags.set(Flags::WRITE_BLOCKED, true);
                    // Until the peer reads, a small held piece must not keep a read buffer.
                    self.core.write_buf.copy_small_held();
                    break;
                }
            }
        }
        if let Some(upgrade) = Rare::upgrade_in(&mut self.core.rare) {
            upgrade.plaintext = sendable;
        }
        if written > 0 {
            self.core.flags.set(Flags::TRANSPORT_UNFLUSHED, true);
            crate::spin::note_activity();
        }
        // A transport may take bytes and keep some of them (TLS holds the records a full
        // socket did not take): with nothing more for it to write, only a flush sends them,
        // so flush until it says done. Pending registers for writability like a full socket.
        if sendable == 0 && self.core.flags.has(Flags::TRANSPORT_UNFLUSHED) {
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.core.flags.set(Flags::TRANSPORT_UNFLUSHED, false),
                Poll::Ready(Err(e)) => return Err(Self::io_failure(e, self.core.meta.transport())),
                Poll::Pending => self.core.flags.set(Flags::WRITE_BLOCKED, true),
            }
        }
        if written > 0 {
            self.core.meta.bytes_out.add(written as u64);
            self.core.flags.set(Flags::MOVED_SINCE_TICK, true);
        }
        if self.core.write_buf.is_empty() && !self.core.flags.has(Flags::TRANSPORT_UNFLUSHED) {
            // The buffer stays for the next reply; the timeout tick frees it once idle.
            if let Some(waiters) = self.core.rare.as_mut().and_then(|r| r.flush_waiters.take()) {
                for waiter in *waiters {
                    let _ = waiter.send(());
                }
            }
        }
        if written > 0 {
            self.call(ctx, |h, c| h.bytes_written(written, c));
        }
        self.track_watermarks(ctx);
        Ok(())
    }

    /// Reports the write buffer crossing its watermarks, once per crossing. "Full" starts at
    /// the high watermark itself, where `Core::write` starts refusing (`>=`), and a refused
    /// write counts as full even if a flush already took the buffer back under the mark:
    /// whoever was refused was told to wait for `write_buffer_drained`, so the pair must be
    /// reported. So do answers held while the socket takes no more: one answer larger than
    /// the mark can stop reading and leave less than the mark unsent, and a handler must hear
    /// why its frames stopped. "Drained" comes once the buffer is back at the low watermark,
    /// possibly right after "full"; held answers are released at the same point.
    pub(super) fn track_watermarks(&mut self, ctx: &mut Context<Self>) {
        if self.core.write_side_settled() {
            return;
        }
        let buffered = self.core.write_buf.len();
        let refused = self.core.flags.take(Flags::REFUSED);
        let held = self.core.flags.has(Flags::ANSWERS_HELD)
            && self.core.flags.has(Flags::WRITE_BLOCKED)
            && buffered > self.core.config.low_watermark;
        if !self.core.flags.has(Flags::ABOVE_HIGH)
            && (refused || held || buffered >= self.core.config.high_watermark)
        {
            self.core.flags.set(Flags::ABOVE_HIGH, true);
            self.core
                .meta
                .write_buffer_full
                .fetch_add(1, Ordering::Relaxed);
            self.call(ctx, |h, c| h.write_buffer_full(c));
        }
        if buffered <= self.core.config.low_watermark {
            self.core.flags.set(Flags::ANSWERS_HELD, false);
            if self.core.flags.has(Flags::ABOVE_HIGH) {
                self.core.flags.set(Flags::ABOVE_HIGH, false);
                self.call(ctx, |h, c| h.write_buffer_drained(c));
            }
        }
    }

    /// Runs a callback whose writes are answers (see `Core::write`); once an answer leaves the
    /// buffer at or above the high watermark, frames are held until it drains. False when the
    /// handler panicked.
    pub(super) fn answer(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut H, &mut Conn<'_, C, H>),
    ) -> bool {
        let written_before = self.core.meta.frames_out.get();
        self.core.flags.set(Flags::ANSWERING, true);
        let ok = self.call(ctx, f);
        self.core.flags.set(Flags::ANSWERING, false);
        if self.core.meta.frames_out.get() != written_before
            && self.core.write_buf.len() >= self.core.config.high_watermark
        {
            self.core.flags.set(Flags::ANSWERS_HELD, true);
        }
        ok
    }

    /// Hands buffered frames to the handler, at most `budget` of them, and says why it stopped.
    pub(super) fn deliver_frames(
        &mut self,
        ctx: &mut Context<Self>,
        cx: &mut task::Context<'_>,
        budget: &mut usize,
    ) -> Result<Delivery, DisconnectReason> {
        loop {
            if self.core.flags.has(Flags::NEEDS_DATA) {
                return Ok(Delivery::NeedsData);
            }
            if *budget == 0 {
                return Ok(Delivery::BudgetSpent);
            }
            if !self.core.may_deliver() || self.handler.poll_ready(cx).is_pending() {
                return Ok(Delivery::Stalled);
            }
            let decoded = if self.core.flags.has(Flags::EOF) {
                self.core.codec.decode_eof(&mut self.core.read_buf)
            } else {
                self.core.codec.decode(&mut self.core.read_buf)
            };
            match decoded {
                Ok(Some(frame)) => {
                    self.core.meta.frames_in.add(1);
                    self.core.flags.set(Flags::FRAMED_SINCE_TICK, true);
                    self.core
                        .flags
                        .set(Flags::UNFRAMED_BYTES, !self.core.read_buf.is_empty());
                    *budget -= 1;
                    if !self.answer(ctx, |h, c| h.ready_read(frame, c)) {
                        return Ok(Delivery::Stalled);
                    }
                }
                Ok(None) => self.core.flags.set(Flags::NEEDS_DATA, true),
                Err(e) => return Err(DisconnectReason::Codec(Arc::new(e))),
            }
        }
    }

    /// Reads from the socket once it is readable. Returns whether bytes arrived.
    pub(super) fn read_socket(
        &mut self,
        cx: &mut task::Context<'_>,
        read_this_turn: bool,
    ) -> Result<Poll<()>, DisconnectReason> {
        let core = &mut self.core;
        let Some(stream) = core.stream.as_mut() else {
            return Ok(Poll::Pending);
        };
        // A session in flow keeps its read buffer between reads (the timeout tick frees it once
        // a period passes without a read), so it reads straight away and the read says whether
        // bytes are there. One without a buffer allocates only once the socket is readable (a
        // fresh socket can report readable before any byte arrives); if that read finds nothing
        // and none came this turn (a spurious wake-up, or a fresh socket), it holds none after.
        let had_buffer = core.read_buf.capacity() > 0;
        loop {
            if !had_buffer {
                match stream.poll_read_ready(cx) {
                    Poll::Pending => return Ok(Poll::Pending),
                    Poll::Ready(Err(e)) => {
                        return Err(Self::io_failure(e, self.core.meta.transport()))
                    }
                    Poll::Ready(Ok(())) => {}
                }
            }
            let size = core.config.read_size(core.read_doublings);
            super::buffer::reuse_written(&mut core.read_buf, &mut core.write_buf, size);
            core.read_buf.reserve(size);
            // The room may be larger (a partial frame kept its allocation, which grows as a
            // `Vec` does): the read still asks `size`, so reads and a turn stay bounded.
            let mut room = bytes::BufMut::limit(&mut *core.read_buf, size);
            // `poll_read` (unlike `try_read_buf`) clears readiness after a short read, which
            // saves the `recvfrom` that would only say EAGAIN.
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut room) {
                Poll::Ready(Ok(0)) => {
                    core.flags.set(Flags::EOF, true);
                    core.flags.set(Flags::NEEDS_DATA, false);
                    return Ok(Poll::Ready(()));
                }
                Poll::Ready(Ok(n)) => {
                    core.adapt_read_size(n, size);
                    core.meta.bytes_in.add(n as u64);
                    core.flags.set(Flags::MOVED_SINCE_TICK, true);
                    core.flags.set(Flags::READ_SINCE_TICK, true);
                    core.flags.set(Flags::UNFRAMED_BYTES, true);
                    core.flags.set(Flags::NEEDS_DATA, false);
                    crate::spin::note_activity();
                    return Ok(Poll::Ready(()));
                }
                Poll::Pending => {
                    if !had_buffer && !read_this_turn && core.read_buf.is_empty() {
                        core.read_buf.release();
                    }
                    return Ok(Poll::Pending);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(Self::io_failure(e, self.core.meta.transport())),
            }
        }
    }

    /// Reads and throws away until the peer's FIN, so closing never resets data the peer has
    /// not read yet. Like reading, at most `reads_left` reads per turn: a peer that keeps
    /// sending while we linger must not hold the worker thread (its neighbours, the mailbox
    /// and the close timeout all wait for this turn to end).
    pub(super) fn linger(
        &mut self,
        cx: &mut task::Context<'_>,
        reads_left: &mut usize,
    ) -> Poll<()> {
        let Some(stream) = self.core.stream.as_mut() else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if *reads_left == 0 {
                yield_turn(cx);
                return Poll::Pending;
            }
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                // Not `bytes_in`: these bytes were never accepted (nor answered).
                Poll::Ready(Ok(())) => {
                    self.core
                        .meta
                        .bytes_discarded
                        .add(buf.filled().len() as u64);
                    self.core.flags.set(Flags::MOVED_SINCE_TICK, true);
                    *reads_left -= 1;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
            }
        }
    }

    /// One turn of the driver: write, hand frames to the handler, read, until the socket has
    /// nothing more or the turn's frame budget is spent.
    pub(super) fn drive(
        &mut self,
        ctx: &mut Context<Self>,
        cx: &mut task::Context<'_>,
    ) -> Poll<()> {
        let mut budget = self.core.config.frames_per_turn;
        let mut reads_left = READS_PER_TURN;
        let result = loop {
            let step = self.step(ctx, cx, &mut budget, &mut reads_left);
            if step.is_ready() || self.core.state == State::Closed {
                break step;
            }
            // Never go to sleep on unflushed replies unless the socket itself said "full".
            if self.core.has_flushable_writes() {
                continue;
            }
            // Registry deliveries wake the driver when the queue stops being empty; one that
            // came after this turn looked must not wait for another wake-up. Registered every
            // turn: the waker actix hands the driver is not always the same one (registering
            // once lost wake-ups), and `AtomicWaker` skips the clone when it has not changed.
            self.core.meta.outbox.register(cx.waker());
            // The same for a close asked through the registry during this turn: its wake-up
            // found no waker if the one that started this turn had taken it.
            if self.core.meta.close_pending(self.core.close_taken) {
                cx.waker().wake_by_ref();
            }
            if self.core.takes_writes()
                && self.core.meta.outbox.has_items()
                && self.core.write_buf.len() < self.core.config.high_watermark
            {
                if budget > 0 {
                    continue;
                }
                yield_turn(cx);
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

    pub(super) fn step(
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
            if self.core.upgrade().is_some() {
                // STARTTLS: nothing is decoded or read until the TLS stream is in place.
                if self.poll_upgrade(ctx, cx).is_pending() {
                    break Poll::Pending;
                }
                continue;
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
                    yield_turn(cx);
                    break Poll::Pending;
                }
                // A frame asked for STARTTLS: carry it out at the top of the loop.
                (_, Delivery::Stalled) if self.core.upgrade().is_some() => continue,
                // Woken by the handler, the socket draining, or a resume message.
                (_, Delivery::Stalled) => break Poll::Pending,
                (_, Delivery::NeedsData) => {}
            }
            // Answers go out before the next read, as an echo loop's do: the socket sends them
            // while we read on, and a chunk a codec moved whole into the write buffer is
            // written out in time for the next read to take its allocation back.
            if self.core.has_flushable_writes() {
                continue;
            }
            if self.core.flags.has(Flags::EOF) && !self.core.flags.has(Flags::READ_FINISHED) {
                // Everything the peer sent before its FIN has been handed on.
                self.finish_reading(ctx);
                if self.core.state == State::Closed {
                    break Poll::Ready(());
                }
                continue;
            }
            if self.core.state == State::Closing {
                match self.poll_flushed_shutdown(cx) {
                    Poll::Pending => break Poll::Pending,
                    Poll::Ready(Ok(())) if !self.core.flags.has(Flags::EOF) => {
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
                match self.poll_flushed_shutdown(cx) {
                    Poll::Pending => break Poll::Pending,
                    Poll::Ready(Ok(())) => self.core.write_side = WriteSide::Shut,
                    Poll::Ready(Err(e)) => {
                        self.fail(Self::io_failure(e, self.core.meta.transport()), ctx);
                        break Poll::Ready(());
                    }
                }
            }
            if self.core.flags.has(Flags::EOF) {
                if self.core.write_side == WriteSide::Shut {
                    // Both sides are done.
                    self.core
                        .set_reason(if self.core.flags.has(Flags::PEER_FINISHED_FIRST) {
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
            if self.core.flags.has(Flags::USER_PAUSED) {
                break Poll::Pending;
            }
            if *reads_left == 0 {
                // A turn moves at most a few read chunks, so one fast sender cannot hold its
                // worker thread while its neighbours' sockets wait.
                yield_turn(cx);
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
    pub(super) fn finish_reading(&mut self, ctx: &mut Context<Self>) {
        self.core.flags.set(Flags::READ_FINISHED, true);
        self.core.meta.read_finished.store(true, Ordering::Relaxed);
        if self.core.write_side == WriteSide::Open {
            self.core.flags.set(Flags::PEER_FINISHED_FIRST, true);
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

    /// Shuts our write side once everything written is out (a close and a half-close alike);
    /// pending while bytes wait for the socket.
    pub(super) fn poll_flushed_shutdown(
        &mut self,
        cx: &mut task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.core.write_buf.is_empty() {
            return Poll::Pending;
        }
        match self.core.stream.as_mut() {
            // The peer has finished, so the session closes next, and a plain socket's close
            // sends the FIN itself: no `shutdown` call. TLS still sends its close_notify.
            Some(Stream::Plain(_)) if self.core.flags.has(Flags::EOF) => Poll::Ready(Ok(())),
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    pub(super) fn finish_close(&mut self, ctx: &mut Context<Self>) {
        self.core.state = State::Closed;
        ctx.stop();
    }
}

/// Socket reads one driver turn may make before it yields (each up to the read size, at most
/// `SessionConfig::largest_read` bytes).
const READS_PER_TURN: usize = 4;

/// Ends a turn that stopped for its neighbours' sake with work left: the session is woken
/// again only once its thread has polled for I/O (tokio's `yield_now` defers the wake-up).
/// Woken at once, it would run again ahead of every session whose socket became ready while
/// it ran, and a few sessions that kept finding bytes would take turn after turn while the
/// rest waited: under load, some connections got several times the service of others.
fn yield_turn(cx: &mut task::Context<'_>) {
    let mut yielded = std::pin::pin!(tokio::task::yield_now());
    // The first poll hands the waker to the scheduler and is always pending; dropping the
    // future after it does not take the wake-up back.
    let _ = std::future::Future::poll(yielded.as_mut(), cx);
}

/// Why [`Session::deliver_frames`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// No complete frame is buffered: reading moves the session forward.
    NeedsData,
    /// Frames wait, but the handler, a pause or the write buffer holds them back.
    Stalled,
    /// The turn's frame budget is used up.
    BudgetSpent,
}

/// The future that drives a session's socket from inside its actor context.
pub(super) struct Driver<C, H>(pub(super) PhantomData<fn() -> (C, H)>);

impl<C: SessionCodec, H: SessionHandler<C>> ActorFuture<Session<C, H>> for Driver<C, H> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        session: &mut Session<C, H>,
        ctx: &mut Context<Session<C, H>>,
        cx: &mut task::Context<'_>,
    ) -> Poll<()> {
        session.in_span(|session| {
            session.before_turn(ctx);
            if session.core.state == State::Closed {
                return Poll::Ready(());
            }
            session.drive(ctx, cx)
        })
    }
}
