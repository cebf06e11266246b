//! The client side (Qt's `connectToHost`): typed errors for a refused port, a bad target and a
//! timeout; names resolve; client sessions run on the current arbiter or on a pool, join a
//! registry, and end exactly once, like server sessions.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use switchboard::{
    ConnectError, Connector, DisconnectFromHost, DisconnectReason, GetInfo, Listener, Registry,
    WorkerPool, Write,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, ended_once, within, Probes};

fn free_port() -> u16 {
    // Bound then dropped: nothing listens there now.
    TcpListener::bind(any_port())
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[actix_rt::test]
async fn refused_port_is_a_typed_io_error() {
    let port = free_port();
    let (probes, _) = Probes::<Lines>::quiet();
    let result = within(
        "connect",
        Connector::new().timeout(Duration::from_secs(5)).connect(
            &format!("127.0.0.1:{port}"),
            Lines::new(),
            probes.make(),
        ),
    )
    .await;
    match result {
        Err(ConnectError::Io { addr, source }) => {
            assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected ConnectError::Io, got {:?}", other.map(|_| ())),
    }
}

#[actix_rt::test]
async fn a_target_without_a_port_is_a_malformed_target_not_a_failed_lookup() {
    let (probes, _) = Probes::<Lines>::quiet();
    let result = within(
        "connect",
        Connector::new().connect("no port here", Lines::new(), probes.make()),
    )
    .await;
    match result {
        Err(ConnectError::InvalidTarget { reason }) => {
            assert!(reason.contains("no port"), "{reason}");
            assert!(
                reason.contains("no port here"),
                "names the target: {reason}"
            );
        }
        other => panic!(
            "expected ConnectError::InvalidTarget, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// Every form a user would pass: an address, `"host:port"`, `(host, port)`, `(ip, port)`, for
/// both the listener and the connector.
#[actix_rt::test]
async fn listener_and_connector_take_every_usual_form_of_address() {
    let (server_probes, _server_events) = Probes::<Lines>::echo();
    let by_tuple = Listener::bind(("localhost", 0))
        .workers(1)
        .serve(Lines::new(), server_probes.factory())
        .expect("binds (\"localhost\", 0)");
    assert!(by_tuple.local_addr().ip().is_loopback());
    let port = by_tuple.local_addr().port();
    let ip = by_tuple.local_addr().ip();
    let (probes, mut events) = Probes::<Lines>::quiet();
    let targets: Vec<switchboard::Target> = vec![
        switchboard::IntoTarget::into_target(by_tuple.local_addr()).unwrap(),
        switchboard::IntoTarget::into_target(format!("{ip}:{port}")).unwrap(),
        switchboard::IntoTarget::into_target((ip, port)).unwrap(),
        switchboard::IntoTarget::into_target((ip.to_string(), port)).unwrap(),
    ];
    for target in targets {
        within(
            "connect",
            Connector::new().connect(&target, Lines::new(), probes.make()),
        )
        .await
        .unwrap_or_else(|e| panic!("{target}: {e}"));
        let (info, _, _) = events.connected().await;
        assert_eq!(info.peer_addr.port(), Some(port));
    }
    match Listener::bind("localhost")
        .workers(1)
        .serve(Lines::new(), server_probes.factory())
    {
        Err(switchboard::ListenError::InvalidTarget { reason }) => {
            assert!(reason.contains("no port"), "{reason}")
        }
        other => panic!("expected InvalidTarget, got {:?}", other.map(|_| ())),
    }
}

/// A listener that never accepts, with its backlog full: the next handshake is not answered,
/// so the connect can only time out.
#[actix_rt::test]
async fn unanswered_handshake_times_out() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&any_port().into()).unwrap();
    socket.listen(1).unwrap();
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();

    // Fill the backlog until a handshake goes unanswered (bounded; a kernel that answers
    // every SYN would fail here rather than make the test pass by chance).
    let held = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..64 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => held.push(stream),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return held,
                Err(e) => panic!("filling the backlog: {e}"),
            }
        }
        panic!("64 connections completed on a listener with backlog 1 that never accepts");
    });
    let held = within("the backlog to fill", held).await.unwrap();

    let timeout = Duration::from_millis(200);
    let (probes, _) = Probes::<Lines>::quiet();
    let result = within(
        "connect",
        Connector::new()
            .timeout(timeout)
            .connect(&addr.to_string(), Lines::new(), probes.make()),
    )
    .await;
    match result {
        Err(ConnectError::Timeout { target, after }) => {
            assert_eq!(target, addr.to_string());
            assert_eq!(after, timeout);
        }
        other => panic!(
            "expected ConnectError::Timeout, got {:?}",
            other.map(|_| ())
        ),
    }
    drop((held, listener));
}

