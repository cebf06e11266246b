//! `disconnected` runs exactly once per session whatever ends it (peer close, peer reset,
//! `Abort`, `DisconnectFromHost`, idle timeout, codec error, close timeout), with the right
//! reason, and the registry count goes back to 0. A graceful close flushes everything first.

use std::{
    io::{BufReader, Write as _},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use switchboard::{
    Abort, Conn, DisconnectFromHost, DisconnectReason, Listener, ListenerHandle, SessionConfig,
    SessionHandler, SessionId, SessionInfo, Write,
};
use switchboard_codec::{CodecError, Lines, Raw};
use switchboard_tests::{
    any_port, assert_pattern, blocking, codec_error, echo_line, ended_once, pattern, read_to_eof,
    std_connect, within, Action, Events, Probes,
};
use tokio::sync::mpsc;

fn serve_lines(
    codec: Lines,
    config: SessionConfig,
    script: impl Fn(&String) -> Action + Send + Sync + 'static,
) -> (ListenerHandle, Probes<Lines>, Events<Lines>) {
    let (probes, events) = Probes::<Lines>::new(script);
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(config)
        .serve(codec, probes.factory())
        .unwrap();
    (server, probes, events)
}

fn echo_lines() -> (ListenerHandle, Probes<Lines>, Events<Lines>) {
    serve_lines(Lines::new(), SessionConfig::default(), |_| Action::Echo)
}

/// Connects a std client that holds its socket until told to go, and reports its address.
fn hold_client(
    addr: SocketAddr,
    body: impl FnOnce(&mut BufReader<std::net::TcpStream>) + Send + 'static,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<SocketAddr>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = tokio::task::spawn_blocking(move || {
        let stream = std_connect(addr);
        tx.send(stream.local_addr().unwrap()).unwrap();
        let mut reader = BufReader::new(stream);
        body(&mut reader);
    });
    (client, rx)
}

async fn after_end(server: &ListenerHandle) {
    within("the registry to empty", server.registry().wait_for_count(0)).await;
    assert_eq!(server.registry().list().len(), 0);
}

#[actix_rt::test]
async fn peer_close_ends_the_session_once() {
    let (server, probes, mut events) = echo_lines();
    let addr = server.local_addr();
    let (client, mut peer) = hold_client(addr, |c| {
        assert_eq!(echo_line(c, "bye soon"), "bye soon");
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, _) = events.connected_from(peer).await;
    within("client", client).await.unwrap();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert!(!reason.is_error());
    after_end(&server).await;
}

#[actix_rt::test]
async fn peer_reset_ends_the_session_once() {
    let (server, probes, mut events) = echo_lines();
    let addr = server.local_addr();
    let (client, mut peer) = hold_client(addr, |c| {
        assert_eq!(echo_line(c, "about to reset"), "about to reset");
        // SO_LINGER 0 then close: the kernel sends RST instead of FIN.
        socket2::SockRef::from(c.get_ref())
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, _) = events.connected_from(peer).await;
    within("client", client).await.unwrap();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Reset), "{reason:?}");
    assert!(reason.is_error());
    after_end(&server).await;
}

#[actix_rt::test]
async fn abort_message_ends_the_session_once() {
    let (server, probes, mut events) = echo_lines();
    let addr = server.local_addr();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (client, mut peer) = hold_client(addr, move |c| {
        assert_eq!(echo_line(c, "hi"), "hi");
        go_rx.recv().unwrap();
        // The server closed: this side reads the end (EOF, or a reset).
        read_to_eof(c.get_mut(), true);
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, session) = events.connected_from(peer).await;
    assert_eq!(events.frame(info.id).await, "hi");
    within("Abort", session.send(Abort)).await.unwrap();
    go_tx.send(()).unwrap();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Aborted), "{reason:?}");
    within("client", client).await.unwrap();
    after_end(&server).await;
    // Both ends are gone: a second Abort finds no session.
    assert!(session.send(Abort).await.is_err());
}

