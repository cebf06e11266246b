//! Notify mode, Qt's pull style: `ReadyRead` says bytes wait; `Read`, `ReadAll` and `ReadLine`
//! take them. The read buffer is bounded: when it is full the session stops reading, and the
//! owner's reads let it go on.

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use actix::Addr;
use switchboard::{
    BytesAvailable, DisconnectReason, GetInfo, Listener, ListenerHandle, Notify, NotifyEvent, Read,
    ReadAll, ReadLine, Session, SessionConfig, SessionId, Write,
};
use switchboard_codec::Raw;
use switchboard_tests::{
    any_port, assert_pattern, inbox, pattern, read_to_eof, std_connect, within, Received,
};
use tokio::sync::mpsc;

type NotifySession = Session<Raw, Notify>;

fn serve(config: SessionConfig) -> (ListenerHandle, Received<NotifyEvent>) {
    let (owner, events) = inbox::<NotifyEvent>();
    let owner = Arc::new(Mutex::new(owner));
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(config)
        .serve(Raw, move || Notify::new(owner.lock().unwrap().clone()))
        .unwrap();
    (server, events)
}

async fn connected(events: &mut Received<NotifyEvent>) -> (SessionId, Addr<NotifySession>) {
    match events.next("NotifyEvent::Connected").await {
        NotifyEvent::Connected { info, handle } => (info.id, handle.session().clone()),
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn ready_read(events: &mut Received<NotifyEvent>, of: SessionId) -> usize {
    match events
        .expect("ReadyRead", |e| matches!(e, NotifyEvent::ReadyRead { .. }))
        .await
    {
        NotifyEvent::ReadyRead { handle, available } => {
            assert_eq!(handle.id(), of);
            assert!(available > 0, "ReadyRead with nothing to read");
            available
        }
        _ => unreachable!(),
    }
}

/// A std client that sends `data` and then waits for `go` before closing.
fn client(
    addr: SocketAddr,
    data: Vec<u8>,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<Vec<u8>>,
) {
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let done = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        stream.write_all(&data).unwrap();
        go_rx.recv().unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        read_to_eof(&mut stream, false)
    });
    (go, done)
}

