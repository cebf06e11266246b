//! The [`Session`] actor: one connection, Qt's `QTcpSocket`, one file per concern:
//!
//! | file | what |
//! |---|---|
//! | `types.rs` | id, disconnect reason, state, info, close mode, slow-consumer policy |
//! | `meta.rs` | the counters a session shares with the registry |
//! | `handler.rs` | the `SessionHandler` trait and `Conn`, the handler's view of the session |
//! | `core.rs` | what a session holds besides its handler, and its write path |
//! | `driver.rs` | read → decode → deliver → write → linger: the per-frame path |
//! | `timeouts.rs` | idle, partial-frame and close timeouts |
//! | `messages.rs` | `Write`, `Flush`, `DisconnectFromHost`, `Abort`, `GetInfo`, ... |
//! | `launch.rs` | the one way a session starts |
//! | `starttls.rs` | upgrading a running plaintext session to TLS in place |
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
//! `read_finished`, and then (unless [`SessionConfig::with_allow_half_close`] is set) the session
//! flushes, shuts its write side and ends with `PeerClosed`. This side can shut its write side
//! alone too ([`Conn::shutdown_write`], [`ShutdownWrite`]); the session ends once both sides are
//! done.

mod buffer;
mod core;
mod driver;
mod handler;
mod launch;
mod messages;
mod meta;
mod span;
mod starttls;
mod timeouts;
mod types;

#[cfg(test)]
mod tests;

pub use handler::{Conn, SessionHandler};
pub use launch::SessionBuilder;
pub use messages::{
    Abort, DisconnectFromHost, Flush, GetInfo, Invoke, PauseReading, ResumeReading, ShutdownWrite,
    Write, WriteBytes,
};
pub use starttls::StartTls;
pub use types::{
    CloseMode, DisconnectReason, SessionCodec, SessionId, SessionInfo, SessionState, SharedError,
    SlowConsumerPolicy,
};

pub(crate) use launch::{Handshake, Launch, Parts, ProxyStep};
pub(crate) use meta::SessionMeta;

use self::core::{Core, Flags, Rare, State, WriteSide};
use crate::ticker::Ticker;
use driver::Driver;
use timeouts::arm_close_timeout;

use std::{
    fmt,
    marker::PhantomData,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::atomic::Ordering,
};

use actix::{Actor, ActorContext, AsyncContext, Context};

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

pub(super) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
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
        if let Some(registry) = &self.core.registry {
            registry.join(&self.core.meta);
        }
        // The timeout tick comes from this thread's shared clock (`crate::ticker`), checked
        // by the driver. The clock wakes the session through its record, which wakes the
        // waker the driver registered last (as a registry delivery or a close request does).
        let meta = &self.core.meta;
        self.core.ticker = self
            .core
            .config
            .tick()
            .map(|period| Ticker::join(period, std::task::Waker::from(meta.clone())));
        if self.call(ctx, |h, c| h.connected(c)) {
            ctx.spawn(Driver(PhantomData));
        }
    }

    fn stop(&mut self, _ctx: &mut Context<Self>) {
        let reason = self
            .core
            .rare
            .as_mut()
            .and_then(|rare| rare.reason.take())
            .unwrap_or(DisconnectReason::Closed);
        // A graceful close sent close_notify already; an abort discards, and a broken
        // socket takes nothing.
        let polite = !matches!(
            reason,
            DisconnectReason::Aborted
                | DisconnectReason::Reset
                | DisconnectReason::Io(_)
                | DisconnectReason::Tls(_)
        );
        if let (true, Some(stream)) = (polite, self.core.stream.as_mut()) {
            stream.close_notify_now();
        }
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
        self.core.give_back_admission();
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
        if let Some(registry) = self.core.registry.take() {
            registry.leave(&self.core.meta, reason, Some(info));
        }
    }
}