#[actix_rt::test]
async fn disconnect_from_host_message_ends_the_session_once() {
    let (server, probes, mut events) = echo_lines();
    let addr = server.local_addr();
    let (client, mut peer) = hold_client(addr, |c| {
        assert_eq!(echo_line(c, "hi"), "hi");
        // A clean EOF after everything: then this side closes too.
        assert!(read_to_eof(c.get_mut(), false).is_empty());
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, session) = events.connected_from(peer).await;
    assert_eq!(events.frame(info.id).await, "hi");
    within("DisconnectFromHost", session.send(DisconnectFromHost))
        .await
        .unwrap();
    within("client", client).await.unwrap();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Closed), "{reason:?}");
    after_end(&server).await;
}

#[actix_rt::test]
async fn idle_timeout_ends_the_session_once() {
    let idle = Duration::from_millis(200);
    let config = SessionConfig::default().with_idle_timeout(Some(idle));
    let (server, probes, mut events) = serve_lines(Lines::new(), config, |_| Action::Echo);
    let addr = server.local_addr();
    // The client says nothing and waits for the server to give up on it.
    let (client, mut peer) = hold_client(addr, |c| {
        assert!(read_to_eof(c.get_mut(), true).is_empty());
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, _) = events.connected_from(peer).await;
    let since = Instant::now();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(
        matches!(reason, DisconnectReason::IdleTimeout),
        "{reason:?}"
    );
    // It never fires early (the check runs every quarter of the timeout).
    assert!(
        since.elapsed() >= idle - idle / 4,
        "idle timeout fired after {:?}",
        since.elapsed()
    );
    within("client", client).await.unwrap();
    after_end(&server).await;
}

#[actix_rt::test]
async fn activity_keeps_an_idle_timeout_away() {
    // Wide enough that a round trip on a loaded machine stays well inside it.
    let idle = Duration::from_secs(1);
    let config = SessionConfig::default().with_idle_timeout(Some(idle));
    let (server, probes, mut events) = serve_lines(Lines::new(), config, |_| Action::Echo);
    let addr = server.local_addr();
    // Lines go back and forth for twice the timeout, each one well inside it.
    let (client, mut peer) = hold_client(addr, move |c| {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < idle * 2 && n < 100_000 {
            assert_eq!(echo_line(c, &format!("tick {n}")), format!("tick {n}"));
            n += 1;
        }
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, _) = events.connected_from(peer).await;
    within("client", client).await.unwrap();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    after_end(&server).await;
}

#[actix_rt::test]
async fn codec_error_ends_the_session_once() {
    let (server, probes, mut events) =
        serve_lines(Lines::with_max_length(16), SessionConfig::default(), |_| {
            Action::Echo
        });
    let addr = server.local_addr();
    let (client, mut peer) = hold_client(addr, |c| {
        c.get_mut()
            .write_all(format!("{}\n", "x".repeat(100)).as_bytes())
            .unwrap();
        read_to_eof(c.get_mut(), true);
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, _) = events.connected_from(peer).await;
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(
        matches!(codec_error(&reason), CodecError::LineTooLong { limit: 16 }),
        "{reason:?}"
    );
    within("client", client).await.unwrap();
    after_end(&server).await;
}

/// A handler's own `disconnect_from_host` is bounded by the close timeout too: a peer that
/// never closes its side cannot hold the session open for ever.
#[actix_rt::test]
async fn handler_disconnect_from_host_is_bounded_by_the_close_timeout() {
    let config = SessionConfig::default()
        .with_idle_timeout(None)
        .with_close_timeout(Duration::from_millis(300));
    let (server, probes, mut events) = serve_lines(Lines::new(), config, |line| {
        if line == "bye" {
            Action::DisconnectFromHost
        } else {
            Action::Echo
        }
    });
    let addr = server.local_addr();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (client, mut peer) = hold_client(addr, move |c| {
        c.get_mut().write_all(b"bye\n").unwrap();
        // Sees the server's FIN, but keeps its own side open until the test is over.
        assert!(read_to_eof(c.get_mut(), false).is_empty());
        done_rx.recv().unwrap();
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, _) = events.connected_from(peer).await;
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(
        matches!(reason, DisconnectReason::CloseTimeout),
        "{reason:?}"
    );
    after_end(&server).await;
    done_tx.send(()).unwrap();
    within("client", client).await.unwrap();
}

/// The same for a `DisconnectFromHost` message: both ways of closing behave alike.
#[actix_rt::test]
async fn disconnect_from_host_message_is_bounded_by_the_close_timeout() {
    let config = SessionConfig::default()
        .with_idle_timeout(None)
        .with_close_timeout(Duration::from_millis(300));
    let (server, probes, mut events) = serve_lines(Lines::new(), config, |_| Action::Echo);
    let addr = server.local_addr();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (client, mut peer) = hold_client(addr, move |c| {
        assert!(read_to_eof(c.get_mut(), false).is_empty());
        done_rx.recv().unwrap();
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, session) = events.connected_from(peer).await;
    within("DisconnectFromHost", session.send(DisconnectFromHost))
        .await
        .unwrap();
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(
        matches!(reason, DisconnectReason::CloseTimeout),
        "{reason:?}"
    );
    after_end(&server).await;
    done_tx.send(()).unwrap();
    within("client", client).await.unwrap();
}

const TEN_MIB: usize = 10 * 1024 * 1024;

/// Writes `total` bytes of the test pattern as fast as the write buffer allows, refilling on
/// `bytes_written`; then closes gracefully if told to.
struct Blaster {
    total: usize,
    sent: usize,
    /// Start on the first frame received instead of on `connected`.
    on_request: bool,
    close_when_done: bool,
    closing: bool,
    ended: mpsc::UnboundedSender<(SessionId, DisconnectReason, SessionInfo)>,
    calls: Arc<AtomicUsize>,
}

impl Blaster {
    fn pump(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        while self.sent < self.total {
            let n = (64 * 1024).min(self.total - self.sent);
            match conn.write(Bytes::from(pattern(self.sent, n))) {
                Ok(()) => self.sent += n,
                Err(e) if e.is_backpressure() => return,
                Err(e) => panic!("unexpected write error: {e}"),
            }
        }
        if self.close_when_done && !self.closing {
            self.closing = true;
            conn.disconnect_from_host();
        }
    }
}

impl SessionHandler<Raw> for Blaster {
    fn connected(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        if !self.on_request {
            self.pump(conn);
        }
    }

    fn ready_read(&mut self, _: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        if self.on_request && self.sent == 0 {
            self.pump(conn);
        }
    }

    fn bytes_written(&mut self, _: usize, conn: &mut Conn<'_, Raw, Self>) {
        if self.sent > 0 {
            self.pump(conn);
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.ended.send((info.id, reason.clone(), info.clone()));
    }
}

fn serve_blaster(
    config: SessionConfig,
    on_request: bool,
    close_when_done: bool,
) -> (
    ListenerHandle,
    mpsc::UnboundedReceiver<(SessionId, DisconnectReason, SessionInfo)>,
    Arc<AtomicUsize>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler_calls = calls.clone();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(config)
        .serve(Raw, move || Blaster {
            total: TEN_MIB,
            sent: 0,
            on_request,
            close_when_done,
            closing: false,
            ended: tx.clone(),
            calls: handler_calls.clone(),
        })
        .unwrap();
    (server, rx, calls)
}

/// A graceful close flushes: the handler writes 10 MiB then calls `disconnect_from_host`; a
/// std client reads exactly 10 MiB, byte for byte, then EOF.
#[actix_rt::test]
async fn graceful_close_from_the_handler_flushes_10_mib() {
    let (server, mut ended, calls) = serve_blaster(SessionConfig::default(), false, true);
    let addr = server.local_addr();
    let got = blocking("a client reading 10 MiB", move || {
        let mut client = std_connect(addr);
        read_to_eof(&mut client, false)
    })
    .await;
    assert_eq!(got.len(), TEN_MIB);
    assert_pattern(&got);
    let (_, reason, info) = within("disconnected", ended.recv()).await.unwrap();
    assert!(matches!(reason, DisconnectReason::Closed), "{reason:?}");
    assert_eq!(info.bytes_out, TEN_MIB as u64);
    after_end(&server).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// The same from outside: `Write` messages (waiting on `write_buffer_drained` when refused),
/// then a `DisconnectFromHost` message.
#[actix_rt::test]
async fn graceful_close_by_message_flushes_10_mib() {
    let (server, probes, mut events) = {
        let (probes, events) = Probes::<Raw>::quiet();
        let server = Listener::bind(any_port())
            .workers(2)
            .serve(Raw, probes.factory())
            .unwrap();
        (server, probes, events)
    };
    let addr = server.local_addr();
    let client = tokio::task::spawn_blocking(move || {
        let mut client = std_connect(addr);
        read_to_eof(&mut client, false)
    });
    let (info, session, _) = events.connected().await;
    let mut sent = 0;
    let mut refusals = 0;
    while sent < TEN_MIB {
        let n = (48 * 1024).min(TEN_MIB - sent);
        match within("Write", session.send(Write(Bytes::from(pattern(sent, n)))))
            .await
            .unwrap()
        {
            Ok(()) => sent += n,
            Err(e) if e.is_backpressure() => {
                refusals += 1;
                assert!(refusals < 10_000, "the write buffer never drains");
                events.drained(info.id).await;
            }
            Err(e) => panic!("unexpected write error: {e}"),
        }
    }
    within("DisconnectFromHost", session.send(DisconnectFromHost))
        .await
        .unwrap();
    let got = within("the client", client).await.unwrap();
    assert_eq!(got.len(), TEN_MIB);
    assert_pattern(&got);
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Closed), "{reason:?}");
    after_end(&server).await;
}

/// A peer that half-closes and then never reads is ended by the idle timeout: nothing moves.
#[actix_rt::test]
async fn peer_half_close_without_reading_ends_by_idle_timeout() {
    let config = SessionConfig::default().with_idle_timeout(Some(Duration::from_millis(300)));
    let (server, mut ended, calls) = serve_blaster(config, true, false);
    let addr = server.local_addr();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let mut client = std_connect(addr);
        client.write_all(b"send me everything").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        // Never reads; holds the socket until the test is over.
        done_rx.recv().unwrap();
    });
    let (_, reason, info) = within("disconnected", ended.recv()).await.unwrap();
    assert!(
        matches!(reason, DisconnectReason::IdleTimeout),
        "{reason:?}"
    );
    assert!((info.bytes_out as usize) < TEN_MIB);
    after_end(&server).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    done_tx.send(()).unwrap();
    within("client", client).await.unwrap();
}

/// A peer's half-close is not a close of ours: a client that shuts its write side after the
/// request still gets the whole answer, however much longer than the close timeout it takes.
#[actix_rt::test]
async fn half_closed_peer_gets_a_long_answer_whatever_the_close_timeout() {
    let config = SessionConfig::default().with_close_timeout(Duration::from_millis(1));
    let (server, mut ended, calls) = serve_blaster(config, true, false);
    let addr = server.local_addr();
    let got = blocking("a half-closed client reading 10 MiB", move || {
        let mut client = std_connect(addr);
        client.write_all(b"send me everything").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        read_to_eof(&mut client, false)
    })
    .await;
    assert_eq!(got.len(), TEN_MIB);
    assert_pattern(&got);
    let (_, reason, info) = within("disconnected", ended.recv()).await.unwrap();
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert_eq!(info.bytes_out, TEN_MIB as u64);
    after_end(&server).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A handler's own `abort` ends the session at once, once.
#[actix_rt::test]
async fn handler_abort_ends_the_session_once() {
    let (server, probes, mut events) =
        serve_lines(Lines::new(), SessionConfig::default(), |line| {
            if line == "abort" {
                Action::Abort
            } else {
                Action::Echo
            }
        });
    let addr = server.local_addr();
    let (client, mut peer) = hold_client(addr, |c| {
        assert_eq!(echo_line(c, "first"), "first");
        c.get_mut().write_all(b"abort\nnever answered\n").unwrap();
        assert!(read_to_eof(c.get_mut(), true).is_empty());
    });
    let peer = within("client", peer.recv()).await.unwrap();
    let (info, _) = events.connected_from(peer).await;
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Aborted), "{reason:?}");
    within("client", client).await.unwrap();
    after_end(&server).await;
}
