//! Slowloris: clients that hold connections open with partial requests.
//!
//! A client that trickles a line one byte at a time, never finishing it, keeps the idle timeout
//! away (bytes keep moving), but not the frame timeout: no complete frame arrives, so it is
//! closed with `FrameTimeout`. And the defence against one host holding every slot: the
//! per-peer-IP limit (off by default), counted with the global limit. One address is capped
//! while a client from another (`127.0.0.2`) still gets in and is served.
//!
//! `limits_frame_length.rs` proves a partial frame that stalls outright.

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::mpsc,
    time::{Duration, Instant},
};

use switchboard::{
    DisconnectReason, GetListenerStats, Listener, SessionConfig, SetMaxConnectionsPerIp,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, assert_silent, ended_once, std_connect, within, Probes};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
};

#[actix_rt::test]
async fn trickling_a_line_never_finished_is_closed_by_the_frame_timeout() {
    let idle = Duration::from_secs(1);
    let frame = Duration::from_secs(2);
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(
            SessionConfig::default()
                .with_idle_timeout(Some(idle))
                .with_frame_timeout(Some(frame)),
        )
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let mut client = std_connect(server.local_addr());
    let (info, _) = events.connected_from(client.local_addr().unwrap()).await;
    let started = Instant::now();
    let (stop, stopped) = mpsc::channel::<()>();
    // One byte every 100 ms, ten times faster than the idle timeout, never a newline; until
    // the server closes (the write fails) or the test says stop.
    let trickler = std::thread::spawn(move || {
        let mut sent = 0;
        while stopped.recv_timeout(Duration::from_millis(100)).is_err() {
            if client.write_all(b"x").is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let reason = ended_once(&probes, &mut events, info.id).await;
    let took = started.elapsed();
    let _ = stop.send(());
    let sent = trickler.join().unwrap();
    assert!(
        matches!(reason, DisconnectReason::FrameTimeout),
        "{reason:?} after {took:?}"
    );
    // It fires no earlier than the timeout less one check period (a quarter of the shortest
    // timeout), and the client kept sending past the idle timeout.
    assert!(took >= frame - idle / 4, "closed after {took:?}");
    assert!(sent >= 5, "{sent} bytes trickled");
    println!("slowloris trickle: {sent} bytes over {took:?}, then {reason}");
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// Connects from `source` (any loopback address: 127.0.0.0/8 is all local).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    within("connect", socket.connect(addr)).await.unwrap()
}

async fn ask(client: &mut BufReader<TcpStream>, line: &str) -> String {
    client
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    within("a reply", client.read_line(&mut reply))
        .await
        .unwrap();
    reply.trim_end().to_string()
}

/// Attacker connections from 127.0.0.1: each starts a line and stalls.
const ATTACKERS: usize = 20;
const PER_IP: usize = 4;
const MAX: usize = 6;

#[actix_rt::test]
async fn per_ip_limit_caps_one_host_while_another_gets_in() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .max_connections(MAX)
        .max_connections_per_ip(Some(PER_IP))
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let listener = server.address().clone();

    // The attacker opens 20 connections and starts a line on each. Only 4 are admitted; the
    // others are closed at once (a reset, since the server closes with the attacker's bytes
    // unread, or EOF if it closed first). Each reports when its connection ends.
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let mut attackers = Vec::new();
    for i in 0..ATTACKERS {
        let mut stream = connect_from("127.0.0.1", addr).await;
        let ended_tx = ended_tx.clone();
        let (hold, held) = tokio::sync::oneshot::channel::<()>();
        attackers.push(hold);
        tokio::spawn(async move {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nX-a: ").await;
            let mut rest = Vec::new();
            tokio::select! {
                _ = stream.read_to_end(&mut rest) => {
                    assert!(rest.is_empty(), "attacker {i} got {rest:?}");
                    let _ = ended_tx.send(i);
                }
                _ = held => {}
            }
        });
    }
    for _ in 0..ATTACKERS - PER_IP {
        within("an extra attacker connection to be closed", ended.recv())
            .await
            .unwrap();
    }
    let stats = within("stats", listener.send(GetListenerStats))
        .await
        .unwrap();
    assert_eq!(stats.rejected_per_ip, (ATTACKERS - PER_IP) as u64);
    assert_eq!(stats.active, PER_IP);
    assert_eq!(stats.max_connections_per_ip, Some(PER_IP));
    // Admitted by the listener, registered by their workers a moment later.
    within(
        "the admitted sessions to register",
        server.registry().wait_for_count(PER_IP),
    )
    .await;

    // Another host gets in and is served at once.
    let mut other = BufReader::new(connect_from("127.0.0.2", addr).await);
    assert_eq!(ask(&mut other, "from 127.0.0.2").await, "from 127.0.0.2");
    let mut third = BufReader::new(connect_from("127.0.0.3", addr).await);
    assert_eq!(ask(&mut third, "from 127.0.0.3").await, "from 127.0.0.3");
    // Both limits count the same connections: 4 + 2 = the global limit of 6, so a fourth
    // host now waits in the backlog...
    let mut fourth = BufReader::new(connect_from("127.0.0.4", addr).await);
    fourth
        .get_mut()
        .write_all(b"from 127.0.0.4\n")
        .await
        .unwrap();
    let mut reply = String::new();
    let waiting = assert_silent(
        "a reply over the global limit",
        Box::pin(fourth.read_line(&mut reply)),
    )
    .await;
    let stats = within("stats", listener.send(GetListenerStats))
        .await
        .unwrap();
    assert_eq!(stats.active, MAX);
    assert_eq!(stats.rejected_per_ip, (ATTACKERS - PER_IP) as u64);

    // ...until the limit is changed while running: down to 2 per IP does not close the
    // attacker's 4 live connections, but one leaving (here the 127.0.0.2 client) lets the
    // waiting host in.
    within(
        "SetMaxConnectionsPerIp",
        listener.send(SetMaxConnectionsPerIp(Some(2))),
    )
    .await
    .unwrap();
    drop(other);
    within("the waiting host's reply", waiting).await.unwrap();
    assert_eq!(reply, "from 127.0.0.4\n");
    let stats = within("stats", listener.send(GetListenerStats))
        .await
        .unwrap();
    assert_eq!(stats.max_connections_per_ip, Some(2));
    assert_eq!(stats.active, MAX);
    within("six sessions", server.registry().wait_for_count(MAX)).await;

    // The attacker's stalled connections are still held (nothing ended them yet; the frame
    // timeout would, see the test above): release them, and everything drains.
    drop(attackers);
    drop((third, fourth));
    within("the registry to empty", server.registry().wait_for_count(0)).await;
    let leftovers = events.drain_now();
    assert!(
        leftovers
            .iter()
            .all(|e| !matches!(e, switchboard_tests::Event::WriteRefused { .. })),
        "{leftovers:?}"
    );
}
