use std::sync::{atomic::Ordering, Arc};

use tokio::sync::oneshot;
use tokio_util::codec::Encoder;

use super::{
    buffer::{LazyBuf, WriteBuf},
    span::SessionSpan,
    starttls::Upgrade,
    DisconnectReason, SessionCodec, SessionMeta, SessionState,
};
use crate::{
    limits::Limiter, registry::Registry, ticker::Ticker, transport::Stream, worker::PoolShare,
    SessionConfig, SessionError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Open,
    Closing,
    Lingering,
    Closed,
}

/// This side's write half, apart from the session's state: a half-close shuts it while the
/// session goes on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteSide {
    Open,
    /// Shut once the buffer is flushed.
    Shutting,
    Shut,
}

/// A session's yes-or-no state, a bit each: fourteen `bool` fields took 16 bytes and put a
/// `Lines` session past its allocator size class (see the size test below).
#[derive(Clone, Copy)]
pub(crate) struct Flags(u16);

impl Flags {
    /// The peer's FIN was seen: no more reads, and no lingering on close.
    pub(super) const EOF: u16 = 1 << 0;
    /// `read_finished` was called (once, after the last frame before the FIN).
    pub(super) const READ_FINISHED: u16 = 1 << 1;
    /// The peer finished sending while our write side was still open: the session ends as
    /// `PeerClosed` rather than `Closed`.
    pub(super) const PEER_FINISHED_FIRST: u16 = 1 << 2;
    /// The decoder asked for more bytes: reading is what moves the session forward.
    pub(super) const NEEDS_DATA: u16 = 1 << 3;
    pub(super) const USER_PAUSED: u16 = 1 << 4;
    pub(super) const ABOVE_HIGH: u16 = 1 << 5;
    /// Inside `ready_read` / `read_finished`: writes are answers, refused only past one more
    /// high watermark.
    pub(super) const ANSWERING: u16 = 1 << 6;
    /// An answer left the buffer at or above the high watermark: frames wait (and reading
    /// with them) until it drains to the low watermark.
    pub(super) const ANSWERS_HELD: u16 = 1 << 7;
    /// A write was refused since the last flush: the handler hears `write_buffer_full` (and
    /// so, later, `write_buffer_drained`) even if the buffer is back under the mark by then.
    pub(super) const REFUSED: u16 = 1 << 8;
    /// The last flush stopped because the socket was full (a writable wake-up is registered).
    pub(super) const WRITE_BLOCKED: u16 = 1 << 9;
    /// Bytes went to the transport since it last finished a flush: it may still hold some
    /// (TLS records a full socket did not take), so the driver flushes it.
    pub(super) const TRANSPORT_UNFLUSHED: u16 = 1 << 10;
    /// Bytes were read, written or discarded since the last timeout tick.
    pub(super) const MOVED_SINCE_TICK: u16 = 1 << 11;
    /// A frame was decoded since the last timeout tick.
    pub(super) const FRAMED_SINCE_TICK: u16 = 1 << 12;
    /// Bytes arrived past the end of the last decoded frame: the start of a frame the peer
    /// has not finished sending.
    pub(super) const UNFRAMED_BYTES: u16 = 1 << 13;
    /// Bytes were read since the last timeout tick: the read buffer stays for the next read.
    pub(super) const READ_SINCE_TICK: u16 = 1 << 14;

    /// What leaves work for a flush or a watermark report with an empty write buffer: bytes
    /// the transport may still hold, a refused write, a crossing to report.
    pub(super) const WRITE_SIDE_OWED: u16 =
        Self::TRANSPORT_UNFLUSHED | Self::REFUSED | Self::ABOVE_HIGH | Self::ANSWERS_HELD;

    pub(super) const fn new(set: u16) -> Flags {
        Flags(set)
    }

    pub(super) fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    pub(super) fn set(&mut self, flag: u16, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }

    /// Whether `flag` was set; clears it.
    pub(super) fn take(&mut self, flag: u16) -> bool {
        let was = self.has(flag);
        self.0 &= !flag;
        was
    }
}