#[actix_rt::test]
async fn ready_read_then_read_line_read_and_read_all() {
    let (server, mut events) = serve(SessionConfig::default());
    let (go, done) = client(server.local_addr(), b"hello\nworld\npartial".to_vec());
    let (id, session) = connected(&mut events).await;

    let available = ready_read(&mut events, id).await;
    assert_eq!(
        available, 19,
        "one small write arrives in one piece on loopback"
    );
    assert_eq!(
        within("BytesAvailable", session.send(BytesAvailable))
            .await
            .unwrap(),
        19
    );
    let line = within("ReadLine", session.send(ReadLine { max: 1024 }))
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some(&b"hello\n"[..]));
    let line = within("ReadLine", session.send(ReadLine { max: 1024 }))
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some(&b"world\n"[..]));
    // No complete line waits (Qt's canReadLine is false)...
    let line = within("ReadLine", session.send(ReadLine { max: 1024 }))
        .await
        .unwrap();
    assert_eq!(line, None);
    // ...unless `max` bytes do.
    let line = within("ReadLine", session.send(ReadLine { max: 2 }))
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some(&b"pa"[..]));
    let bytes = within("Read", session.send(Read { max: 3 })).await.unwrap();
    assert_eq!(&bytes[..], b"rti");
    let rest = within("ReadAll", session.send(ReadAll)).await.unwrap();
    assert_eq!(&rest[..], b"al");
    let empty = within("ReadAll", session.send(ReadAll)).await.unwrap();
    assert!(empty.is_empty());

    // Writing is the same as in push mode.
    within(
        "Write",
        session.send(Write(bytes::Bytes::from_static(b"bye"))),
    )
    .await
    .unwrap()
    .unwrap();
    go.send(()).unwrap();
    match events
        .expect("Disconnected", |e| {
            matches!(e, NotifyEvent::Disconnected { .. })
        })
        .await
    {
        NotifyEvent::Disconnected { reason, info, .. } => {
            assert_eq!(info.id, id);
            assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
            assert_eq!(info.bytes_in, 19);
        }
        _ => unreachable!(),
    }
    assert_eq!(within("the client", done).await.unwrap(), b"bye");
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// With the read buffer full the session stops reading: the peer's extra bytes stay in the
/// kernel; each read by the owner lets more in, until everything arrived in order.
#[actix_rt::test]
async fn full_read_buffer_stops_reading_until_the_owner_reads() {
    const LIMIT: usize = 16 * 1024;
    const CHUNK: usize = 4 * 1024;
    // Well beyond what the kernel buffers of a loopback pair hold (a few MiB).
    const TOTAL: usize = 16 * 1024 * 1024;
    let config = SessionConfig::default()
        .with_read_buffer_size(LIMIT)
        .with_read_chunk(CHUNK);
    let largest_read = config.largest_read();
    assert_eq!(largest_read, LIMIT);
    let (server, mut events) = serve(config);
    let addr = server.local_addr();
    let (sent_tx, mut sent) = mpsc::unbounded_channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let writer = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        stream.write_all(&pattern(0, TOTAL)).unwrap();
        sent_tx.send(()).unwrap();
        go_rx.recv().unwrap();
    });
    let (id, session) = connected(&mut events).await;
    ready_read(&mut events, id).await;

    // Let the session fill its buffer: it reads until the buffer reaches its limit, then
    // stops (a bounded number of queries; each is a round trip to the session, no sleep).
    let mut available = 0;
    for _ in 0..10_000 {
        available = within("BytesAvailable", session.send(BytesAvailable))
            .await
            .unwrap();
        if available >= LIMIT {
            break;
        }
    }
    assert!(available >= LIMIT, "the buffer never filled: {available}");
    // Past the limit by one read at most; reads grow from CHUNK while they fill, but never
    // past the read buffer size.
    assert!(
        available < LIMIT + largest_read,
        "the buffer grew to {available}"
    );
    let first = within("GetInfo", session.send(GetInfo)).await.unwrap();
    let again = within("BytesAvailable", session.send(BytesAvailable))
        .await
        .unwrap();
    let second = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert_eq!(again, available, "the full buffer kept growing");
    assert_eq!(
        first.bytes_in, second.bytes_in,
        "kept reading with a full buffer"
    );
    assert_eq!(first.bytes_in as usize, available);
    assert!(sent.try_recv().is_err(), "the peer could write all of it");

    // Reading lets the rest in, in order.
    let mut received = Vec::with_capacity(TOTAL);
    let mut reads = 0;
    loop {
        let bytes = within("ReadAll", session.send(ReadAll)).await.unwrap();
        received.extend_from_slice(&bytes);
        reads += 1;
        assert!(reads < 100_000, "too many reads");
        if received.len() >= TOTAL {
            break;
        }
        ready_read(&mut events, id).await;
    }
    assert_eq!(received.len(), TOTAL);
    assert_pattern(&received);
    within("the writer to finish", sent.recv()).await.unwrap();
    go.send(()).unwrap();
    within("the writer", writer).await.unwrap();
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// Qt's `readAll()` after `disconnected()`: the peer sends 8 bytes and closes at once; the
/// owner reads them after the session has ended, from the handle the events carry.
#[actix_rt::test]
async fn bytes_sent_before_the_peer_closed_are_readable_after_disconnected() {
    let (server, mut events) = serve(SessionConfig::default());
    let addr = server.local_addr();
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        stream.write_all(b"8 bytes!").unwrap();
    });
    within("the client", client).await.unwrap();
    let (reason, handle) = match events
        .expect("Disconnected", |e| {
            matches!(e, NotifyEvent::Disconnected { .. })
        })
        .await
    {
        NotifyEvent::Disconnected { reason, handle, .. } => (reason, handle),
        _ => unreachable!(),
    };
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    // The session is gone: messages to it fail...
    assert!(within("ReadAll", handle.session().send(ReadAll))
        .await
        .is_err());
    // ...but its bytes are still there.
    assert_eq!(handle.bytes_available(), 8);
    assert_eq!(&handle.read_all()[..], b"8 bytes!");
    assert!(handle.at_end());
    // The ReadyRead and ReadFinished before it named the same buffer.
    let kinds: Vec<_> = events
        .drain_now()
        .into_iter()
        .map(|e| match e {
            NotifyEvent::ReadyRead { handle: h, .. } => {
                assert_eq!(h.id(), handle.id());
                "ReadyRead"
            }
            NotifyEvent::ReadFinished { .. } => "ReadFinished",
            NotifyEvent::Connected { .. } => "Connected",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["Connected", "ReadyRead", "ReadFinished"]);
}

/// A `ReadLine` that finds no complete line still answers the `ReadyRead`: when the rest of the
/// line arrives, a new `ReadyRead` says so.
#[actix_rt::test]
async fn read_line_none_then_the_rest_of_the_line_brings_a_new_ready_read() {
    let (server, mut events) = serve(SessionConfig::default());
    let addr = server.local_addr();
    let (more, more_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        stream.write_all(b"half a ").unwrap();
        more_rx.recv().unwrap();
        stream.write_all(b"line\n").unwrap();
        more_rx.recv().unwrap();
    });
    let (id, _) = connected(&mut events).await;
    let handle = match events
        .expect("ReadyRead", |e| matches!(e, NotifyEvent::ReadyRead { .. }))
        .await
    {
        NotifyEvent::ReadyRead { handle, .. } => handle,
        _ => unreachable!(),
    };
    assert_eq!(handle.id(), id);
    assert!(!handle.can_read_line(1024));
    assert_eq!(handle.read_line(1024), None);
    more.send(()).unwrap();
    let available = ready_read(&mut events, id).await;
    assert_eq!(available, b"half a line\n".len());
    assert_eq!(
        handle.read_line(1024).as_deref(),
        Some(&b"half a line\n"[..])
    );
    more.send(()).unwrap();
    within("the client", client).await.unwrap();
}
