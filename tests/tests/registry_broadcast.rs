//! Registry fan-out: broadcast is bounded per session. With `SlowConsumerPolicy::Drop` a
//! client that does not read loses whole messages (counted) while a reading client gets every
//! one; with `Disconnect` the slow one is closed with `SlowConsumer`. Plus `send_to`, `kick`,
//! `wait_for_count`, and the same operations as registry actor messages.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
};

use actix::Actor;
use bytes::Bytes;
use switchboard::{
    Broadcast, CloseMode, DisconnectReason, Get, Kick, List, Listener, ListenerHandle, SendTo,
    SessionConfig,
    SessionError, SessionId, SlowConsumerPolicy, WaitForCount,
};
use switchboard_codec::Lines;
use switchboard_tests::{
    any_port, ended_once, read_line, read_to_eof, std_connect, within, Events, Probes,
};
use tokio::sync::mpsc;

/// Upper bound on broadcast rounds: far more than the few MiB loopback buffers absorb.
const MAX_ROUNDS: usize = 4000;

/// The sessions' slow-consumer timeout: short, so the tests that wait it out stay quick.
const SLOW_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

fn message(round: usize) -> String {
    format!("{round:06}:{}", "x".repeat(4000))
}

fn serve() -> (ListenerHandle, Probes<Lines>, Events<Lines>) {
    let (probes, events) = Probes::<Lines>::quiet();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(
            SessionConfig::default()
                .idle_timeout(None)
                .write_watermarks(4 * 1024, 16 * 1024)
                .outbound_queue(16 * 1024)
                .slow_consumer_timeout(SLOW_AFTER),
        )
        .serve(Lines::new(), probes.factory())
        .unwrap();
    (server, probes, events)
}

/// A client thread that forwards every line it reads to a channel, until EOF.
fn reading_client(addr: SocketAddr) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let stream = std_connect(addr);
    let peer = stream.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while let Ok(n) = reader.read_line(&mut line) {
            if n == 0 || tx.send(line.trim_end().to_string()).is_err() {
                break;
            }
            line.clear();
        }
    });
    (peer, rx)
}

/// Connects a client that reads nothing until `go`, then everything to EOF (returned).
fn stalled_client(
    addr: SocketAddr,
) -> (
    SocketAddr,
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<Vec<u8>>,
) {
    let mut stream: TcpStream = std_connect(addr);
    let peer = stream.local_addr().unwrap();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let done = tokio::task::spawn_blocking(move || {
        go_rx.recv().unwrap();
        read_to_eof(&mut stream, true)
    });
    (peer, go, done)
}