/// Everything a session has but its handler, so the handler can borrow it mutably.
pub(crate) struct Core<C> {
    pub(super) stream: Option<Stream>,
    pub(super) codec: C,
    /// Bytes read but not yet decoded; empty with no allocation while nothing waits.
    pub(super) read_buf: LazyBuf,
    /// Bytes not yet written (encoded, or held by reference); released once idle.
    pub(super) write_buf: WriteBuf,
    pub(super) state: State,
    pub(super) write_side: WriteSide,
    /// The close reason, flush waiters and STARTTLS state: one box, made when the first of
    /// them is needed (usually when the session ends, with its reason), so an idle session
    /// carries one pointer for all three.
    pub(super) rare: Option<Box<Rare>>,
    pub(super) config: Arc<SessionConfig>,
    pub(super) meta: Arc<SessionMeta>,
    /// Yes-or-no state, one bit each.
    pub(super) flags: Flags,
    /// The level of the last close request taken from the registry (`SessionMeta::request_close`).
    pub(super) close_taken: u8,
    /// How many times the next read's size has doubled from the read chunk: reads that fill
    /// what they asked for grow it (see [`Core::adapt_read_size`]).
    pub(super) read_doublings: u8,
    /// This session's slot on its worker's timeout clock; none without timeouts.
    pub(super) ticker: Option<Ticker>,
    /// Ticks in a row without movement, and in a row waiting on the peer for a frame's rest.
    pub(super) idle_ticks: u32,
    pub(super) partial_ticks: u32,
    /// The registry this session joins when it runs and leaves when it stops (or, dropped
    /// without stopping, in `Drop`).
    pub(super) registry: Option<Registry>,
    /// The session's `tracing` span (id, peer, transport, listener): entered around every
    /// driver turn, timeout tick, start and stop, so the log lines of the session are in it.
    /// None when no subscriber takes it. Inline: every session of a logging server has one
    /// for its whole life, and a box would cost a 32-byte allocation each.
    pub(super) span: Option<SessionSpan>,
    /// The session's place under the connection limits (total and per IP): released when it
    /// stops, before its handler and the registry hear of the end, so a client that reconnects
    /// on `disconnected` finds its slot free.
    /// Given back with `give_back_admission`.
    pub(super) limiter: Option<Arc<Limiter>>,
    /// The session's share of its worker's load; given back when the session is dropped.
    pub(super) pool: Option<PoolShare>,
}

/// What few sessions need before they end; see [`Core::rare`]. 48 bytes: the close reason
/// alone makes this box, at nearly every session's end, so the rarer parts are boxed again
/// rather than make it 64 (the waiters' list) or 160 bytes (the upgrade).
#[derive(Default)]
pub(super) struct Rare {
    /// Set by the first thing that ends the session; later causes do not overwrite it.
    pub(super) reason: Option<DisconnectReason>,
    /// [`Flush`](super::Flush) callers waiting for the buffer to empty.
    #[allow(clippy::box_collection)] // 8 bytes here instead of 24, for a rarely used list.
    pub(super) flush_waiters: Option<Box<Vec<oneshot::Sender<()>>>>,
    /// A STARTTLS upgrade asked for and not finished.
    pub(super) upgrade: Option<Box<Upgrade>>,
}

impl Rare {
    /// The upgrade in a session's `rare` field, borrowing that field alone, so the caller
    /// can hold the stream or the buffers of the same session meanwhile.
    pub(super) fn upgrade_in(rare: &mut Option<Box<Rare>>) -> Option<&mut Upgrade> {
        rare.as_mut()?.upgrade.as_deref_mut()
    }
}

impl<C> Drop for Core<C> {
    fn drop(&mut self) {
        // A session that stopped has given these back already; one dropped without stopping
        // (its worker was torn down) does so here, in the same order.
        self.give_back_admission();
        if let Some(registry) = self.registry.take() {
            registry.leave(&self.meta, DisconnectReason::Shutdown, None);
        }
        if let Some(pool) = self.pool.take() {
            let index = self
                .meta
                .worker()
                .expect("a session on a pool knows its worker");
            pool.release(index);
        }
    }
}

impl<C> Core<C> {
    /// The rarely needed part, made on first use.
    pub(super) fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The STARTTLS upgrade asked for and not finished, if any.
    pub(super) fn upgrade(&self) -> Option<&Upgrade> {
        self.rare.as_ref()?.upgrade.as_deref()
    }

    pub(super) fn upgrade_mut(&mut self) -> Option<&mut Upgrade> {
        Rare::upgrade_in(&mut self.rare)
    }

    /// Ends the upgrade's part of the session's state, handing it to the caller.
    pub(super) fn take_upgrade(&mut self) -> Option<Box<Upgrade>> {
        self.rare.as_mut()?.upgrade.take()
    }

