//! Broadcast bursts: 10,000 short messages to 100 reading sessions lose nothing (each
//! broadcast waits while a reader's queue is full, it is never dropped); with 5 sessions that
//! never read added, those are dropped (or disconnected) and counted while the readers still
//! get everything, and the silent ones hold no more than their bounds.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
    thread::JoinHandle,
    time::Duration,
};

use bytes::Bytes;
use switchboard::{
    BroadcastReport, DisconnectReason, Listener, ListenerHandle, SessionConfig, SlowConsumerPolicy,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, within, Probes};

const MESSAGES: usize = 10_000;
const READERS: usize = 100;
const SILENT: usize = 5;
const HIGH: usize = 16 * 1024;
const QUEUE: usize = 16 * 1024;

fn serve() -> ListenerHandle {
    let (probes, _events) = Probes::<Lines>::quiet();
    Listener::bind(any_port())
        .workers(2)
        .session_config(
            SessionConfig::default()
                .with_idle_timeout(None)
                .with_write_watermarks(HIGH / 2, HIGH)
                .with_outbound_queue(QUEUE)
                .with_slow_consumer_timeout(Duration::from_millis(300)),
        )
        .serve(Lines::new(), probes.factory())
        .unwrap()
}

/// Reads `MESSAGES` lines and checks each is the next one.
fn reader(addr: SocketAddr) -> JoinHandle<usize> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        for expected in 0..MESSAGES {
            line.clear();
            let n = reader.read_line(&mut line).expect("a line");
            assert!(n > 0, "EOF after {expected} messages");
            assert_eq!(line.trim_end(), message(expected), "lost or reordered");
        }
        MESSAGES
    })
}

/// Short enough for a burst, long enough that 10,000 of them overflow what the kernel buffers
/// for a client that never reads (up to 4 MiB of send buffer on Linux loopback).
fn message(n: usize) -> String {
    format!("message {n:05} {}", "x".repeat(500))
}

async fn burst(registry: &switchboard::Registry, policy: SlowConsumerPolicy) -> BroadcastReport {
    let mut total = BroadcastReport::default();
    for n in 0..MESSAGES {
        let report = registry
            .broadcast(Bytes::from(message(n)), None, policy)
            .await;
        total.delivered += report.delivered;
        total.waited += report.waited;
        total.dropped += report.dropped;
        total.disconnected += report.disconnected;
        total.closed += report.closed;
    }
    total
}

#[actix_rt::test]
async fn ten_thousand_messages_to_a_hundred_readers_lose_nothing() {
    let server = serve();
    let registry = server.registry().clone();
    let readers: Vec<_> = (0..READERS).map(|_| reader(server.local_addr())).collect();
    within("every reader", registry.wait_for_count(READERS)).await;
    let total = tokio::time::timeout(
        Duration::from_secs(120),
        burst(&registry, SlowConsumerPolicy::Drop),
    )
    .await
    .expect("the burst finishes");
    assert_eq!(total.delivered, MESSAGES * READERS, "{total:?}");
    assert_eq!(total.undelivered(), 0, "{total:?}");
    for reader in readers {
        assert_eq!(reader.join().unwrap(), MESSAGES);
    }
    assert_eq!(registry.stats().broadcasts_dropped, 0);
    eprintln!("100 readers: {total:?}");
}

/// Connects clients that never read a byte (small receive buffers, so the server's own bounds
/// are reached soon).
fn silent_clients(addr: SocketAddr) -> Vec<TcpStream> {
    (0..SILENT)
        .map(|_| {
            let stream = TcpStream::connect(addr).unwrap();
            socket2::SockRef::from(&stream)
                .set_recv_buffer_size(4096)
                .unwrap();
            stream
        })
        .collect()
}

