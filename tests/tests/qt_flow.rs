//! The five steps of Qt's `QTcpServer` / `QTcpSocket` flow (DESIGN.md), each over real sockets:
//! create a server, listen on port 0 and ask what was bound, hear of new connections, take
//! pending connections in pull mode, then readyRead / read / write / disconnected.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
};

use switchboard::{
    Conn, Connector, DisconnectReason, IsListening, ListenError, Listener, ListenerEvent,
    NextPendingConnection, Registry, RegistryEvent, ServerAddress, SessionHandler,
};
use switchboard_codec::Lines;
use switchboard_tests::{
    any_port, blocking, echo_line, ended_once, inbox, read_line, std_connect, take_pending_tcp,
    within, Probes,
};
use tokio::sync::mpsc;

/// Steps 1 and 2: `QTcpServer` + `listen(127.0.0.1, 0)`; `isListening`, `serverAddress` and
/// `serverPort` answer what the OS bound.
#[actix_rt::test]
async fn listen_on_port_zero_reports_the_bound_address() {
    let (probes, _events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Lines::new(), probes.factory())
        .expect("listen on 127.0.0.1:0");
    let addr = server.local_addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(
        addr.port(),
        0,
        "port 0 must be replaced by the port the OS chose"
    );

    let listening = within("IsListening", server.address().send(IsListening)).await;
    assert!(listening.expect("listener alive"));
    let bound = within("ServerAddress", server.address().send(ServerAddress)).await;
    assert_eq!(bound.expect("listener alive"), Some(addr));

    // The port is really taken: listening on it again is a typed error naming the address.
    let (again, _) = Probes::<Lines>::echo();
    match Listener::bind(addr)
        .workers(1)
        .serve(Lines::new(), again.factory())
    {
        Err(ListenError::Bind { addr: asked, .. }) => assert_eq!(asked, addr),
        other => panic!("expected ListenError::Bind, got {other:?}"),
    }

    // And it answers.
    let reply = blocking("a std client's echo", move || {
        let mut client = BufReader::new(std_connect(addr));
        echo_line(&mut client, "hello")
    })
    .await;
    assert_eq!(reply, "hello");
}

