//! Sessions started over a stream the caller already holds: `SessionBuilder::start_std` on the
//! current arbiter, `start_on` a worker pool, `start` over a tokio stream; registered with a
//! registry, ending exactly once. A config that cannot work is a typed error.

use std::{
    io::BufReader,
    net::{TcpListener, TcpStream},
};

use switchboard::{
    ConfigError, DisconnectReason, Registry, SessionBuilder, SessionConfig, SessionError,
    WorkerPool,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, blocking, echo_line, ended_once, std_connect, within, Probes};

/// A connected pair: the client end and the server end, both std streams.
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(any_port()).unwrap();
    let client = std_connect(listener.local_addr().unwrap());
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

async fn talk_and_close(client: TcpStream) {
    blocking("the client", move || {
        let mut client = BufReader::new(client);
        assert_eq!(echo_line(&mut client, "held stream"), "held stream");
    })
    .await;
}

#[actix_rt::test]
async fn start_std_runs_on_the_current_arbiter() {
    let (client, server_side) = pair();
    let peer = client.local_addr().unwrap();
    let registry = Registry::new();
    let (probes, mut events) = Probes::<Lines>::echo();
    let session = SessionBuilder::new(Lines::new(), probes.make())
        .registry(registry.clone())
        .start_std(server_side)
        .unwrap();
    assert!(session.connected());
    let (info, _, thread) = events.connected().await;
    assert_eq!(info.peer_addr, peer);
    assert_eq!(info.worker, None);
    assert_eq!(thread, std::thread::current().name().unwrap_or("<unnamed>"));
    assert_eq!(registry.count(), 1);

    talk_and_close(client).await;
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert_eq!(registry.count(), 0);
}

#[actix_rt::test]
async fn start_on_runs_on_a_pool_worker() {
    let pool = WorkerPool::new(2).unwrap();
    let registry = Registry::new();
    let (probes, mut events) = Probes::<Lines>::echo();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (client, server_side) = pair();
        SessionBuilder::new(Lines::new(), probes.make())
            .registry(registry.clone())
            .start_on(&pool, server_side)
            .unwrap();
        clients.push(client);
    }
    let here = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    let (a, _, a_thread) = events.connected().await;
    let (b, _, b_thread) = events.connected().await;
    assert_ne!(
        a.worker, b.worker,
        "least-loaded puts them on different workers"
    );
    assert_ne!(a_thread, b_thread);
    assert_ne!(a_thread, here);
    within("both registered", registry.wait_for_count(2)).await;
    assert_eq!(pool.loads(), [1, 1]);
    for client in clients {
        talk_and_close(client).await;
    }
    ended_once(&probes, &mut events, a.id).await;
    ended_once(&probes, &mut events, b.id).await;
    assert_eq!(pool.loads(), [0, 0]);
    assert_eq!(registry.count(), 0);
}

#[actix_rt::test]
async fn start_over_a_tokio_stream() {
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::task::spawn_blocking(move || std_connect(addr));
    let (server_side, _) = within("accept", listener.accept()).await.unwrap();
    let client = within("connect", client).await.unwrap();
    let (probes, mut events) = Probes::<Lines>::echo();
    SessionBuilder::new(Lines::new(), probes.make())
        .start(server_side)
        .unwrap();
    let (info, _, _) = events.connected().await;
    talk_and_close(client).await;
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

#[actix_rt::test]
async fn invalid_config_is_a_typed_error() {
    let (_client, server_side) = pair();
    let (probes, _) = Probes::<Lines>::echo();
    let result = SessionBuilder::new(Lines::new(), probes.make())
        .config(SessionConfig::default().with_write_watermarks(10, 5))
        .start_std(server_side);
    match result {
        Err(SessionError::Config(ConfigError::Invalid { option, .. })) => {
            assert_eq!(option, "write_watermarks")
        }
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
}

#[actix_rt::test]
async fn sessions_keep_their_pool_alive_after_the_last_handle_is_dropped() {
    let pool = WorkerPool::new(1).unwrap();
    let (probes, mut events) = Probes::<Lines>::echo();
    let (client, server_side) = pair();
    SessionBuilder::new(Lines::new(), probes.make())
        .start_on(&pool, server_side)
        .unwrap();
    let (info, _, _) = events.connected().await;
    // The worker thread must outlive the pool handle while a session runs on it.
    drop(pool);
    talk_and_close(client).await;
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

/// Counts lines, and says when it has counted each (then 0 when the session ends); what
/// `Invoke` reaches into.
struct Tally {
    lines: usize,
    counted: tokio::sync::mpsc::UnboundedSender<usize>,
}

impl switchboard::SessionHandler<Lines> for Tally {
    fn ready_read(&mut self, _: String, _: &mut switchboard::Conn<'_, Lines, Self>) {
        self.lines += 1;
        let _ = self.counted.send(self.lines);
    }
    fn disconnected(&mut self, _: &DisconnectReason, _: &switchboard::SessionInfo) {
        let _ = self.counted.send(0);
    }
}

/// `Invoke` sent from a plain thread runs on the session's thread with its handler and a
/// `Conn` (what it writes reaches the peer); once the session has gone the send fails.
#[actix_rt::test]
async fn invoke_runs_a_closure_with_the_handler_and_a_conn() {
    use std::io::{BufRead, Write};
    use switchboard::{Conn, Invoke};
    let (client, server_side) = pair();
    let (counted, mut tally_says) = tokio::sync::mpsc::unbounded_channel();
    let session = SessionBuilder::new(Lines::new(), Tally { lines: 0, counted })
        .start_std(server_side)
        .unwrap();
    let mut client = BufReader::new(client);
    client.get_mut().write_all(b"one\ntwo\n").unwrap();
    assert_eq!(within("the first line", tally_says.recv()).await, Some(1));
    assert_eq!(within("the second line", tally_says.recv()).await, Some(2));
    let from_thread = session.clone();
    let client = blocking("a thread invoking", move || {
        let ran = futures::executor::block_on(from_thread.send(Invoke::new(
            |tally: &mut Tally, conn: &mut Conn<'_, Lines, Tally>| {
                conn.write(format!("tally {}", tally.lines)).unwrap();
            },
        )));
        assert_eq!(ran, Ok(true));
        let mut line = String::new();
        client.read_line(&mut line).unwrap();
        assert_eq!(line, "tally 2\n");
        client
    })
    .await;
    drop(client);
    assert_eq!(
        within("the session's end", tally_says.recv()).await,
        Some(0)
    );
    let after = session
        .send(Invoke::new(
            |_: &mut Tally, _: &mut Conn<'_, Lines, Tally>| panic!("ran after the end"),
        ))
        .await;
    assert!(!matches!(after, Ok(true)), "{after:?}");
}
