//! Graceful drain: `ListenerHandle::shutdown(drain_timeout)` with clients in the middle of an
//! echo. Every byte a session accepted (read from its socket) before the shutdown is answered
//! and flushed, so each session ends with `bytes_in == bytes_out` and its client receives
//! exactly `bytes_out` bytes of the pattern it sent; the report counts every session as drained.
//! When some clients stop reading, the drain cannot finish: those sessions are aborted at the
//! deadline and the report says how many and how many bytes they left unflushed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use switchboard::{
    raise_fd_limit, Conn, DisconnectReason, Listener, ListenerHandle, Registry, SessionBuilder,
    SessionConfig, SessionHandler, SessionInfo,
};
use switchboard_codec::Raw;
use switchboard_tests::{any_port, blocking, pattern, pattern_byte, within, LIMIT};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
};

/// Bytes per client write.
const CHUNK: usize = 4 * 1024;
/// How far a client's sending may run ahead of the echo it received.
const WINDOW: u64 = 64 * 1024;
/// Most a client sends; far more than it can send before the shutdown, so every client is
/// still sending when it comes (`capped` proves it).
const CAP: usize = 64 * 1024 * 1024;

/// What the server's sessions report.
#[derive(Debug)]
enum Seen {
    /// The write buffer of the session with this peer reached its high watermark.
    Full(SocketAddr),
    /// A session ended.
    Ended(DisconnectReason, Box<SessionInfo>),
}

/// A raw echo that reports `write_buffer_full` and `disconnected`. Its writes are never
/// refused (frames wait while the buffer is at the high watermark): a refusal would panic and
/// show up as `HandlerPanicked`.
struct Echo {
    seen: mpsc::UnboundedSender<Seen>,
}

impl SessionHandler<Raw> for Echo {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        if let Err(error) = conn.write(data) {
            panic!("echo refused: {error}");
        }
    }

    fn write_buffer_full(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        let _ = self
            .seen
            .send(Seen::Full(conn.peer_addr().socket_addr().unwrap()));
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let _ = self
            .seen
            .send(Seen::Ended(reason.clone(), Box::new(info.clone())));
    }
}

fn serve(close_timeout: Duration) -> (ListenerHandle, mpsc::UnboundedReceiver<Seen>) {
    raise_fd_limit().expect("raise the descriptor limit");
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(
            SessionConfig::default()
                .with_read_chunk(16 * 1024)
                .with_write_watermarks(16 * 1024, 32 * 1024)
                .with_idle_timeout(None)
                .with_close_timeout(close_timeout),
        )
        .serve(Raw, move || Echo { seen: tx.clone() })
        .unwrap();
    (server, rx)
}

/// What a client saw.
#[derive(Debug)]
struct Outcome {
    local: SocketAddr,
    /// Bytes of echo received (all of them the pattern, in order).
    received: u64,
    /// Whether it had sent all of `CAP` before the server closed: it was not mid-echo.
    capped: bool,
}

/// A client that streams the pattern, at most `WINDOW` bytes ahead of the echo (a pipelining
/// client), and reads the echo until EOF, checking every byte. It says once when the first echo
/// arrived, stops sending at EOF, and closes.
async fn reader(addr: SocketAddr, echoing: mpsc::UnboundedSender<()>) -> Outcome {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let local = stream.local_addr().unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let (progress, mut echoed) = watch::channel(0u64);
    let capped = Arc::new(AtomicBool::new(false));
    let writer = {
        let capped = capped.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < CAP {
                let chunk = pattern(sent, CHUNK);
                let ahead = sent as u64;
                tokio::select! {
                    room = echoed.wait_for(|&got| ahead - got < WINDOW) => {
                        if room.is_err() {
                            return;
                        }
                    }
                    _ = &mut stopped => return,
                }
                tokio::select! {
                    written = wr.write_all(&chunk) => {
                        if written.is_err() {
                            return;
                        }
                        sent += CHUNK;
                    }
                    _ = &mut stopped => return,
                }
            }
            capped.store(true, Ordering::SeqCst);
            let _ = stopped.await;
            // Dropping `wr` shuts the write side: the server, lingering, sees the FIN.
        })
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut received = 0u64;
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => panic!("client {local}: read failed after {received} bytes: {e}"),
        };
        if n == 0 {
            break;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            let at = received as usize + i;
            assert_eq!(b, pattern_byte(at), "client {local}: byte {at} of the echo");
        }
        if received == 0 {
            let _ = echoing.send(());
        }
        received += n as u64;
        let _ = progress.send(received);
    }
    let _ = stop.send(());
    writer.await.unwrap();
    Outcome {
        local,
        received,
        capped: capped.load(Ordering::SeqCst),
    }
}

