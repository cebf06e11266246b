//! The listener accepts many plain std clients at once, announces each, pauses and resumes
//! accepting, and `Close` stops listening while live sessions carry on.

use std::{io::BufReader, net::SocketAddr, time::Duration};

use switchboard::{
    GetListenerStats, IsListening, Listener, ListenerEvent, PauseAccepting, ResumeAccepting,
    ServerAddress,
};
use switchboard_codec::Lines;
use switchboard_tests::{
    any_port, assert_silent, echo_line, ended_once, inbox, std_connect, within, Probes,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::TcpStream,
    sync::mpsc,
};

async fn reply(client: &mut AsyncBufReader<TcpStream>) -> String {
    let mut line = String::new();
    client.read_line(&mut line).await.unwrap();
    line.trim_end().to_string()
}

/// 4 threads × 25 std clients, all connected at once: 100 live sessions, each answered, each
/// announced; then all leave.
#[actix_rt::test]
async fn many_std_clients_at_once_are_all_served() {
    const THREADS: usize = 4;
    const EACH: usize = 25;
    let (probes, mut events) = Probes::<Lines>::echo();
    let (owner, mut announced) = inbox::<ListenerEvent>();
    let server = Listener::bind(any_port())
        .workers(2)
        .events(owner)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let (release_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<Vec<SocketAddr>>();
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let ready_tx = ready_tx.clone();
        let mut release = release_tx.subscribe();
        threads.push(tokio::task::spawn_blocking(move || {
            let mut clients: Vec<_> = (0..EACH)
                .map(|_| BufReader::new(std_connect(addr)))
                .collect();
            for (i, client) in clients.iter_mut().enumerate() {
                let line = format!("client {t}.{i}");
                assert_eq!(echo_line(client, &line), line);
            }
            ready_tx
                .send(
                    clients
                        .iter()
                        .map(|c| c.get_ref().local_addr().unwrap())
                        .collect(),
                )
                .unwrap();
            release.blocking_recv().unwrap();
        }));
    }
    let mut peers = Vec::new();
    for _ in 0..THREADS {
        peers.extend(within("a client thread", ready.recv()).await.unwrap());
    }
    within(
        "100 live sessions",
        server.registry().wait_for_count(THREADS * EACH),
    )
    .await;
    let mut listed: Vec<_> = server
        .registry()
        .list()
        .iter()
        .map(|i| i.peer_addr.socket_addr().unwrap())
        .collect();
    listed.sort();
    peers.sort();
    assert_eq!(
        listed, peers,
        "the registry lists exactly the connected clients"
    );
    let mut announced_peers = Vec::new();
    for _ in 0..THREADS * EACH {
        match announced.next("NewConnection").await {
            ListenerEvent::NewConnection { peer, .. } => {
                announced_peers.push(peer.socket_addr().unwrap())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    announced_peers.sort();
    assert_eq!(announced_peers, peers);

    release_tx.send(()).unwrap();
    for thread in threads {
        within("a client thread", thread).await.unwrap();
    }
    within("the registry to empty", server.registry().wait_for_count(0)).await;
    for _ in 0..THREADS * EACH {
        let (info, _, _) = events.connected().await;
        ended_once(&probes, &mut events, info.id).await;
    }
    // Every session is dropped, so every connection permit is back.
    let stats = within("stats", server.address().send(GetListenerStats))
        .await
        .unwrap();
    assert_eq!(stats.accepted, (THREADS * EACH) as u64);
    assert_eq!(stats.active, 0);
}

/// `PauseAccepting` leaves clients in the backlog, unanswered; `ResumeAccepting` serves them.
#[actix_rt::test]
async fn pause_and_resume_accepting() {
    let (probes, _events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let listener = server.address().clone();

    within("PauseAccepting", listener.send(PauseAccepting))
        .await
        .unwrap();
    // Paused is not closed: still listening, and the handshake completes in the backlog.
    assert!(within("IsListening", listener.send(IsListening))
        .await
        .unwrap());
    let mut client =
        AsyncBufReader::new(within("connect", TcpStream::connect(addr)).await.unwrap());
    client.get_mut().write_all(b"wait for me\n").await.unwrap();
    let waiting = assert_silent("a reply while paused", Box::pin(reply(&mut client))).await;
    assert_eq!(server.registry().count(), 0);

    within("ResumeAccepting", listener.send(ResumeAccepting))
        .await
        .unwrap();
    assert_eq!(
        within("the reply after resuming", waiting).await,
        "wait for me"
    );
    assert_eq!(server.registry().count(), 1);
}

/// `Close` stops listening: `IsListening` is false, `ServerAddress` is `None`, new clients are
/// refused, and a session accepted before goes on working.
#[actix_rt::test]
async fn close_stops_listening_but_live_sessions_carry_on() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let listener = server.address().clone();

    let mut live = AsyncBufReader::new(within("connect", TcpStream::connect(addr)).await.unwrap());
    live.get_mut().write_all(b"before\n").await.unwrap();
    assert_eq!(within("reply", reply(&mut live)).await, "before");

    within("Close", listener.send(switchboard::Close))
        .await
        .unwrap();
    let listening = within("IsListening", listener.send(IsListening)).await;
    assert!(!listening.expect("a closed listener still answers"));
    let bound = within("ServerAddress", listener.send(ServerAddress)).await;
    assert_eq!(bound.expect("a closed listener still answers"), None);

    let refused = within("connect to a closed listener", TcpStream::connect(addr)).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );

    live.get_mut().write_all(b"after\n").await.unwrap();
    assert_eq!(within("reply after close", reply(&mut live)).await, "after");
    drop(live);
    let (info, _, _) = events.connected().await;
    ended_once(&probes, &mut events, info.id).await;
}

/// `ListenerHandle::shutdown` stops accepting and drains live sessions gracefully.
#[actix_rt::test]
async fn shutdown_drains_live_sessions() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let clients = tokio::task::spawn_blocking(move || {
        let mut clients: Vec<_> = (0..3).map(|_| BufReader::new(std_connect(addr))).collect();
        for c in &mut clients {
            assert_eq!(echo_line(c, "hi"), "hi");
        }
        clients
    });
    let clients = within("clients", clients).await.unwrap();
    // The clients read to EOF and close, so the drain completes.
    let readers = tokio::task::spawn_blocking(move || {
        for mut c in clients {
            assert!(switchboard_tests::read_to_eof(c.get_mut(), false).is_empty());
        }
    });
    let report = within("shutdown", server.shutdown(Duration::from_secs(5))).await;
    assert_eq!(report.drained, 3);
    assert_eq!(report.aborted, 0);
    within("clients", readers).await.unwrap();
    assert_eq!(server.registry().count(), 0);
    for _ in 0..3 {
        let (info, _, _) = events.connected().await;
        let reason = ended_once(&probes, &mut events, info.id).await;
        assert!(
            matches!(reason, switchboard::DisconnectReason::Shutdown),
            "{reason:?}"
        );
    }
}

/// A session that cannot drain (its peer reads nothing and its buffer is full) is aborted at
/// the shutdown's deadline, and the report says so.
#[actix_rt::test]
async fn shutdown_aborts_what_cannot_drain() {
    // A large write buffer: a kernel (gVisor's does) may keep taking a non-reading peer's
    // data slowly, but not megabytes within the drain timeout.
    const HIGH: usize = 8 * 1024 * 1024;
    let (probes, mut events) = Probes::<switchboard_codec::Raw>::quiet();
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(switchboard::SessionConfig::default().with_write_watermarks(HIGH / 2, HIGH))
        .serve(switchboard_codec::Raw, probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        // A fixed, small receive buffer: with autotuning the kernel could keep taking the
        // session's buffered bytes while it waits to be drained.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let _stream: std::net::TcpStream = socket.into();
        done_rx.recv().unwrap();
    });
    let (info, session, _) = events.connected().await;
    loop {
        let chunk = bytes::Bytes::from(vec![0u8; 64 * 1024]);
        match within("Write", session.send(switchboard::Write(chunk)))
            .await
            .unwrap()
        {
            Ok(()) => {}
            Err(e) if e.is_backpressure() => break,
            Err(e) => panic!("{e}"),
        }
    }
    let report = within("shutdown", server.shutdown(Duration::from_millis(200))).await;
    assert_eq!(report.aborted, 1);
    assert_eq!(report.drained, 0);
    assert!(report.unflushed_bytes > 0);
    assert!(report.unflushed_bytes < HIGH + 64 * 1024, "{report:?}");
    let reason = ended_once(&probes, &mut events, info.id).await;
    assert!(
        matches!(reason, switchboard::DisconnectReason::Shutdown),
        "{reason:?}"
    );
    done_tx.send(()).unwrap();
    within("client", client).await.unwrap();
}

