//! Echo mode: every decoded message is written back to its sender, through the same codec
//! (with [`Raw`](switchboard_codec::Raw), a pure byte echo).
//!
//! Backpressure: a message is only written while the write buffer is under its high watermark.
//! Otherwise it is kept, reading is paused (TCP then pushes back on the client), and it is
//! written once the buffer has drained. No message is ever dropped, and memory per session stays
//! bounded by the watermark plus what was already decoded in one turn.

use std::{collections::VecDeque, sync::Arc};

use switchboard::{
    Conn, DisconnectReason, ListenerBuilder, ListenerHandle, SessionCodec, SessionHandler,
    SessionInfo,
};
use tokio_util::codec::Encoder;

use super::Totals;

/// Starts an echo listener framed by `codec`.
pub(crate) fn start<C>(
    builder: ListenerBuilder,
    codec: C,
    totals: Arc<Totals>,
) -> anyhow::Result<ListenerHandle>
where
    C: SessionCodec + Encoder<C::Item> + Clone + Send + Sync,
    <C as Encoder<C::Item>>::Error: std::error::Error + Send + Sync + 'static,
    C::Item: Unpin + 'static,
{
    Ok(builder.serve(codec, move || Echo::<C> {
        held: VecDeque::new(),
        totals: totals.clone(),
    })?)
}

/// Writes every message back.
struct Echo<C: SessionCodec> {
    /// Messages decoded while the write buffer was full, in order; reading is paused while any
    /// wait here.
    held: VecDeque<C::Item>,
    totals: Arc<Totals>,
}

impl<C> Echo<C>
where
    C: SessionCodec + Encoder<C::Item>,
    <C as Encoder<C::Item>>::Error: std::error::Error + Send + Sync + 'static,
    C::Item: Unpin + 'static,
{
    fn has_room(conn: &Conn<'_, C, Self>) -> bool {
        conn.bytes_to_write() < conn.config().high_watermark()
    }

    fn echo(&mut self, item: C::Item, conn: &mut Conn<'_, C, Self>) {
        // Checked before writing: a refused write would lose the message.
        if !self.held.is_empty() || !Self::has_room(conn) {
            self.held.push_back(item);
            conn.pause_reading();
            return;
        }
        if let Err(error) = conn.write(item) {
            tracing::debug!(session = %conn.id(), %error, "echo not written; closing");
            conn.disconnect_from_host();
        }
    }

    fn release_held(&mut self, conn: &mut Conn<'_, C, Self>) {
        while Self::has_room(conn) {
            let Some(item) = self.held.pop_front() else {
                break;
            };
            if let Err(error) = conn.write(item) {
                tracing::debug!(session = %conn.id(), %error, "echo not written; closing");
                self.held.clear();
                conn.disconnect_from_host();
                return;
            }
        }
        if self.held.is_empty() {
            conn.resume_reading();
        }
    }
}

impl<C> SessionHandler<C> for Echo<C>
where
    C: SessionCodec + Encoder<C::Item>,
    <C as Encoder<C::Item>>::Error: std::error::Error + Send + Sync + 'static,
    C::Item: Unpin + 'static,
{
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        tracing::debug!(session = %conn.id(), peer = %conn.peer_addr(), "connected");
    }

    fn ready_read(&mut self, item: C::Item, conn: &mut Conn<'_, C, Self>) {
        self.echo(item, conn);
    }

    fn bytes_written(&mut self, _bytes: usize, conn: &mut Conn<'_, C, Self>) {
        if !self.held.is_empty() {
            self.release_held(conn);
        }
    }

    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, C, Self>) {
        if !self.held.is_empty() {
            self.release_held(conn);
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        self.totals.add(info);
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