/// A client that sends the pattern and never reads: the server's write buffer fills and stays
/// full. Ends when the server's abort makes a write fail.
async fn non_reader(addr: SocketAddr, peer: oneshot::Sender<SocketAddr>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = peer.send(stream.local_addr().unwrap());
    let mut sent = 0;
    while sent < CAP {
        if stream.write_all(&pattern(sent, CHUNK)).await.is_err() {
            return;
        }
        sent += CHUNK;
    }
    panic!("{CAP} bytes sent to a server that should have stopped reading");
}

/// Collects `n` `disconnected` reports, by peer address.
async fn ends(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    n: usize,
) -> HashMap<SocketAddr, (DisconnectReason, SessionInfo)> {
    let mut ended = HashMap::new();
    while ended.len() < n {
        match within("a session to end", seen.recv()).await.unwrap() {
            Seen::Ended(reason, info) => {
                assert!(ended
                    .insert(info.peer_addr.socket_addr().unwrap(), (reason, *info))
                    .is_none());
            }
            Seen::Full(_) => {}
        }
    }
    ended
}

/// Checks one drained client against its session: every byte read was answered and flushed,
/// and the client got exactly what the server wrote.
fn assert_drained(outcome: &Outcome, reason: &DisconnectReason, info: &SessionInfo) {
    assert!(
        matches!(reason, DisconnectReason::Shutdown),
        "{}: {reason:?}",
        outcome.local
    );
    assert_eq!(
        info.bytes_in, info.bytes_out,
        "{}: read {} bytes but answered {} (discarded after the close: {})",
        outcome.local, info.bytes_in, info.bytes_out, info.bytes_discarded
    );
    assert_eq!(
        outcome.received, info.bytes_out,
        "{}: the server wrote {} bytes, the client got {}",
        outcome.local, info.bytes_out, outcome.received
    );
    assert_eq!(info.bytes_to_write, 0);
    assert!(!outcome.capped, "{} was not mid-echo", outcome.local);
}

const CLIENTS: usize = 1000;

#[actix_rt::test]
async fn shutdown_mid_echo_answers_every_accepted_byte_of_1000_connections() {
    let drain = Duration::from_secs(30);
    let (server, mut seen) = serve(drain);
    let addr = server.local_addr();
    let (echoing_tx, mut echoing) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(reader(addr, echoing_tx.clone())))
        .collect();
    // Every client is connected and has had some of its echo: traffic flows everywhere.
    for _ in 0..CLIENTS {
        within("every client's first echo", echoing.recv())
            .await
            .unwrap();
    }
    assert_eq!(server.registry().count(), CLIENTS);

    let report = match tokio::time::timeout(drain + LIMIT, server.shutdown(drain)).await {
        Ok(report) => report,
        Err(_) => panic!("shutdown did not return within {:?}", drain + LIMIT),
    };
    assert_eq!(report.drained, CLIENTS, "{report:?}");
    assert_eq!(report.aborted, 0, "{report:?}");
    assert_eq!(report.unflushed_bytes, 0, "{report:?}");
    assert!(report.elapsed < drain, "{report:?}");

    let ended = ends(&mut seen, CLIENTS).await;
    let mut totals = (0u64, 0u64, 0u64);
    for client in clients {
        let outcome = within("a client", client).await.unwrap();
        let (reason, info) = &ended[&outcome.local];
        assert_drained(&outcome, reason, info);
        totals.0 += info.bytes_in;
        totals.1 += outcome.received;
        totals.2 += info.bytes_discarded;
    }
    assert_eq!(totals.0, totals.1);
    within("the registry to empty", server.registry().wait_for_count(0)).await;
    println!(
        "drain of {CLIENTS}: {:?}, {} bytes accepted and answered, {} sent after the \
         shutdown and discarded",
        report.elapsed, totals.0, totals.2
    );
}

