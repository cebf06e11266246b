//! Write backpressure: a session's write buffer is bounded by its high watermark. Going over it
//! calls `write_buffer_full` and refuses outside writes with `SessionError::WriteBufferFull`;
//! once the peer reads, `write_buffer_drained` fires and writes go through again. The session
//! keeps answering `GetInfo` and `Abort` while it is full.

use std::{
    io::{BufReader, Write as _},
    net::SocketAddr,
    time::Duration,
};

use actix::Addr;
use bytes::Bytes;
use switchboard::{
    Abort, DisconnectFromHost, DisconnectReason, Flush, GetInfo, Listener, ListenerHandle,
    SessionConfig, SessionError, SessionState, Write,
};
use switchboard_codec::{Lines, Raw};
use switchboard_tests::{
    any_port, assert_pattern, blocking, ended_once, pattern, read_line, read_to_eof, std_connect,
    within, Event, Events, ProbeSession, Probes,
};
use tokio::sync::mpsc;

const CHUNK: usize = 16 * 1024;
/// More than any loopback socket pair absorbs (a few MiB): reaching it means no backpressure.
const NEVER: usize = 64 * 1024 * 1024;

fn serve_raw(config: SessionConfig) -> (ListenerHandle, Probes<Raw>, Events<Raw>) {
    let (probes, events) = Probes::<Raw>::quiet();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(config)
        .serve(Raw, probes.factory())
        .unwrap();
    (server, probes, events)
}

/// A std client that reads nothing until told to, then everything up to EOF.
fn lazy_reader(
    addr: SocketAddr,
) -> (
    tokio::task::JoinHandle<Vec<u8>>,
    mpsc::UnboundedReceiver<SocketAddr>,
    std::sync::mpsc::Sender<()>,
) {
    let (peer_tx, peer_rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        peer_tx.send(stream.local_addr().unwrap()).unwrap();
        go_rx.recv().unwrap();
        read_to_eof(&mut stream, true)
    });
    (client, peer_rx, go_tx)
}

/// After a refusal: whether the session still owes a `write_buffer_drained`. Reads what the
/// probe reported so far (full/drained pairs in order; a kernel that keeps taking a little
/// from a silent peer, as gVisor's does, can produce pairs before the refusal, and a fresh
/// socket's first flush can produce one right after it) and answers from the last of them:
/// `Some(true)` after a `Full`, `Some(false)` after a `Drained` (there is room again: write
/// more), `None` when neither came yet (the refusal guarantees a `Full`: wait for it).
fn owes_drained(events: &mut Events<Raw>, id: switchboard::SessionId) -> Option<bool> {
    events
        .drain_now()
        .iter()
        .filter_map(|e| match e {
            Event::Full { id: of, .. } if *of == id => Some(true),
            Event::Drained { id: of, .. } if *of == id => Some(false),
            _ => None,
        })
        .last()
}

/// Writes until refused with the write buffer still full: when a drain came after the refusal
/// (the buffer emptied meanwhile), writes more. Returns the bytes accepted and the refusal;
/// afterwards a `write_buffer_drained` is owed.
async fn write_until_stuck(
    session: &Addr<ProbeSession<Raw>>,
    events: &mut Events<Raw>,
    id: switchboard::SessionId,
) -> (usize, SessionError) {
    let mut sent = 0;
    loop {
        let (now, refusal) = write_until_refused(session, sent).await;
        sent = now;
        match owes_drained(events, id) {
            Some(true) => return (sent, refusal),
            Some(false) => continue,
            None => {
                events.full(id).await;
                return (sent, refusal);
            }
        }
    }
}

/// Writes pattern chunks from outside until the session refuses one; returns the bytes
/// accepted and the refusal.
async fn write_until_refused(
    session: &Addr<ProbeSession<Raw>>,
    mut sent: usize,
) -> (usize, SessionError) {
    loop {
        assert!(sent < NEVER, "{sent} bytes accepted without backpressure");
        let chunk = Bytes::from(pattern(sent, CHUNK));
        match within("Write", session.send(Write(chunk))).await.unwrap() {
            Ok(()) => sent += CHUNK,
            Err(e) => return (sent, e),
        }
    }
}

