//! Read backpressure: a paused session (`PauseReading`) or a lagging handler (`poll_ready`
//! pending) stops reading, so a peer flooding it fills only the kernel's buffers and the
//! session's memory stays flat; resuming delivers every byte, in order.

use std::{
    io::{ErrorKind, Write as _},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{self, Poll},
};

use actix::Addr;
use bytes::Bytes;
use futures::task::AtomicWaker;
use switchboard::{
    Conn, DisconnectReason, GetInfo, Listener, PauseReading, ResumeReading, Session, SessionConfig,
    SessionHandler, SessionInfo,
};
use switchboard_codec::Raw;
use switchboard_tests::{any_port, assert_pattern, pattern, std_connect, within, Event, Probes};
use tokio::sync::mpsc;

const PREFIX: usize = 1024;
const TOTAL: usize = 8 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// More than loopback buffers hold (a few MiB): a flood that gets this far was never paused.
const NEVER: usize = 64 * 1024 * 1024;

/// Steps of a flooding client, told by the test.
struct Flooder {
    peer: SocketAddr,
    /// Bytes written before the socket said "would block".
    flooded: mpsc::UnboundedReceiver<usize>,
    go: std::sync::mpsc::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

/// A std client that sends `PREFIX` bytes of the pattern; on each "go" floods without
/// blocking until the socket is full and reports the running total; on the third "go" sends
/// the rest up to `TOTAL`, blocking, and closes.
async fn flooder(addr: SocketAddr) -> Flooder {
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel();
    let (flooded_tx, flooded) = mpsc::unbounded_channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let done = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        peer_tx.send(stream.local_addr().unwrap()).unwrap();
        stream.write_all(&pattern(0, PREFIX)).unwrap();
        let mut sent = PREFIX;
        stream.set_nonblocking(true).unwrap();
        for _ in 0..2 {
            go_rx.recv().unwrap();
            loop {
                assert!(sent < NEVER, "{sent} bytes went out: reading never paused");
                let chunk = pattern(sent, 16 * 1024);
                match stream.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("flood failed: {e}"),
                }
            }
            flooded_tx.send(sent).unwrap();
        }
        go_rx.recv().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.write_all(&pattern(sent, TOTAL - sent)).unwrap();
    });
    let peer = within("the client", peer_rx.recv()).await.unwrap();
    Flooder {
        peer,
        flooded,
        go,
        done,
    }
}

#[actix_rt::test]
async fn paused_session_holds_memory_flat_then_resumes_byte_exact() {
    let (probes, mut events) = Probes::<Raw>::quiet();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(SessionConfig::default().with_read_chunk(READ_CHUNK))
        .serve(Raw, probes.factory())
        .unwrap();
    let mut client = flooder(server.local_addr()).await;
    let (info, session) = events.connected_from(client.peer).await;

    // The prefix arrives; then the session is paused.
    let mut received = Vec::new();
    while received.len() < PREFIX {
        received.extend_from_slice(&events.frame(info.id).await);
    }
    within("PauseReading", session.send(PauseReading))
        .await
        .unwrap();

    // The peer floods until the kernel buffers are full; the session reads none of it.
    client.go.send(()).unwrap();
    let flooded = within("the flood", client.flooded.recv()).await.unwrap();
    assert!(
        flooded > PREFIX + READ_CHUNK,
        "only {flooded} bytes: the flood did not reach the kernel buffers"
    );
    let first = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert!(
        first.bytes_in as usize <= PREFIX + READ_CHUNK,
        "a paused session read {} bytes",
        first.bytes_in
    );
    client.go.send(()).unwrap();
    let flooded_more = within("the second flood", client.flooded.recv())
        .await
        .unwrap();
    let second = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert_eq!(
        second.bytes_in, first.bytes_in,
        "bytes_in grew while paused (the peer had {flooded_more} bytes out)"
    );
    assert_eq!(second.frames_in, first.frames_in);

    // Resumed: everything arrives, in order, and the session ends with the peer's close.
    within("ResumeReading", session.send(ResumeReading))
        .await
        .unwrap();
    client.go.send(()).unwrap();
    let reason = loop {
        match events.next("frames or the end").await {
            Event::Frame { id, frame } if id == info.id => received.extend_from_slice(&frame),
            Event::Disconnected { id, reason, .. } if id == info.id => break reason,
            _ => {}
        }
    };
    within("the client", client.done).await.unwrap();
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert_eq!(received.len(), TOTAL);
    assert_pattern(&received);
    events.dropped(info.id).await;
    assert_eq!(probes.disconnects(info.id), 1);
}

/// A gate shared by the test and a [`Lagging`] handler.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waker: AtomicWaker,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

type LaggingSession = Session<Raw, Lagging>;

/// A handler that takes no frame while its gate is closed (`poll_ready` pending).
struct Lagging {
    gate: Arc<Gate>,
    frames: mpsc::UnboundedSender<Bytes>,
    started: mpsc::UnboundedSender<(SessionInfo, Addr<LaggingSession>)>,
    ended: mpsc::UnboundedSender<DisconnectReason>,
}

impl SessionHandler<Raw> for Lagging {
    fn connected(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        let _ = self.started.send((conn.info(), conn.address()));
    }

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<()> {
        if self.gate.open.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.gate.waker.register(cx.waker());
        if self.gate.open.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn ready_read(&mut self, data: Bytes, _: &mut Conn<'_, Raw, Self>) {
        let _ = self.frames.send(data);
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        let _ = self.ended.send(reason.clone());
    }
}

/// A handler that is not ready holds reading back (at most one read chunk is taken in) until
/// it is, and then gets everything.
#[actix_rt::test]
async fn lagging_handler_stops_reading_then_gets_everything() {
    let gate = Arc::new(Gate::default());
    let (frames_tx, mut frames) = mpsc::unbounded_channel();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let handler_gate = gate.clone();
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(SessionConfig::default().with_read_chunk(READ_CHUNK))
        .serve(Raw, move || Lagging {
            gate: handler_gate.clone(),
            frames: frames_tx.clone(),
            started: started_tx.clone(),
            ended: ended_tx.clone(),
        })
        .unwrap();
    let mut client = flooder(server.local_addr()).await;
    let (_, session) = within("the session", started.recv()).await.unwrap();

    client.go.send(()).unwrap();
    let flooded = within("the flood", client.flooded.recv()).await.unwrap();
    assert!(flooded > READ_CHUNK, "only {flooded} bytes flooded");
    let first = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert!(
        first.bytes_in as usize <= READ_CHUNK,
        "a session whose handler is not ready read {} bytes",
        first.bytes_in
    );
    assert_eq!(first.frames_in, 0);
    client.go.send(()).unwrap();
    within("the second flood", client.flooded.recv())
        .await
        .unwrap();
    let second = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert_eq!(second.bytes_in, first.bytes_in);
    assert!(
        frames.try_recv().is_err(),
        "a frame reached a handler that was not ready"
    );

    gate.open();
    client.go.send(()).unwrap();
    let mut received = Vec::with_capacity(TOTAL);
    while received.len() < TOTAL {
        let frame = within("frames after the gate opened", frames.recv())
            .await
            .unwrap();
        received.extend_from_slice(&frame);
    }
    assert_eq!(received.len(), TOTAL);
    assert_pattern(&received);
    within("the client", client.done).await.unwrap();
    let reason = within("disconnected", ended.recv()).await.unwrap();
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}