    /// Gives back the session's place under its listener's limits (total and per IP).
    pub(super) fn give_back_admission(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            let counted_ip = self
                .meta
                .peer_addr
                .ip()
                .filter(|_| self.meta.counted_per_ip);
            limiter.release(counted_ip);
        }
    }
}

impl<C: SessionCodec> Core<C> {
    pub(super) fn set_reason(&mut self, reason: DisconnectReason) {
        self.rare().reason.get_or_insert(reason);
    }

    /// Whether writes are still taken (by `write` and from the outbound queue).
    pub(super) fn takes_writes(&self) -> bool {
        matches!(self.state, State::Open | State::Closing) && self.write_side == WriteSide::Open
    }

    pub(super) fn write<T>(&mut self, item: T) -> Result<(), SessionError>
    where
        C: Encoder<T>,
        <C as Encoder<T>>::Error: std::error::Error + Send + Sync + 'static,
    {
        self.admit_write()?;
        self.codec
            .encode(item, self.write_buf.encoded_mut())
            .map_err(|e| SessionError::Encode(Arc::new(e)))?;
        self.meta.frames_out.add(1);
        Ok(())
    }

    /// Queues `bytes` as they are, past the codec, held by reference where the buffer is
    /// empty (see `WriteBuf::hold`). Taken and refused as `write` is, and counted as a frame.
    pub(super) fn write_bytes(&mut self, bytes: bytes::Bytes) -> Result<(), SessionError> {
        self.admit_write()?;
        self.write_buf.hold(bytes);
        self.meta.frames_out.add(1);
        Ok(())
    }

    /// Whether a write may go into the buffer now.
    #[inline]
    fn admit_write(&mut self) -> Result<(), SessionError> {
        if !self.takes_writes() {
            return Err(SessionError::Closing);
        }
        let high = self.config.high_watermark;
        // An answer gets one more high watermark of room: refusing it would lose it, and the
        // frames behind it are held once it lands (see `deliver_frames`).
        let limit = if self.flags.has(Flags::ANSWERING) {
            high.saturating_mul(2)
        } else {
            high
        };
        if self.write_buf.len() >= limit {
            self.flags.set(Flags::REFUSED, true);
            return Err(SessionError::WriteBufferFull {
                buffered: self.write_buf.len(),
                high_watermark: high,
            });
        }
        Ok(())
    }

    /// Moves registry deliveries from the outbound queue into the write buffer while it is
    /// under `room` bytes, at most `budget` of them (each costs one frame of the turn's budget).
    #[inline]
    pub(super) fn take_outbound(&mut self, room: usize, budget: &mut usize) {
        // Checked on every turn, true only while registry messages wait: the check inline,
        // the taking out of line.
        if *budget > 0 && self.write_buf.len() < room && self.meta.outbox.has_items() {
            self.take_outbound_items(room, budget);
        }
    }