#[actix_rt::test]
async fn full_write_buffer_refuses_writes_until_the_peer_reads() {
    let config = SessionConfig::default().with_idle_timeout(None);
    let high = config.high_watermark();
    let low = config.low_watermark();
    let (server, probes, mut events) = serve_raw(config);
    let (client, mut peer, go) = lazy_reader(server.local_addr());
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, session) = events.connected_from(peer).await;

    let (sent, refusal) = write_until_stuck(&session, &mut events, info.id).await;
    match refusal {
        SessionError::WriteBufferFull {
            buffered,
            high_watermark,
        } => {
            assert_eq!(high_watermark, high);
            assert!(buffered >= high, "refused at {buffered} < {high}");
            assert!(buffered < high + CHUNK, "buffer grew to {buffered}");
        }
        other => panic!("expected WriteBufferFull, got {other:?}"),
    }
    // The handler heard of it (before the refusal, or on the flush right after it), and
    // memory stays bounded while the peer does not read.
    let snapshot = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert!(
        snapshot.bytes_to_write < high + CHUNK,
        "{}",
        snapshot.bytes_to_write
    );
    assert_eq!(snapshot.state, SessionState::Connected);
    // The registry sees the same bound.
    let listed = server.registry().get(info.id).unwrap();
    assert!(listed.bytes_to_write < high + CHUNK);

    // The peer reads: the buffer drains to the low watermark and writes are welcome again.
    go.send(()).unwrap();
    let left = events.drained(info.id).await;
    assert!(left <= low, "drained at {left} > {low}");
    // More chunks go through at once.
    let mut total = sent;
    for _ in 0..2 {
        let chunk = Bytes::from(pattern(total, CHUNK));
        within("Write", session.send(Write(chunk)))
            .await
            .unwrap()
            .expect("writes accepted after the drain");
        total += CHUNK;
    }
    within("Flush", session.send(Flush))
        .await
        .unwrap()
        .expect("flushed");
    within("DisconnectFromHost", session.send(DisconnectFromHost))
        .await
        .unwrap();
    let got = within("the client", client).await.unwrap();
    assert_eq!(got.len(), total, "every accepted byte arrives, no more");
    assert_pattern(&got);
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Closed), "{reason:?}");
}

/// Above the high watermark the session is not parked: `GetInfo` and `Abort` are answered at
/// once (well inside the close timeout it would otherwise sit out).
#[actix_rt::test]
async fn get_info_and_abort_are_answered_while_the_write_buffer_is_full() {
    let config = SessionConfig::default()
        .with_idle_timeout(None)
        .with_close_timeout(Duration::from_secs(30));
    let (server, probes, mut events) = serve_raw(config);
    let (client, mut peer, go) = lazy_reader(server.local_addr());
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, session) = events.connected_from(peer).await;
    let (_, refusal) = write_until_refused(&session, 0).await;
    assert!(refusal.is_backpressure(), "{refusal:?}");
    events.full(info.id).await;

    let prompt = Duration::from_secs(5);
    for _ in 0..10 {
        let snapshot = tokio::time::timeout(prompt, session.send(GetInfo))
            .await
            .expect("GetInfo answered promptly while full")
            .unwrap();
        assert!(snapshot.bytes_to_write < config_high() + CHUNK);
    }
    tokio::time::timeout(prompt, session.send(Abort))
        .await
        .expect("Abort answered promptly while full")
        .unwrap();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Aborted), "{reason:?}");
    go.send(()).unwrap();
    // Unsent data was discarded: the client gets at most what was buffered in the kernel.
    let _ = within("the client", client).await.unwrap();
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

fn config_high() -> usize {
    SessionConfig::default().high_watermark()
}

/// With tiny watermarks an echo handler never has a write refused: a session stops handing
/// frames to its handler once its buffer reaches the high watermark (where writes start being
/// refused), not one frame later.
#[actix_rt::test]
async fn echo_is_never_refused_with_small_watermarks() {
    // 8-byte lines ("line-NN\n") and a high watermark of exactly 8 of them.
    let config = SessionConfig::default().with_write_watermarks(16, 64);
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(config)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let lines: Vec<String> = (0..200).map(|i| format!("line-{:02}", i % 100)).collect();
    let sent = lines.clone();
    let echoed = blocking("a pipelining client", move || {
        let mut client = BufReader::new(std_connect(addr));
        // All at once, so the session decodes many frames in one turn.
        client
            .get_mut()
            .write_all(
                sent.iter()
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
                    .as_bytes(),
            )
            .unwrap();
        (0..sent.len())
            .map(|_| read_line(&mut client))
            .collect::<Vec<_>>()
    })
    .await;
    events.assert_no_refused_write();
    assert_eq!(echoed, lines);
    let (info, _, _) = events.connected().await;
    ended_once(&probes, &mut events, info.id).await;
}

