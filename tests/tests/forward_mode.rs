//! Forward mode: a session sends every event to an actix `Recipient`, in order, `Connected`
//! first and `Disconnected` last and once; the recipient writes back through the session's
//! address, and hears of write backpressure.

use std::{
    io::{BufReader, Write as _},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use switchboard::{
    DisconnectFromHost, DisconnectReason, Forward, Listener, SessionConfig, SessionEvent, Write,
};
use switchboard_codec::{Lines, Raw};
use switchboard_tests::{
    any_port, assert_pattern, inbox, pattern, read_line, read_to_eof, std_connect, within,
};

#[actix_rt::test]
async fn events_arrive_in_order_with_disconnected_last() {
    let (recipient, mut events) = inbox::<SessionEvent<Lines>>();
    let recipient = Arc::new(Mutex::new(recipient));
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), move || {
            Forward::new(recipient.lock().unwrap().clone()).max_in_flight(4)
        })
        .unwrap();
    let addr = server.local_addr();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let mut client = BufReader::new(std_connect(addr));
        let lines: String = (0..200).map(|i| format!("line {i}\n")).collect();
        client.get_mut().write_all(lines.as_bytes()).unwrap();
        let reply = read_line(&mut client);
        go_rx.recv().unwrap();
        reply
    });

    let (id, session) = match events.next("Connected").await {
        SessionEvent::Connected { info, session } => (info.id, session),
        other => panic!("Connected must come first, got {other:?}"),
    };
    for i in 0..200 {
        match events.next("ReadyRead").await {
            SessionEvent::ReadyRead { id: of, frame } => {
                assert_eq!(of, id);
                assert_eq!(frame, format!("line {i}"), "out of order");
            }
            other => panic!("expected ReadyRead {i}, got {other:?}"),
        }
    }
    within("Write", session.send(Write("got them all".to_string())))
        .await
        .unwrap()
        .unwrap();
    go.send(()).unwrap();
    assert_eq!(within("the client", client).await.unwrap(), "got them all");
    match events.next("ReadFinished").await {
        SessionEvent::ReadFinished { id: of } => assert_eq!(of, id),
        other => panic!("expected ReadFinished, got {other:?}"),
    }
    match events.next("Disconnected").await {
        SessionEvent::Disconnected { reason, info } => {
            assert_eq!(info.id, id);
            assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
            assert_eq!(info.frames_in, 200);
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    events
        .expect_none("any event after Disconnected", |_| true)
        .await;
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// Write backpressure reaches the recipient as `WriteBufferFull` / `WriteBufferDrained`, and
/// `with_bytes_written` reports every byte that left.
#[actix_rt::test]
async fn recipient_hears_backpressure_and_bytes_written() {
    let (recipient, mut events) = inbox::<SessionEvent<Raw>>();
    let recipient = Arc::new(Mutex::new(recipient));
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(SessionConfig::default().with_idle_timeout(None))
        .serve(Raw, move || {
            Forward::new(recipient.lock().unwrap().clone()).with_bytes_written()
        })
        .unwrap();
    let addr = server.local_addr();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        go_rx.recv().unwrap();
        read_to_eof(&mut stream, false)
    });
    let (id, session) = match events.next("Connected").await {
        SessionEvent::Connected { info, session } => (info.id, session),
        other => panic!("expected Connected, got {other:?}"),
    };

    let mut sent = 0;
    loop {
        assert!(sent < 64 * 1024 * 1024, "no backpressure");
        let chunk = Bytes::from(pattern(sent, 16 * 1024));
        match within("Write", session.send(Write(chunk))).await.unwrap() {
            Ok(()) => sent += 16 * 1024,
            Err(e) if e.is_backpressure() => break,
            Err(e) => panic!("{e}"),
        }
    }
    // (Events passed over here stay stashed, in order, for the count below.)
    events
        .expect(
            "WriteBufferFull",
            |e| matches!(e, SessionEvent::WriteBufferFull { id: of } if *of == id),
        )
        .await;
    go.send(()).unwrap();
    events
        .expect(
            "WriteBufferDrained",
            |e| matches!(e, SessionEvent::WriteBufferDrained { id: of } if *of == id),
        )
        .await;
    within("DisconnectFromHost", session.send(DisconnectFromHost))
        .await
        .unwrap();
    let got = within("the client", client).await.unwrap();
    assert_eq!(got.len(), sent);
    assert_pattern(&got);
    // Every byte sent was reported once, and Disconnected came last.
    let mut written = 0;
    let last = loop {
        match events.next("events up to Disconnected").await {
            SessionEvent::BytesWritten { bytes, .. } => written += bytes,
            SessionEvent::Disconnected { reason, info } => break (reason, info),
            _ => {}
        }
    };
    assert!(events.drain_now().is_empty(), "events after Disconnected");
    assert_eq!(written, sent);
    assert!(matches!(last.0, DisconnectReason::Closed), "{:?}", last.0);
    assert_eq!(last.1.bytes_out as usize, sent);
}
