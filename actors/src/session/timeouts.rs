use super::{DisconnectReason, Flags, Session, SessionCodec, SessionHandler, State};
use std::time::Duration;

use actix::{AsyncContext, Context};

impl<C: SessionCodec, H: SessionHandler<C>> Session<C, H> {
    /// What comes from outside the socket before a driver turn: a close asked through the
    /// registry, then the timeout ticks missed since the last turn (either may end the session).
    pub(super) fn before_turn(&mut self, ctx: &mut Context<Self>) {
        if let Some((reason, mode)) = self.core.meta.take_close_request(self.core.close_taken) {
            self.core.close_taken = mode as u8;
            self.close(reason, mode, ctx);
        }
        let Some(ticker) = self.core.ticker.as_mut() else {
            return;
        };
        let passed = ticker.poll();
        if passed == 0 {
            return;
        }
        let period = ticker.period();
        for _ in 0..passed {
            if self.core.state == State::Closed {
                return;
            }
            self.tick(ctx, period);
        }
    }

    pub(super) fn tick(&mut self, ctx: &mut Context<Self>, period: Duration) {
        let core = &mut self.core;
        // Discarded bytes moved too: a peer still sending while we linger is not idle.
        if core.flags.take(Flags::MOVED_SINCE_TICK) {
            core.idle_ticks = 0;
        } else {
            core.idle_ticks = core.idle_ticks.saturating_add(1);
        }
        let idle = u32::try_from((period * core.idle_ticks).as_millis()).unwrap_or(u32::MAX);
        core.meta
            .idle_ms
            .store(idle, std::sync::atomic::Ordering::Relaxed);
        // Nothing read for a whole period: give the read buffer back, even while the session
        // keeps writing (a subscriber that only receives holds none), and read small again
        // when its peer sends again.
        if !core.flags.take(Flags::READ_SINCE_TICK) {
            if core.read_buf.is_empty() {
                core.read_buf.release();
            }
            core.read_doublings = 0;
        }
        if core.idle_ticks > 0 && core.write_buf.is_empty() {
            // Quiet for a whole period: an idle session holds no buffers.
            core.write_buf.release();
        }
        // Only a frame the decoder is still waiting for the peer to finish counts: complete
        // frames held back (paused, write buffer full, busy handler) are not the peer's fault,
        // and a decoder that consumed a header already (`Frames`) still waits on the peer.
        let waiting_on_peer = core.flags.has(Flags::NEEDS_DATA)
            && !core.flags.has(Flags::EOF)
            && !core.flags.has(Flags::USER_PAUSED)
            && !core.flags.has(Flags::ANSWERS_HELD)
            && core.flags.has(Flags::UNFRAMED_BYTES);
        if core.flags.take(Flags::FRAMED_SINCE_TICK) || !waiting_on_peer {
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

/// Aborts a graceful close started by this side (message or handler) that has not finished
/// within `timeout`, with [`DisconnectReason::CloseTimeout`].
pub(super) fn arm_close_timeout<C: SessionCodec, H: SessionHandler<C>>(
    ctx: &mut Context<Session<C, H>>,
    timeout: Duration,
) {
    ctx.run_later(timeout, |session, ctx| {
        if session.core.state != State::Closed {
            session.core.rare().reason = Some(DisconnectReason::CloseTimeout);
            session.fail(DisconnectReason::CloseTimeout, ctx);
        }
    });
}
