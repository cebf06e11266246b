//! Half-close: the peer sends a request, then its FIN, and waits for the answer. The session
//! hears `read_finished` (Qt's `readChannelFinished`) after the last frame, its write side still
//! open: in push mode the handler answers from the callback; with `allow_half_close`, a
//! `Forward` recipient or a `Notify` owner answers later, then shuts the write side. Also from
//! clients nobody here wrote: `nc -N` and Python's `shutdown(SHUT_WR)` against the command.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use switchboard::{
    Conn, DisconnectReason, Forward, GetInfo, Listener, Notify, NotifyEvent, SessionConfig,
    SessionEvent, SessionHandler, SessionInfo, ShutdownWrite, Write,
};
use switchboard_codec::{Lines, Raw};
use switchboard_tests::{any_port, inbox, std_connect, within};
use tokio::sync::mpsc;

/// Sends `request`, shuts its write side, reads the answer to EOF.
async fn request_then_fin(addr: SocketAddr, request: &'static [u8]) -> Vec<u8> {
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        stream.write_all(request).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        answer
    });
    within("the answer and EOF", client).await.unwrap()
}

/// Counts the bytes of the request; answers with the count once the peer is done.
struct Counter {
    bytes: usize,
    ended: mpsc::UnboundedSender<(DisconnectReason, SessionInfo)>,
}

impl SessionHandler<Raw> for Counter {
    fn ready_read(&mut self, data: Bytes, _: &mut Conn<'_, Raw, Self>) {
        self.bytes += data.len();
    }

    fn read_finished(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        assert!(conn.is_read_finished());
        conn.write(Bytes::from(format!("{} bytes", self.bytes)))
            .expect("the write side is still open");
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let _ = self.ended.send((reason.clone(), info.clone()));
    }
}

#[actix_rt::test]
async fn push_mode_answers_after_the_peers_fin() {
    let (tx, mut ended) = mpsc::unbounded_channel();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Raw, move || Counter {
            bytes: 0,
            ended: tx.clone(),
        })
        .unwrap();
    let answer = request_then_fin(server.local_addr(), b"twelve bytes").await;
    assert_eq!(answer, b"12 bytes");
    let (reason, info) = within("disconnected", ended.recv()).await.unwrap();
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert!(info.read_finished);
    assert_eq!(info.bytes_in, 12);
}

