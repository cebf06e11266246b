//! Echo mode: every decoded message is written back to its sender, through the same codec
//! (with [`Raw`](switchboard_codec::Raw), a pure byte echo).
//!
//! Backpressure is the session's: an answer written in `ready_read` is never refused for room,
//! and once answers fill the write buffer the session holds further messages (and stops
//! reading, so TCP pushes back on the client) until it drains. No message is ever dropped, and
//! the write buffer of a session stays under the high watermark plus one answer: one read with
//! `Raw` (at most `SessionConfig::largest_read`, 256 KiB by default), one message with `Lines`
//! or `Frames` (up to the codec's maximum length).

use std::marker::PhantomData;

use switchboard::{
    Conn, DisconnectReason, ListenerBuilder, ListenerHandle, SessionCodec, SessionHandler,
    SessionInfo,
};
use tokio_util::codec::Encoder;

/// Starts an echo listener framed by `codec`.
pub(crate) fn start<C>(builder: ListenerBuilder, codec: C) -> anyhow::Result<ListenerHandle>
where
    C: SessionCodec + Encoder<C::Item> + Clone + Send,
    <C as Encoder<C::Item>>::Error: std::error::Error + Send + Sync + 'static,
{
    Ok(builder.serve(codec, || Echo::<C> {
        _codec: PhantomData,
    })?)
}

/// Writes every message back.
struct Echo<C> {
    _codec: PhantomData<fn() -> C>,
}

impl<C> SessionHandler<C> for Echo<C>
where
    C: SessionCodec + Encoder<C::Item>,
    <C as Encoder<C::Item>>::Error: std::error::Error + Send + Sync + 'static,
{
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        tracing::debug!(session = %conn.id(), peer = %conn.peer_addr(), "connected");
    }

    fn ready_read(&mut self, item: C::Item, conn: &mut Conn<'_, C, Self>) {
        // Only an item the codec cannot encode is refused here (an answer is never refused
        // for room).
        if let Err(error) = conn.write(item) {
            tracing::debug!(session = %conn.id(), %error, "echo not written; closing");
            conn.disconnect_from_host();
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        tracing::debug!(
            session = %info.id,
            peer = %info.peer_addr,
            bytes_in = info.bytes_in,
            bytes_out = info.bytes_out,
            lasted = ?super::lifetime(info),
            %reason,
            "disconnected"
        );
    }
}