/// `localhost:PORT` resolves (trying each address it names), and the client talks to the
/// server in the same process; client sessions started on the current arbiter have no worker.
#[actix_rt::test]
async fn connects_by_name_and_talks() {
    let (server_probes, mut server_events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Lines::new(), server_probes.factory())
        .unwrap();
    let port = server.local_addr().port();

    let (client_probes, mut client_events) = Probes::<Lines>::quiet();
    let client = within(
        "connect",
        Connector::new().connect(
            &format!("localhost:{port}"),
            Lines::new(),
            client_probes.make(),
        ),
    )
    .await
    .expect("localhost resolves and connects");
    let (info, _, thread) = client_events.connected().await;
    assert_eq!(info.peer_addr, server.local_addr());
    assert_eq!(info.worker, None);
    assert_eq!(
        thread,
        std::thread::current().name().unwrap_or("<unnamed>"),
        "without a pool the session runs on the current arbiter"
    );

    within("Write", client.send(Write("over to you".to_string())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client_events.frame(info.id).await, "over to you");
    let (server_info, _) = server_events
        .connected_from(info.local_addr.socket_addr().unwrap())
        .await;

    within("DisconnectFromHost", client.send(DisconnectFromHost))
        .await
        .unwrap();
    let reason = ended_once(&client_probes, &mut client_events, info.id).await;
    assert!(matches!(reason, DisconnectReason::Closed), "{reason:?}");
    let reason = ended_once(&server_probes, &mut server_events, server_info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

/// Client sessions on a worker pool, in a registry of their own: many at once, spread over
/// the workers, counted, and all back to 0 after the server kicks them.
#[actix_rt::test]
async fn client_sessions_on_a_pool_join_their_registry() {
    let (server_probes, mut server_events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), server_probes.factory())
        .unwrap();
    let target = server.local_addr().to_string();

    let pool = WorkerPool::new(2).unwrap();
    let registry = Registry::new();
    let connector = Connector::new()
        .pool(pool.clone())
        .registry(registry.clone());
    let (client_probes, mut client_events) = Probes::<Lines>::quiet();
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(
            within(
                "connect",
                connector.connect(&target, Lines::new(), client_probes.make()),
            )
            .await
            .unwrap(),
        );
    }
    within("six client sessions", registry.wait_for_count(6)).await;
    within("six server sessions", server.registry().wait_for_count(6)).await;
    assert_eq!(pool.loads(), [3, 3]);
    let mut ids = Vec::new();
    for client in &clients {
        let info = within("GetInfo", client.send(GetInfo)).await.unwrap();
        ids.push(info.id);
        assert!(info.worker.is_some());
        within("Write", client.send(Write(format!("from {}", info.id))))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            client_events.frame(info.id).await,
            format!("from {}", info.id)
        );
    }

    // The server ends them all; each client session sees the close exactly once.
    assert_eq!(
        server
            .registry()
            .close_all(DisconnectReason::Shutdown, switchboard::CloseMode::Graceful),
        6
    );
    for id in ids {
        let reason = ended_once(&client_probes, &mut client_events, id).await;
        assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    }
    within("the client registry to empty", registry.wait_for_count(0)).await;
    within(
        "the server registry to empty",
        server.registry().wait_for_count(0),
    )
    .await;
    for _ in 0..6 {
        let (info, _, _) = server_events.connected().await;
        ended_once(&server_probes, &mut server_events, info.id).await;
    }
    assert_eq!(client_probes.tally.lock().unwrap().len(), 6);
}