/// With half-close allowed, the session waits after `ReadFinished` for the recipient's answer
/// and its `ShutdownWrite`.
#[actix_rt::test]
async fn forward_recipient_answers_after_read_finished_with_half_close_allowed() {
    let (recipient, mut events) = inbox::<SessionEvent<Lines>>();
    let recipient = Arc::new(Mutex::new(recipient));
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(SessionConfig::default().allow_half_close(true))
        .serve(Lines::new(), move || {
            Forward::new(recipient.lock().unwrap().clone())
        })
        .unwrap();
    let client = tokio::spawn(request_then_fin(server.local_addr(), b"alpha\nbeta\n"));
    let session = match events.next("Connected").await {
        SessionEvent::Connected { session, .. } => session,
        other => panic!("expected Connected, got {other:?}"),
    };
    let mut lines = Vec::new();
    loop {
        match events.next("an event").await {
            SessionEvent::ReadyRead { frame, .. } => lines.push(frame),
            SessionEvent::ReadFinished { .. } => break,
            other => panic!("expected ReadyRead or ReadFinished, got {other:?}"),
        }
    }
    assert_eq!(lines, ["alpha", "beta"]);
    // The session waits for us: still open after ReadFinished.
    let info = within("GetInfo", session.send(GetInfo)).await.unwrap();
    assert!(info.read_finished);
    assert_eq!(info.state, switchboard::SessionState::Connected);
    within("Write", session.send(Write(format!("got {}", lines.len()))))
        .await
        .unwrap()
        .unwrap();
    within("ShutdownWrite", session.send(ShutdownWrite))
        .await
        .unwrap();
    let answer = within("the client", client).await.unwrap();
    assert_eq!(answer, b"got 2\n");
    match events.next("Disconnected").await {
        SessionEvent::Disconnected { reason, .. } => {
            assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}")
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// Without half-close allowed, the session flushes and closes right after `ReadFinished`, as
/// Qt does.
#[actix_rt::test]
async fn forward_without_half_close_closes_after_read_finished() {
    let (recipient, mut events) = inbox::<SessionEvent<Lines>>();
    let recipient = Arc::new(Mutex::new(recipient));
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Lines::new(), move || {
            Forward::new(recipient.lock().unwrap().clone())
        })
        .unwrap();
    let answer = request_then_fin(server.local_addr(), b"only\n").await;
    assert!(answer.is_empty());
    let mut kinds = Vec::new();
    loop {
        let event = events.next("an event").await;
        kinds.push(format!("{event:?}").split('(').next().unwrap().to_string());
        if let SessionEvent::Disconnected { reason, .. } = event {
            assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
            break;
        }
    }
    assert_eq!(
        kinds,
        ["Connected", "ReadyRead", "ReadFinished", "Disconnected"]
    );
}

#[actix_rt::test]
async fn notify_owner_reads_everything_and_answers_after_read_finished() {
    let (owner, mut events) = inbox::<NotifyEvent>();
    let owner = Arc::new(Mutex::new(owner));
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(SessionConfig::default().allow_half_close(true))
        .serve(Raw, move || Notify::new(owner.lock().unwrap().clone()))
        .unwrap();
    let client = tokio::spawn(request_then_fin(server.local_addr(), b"question"));
    let handle = match events
        .expect("ReadFinished", |e| matches!(e, NotifyEvent::ReadFinished { .. }))
        .await
    {
        NotifyEvent::ReadFinished { handle } => handle,
        _ => unreachable!(),
    };
    assert!(!handle.at_end(), "the request is still buffered");
    // The last, unterminated line comes whole once the peer is done (Qt's readLine at EOF).
    assert_eq!(handle.read_line(1024).as_deref(), Some(&b"question"[..]));
    assert!(handle.at_end());
    within("the answer", handle.write(Bytes::from_static(b"answer")))
        .await
        .unwrap();
    within("ShutdownWrite", handle.session().send(ShutdownWrite))
        .await
        .unwrap();
    assert_eq!(within("the client", client).await.unwrap(), b"answer");
    let reason = match events
        .expect("Disconnected", |e| matches!(e, NotifyEvent::Disconnected { .. }))
        .await
    {
        NotifyEvent::Disconnected { reason, .. } => reason,
        _ => unreachable!(),
    };
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

/// This side half-closes first: the peer reads our EOF, then still sends, and we still read.
#[actix_rt::test]
async fn shutdown_write_keeps_reading_until_the_peer_is_done() {
    struct HalfCloser(mpsc::UnboundedSender<Vec<u8>>, Vec<u8>);
    impl SessionHandler<Raw> for HalfCloser {
        fn connected(&mut self, conn: &mut Conn<'_, Raw, Self>) {
            conn.write(Bytes::from_static(b"bye")).unwrap();
            conn.shutdown_write();
            assert!(conn.write(Bytes::from_static(b"late")).is_err());
        }
        fn ready_read(&mut self, data: Bytes, _: &mut Conn<'_, Raw, Self>) {
            self.1.extend_from_slice(&data);
        }
        fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
            assert!(matches!(reason, DisconnectReason::Closed), "{reason:?}");
            let _ = self.0.send(std::mem::take(&mut self.1));
        }
    }
    let (tx, mut got) = mpsc::unbounded_channel();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Raw, move || HalfCloser(tx.clone(), Vec::new()))
        .unwrap();
    let addr = server.local_addr();
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std_connect(addr);
        let mut greeting = Vec::new();
        stream.read_to_end(&mut greeting).unwrap();
        // Our EOF came; the server still reads.
        stream.write_all(b"after your FIN").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        greeting
    });
    assert_eq!(within("the client", client).await.unwrap(), b"bye");
    assert_eq!(
        within("what the server read", got.recv()).await.unwrap(),
        b"after your FIN"
    );
}

/// `nc -N` sends stdin, shuts its write side at stdin's EOF and prints what comes back until
/// the server's EOF.
#[test]
fn nc_half_close_against_the_command_echo_gets_every_byte_back() {
    let server = support::Server::start(&["--mode", "echo", "--codec", "raw"]);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut nc = Command::new("nc")
        .args(["-N", "127.0.0.1", &server.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nc runs (install it: apt-get install -y netcat-openbsd)");
    let mut stdin = nc.stdin.take().unwrap();
    let feed = payload.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed).unwrap());
    let mut echoed = Vec::new();
    nc.stdout.take().unwrap().read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    let status = nc.wait().unwrap();
    assert!(status.success(), "nc failed");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo differs");
    assert!(server.terminate().status.success());
}

#[test]
fn python_shutdown_wr_against_the_command_echo_gets_every_line_back() {
    let server = support::Server::start(&["--mode", "echo"]);
    let script = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
lines = b"".join(b"line %d\n" % i for i in range(5000))
s.sendall(lines)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    data = s.recv(65536)
    if not data:
        break
    got += data
print("ok" if got == lines else "differs %d of %d" % (len(got), len(lines)))
"#;
    let output = Command::new("python3")
        .args(["-c", script, &server.addr.port().to_string()])
        .output()
        .expect("python3 runs (install it: apt-get install -y python3)");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(server.terminate().status.success());
}