#[actix_rt::test]
async fn clients_that_stop_reading_are_aborted_at_the_drain_deadline() {
    const READERS: usize = 30;
    const STALLED: usize = 10;
    let drain = Duration::from_secs(2);
    // The close timeout must not end the stalled sessions first.
    let (server, mut seen) = serve(drain * 10);
    let addr = server.local_addr();

    let (echoing_tx, mut echoing) = mpsc::unbounded_channel();
    let readers: Vec<_> = (0..READERS)
        .map(|_| tokio::spawn(reader(addr, echoing_tx.clone())))
        .collect();
    let mut stalled = HashMap::new();
    let mut stalled_clients = Vec::new();
    for _ in 0..STALLED {
        let (tx, rx) = oneshot::channel();
        stalled_clients.push(tokio::spawn(non_reader(addr, tx)));
        stalled.insert(within("a stalled client", rx).await.unwrap(), false);
    }
    for _ in 0..READERS {
        within("every reader's first echo", echoing.recv())
            .await
            .unwrap();
    }
    // Every stalled client's session is at its high watermark.
    let mut full = 0;
    let mut early_ends = Vec::new();
    while full < STALLED {
        match within("the stalled sessions to fill up", seen.recv())
            .await
            .unwrap()
        {
            Seen::Full(peer) => {
                if let Some(flag) = stalled.get_mut(&peer) {
                    if !std::mem::replace(flag, true) {
                        full += 1;
                    }
                }
            }
            Seen::Ended(reason, info) => early_ends.push((reason, info)),
        }
    }
    assert!(
        early_ends.is_empty(),
        "sessions ended early: {early_ends:?}"
    );

    let started = Instant::now();
    let report = within("shutdown", server.shutdown(drain)).await;
    let took = started.elapsed();
    assert_eq!(report.aborted, STALLED, "{report:?}");
    assert_eq!(report.drained, READERS, "{report:?}");
    assert!(report.unflushed_bytes > 0, "{report:?}");
    assert!(report.elapsed >= drain, "{report:?}");
    assert!(
        took < drain + Duration::from_secs(5),
        "shutdown took {took:?}"
    );

    let ended = ends(&mut seen, READERS + STALLED).await;
    for client in readers {
        let outcome = within("a reader", client).await.unwrap();
        let (reason, info) = &ended[&outcome.local];
        assert_drained(&outcome, reason, info);
    }
    // What the aborted sessions had read and not answered covers what the report says was
    // left in their write buffers.
    let mut owed = 0;
    for (peer, (reason, info)) in &ended {
        if stalled.contains_key(peer) {
            assert!(matches!(reason, DisconnectReason::Shutdown), "{reason:?}");
            assert!(info.bytes_in >= info.bytes_out);
            owed += info.bytes_in - info.bytes_out;
        }
    }
    assert!(owed >= report.unflushed_bytes as u64, "{owed} < {report:?}");
    for client in stalled_clients {
        within("a stalled client to see the abort", client)
            .await
            .unwrap();
    }
    within("the registry to empty", server.registry().wait_for_count(0)).await;
    println!(
        "drain deadline: {report:?}, wall {took:?}, {owed} bytes read and unanswered by the \
         aborted sessions"
    );
}

/// Accepts one client on `listener` and starts an echo session for it in `registry`.
fn join(
    listener: &std::net::TcpListener,
    registry: &Registry,
    seen: &mpsc::UnboundedSender<Seen>,
) -> std::net::TcpStream {
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    SessionBuilder::new(Raw, Echo { seen: seen.clone() })
        .registry(registry.clone())
        .start_std(accepted)
        .unwrap();
    client
}

/// A session that registers after the shutdown asked everyone to close (accepted just before
/// the listener stopped, started just after) is closed and drained like the others; the drain
/// does not sit out its deadline waiting for it.
#[actix_rt::test]
async fn a_session_that_joins_during_the_drain_is_drained_too() {
    use std::io::{Read as _, Write as _};

    let drain = Duration::from_secs(30);
    let registry = Registry::new();
    let listener = std::net::TcpListener::bind(any_port()).unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();

    let mut first = join(&listener, &registry, &seen_tx);
    within("the first session", registry.wait_for_count(1)).await;
    let shutdown = tokio::spawn(registry.shutdown(drain));
    // The first session closes its side (EOF here) and lingers for ours: the drain is on.
    let mut rest = Vec::new();
    let first = blocking("the first client's EOF", move || {
        assert_eq!(first.read_to_end(&mut rest).unwrap(), 0);
        first
    })
    .await;

    // Now a second session joins.
    let mut second = join(&listener, &registry, &seen_tx);
    let second = blocking("the late client's echo and EOF", move || {
        // It may answer what arrives before its close, then closes: EOF, never a hang.
        let _ = second.write_all(b"late");
        let mut got = Vec::new();
        second.read_to_end(&mut got).unwrap();
        assert!(b"late".starts_with(&got), "{got:?}");
        second
    })
    .await;
    drop((first, second));

    let report = within("the shutdown", shutdown).await.unwrap();
    assert_eq!(report.drained, 2, "{report:?}");
    assert_eq!(report.aborted, 0, "{report:?}");
    assert!(report.elapsed < drain, "{report:?}");
    for (reason, _) in ends(&mut seen, 2).await.values() {
        assert!(matches!(reason, DisconnectReason::Shutdown), "{reason:?}");
    }
    assert_eq!(registry.count(), 0);
}