/// A server with `SILENT` sessions that never read (their ids returned) and `READERS` readers.
async fn silent_and_readers() -> (
    ListenerHandle,
    Vec<TcpStream>,
    Vec<switchboard::SessionId>,
    Vec<JoinHandle<usize>>,
) {
    let server = serve();
    let registry = server.registry().clone();
    let silent = silent_clients(server.local_addr());
    within("the silent clients", registry.wait_for_count(SILENT)).await;
    let silent_ids = registry.ids();
    let readers: Vec<_> = (0..READERS).map(|_| reader(server.local_addr())).collect();
    within("every reader", registry.wait_for_count(READERS + SILENT)).await;
    (server, silent, silent_ids, readers)
}

#[actix_rt::test]
async fn silent_sessions_are_dropped_and_counted_while_readers_get_everything() {
    let (server, silent, silent_ids, readers) = silent_and_readers().await;
    let registry = server.registry().clone();
    let total = tokio::time::timeout(
        Duration::from_secs(120),
        burst(&registry, SlowConsumerPolicy::Drop),
    )
    .await
    .expect("the burst finishes");
    for reader in readers {
        assert_eq!(reader.join().unwrap(), MESSAGES);
    }
    assert_eq!(total.sessions(), MESSAGES * (READERS + SILENT), "{total:?}");
    assert_eq!(total.closed + total.disconnected, 0, "{total:?}");
    assert!(total.dropped > 0, "{total:?}");
    // Every drop is counted where the caller looks: the reports, the registry, the sessions.
    let stats = registry.stats();
    assert_eq!(stats.broadcasts_dropped, total.dropped as u64);
    assert_eq!(stats.slow_consumers, SILENT as u64, "each found slow once");
    let mut dropped_per_session = 0;
    for id in &silent_ids {
        let info = registry.get(*id).expect("dropping is all the policy does");
        dropped_per_session += info.broadcasts_dropped;
        // Bounded: a write buffer and a queue, each at most one message past its limit.
        let one = message(0).len() + 1;
        assert!(info.bytes_to_write < HIGH + one, "{info:?}");
        assert!(info.bytes_queued < QUEUE + one + 32, "{info:?}");
    }
    assert_eq!(dropped_per_session, total.dropped as u64);
    // The readers were held up only until each silent one was found slow, not per message.
    assert!(
        total.waited < SILENT * 50 + READERS * MESSAGES / 10,
        "{total:?}"
    );
    drop(silent);
}

#[actix_rt::test]
async fn silent_sessions_are_disconnected_under_the_disconnect_policy() {
    let (server, silent, silent_ids, readers) = silent_and_readers().await;
    let registry = server.registry().clone();
    let mut events = registry.events(1024);
    let total = tokio::time::timeout(
        Duration::from_secs(120),
        burst(&registry, SlowConsumerPolicy::Disconnect),
    )
    .await
    .expect("the burst finishes");
    for reader in readers {
        assert_eq!(reader.join().unwrap(), MESSAGES);
    }
    // Each message not delivered to a silent session is counted once, as disconnected (until
    // the close takes effect) or closed (after).
    assert!(total.disconnected >= SILENT, "{total:?}");
    assert_eq!(total.dropped, 0, "{total:?}");
    // The silent sessions leave the registry once closed: later messages are not meant for them.
    assert!(total.delivered >= MESSAGES * READERS, "{total:?}");
    // Each silent session ends as a slow consumer; the readers, done, end as PeerClosed.
    let mut slow = 0;
    while slow < SILENT {
        use futures::StreamExt;
        match within("a Disconnected event", events.next()).await {
            Some(switchboard::RegistryEvent::Disconnected { reason, info }) => match reason {
                DisconnectReason::SlowConsumer => {
                    assert!(silent_ids.contains(&info.id), "a reader was disconnected");
                    slow += 1;
                }
                DisconnectReason::PeerClosed => assert!(!silent_ids.contains(&info.id)),
                other => panic!("unexpected reason {other:?}"),
            },
            // A session is counted before it publishes `Connected`, so one counted before this
            // subscription may still publish its `Connected` into it.
            Some(switchboard::RegistryEvent::Connected(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(silent);
}
