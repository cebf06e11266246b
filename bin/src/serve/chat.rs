//! Chat mode: one room, line based, over the listener's [`Registry`].
//!
//! | event | the client itself sees | every other client sees |
//! |---|---|---|
//! | it connects | `* welcome #ID, N online` | `* #ID joined` |
//! | it sends `text` | nothing | `[#ID] text` |
//! | it leaves | (gone) | `* #ID left` |
//! | the server's stdin has `text` | `[server] text` | `[server] text` |
//!
//! Relaying uses [`Registry::broadcast`] with [`SlowConsumerPolicy::Drop`], and a member waits
//! for its broadcast to finish before it takes its next line: while some reader's queue is
//! full, the sender's session stops reading its socket and TCP slows the sending client down
//! to what the readers take. No line of a client that reads is ever dropped. A client that
//! takes nothing for the slow-consumer timeout (`--slow-consumer-timeout`) is a slow consumer:
//! it misses lines (counted in the registry's stats and its own `broadcasts_dropped`) until it
//! reads again, so it holds the room up for at most that long and memory stays bounded. Empty
//! lines are not relayed. A line that would get too long once prefixed is refused with
//! `* line too long to relay`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use switchboard::{
    Broadcasting, Conn, DisconnectReason, ListenerBuilder, ListenerHandle, Registry,
    SessionHandler, SessionInfo, SlowConsumerPolicy,
};
use switchboard_codec::Lines;

/// Starts the chat listener; lines may be up to `max_line` bytes, prefix included.
pub(crate) fn start(builder: ListenerBuilder, max_line: usize) -> anyhow::Result<ListenerHandle> {
    // The handler needs the registry, which the listener creates: make it here and hand it over.
    let registry = Registry::new();
    let for_handlers = registry.clone();
    Ok(builder
        .registry(registry)
        .serve(Lines::with_max_length(max_line), move || Member {
            registry: for_handlers.clone(),
            max_line,
            relaying: None,
        })?)
}

/// Sends lines typed on the server's stdin to every client as `[server] text`. When stdin
/// ends (or is not a terminal and empty) the server carries on without it.
pub(crate) fn forward_stdin(registry: Registry) {
    // A server started in the background of an interactive shell would be stopped by SIGTTIN
    // at its first read of the terminal; ignored, the read fails instead and the server goes on
    // without server messages.
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety requirements.
    unsafe {
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
    let mut lines = match crate::stdin::lines() {
        Ok(lines) => lines,
        Err(error) => {
            tracing::warn!(%error, "cannot read stdin; server messages are off");
            return;
        }
    };
    actix_rt::spawn(async move {
        while let Some(line) = lines.recv().await {
            if line.is_empty() {
                continue;
            }
            let mut message = b"[server] ".to_vec();
            message.extend_from_slice(&line);
            // Waiting here slows stdin down to what the readers take.
            let report = registry
                .broadcast(Bytes::from(message), None, SlowConsumerPolicy::Drop)
                .await;
            tracing::debug!(
                delivered = report.delivered,
                dropped = report.dropped,
                "server message sent"
            );
        }
        tracing::debug!("stdin ended; server messages are off");
    });
}

/// One chat client.
struct Member {
    registry: Registry,
    max_line: usize,
    /// The broadcast of this member's last line (or its join notice) while some reader's
    /// queue was full: the next line waits for it.
    relaying: Option<Broadcasting>,
}

impl Member {
    fn relay(&mut self, message: String, from: switchboard::SessionId) {
        let broadcast =
            self.registry
                .broadcast(Bytes::from(message), Some(from), SlowConsumerPolicy::Drop);
        if !broadcast.is_done() {
            self.relaying = Some(broadcast);
        }
    }
}

impl SessionHandler<Lines> for Member {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(broadcast) = &mut self.relaying {
            let report = std::task::ready!(Pin::new(broadcast).poll(cx));
            if report.dropped > 0 {
                tracing::debug!(dropped = report.dropped, "line skipped for slow consumers");
            }
            self.relaying = None;
        }
        Poll::Ready(())
    }

    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        let id = conn.id();
        // The session is registered before `connected` runs, so the count includes it.
        let online = self.registry.count();
        let _ = conn.write(format!("* welcome {id}, {online} online"));
        self.relay(format!("* {id} joined"), id);
        tracing::info!(session = %id, peer = %conn.peer_addr(), online, "joined");
    }

    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if line.is_empty() {
            return;
        }
        let message = format!("[{}] {line}", conn.id());
        if message.len() > self.max_line {
            let _ = conn.write("* line too long to relay");
            return;
        }
        self.relay(message, conn.id());
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        // Still registered while this runs: leave itself out. The session is ending, so the
        // notice finishes on its own on this worker (within the slow-consumer timeout).
        let notice = self.registry.broadcast(
            Bytes::from(format!("* {} left", info.id)),
            Some(info.id),
            SlowConsumerPolicy::Drop,
        );
        if !notice.is_done() {
            actix_rt::spawn(notice);
        }
        tracing::info!(
            session = %info.id,
            peer = %info.peer_addr,
            %reason,
            dropped = info.broadcasts_dropped,
            lasted = ?super::lifetime(info),
            "left"
        );
    }
}
