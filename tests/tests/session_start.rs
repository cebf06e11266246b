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