/// Step 3: `newConnection`, heard both as a [`ListenerEvent`] and as a registry subscription,
/// with matching ids and addresses; the registry also reports the disconnection.
#[actix_rt::test]
async fn new_connection_is_announced_by_listener_and_registry() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let registry = Registry::new();
    let (registry_rx, mut registry_events) = inbox::<RegistryEvent>();
    registry.subscribe(registry_rx);
    let (listener_rx, mut listener_events) = inbox::<ListenerEvent>();
    let server = Listener::bind(any_port())
        .workers(2)
        .registry(registry.clone())
        .events(listener_rx)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let (client_tx, mut client_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let stream = std_connect(addr);
        client_tx.send(stream.local_addr().unwrap()).unwrap();
        let mut reader = BufReader::new(stream);
        let reply = echo_line(&mut reader, "ping");
        close_rx.recv().unwrap();
        reply
    });
    let peer: SocketAddr = within("the client's address", client_rx.recv())
        .await
        .unwrap();

    let (id, announced_peer) = match listener_events.next("ListenerEvent").await {
        ListenerEvent::NewConnection { id, peer } => (id, peer),
        other => panic!("expected NewConnection, got {other:?}"),
    };
    assert_eq!(announced_peer, peer);

    match registry_events.next("RegistryEvent::Connected").await {
        RegistryEvent::Connected(info) => {
            assert_eq!(
                info.id, id,
                "the listener and the registry name the same session"
            );
            assert_eq!(info.peer_addr, peer);
            assert_eq!(info.local_addr, addr);
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    let (info, _, _) = events.connected().await;
    assert_eq!(info.id, id);
    assert_eq!(registry.count(), 1);
    assert_eq!(registry.get(id).map(|i| i.peer_addr), Some(peer.into()));

    close_tx.send(()).unwrap();
    assert_eq!(within("the client", client).await.unwrap(), "ping");
    match registry_events.next("RegistryEvent::Disconnected").await {
        RegistryEvent::Disconnected { info, reason } => {
            assert_eq!(info.id, id);
            assert!(
                matches!(reason, DisconnectReason::PeerClosed),
                "unexpected reason {reason:?}"
            );
            assert_eq!(info.frames_in, 1);
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    ended_once(&probes, &mut events, id).await;
    assert_eq!(registry.count(), 0);
}

/// Step 4: `nextPendingConnection`. In pull mode a client waits in a bounded queue until the
/// owner takes it; a full queue stops accepting; the session started from it keeps the
/// announced id and joins the registry.
#[actix_rt::test]
async fn pull_mode_hands_over_pending_connections_in_order() {
    let (owner, mut announced) = inbox::<ListenerEvent>();
    let server = Listener::bind(any_port())
        .workers(2)
        .max_pending_connections(1)
        .pull(owner)
        .unwrap();
    let addr = server.local_addr();
    let listener = server.address().clone();

    // Nothing waits yet.
    let none = within(
        "NextPendingConnection",
        listener.send(NextPendingConnection),
    )
    .await;
    assert!(none.unwrap().is_none());

    let (peers_tx, mut peers_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let clients = tokio::task::spawn_blocking(move || {
        let first = BufReader::new(std_connect(addr));
        peers_tx
            .send(first.get_ref().local_addr().unwrap())
            .unwrap();
        let second = BufReader::new(std_connect(addr));
        peers_tx
            .send(second.get_ref().local_addr().unwrap())
            .unwrap();
        let mut replies = Vec::new();
        for mut client in [first, second] {
            replies.push(echo_line(&mut client, "over"));
        }
        done_rx.recv().unwrap();
        replies
    });
    let first_peer = within("first client", peers_rx.recv()).await.unwrap();
    let second_peer = within("second client", peers_rx.recv()).await.unwrap();

    let first_id = match announced.next("the first NewConnection").await {
        ListenerEvent::NewConnection { id, peer } => {
            assert_eq!(peer, first_peer);
            id
        }
        other => panic!("expected NewConnection, got {other:?}"),
    };
    // The queue holds one: the second client waits in the kernel backlog, unannounced.
    announced
        .expect_none("a second NewConnection while the queue is full", |_| true)
        .await;

    let (probes, mut events) = Probes::<Lines>::echo();
    let pending = within(
        "NextPendingConnection",
        listener.send(NextPendingConnection),
    )
    .await
    .unwrap()
    .expect("a pending connection");
    assert_eq!(pending.id(), first_id);
    assert_eq!(*pending.peer_addr(), first_peer);
    pending.start(Lines::new(), probes.make()).unwrap();
    let (info, _, thread) = events.connected().await;
    assert_eq!(info.id, first_id, "the session keeps the announced id");
    let here = std::thread::current()
        .name()
        .unwrap_or_default()
        .to_string();
    assert_ne!(
        thread, here,
        "the session runs on a worker, not the owner's thread"
    );
    assert!(info.worker.is_some(), "started on the listener's pool");
    within(
        "the registry to count it",
        server.registry().wait_for_count(1),
    )
    .await;

    // Taking one made room: the second is accepted and announced now.
    let second_id = match announced.next("the second NewConnection").await {
        ListenerEvent::NewConnection { id, peer } => {
            assert_eq!(peer, second_peer);
            id
        }
        other => panic!("expected NewConnection, got {other:?}"),
    };
    let pending = within(
        "NextPendingConnection",
        listener.send(NextPendingConnection),
    )
    .await
    .unwrap()
    .expect("the second pending connection");
    assert_eq!(pending.id(), second_id);
    pending.start(Lines::new(), probes.make()).unwrap();

    done_tx.send(()).unwrap();
    let replies = within("the clients", clients).await.unwrap();
    assert_eq!(replies, ["over", "over"]);
    ended_once(&probes, &mut events, first_id).await;
    ended_once(&probes, &mut events, second_id).await;
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// A client that says hello on `connected` and reports what comes back.
struct Hello {
    replies: mpsc::UnboundedSender<String>,
    ended: mpsc::UnboundedSender<DisconnectReason>,
}

impl SessionHandler<Lines> for Hello {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        conn.write("hello from the client").unwrap();
    }

    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let _ = self.replies.send(line);
        conn.disconnect_from_host();
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _: &switchboard::SessionInfo) {
        let _ = self.ended.send(reason.clone());
    }
}

/// Step 5, both ends in one process: `connectToHost` / `connected`, `write`, `readyRead` and
/// `read` on each side, `disconnectFromHost` on the client, `disconnected` on both.
#[actix_rt::test]
async fn connector_and_listener_talk_then_disconnect() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();

    let (replies_tx, mut replies) = mpsc::unbounded_channel();
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let client = within(
        "connectToHost",
        Connector::new().connect(
            &server.local_addr().to_string(),
            Lines::new(),
            Hello {
                replies: replies_tx,
                ended: ended_tx,
            },
        ),
    )
    .await
    .expect("connected");
    assert!(client.connected());

    let (info, _, _) = events.connected().await;
    assert_eq!(events.frame(info.id).await, "hello from the client");
    let reply = within("the echo", replies.recv()).await.unwrap();
    assert_eq!(reply, "hello from the client");

    // The client closed gracefully; the server saw the peer close.
    let client_reason = within("the client's disconnected", ended.recv())
        .await
        .unwrap();
    assert!(
        matches!(client_reason, DisconnectReason::Closed),
        "client: {client_reason:?}"
    );
    let server_reason = ended_once(&probes, &mut events, info.id).await;
    assert!(
        matches!(server_reason, DisconnectReason::PeerClosed),
        "server: {server_reason:?}"
    );
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// Step 5 against a plain std client: every line is read and answered in order, and the
/// server's `disconnected` runs once, with the final counters.
#[actix_rt::test]
async fn std_client_reads_and_writes_then_closes() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let replies = blocking("a std client", move || {
        let mut client = BufReader::new(std_connect(addr));
        client.get_mut().write_all(b"one\ntwo\r\nthree\n").unwrap();
        (0..3).map(|_| read_line(&mut client)).collect::<Vec<_>>()
    })
    .await;
    assert_eq!(replies, ["one", "two", "three"]);

    let (info, _, _) = events.connected().await;
    for expected in ["one", "two", "three"] {
        assert_eq!(events.frame(info.id).await, expected);
    }
    let (reason, last) = events.disconnected(info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert_eq!(last.frames_in, 3);
    assert_eq!(last.frames_out, 3);
    assert_eq!(last.bytes_in, 15);
    assert_eq!(last.bytes_out, 14);
    events.dropped(info.id).await;
    assert_eq!(probes.disconnects(info.id), 1);
}

/// `PendingConnection::into_stream` gives the std socket as `TcpListener::accept` would (in
/// blocking mode, although the listener accepts non-blocking), outside the listener's limits
/// and registry, and it still carries the client's bytes both ways.
#[actix_rt::test]
async fn into_stream_hands_over_a_blocking_socket_outside_the_accounting() {
    use std::os::fd::AsRawFd;
    let (owner, mut announced) = inbox::<ListenerEvent>();
    let server = Listener::bind(any_port()).workers(1).pull(owner).unwrap();
    let addr = server.local_addr();
    let client = tokio::task::spawn_blocking(move || {
        let mut client = BufReader::new(std_connect(addr));
        echo_line(&mut client, "taken")
    });
    let stream = take_pending_tcp(&server, &mut announced).await;
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0, "fcntl: {}", std::io::Error::last_os_error());
    assert_eq!(
        flags & libc::O_NONBLOCK,
        0,
        "the stream is in blocking mode"
    );
    assert_eq!(
        server.registry().count(),
        0,
        "not a session of the listener"
    );
    let stats = within(
        "GetListenerStats",
        server.address().send(switchboard::GetListenerStats),
    )
    .await
    .unwrap();
    assert_eq!(
        stats.active, 0,
        "no longer counted against the listener's limits"
    );
    let served = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        reader.get_mut().write_all(line.as_bytes()).unwrap();
        line
    });
    assert_eq!(within("the taken stream", served).await.unwrap(), "taken\n");
    assert_eq!(within("the client", client).await.unwrap(), "taken");
}