#[actix_rt::test]
async fn drop_policy_counts_drops_for_a_slow_client_while_a_reader_gets_everything() {
    let (server, probes, mut events) = serve();
    let addr = server.local_addr();
    let registry = server.registry().clone();
    let (fast_peer, mut fast) = reading_client(addr);
    let (slow_peer, slow_go, slow_done) = stalled_client(addr);
    let (fast_info, _) = events.connected_from(fast_peer).await;
    let (slow_info, _) = events.connected_from(slow_peer).await;

    // Broadcast until the slow client has lost 20 messages: once the kernel buffers, its write
    // buffer and its outbound queue are full, a broadcast waits for it for the slow-consumer
    // timeout, then it is a slow consumer and later messages skip it at once.
    let mut rounds = 0;
    let mut waited = 0;
    while registry.get(slow_info.id).unwrap().broadcasts_dropped < 20 {
        assert!(rounds < MAX_ROUNDS, "too few broadcasts were dropped");
        let report = within(
            "a broadcast",
            registry.broadcast(Bytes::from(message(rounds)), None, SlowConsumerPolicy::Drop),
        )
        .await;
        assert_eq!(report.sessions(), 2, "{report:?}");
        assert_eq!(report.delivered + report.dropped, 2, "{report:?}");
        waited += report.waited;
        // Lock step: the reading client gets this message before the next goes out.
        let got = within("the reading client's copy", fast.recv())
            .await
            .unwrap();
        assert_eq!(got, message(rounds), "round {rounds}");
        rounds += 1;
    }
    assert_eq!(registry.get(fast_info.id).unwrap().broadcasts_dropped, 0);
    assert!(waited > 0, "the stalled client never made a broadcast wait");
    assert_eq!(registry.stats().slow_consumers, 1, "found slow once, not per message");
    // Dropping is all the policy does: the slow client is still connected, its write buffer
    // bounded by the high watermark and its queue by its limit, each plus one message.
    let slow = registry.get(slow_info.id).expect("still connected");
    assert!(
        slow.bytes_to_write < 16 * 1024 + message(0).len() + 1,
        "{}",
        slow.bytes_to_write
    );
    assert!(
        slow.bytes_queued <= 16 * 1024 + message(0).len() + 33,
        "{}",
        slow.bytes_queued
    );

    // Kick it gracefully: it gets what was queued, whole messages in order, then EOF.
    assert!(registry.kick(slow_info.id, CloseMode::Graceful));
    slow_go.send(()).unwrap();
    let bytes = within("the slow client", slow_done).await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let received: Vec<usize> = text
        .lines()
        .map(|l| {
            assert_eq!(l.len(), message(0).len(), "a cut or merged message");
            l[..6].parse().unwrap()
        })
        .collect();
    assert!(received.windows(2).all(|w| w[0] < w[1]), "out of order");
    let (reason, last) = events.disconnected(slow_info.id).await;
    events.dropped(slow_info.id).await;
    assert_eq!(probes.disconnects(slow_info.id), 1);
    assert!(matches!(reason, DisconnectReason::Kicked), "{reason:?}");
    // Every round was either written to the slow client or counted as dropped for it.
    assert_eq!(
        received.len() as u64 + last.broadcasts_dropped,
        rounds as u64
    );
    assert_eq!(registry.stats().broadcasts_dropped, last.broadcasts_dropped);
    assert!(
        !registry.kick(slow_info.id, CloseMode::Abort),
        "kicking a gone session"
    );
    assert_eq!(registry.count(), 1);
}

#[actix_rt::test]
async fn disconnect_policy_closes_the_slow_client_only() {
    let (server, probes, mut events) = serve();
    let addr = server.local_addr();
    let registry = server.registry().clone();
    let (fast_peer, mut fast) = reading_client(addr);
    let (slow_peer, slow_go, slow_done) = stalled_client(addr);
    let (fast_info, _) = events.connected_from(fast_peer).await;
    let (slow_info, _) = events.connected_from(slow_peer).await;

    let mut rounds = 0;
    while registry.get(slow_info.id).is_some() {
        assert!(
            rounds < MAX_ROUNDS,
            "the slow client was never disconnected"
        );
        within(
            "a broadcast",
            registry.broadcast(
                Bytes::from(message(rounds)),
                None,
                SlowConsumerPolicy::Disconnect,
            ),
        )
        .await;
        let got = within("the reading client's copy", fast.recv())
            .await
            .unwrap();
        assert_eq!(got, message(rounds), "round {rounds}");
        rounds += 1;
    }
    let reason = ended_once(&probes, &mut events, slow_info.id).await;
    assert!(
        matches!(reason, DisconnectReason::SlowConsumer),
        "{reason:?}"
    );
    assert!(reason.is_error());
    slow_go.send(()).unwrap();
    within("the slow client", slow_done).await.unwrap();

    // The reader is unaffected and keeps getting broadcasts.
    let report = registry
        .broadcast(
            Bytes::from(message(rounds)),
            None,
            SlowConsumerPolicy::Disconnect,
        )
        .await;
    assert_eq!(report.delivered, 1);
    assert_eq!(report.sessions(), 1);
    assert_eq!(
        within("the reader's copy", fast.recv()).await.unwrap(),
        message(rounds)
    );
    assert_eq!(registry.count(), 1);
    assert!(registry.get(fast_info.id).is_some());
}

