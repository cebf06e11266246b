//! A handler that panics ends only its own session, with `DisconnectReason::HandlerPanicked`;
//! other sessions on the same worker and the accept loop carry on.

use std::io::{BufReader, Write as _};

use bytes::Bytes;
use switchboard::{Conn, DisconnectReason, Listener, SessionHandler, SessionInfo};
use switchboard_codec::{Lines, Raw};
use switchboard_tests::{
    any_port, blocking, echo_line, ended_once, read_to_eof, std_connect, within, Action, Probes,
};
use tokio::sync::mpsc;

#[actix_rt::test]
async fn panic_in_ready_read_ends_only_that_session() {
    let (probes, mut events) = Probes::<Lines>::new(|line| {
        if line == "panic" {
            Action::Panic
        } else {
            Action::Echo
        }
    });
    // One worker: the panicking session shares its thread with the survivor.
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let survivor = std_connect(addr);
    let (survivor_info, _) = events.connected_from(survivor.local_addr().unwrap()).await;
    let mut survivor = BufReader::new(survivor);
    let mut victim = std_connect(addr);
    let (victim_info, _) = events.connected_from(victim.local_addr().unwrap()).await;

    let victim_got = blocking("the victim", move || {
        victim.write_all(b"panic\n").unwrap();
        read_to_eof(&mut victim, true)
    })
    .await;
    assert!(victim_got.is_empty());
    let reason = ended_once(&probes, &mut events, victim_info.id).await;
    match &reason {
        DisconnectReason::HandlerPanicked(message) => {
            assert_eq!(message, "probe told to panic")
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert!(reason.is_error());

    // Same worker, still answering; and new clients are still accepted.
    let survivor = blocking("the survivor", move || {
        assert_eq!(echo_line(&mut survivor, "still alive"), "still alive");
        let mut newcomer = BufReader::new(std_connect(addr));
        assert_eq!(echo_line(&mut newcomer, "newcomer"), "newcomer");
        survivor
    })
    .await;
    assert!(server.registry().get(survivor_info.id).is_some());
    drop(survivor);
    let reason = ended_once(&probes, &mut events, survivor_info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// A handler that panics in `connected` on its first session only.
struct FragileStart {
    first: bool,
    ended: mpsc::UnboundedSender<DisconnectReason>,
}

impl SessionHandler<Raw> for FragileStart {
    fn connected(&mut self, _: &mut Conn<'_, Raw, Self>) {
        if self.first {
            panic!("cannot start");
        }
    }

    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        let _ = conn.write(data);
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        let _ = self.ended.send(reason.clone());
    }
}

#[actix_rt::test]
async fn panic_in_connected_ends_that_session_and_is_reported_once() {
    let (tx, mut ended) = mpsc::unbounded_channel();
    let made = std::sync::atomic::AtomicUsize::new(0);
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Raw, move || FragileStart {
            first: made.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0,
            ended: tx.clone(),
        })
        .unwrap();
    let addr = server.local_addr();
    let first = blocking("the first client", move || {
        let mut client = std_connect(addr);
        read_to_eof(&mut client, true)
    })
    .await;
    assert!(first.is_empty());
    let reason = within("disconnected", ended.recv()).await.unwrap();
    assert!(
        matches!(&reason, DisconnectReason::HandlerPanicked(m) if m == "cannot start"),
        "{reason:?}"
    );
    within("the registry to empty", server.registry().wait_for_count(0)).await;

    let echoed = blocking("the second client", move || {
        let mut client = std_connect(addr);
        client.write_all(b"ok").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        read_to_eof(&mut client, false)
    })
    .await;
    assert_eq!(echoed, b"ok");
    let reason = within("disconnected", ended.recv()).await.unwrap();
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert!(
        ended.try_recv().is_err(),
        "a second disconnected for one session"
    );
}