/// A session handler that starts a listener on its own pool with `accept_on_worker` must not
/// wait on itself: the new listener accepts on another worker (or, from the pool's only
/// worker, on a thread of its own), and both listeners serve.
#[actix_rt::test]
async fn a_listener_started_from_a_worker_of_its_pool_accepts_elsewhere() {
    use switchboard::{Conn, SessionHandler, WorkerPool};
    struct Opener {
        pool: WorkerPool,
        opened: mpsc::UnboundedSender<switchboard::ListenerHandle>,
    }
    impl SessionHandler<Lines> for Opener {
        fn connected(&mut self, _: &mut Conn<'_, Lines, Self>) {
            let (probes, _) = Probes::<Lines>::echo();
            let inner = Listener::bind(any_port())
                .pool(self.pool.clone())
                .accept_on_worker(true)
                .serve(Lines::new(), probes.factory())
                .expect("the nested listener starts");
            // The test keeps the handle, so the listener lives as long as it needs.
            let _ = self.opened.send(inner);
        }
        fn ready_read(&mut self, _: String, _: &mut Conn<'_, Lines, Self>) {}
    }
    for workers in [1, 2] {
        let pool = WorkerPool::new(workers).unwrap();
        let (opened, mut nested) = mpsc::unbounded_channel();
        let factory_pool = pool.clone();
        let outer = Listener::bind(any_port())
            .pool(pool)
            .accept_on_worker(true)
            .serve(Lines::new(), move || Opener {
                pool: factory_pool.clone(),
                opened: opened.clone(),
            })
            .unwrap();
        let addr = outer.local_addr();
        let _client = within("connecting", TcpStream::connect(addr))
            .await
            .unwrap();
        let nested = within("the nested listener to start", nested.recv())
            .await
            .expect("the handler reports its listener");
        let inner = nested.local_addr();
        let mut client = AsyncBufReader::new(
            within("connecting", TcpStream::connect(inner))
                .await
                .unwrap(),
        );
        client.get_mut().write_all(b"nested\n").await.unwrap();
        assert_eq!(
            within("the nested echo", reply(&mut client)).await,
            "nested",
            "{workers} worker(s)"
        );
    }
}