    #[inline(never)]
    fn take_outbound_items(&mut self, room: usize, budget: &mut usize) {
        let Core {
            meta,
            codec,
            write_buf,
            ..
        } = self;
        let mut refused = 0u64;
        meta.outbox.take(|item| {
            match codec.encode(item, write_buf.encoded_mut()) {
                Ok(()) => meta.frames_out.add(1),
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

    /// Sizes the next read by how this one went: `got` bytes of the `asked` it was given. A
    /// read that fills what it asked says more was waiting, so the next asks twice as much (up
    /// to `SessionConfig::largest_read`); one that brings a quarter or less halves it. A bulk
    /// sender is read in large pieces; request-response traffic never asks past the first size.
    #[inline]
    pub(super) fn adapt_read_size(&mut self, got: usize, asked: usize) {
        if got >= asked {
            if asked < self.config.largest_read() {
                self.read_doublings += 1;
            }
        } else if got <= asked / 4 && self.read_doublings > 0 {
            self.read_doublings -= 1;
        }
    }

    /// Counts registry messages this session will never write.
    pub(super) fn count_undelivered(&self, messages: u64) {
        self.meta
            .broadcasts_dropped
            .fetch_add(messages, Ordering::Relaxed);
        if let Some(registry) = &self.registry {
            registry.count_drops(messages);
        }
    }

    /// Stops taking registry deliveries: what is queued already still goes out (it was
    /// accepted before the close), nothing more is queued.
    pub(super) fn seal_outbound(&mut self) {
        let mut unlimited = usize::MAX;
        self.take_outbound(usize::MAX, &mut unlimited);
        let discarded = self.meta.outbox.close();
        if discarded > 0 {
            self.count_undelivered(discarded as u64);
        }
    }

    /// Asks for a half-close: flush, then shut the write side, reading on.
    pub(super) fn shutdown_write(&mut self) {
        if self.state == State::Open && self.write_side == WriteSide::Open {
            self.seal_outbound();
            self.write_side = WriteSide::Shutting;
        }
    }

    /// Moves an open session to `Closing`; true when it did, so a close started by this side
    /// can arm its timeout ([`arm_close_timeout`]).
    pub(super) fn begin_close(&mut self, reason: DisconnectReason) -> bool {
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

    /// Pauses or resumes reading for the handler's or a message's sake. Published at once:
    /// whoever paused a session may look at the registry before its next turn.
    pub(super) fn set_user_paused(&mut self, paused: bool) {
        self.flags.set(Flags::USER_PAUSED, paused);
        self.publish();
    }

    pub(super) fn publish(&self) {
        let m = &self.meta;
        m.bytes_to_write
            .store(self.write_buf.len(), Ordering::Relaxed);
        m.read_paused.store(
            self.flags.has(Flags::USER_PAUSED) || self.flags.has(Flags::ANSWERS_HELD),
            Ordering::Relaxed,
        );
    }

    /// Whether written bytes wait that the socket has not refused: the driver flushes before
    /// it reads again or sleeps. During a STARTTLS switch the rest waits for the TLS stream.
    pub(super) fn has_flushable_writes(&self) -> bool {
        !self.write_buf.is_empty()
            && !self.flags.has(Flags::WRITE_BLOCKED)
            && self.upgrade().is_none()
    }

    /// Nothing buffered, nothing held by the transport, no watermark crossing to report: a
    /// flush has nothing to do, and so has `track_watermarks` (an empty buffer is under both
    /// marks, and the high watermark is never 0). Flush waiters wait only while bytes do.
    pub(super) fn write_side_settled(&self) -> bool {
        self.write_buf.is_empty() && !self.flags.has(Flags::WRITE_SIDE_OWED)
    }

    /// Whether buffered frames may go to the handler now.
    pub(super) fn may_deliver(&self) -> bool {
        matches!(self.state, State::Open | State::Closing)
            && !self.flags.has(Flags::USER_PAUSED)
            && !self.flags.has(Flags::ANSWERS_HELD)
            && self.upgrade().is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use switchboard_codec::Raw;

    use super::{Core, SessionMeta};
    use crate::{Conn, SessionHandler};

    struct Silent;

    impl SessionHandler<Raw> for Silent {
        fn ready_read(&mut self, _: bytes::Bytes, _: &mut Conn<'_, Raw, Self>) {}
    }

    /// An idle session's two largest allocations stay in their allocator size classes: the
    /// actor's task cell (tokio aligns it to 128 bytes; with jemalloc, 640 B while the session
    /// is at most 192 B, 768 B past it) and the record (`Arc<SessionMeta>`, 224 B while the
    /// record is at most 208 B, 256 B past it). BENCHMARKS.md ("Where an idle session's bytes go") has the
    /// breakdown; a field that crosses a line costs 128 or 64 bytes per connection.
    #[test]
    fn an_idle_session_stays_in_its_size_classes() {
        type Plain = crate::Session<Raw, Silent>;
        let session = size_of::<Plain>();
        let actor = size_of::<actix::dev::ContextFut<Plain, actix::Context<Plain>>>();
        assert_eq!(
            size_of::<Core<Raw>>(),
            session,
            "a silent handler adds nothing"
        );
        assert!(session <= 192, "the session is {session} B (at most 192)");
        let lines = size_of::<Core<switchboard_codec::Lines>>();
        assert!(lines <= 192, "a `Lines` session is {lines} B (at most 192)");
        // With its span inline (no allocation of its own) and the rare parts behind one box.
        assert_eq!(size_of::<Option<super::SessionSpan>>(), 32);
        assert_eq!(size_of::<Option<crate::ticker::Ticker>>(), 8);
        assert_eq!(
            size_of::<super::Rare>(),
            48,
            "the box a closing session makes"
        );
        // Actix's context around it: fixed, and with tokio's header the cell is 640 B.
        assert!(
            actor - session <= 336,
            "actix's part grew to {} B",
            actor - session
        );
        let record = size_of::<SessionMeta>();
        assert!(record <= 208, "the record is {record} B (at most 208)");
    }
}
