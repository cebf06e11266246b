//! Bad input, all at once, against one server: garbage, oversized frames, overlong lines,
//! invalid UTF-8 where text is expected, a stream cut off inside a frame. Each bad connection
//! ends with a typed error (`DisconnectReason::Codec`, downcast to `CodecError`) naming what was
//! wrong, and nothing else: a good client on the same worker thread keeps its round trips
//! going through all of it, and the registry ends up holding only the good session.
//!
//! `limits_frame_length.rs` proves a single overlong line and a single oversized frame; this
//! covers the other kinds of bad input and their mix on one thread.

use std::{
    collections::HashMap,
    io::{BufReader, Read, Write as _},
    net::{Shutdown, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use switchboard::{DisconnectReason, Listener, ListenerHandle};
use switchboard_codec::{CodecError, Frames, Lines};
use switchboard_tests::{
    any_port, codec_error, echo_line, ended_once, read_to_eof, std_connect, within, Events,
    ProbeCodec, Probes,
};

/// What a bad client sends, and how it ends its side.
struct Bad {
    name: &'static str,
    bytes: Vec<u8>,
    /// Shut the write side after sending (the peer's FIN), instead of waiting to be closed.
    then_fin: bool,
    /// The answers to the good messages before the bad one. The session closes at once on
    /// the error, dropping unsent answers, so the client gets a prefix of these.
    answers: &'static [u8],
    /// Whether the error is the one expected for this input.
    expect: fn(&CodecError) -> bool,
}

/// Starts a one-worker echo server: the bad sessions share their thread with the good one.
fn serve<C: ProbeCodec + Clone + Sync>(codec: C) -> (ListenerHandle, Probes<C>, Events<C>) {
    let (probes, events) = Probes::<C>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(codec, probes.factory())
        .unwrap();
    (server, probes, events)
}

/// Sends each bad input on its own connection, all at once; returns the client addresses.
fn send_all(addr: SocketAddr, bad: &[Bad]) -> Vec<(SocketAddr, std::thread::JoinHandle<()>)> {
    bad.iter()
        .map(|b| {
            let mut stream = std_connect(addr);
            let peer = stream.local_addr().unwrap();
            let bytes = b.bytes.clone();
            let then_fin = b.then_fin;
            let name = b.name;
            let answers = b.answers;
            let client = std::thread::spawn(move || {
                // The server may close (and so reset) before all of it is written: fine.
                let _ = stream.write_all(&bytes);
                if then_fin {
                    let _ = stream.shutdown(Shutdown::Write);
                }
                let answer = read_to_eof(&mut stream, true);
                assert!(
                    answers.starts_with(&answer),
                    "{name}: answered {:?}",
                    String::from_utf8_lossy(&answer)
                );
            });
            (peer, client)
        })
        .collect()
}

/// Waits for every bad session to end and checks its typed error; the good session is left.
async fn expect_typed_errors<C: ProbeCodec>(
    server: &ListenerHandle,
    probes: &Probes<C>,
    events: &mut Events<C>,
    bad: &[Bad],
    clients: Vec<(SocketAddr, std::thread::JoinHandle<()>)>,
) {
    let mut ids = HashMap::new();
    for (peer, _) in &clients {
        let (info, _) = events.connected_from(*peer).await;
        ids.insert(*peer, info.id);
    }
    for (b, (peer, client)) in bad.iter().zip(clients) {
        let reason = ended_once(probes, events, ids[&peer]).await;
        let error = codec_error(&reason);
        assert!((b.expect)(error), "{}: {error:?}", b.name);
        assert!(reason.is_error());
        assert!(
            reason.to_string().starts_with("bad input: "),
            "{}: {reason}",
            b.name
        );
        within(
            "the bad client",
            tokio::task::spawn_blocking(move || client.join()),
        )
        .await
        .unwrap()
        .unwrap();
    }
    assert_eq!(
        server.registry().count(),
        1,
        "only the good session is left"
    );
}

/// A good line client making round trips until `stop`; returns how many it made.
fn good_lines(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<usize>) {
    let stream = std_connect(addr);
    let peer = stream.local_addr().unwrap();
    let mut client = BufReader::new(stream);
    let thread = std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) || n < 10 {
            let line = format!("good {n}");
            assert_eq!(echo_line(&mut client, &line), line);
            n += 1;
        }
        n
    });
    (peer, thread)
}