/// A writer that was refused always hears `write_buffer_full` and then
/// `write_buffer_drained`, even when the session flushed below the mark before it noticed:
/// waiting for the drain after a refusal, as `SessionError::WriteBufferFull` advises, never
/// hangs.
#[actix_rt::test]
async fn a_refused_writer_always_hears_full_then_drained() {
    let config = SessionConfig::default()
        .with_idle_timeout(None)
        .with_write_watermarks(1024, 4 * CHUNK);
    let (server, probes, mut events) = serve_raw(config);
    let addr = server.local_addr();
    let (client, mut peer, go) = lazy_reader(addr);
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, session) = events.connected_from(peer).await;
    let (sent, refusal) = write_until_stuck(&session, &mut events, info.id).await;
    assert!(refusal.is_backpressure(), "{refusal:?}");
    go.send(()).unwrap();
    events.drained(info.id).await;
    within("DisconnectFromHost", session.send(DisconnectFromHost))
        .await
        .unwrap();
    let got = within("the client", client).await.unwrap();
    assert_eq!(got.len(), sent);
    assert_pattern(&got);
    ended_once(&probes, &mut events, info.id).await;
}

/// `Flush` resolves once everything written so far reached the kernel, even after the buffer
/// went over the high watermark.
#[actix_rt::test]
async fn flush_resolves_after_a_slow_reader_catches_up() {
    let config = SessionConfig::default().with_idle_timeout(None);
    let (server, probes, mut events) = serve_raw(config);
    let (client, mut peer, go) = lazy_reader(server.local_addr());
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, session) = events.connected_from(peer).await;
    let (sent, _) = write_until_refused(&session, 0).await;
    let flush = session.send(Flush);
    go.send(()).unwrap();
    within("Flush", flush).await.unwrap().expect("flushed");
    let snapshot = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert_eq!(snapshot.bytes_to_write, 0);
    assert_eq!(snapshot.bytes_out, sent as u64);
    within("DisconnectFromHost", session.send(DisconnectFromHost))
        .await
        .unwrap();
    let got = within("the client", client).await.unwrap();
    assert_eq!(got.len(), sent);
    ended_once(&probes, &mut events, info.id).await;
}

/// On the first frame (by then the socket is known to be writable), writes exactly the limit of
/// an answer (two high watermarks), then one more item, which is refused; reports what it
/// hears.
struct Eager {
    heard: mpsc::UnboundedSender<&'static str>,
    done: bool,
}

impl switchboard::SessionHandler<Raw> for Eager {
    fn ready_read(&mut self, _: Bytes, conn: &mut switchboard::Conn<'_, Raw, Self>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let answer_limit = 2 * conn.config().high_watermark();
        conn.write(Bytes::from(vec![1u8; answer_limit])).unwrap();
        let refused = conn.write(Bytes::from_static(b"one more")).unwrap_err();
        assert!(refused.is_backpressure(), "{refused:?}");
        let _ = self.heard.send("refused");
    }

    fn write_buffer_full(&mut self, _: &mut switchboard::Conn<'_, Raw, Self>) {
        let _ = self.heard.send("full");
    }

    fn write_buffer_drained(&mut self, _: &mut switchboard::Conn<'_, Raw, Self>) {
        let _ = self.heard.send("drained");
    }
}

/// The deterministic case of the above: the refusal happens just before a flush that empties
/// the buffer into the (writable) socket at once. The handler still hears both events.
#[actix_rt::test]
async fn a_refusal_just_before_a_flush_is_still_reported() {
    let (tx, mut heard) = mpsc::unbounded_channel();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Raw, move || Eager {
            heard: tx.clone(),
            done: false,
        })
        .unwrap();
    let addr = server.local_addr();
    let high = SessionConfig::default().high_watermark();
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        std::io::Write::write_all(&mut stream, b"go").unwrap();
        let mut buf = vec![0u8; 2 * high];
        std::io::Read::read_exact(&mut stream, &mut buf).unwrap();
    });
    for expected in ["refused", "full", "drained"] {
        assert_eq!(within(expected, heard.recv()).await, Some(expected));
    }
    within("the client", client).await.unwrap();
}