#[actix_rt::test]
async fn send_to_kick_and_wait_for_count() {
    let (server, probes, mut events) = serve();
    let addr = server.local_addr();
    let registry = server.registry().clone();

    let two = registry.wait_for_count(2);
    let (a_peer, mut a) = reading_client(addr);
    let (b_peer, mut b) = reading_client(addr);
    within("two sessions", two).await;
    let (a_info, _) = events.connected_from(a_peer).await;
    let (b_info, _) = events.connected_from(b_peer).await;

    within(
        "send_to",
        registry.send_to(a_info.id, Bytes::from_static(b"for a only")),
    )
    .await
    .unwrap();
    assert_eq!(within("a's line", a.recv()).await.unwrap(), "for a only");
    let report = registry
        .broadcast(
            Bytes::from_static(b"for everyone but a"),
            Some(a_info.id),
            SlowConsumerPolicy::Drop,
        )
        .await;
    assert_eq!(report.delivered, 1);
    assert_eq!(report.sessions(), 1);
    assert_eq!(
        within("b's line", b.recv()).await.unwrap(),
        "for everyone but a"
    );

    // Kick a at once: it ends with Kicked, and the count follows.
    assert!(registry.kick(a_info.id, CloseMode::Abort));
    let reason = ended_once(&probes, &mut events, a_info.id).await;
    assert!(matches!(reason, DisconnectReason::Kicked), "{reason:?}");
    assert!(within("a's EOF", a.recv()).await.is_none());
    within("one session", registry.wait_for_count(1)).await;
    let gone = within(
        "send_to a gone session",
        registry.send_to(a_info.id, Bytes::new()),
    )
    .await;
    assert!(matches!(gone, Err(SessionError::Gone)), "{gone:?}");
    assert!(!registry.kick(a_info.id, CloseMode::Graceful));
    let listed: Vec<SessionId> = registry.ids();
    assert_eq!(listed, vec![b_info.id]);
    assert!(registry.get(b_info.id).is_some());
}

/// The registry as an actor answers the same questions as the handle.
#[actix_rt::test]
async fn registry_actor_messages() {
    let (server, probes, mut events) = serve();
    let addr = server.local_addr();
    let actor = server.registry().clone().start();
    let waiting = actor.send(WaitForCount(1));
    let client = std_connect(addr);
    within("WaitForCount(1)", waiting).await.unwrap();
    let (info, _) = events.connected_from(client.local_addr().unwrap()).await;
    let mut reader = BufReader::new(client);

    let list = within("List", actor.send(List)).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, info.id);
    let got = within("Get", actor.send(Get(info.id))).await.unwrap();
    assert_eq!(got.map(|i| i.peer_addr), Some(info.peer_addr));
    within(
        "SendTo",
        actor.send(SendTo {
            id: info.id,
            data: Bytes::from_static(b"by message"),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let report = within(
        "Broadcast",
        actor.send(Broadcast {
            data: Bytes::from_static(b"to all"),
            except: None,
            policy: SlowConsumerPolicy::Drop,
        }),
    )
    .await
    .unwrap();
    assert_eq!(report.delivered, 1);
    let lines = tokio::task::spawn_blocking(move || {
        let first = read_line(&mut reader);
        let second = read_line(&mut reader);
        (reader, first, second)
    });
    let (reader, first, second) = within("the client's lines", lines).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("by message", "to all"));
    assert!(within(
        "Kick",
        actor.send(Kick {
            id: info.id,
            mode: CloseMode::Abort,
        })
    )
    .await
    .unwrap());
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Kicked), "{reason:?}");
    within("WaitForCount(0)", actor.send(WaitForCount(0)))
        .await
        .unwrap();
    drop(reader);
}