#[actix_rt::test]
async fn bad_lines_end_only_their_own_connections_with_typed_errors() {
    let (server, probes, mut events) = serve(Lines::with_max_length(1024));
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (peer, good) = good_lines(addr, stop.clone());
    let (good_info, _) = events.connected_from(peer).await;

    let bad = [
        Bad {
            name: "invalid UTF-8",
            bytes: b"caf\xc3\n\xff\xfe\xfd\n".to_vec(),
            then_fin: false,
            answers: b"",
            expect: |e| matches!(e, CodecError::InvalidUtf8 { valid_up_to: 3 }),
        },
        Bad {
            name: "binary garbage with a newline (a TLS ClientHello)",
            bytes: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xd2\x8f\n".to_vec(),
            then_fin: false,
            answers: b"",
            expect: |e| matches!(e, CodecError::InvalidUtf8 { .. }),
        },
        Bad {
            name: "overlong line, never ended",
            bytes: vec![b'x'; 64 * 1024],
            then_fin: false,
            answers: b"",
            expect: |e| matches!(e, CodecError::LineTooLong { limit: 1024 }),
        },
        Bad {
            name: "overlong line after good ones",
            bytes: [b"ok\n".repeat(3), vec![b'y'; 2000], b"\n".to_vec()].concat(),
            then_fin: false,
            answers: b"ok\nok\nok\n",
            expect: |e| matches!(e, CodecError::LineTooLong { limit: 1024 }),
        },
        Bad {
            name: "invalid UTF-8 in the last line, cut off by FIN",
            bytes: b"fine\n\xc0\xaf".to_vec(),
            then_fin: true,
            answers: b"fine\n",
            expect: |e| matches!(e, CodecError::InvalidUtf8 { valid_up_to: 0 }),
        },
    ];
    let clients = send_all(addr, &bad);
    expect_typed_errors(&server, &probes, &mut events, &bad, clients).await;

    stop.store(true, Ordering::SeqCst);
    let round_trips = within(
        "the good client",
        tokio::task::spawn_blocking(move || good.join()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(round_trips >= 10);
    let reason = ended_once(&probes, &mut events, good_info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[actix_rt::test]
async fn bad_frames_end_only_their_own_connections_with_typed_errors() {
    let (server, probes, mut events) = serve(Frames::with_max_frame_length(4096));
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = std_connect(addr);
    let peer = client.local_addr().unwrap();
    let good = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) || n < 10 {
                let payload = format!("good frame {n}").into_bytes();
                client.write_all(&frame(&payload)).unwrap();
                let mut back = vec![0u8; 4 + payload.len()];
                client.read_exact(&mut back).unwrap();
                assert_eq!(back, frame(&payload));
                n += 1;
            }
            n
        })
    };
    let (good_info, _) = events.connected_from(peer).await;

    let bad = [
        Bad {
            name: "an HTTP request",
            bytes: b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec(),
            then_fin: false,
            answers: b"",
            // "GET " read as a big-endian length.
            expect: |e| {
                matches!(e, CodecError::FrameTooLong { len, limit: 4096 }
                    if *len == u64::from(u32::from_be_bytes(*b"GET ")))
            },
        },
        Bad {
            name: "a declared length of 4 GiB - 1",
            bytes: vec![0xff; 4],
            then_fin: false,
            answers: b"",
            expect: |e| {
                matches!(
                    e,
                    CodecError::FrameTooLong {
                        len: 0xffff_ffff,
                        limit: 4096
                    }
                )
            },
        },
        Bad {
            name: "one byte over the limit, after a good frame",
            bytes: [frame(b"fine"), frame(&[0u8; 4097])].concat(),
            then_fin: false,
            answers: b"\0\0\0\x04fine",
            expect: |e| {
                matches!(
                    e,
                    CodecError::FrameTooLong {
                        len: 4097,
                        limit: 4096
                    }
                )
            },
        },
        Bad {
            name: "cut off inside the header",
            bytes: vec![0, 0],
            then_fin: true,
            answers: b"",
            expect: |e| matches!(e, CodecError::Truncated { buffered: 2 }),
        },
        Bad {
            name: "cut off inside the payload",
            bytes: [&100u32.to_be_bytes()[..], &[7u8; 60]].concat(),
            then_fin: true,
            answers: b"",
            expect: |e| matches!(e, CodecError::Truncated { buffered: 64 }),
        },
    ];
    let clients = send_all(addr, &bad);
    expect_typed_errors(&server, &probes, &mut events, &bad, clients).await;

    stop.store(true, Ordering::SeqCst);
    let round_trips = within(
        "the good client",
        tokio::task::spawn_blocking(move || good.join()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(round_trips >= 10);
    let reason = ended_once(&probes, &mut events, good_info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}
