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
    Conn, DisconnectReason, ListenerBuilder, ListenerHandle, SessionCodec, SessionError,
    SessionHandler, SessionInfo,
};
use switchboard_codec::{CodecError, Frames, Lines, Raw};
use tokio_util::codec::{Decoder, Encoder};

/// Starts an echo listener framed by `codec`.
pub(crate) fn start<C>(builder: ListenerBuilder, codec: C) -> anyhow::Result<ListenerHandle>
where
    C: Echoed + Clone + Send,
{
    Ok(builder.serve(codec, || Echo::<C> {
        _codec: PhantomData,
    })?)
}

/// How a codec's messages go back: encoded again, or with `Raw` handed back as they are (from
/// the memory they were read into, no copy).
pub(crate) trait Echoed:
    SessionCodec + Encoder<<Self as Decoder>::Item, Error = CodecError> + Sized
{
    fn echo<H: SessionHandler<Self>>(
        item: Self::Item,
        conn: &mut Conn<'_, Self, H>,
    ) -> Result<(), SessionError> {
        conn.write(item)
    }
}

impl Echoed for Lines {}

impl Echoed for Frames {}

impl Echoed for Raw {
    fn echo<H: SessionHandler<Self>>(
        chunk: bytes::Bytes,
        conn: &mut Conn<'_, Self, H>,
    ) -> Result<(), SessionError> {
        conn.write_bytes(chunk)
    }
}

/// Writes every message back.
struct Echo<C> {
    _codec: PhantomData<fn() -> C>,
}

impl<C: Echoed> SessionHandler<C> for Echo<C> {
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        tracing::debug!(session = %conn.id(), peer = %conn.peer_addr(), "connected");
    }

    fn ready_read(&mut self, item: C::Item, conn: &mut Conn<'_, C, Self>) {
        // Only an item the codec cannot encode is refused here (an answer is never refused
        // for room).
        if let Err(error) = C::echo(item, conn) {
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
